"""Devices and CPUs, shared by training, the service and the load tests.

- `resolve_device`: `auto`, `cpu` or `cuda` for torch, never a silent fallback from `cuda`.
- `nvidia_gpus`: the NVIDIA GPUs this process may use, found through NVML (nvidia-ml-py) without
  importing torch, so that the ONNX service path can decide `auto` for ~nothing.
- `onnx_cuda_provider`: whether ONNX Runtime can run on the GPU (onnxruntime-gpu).
- `available_cpus`: the CPUs this process may use (affinity mask and cgroup CPU quota), not the host's.
- `available_memory`: the memory this process may use (the machine's, capped by a cgroup limit).
"""

from __future__ import annotations

import logging
import math
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")
CUDA_PROVIDER = "CUDAExecutionProvider"  # ONNX Runtime's, in onnxruntime-gpu
# Its options: TF32 off (its default is on), FP32 as on the CPU, so parity and served labels hold.
CUDA_PROVIDER_OPTIONS = {"use_tf32": "0"}
CGROUP_ROOT = Path("/sys/fs/cgroup")


class DeviceUnavailableError(RuntimeError):
    """CUDA was requested explicitly but no usable GPU is present."""


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda if available else cpu; `cuda` without a GPU raises instead of falling back."""
    import torch  # here, not at the top: the ONNX service path must not pay torch's import (~400 MB)

    if name not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {name!r}")
    has_cuda = torch.cuda.is_available()
    if name == "cuda" and not has_cuda:
        raise DeviceUnavailableError(
            "device 'cuda' was requested but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
            "use device 'cpu' or 'auto' on a machine without a GPU"
        )
    device = torch.device("cuda" if name == "cuda" or (name == "auto" and has_cuda) else "cpu")
    if device.type == "cuda":
        logger.info("using GPU %s", torch.cuda.get_device_name(device))
    return device


def full_precision_cuda() -> None:
    """FP32 on the GPU as on the CPU: no TF32 in cuDNN convolutions (PyTorch's default allows it) or
    matmuls, so GPU outputs stay within the parity tolerance of eager CPU and MNIST labels served on
    the GPU equal the stored ones. These models are far too small for TF32 to matter for speed."""
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def nvidia_gpus() -> tuple[list[str], str]:
    """(names of the NVIDIA GPUs this process may use, why there are none when the list is empty).
    Reads NVML (the driver's library, as nvidia-smi does); honours CUDA_VISIBLE_DEVICES="" / "-1"."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return [], f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:  # no driver (libnvidia-ml.so.1 not found) or no device
        return [], f"no NVIDIA driver (NVML: {exc})"
    try:
        names = [
            pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            for i in range(pynvml.nvmlDeviceGetCount())
        ]
    except pynvml.NVMLError as exc:  # no permission, a GPU lost: no usable GPU, and why
        return [], f"NVML could not list the GPUs ({exc})"
    finally:
        pynvml.nvmlShutdown()
    names = [n.decode() if isinstance(n, bytes) else n for n in names]
    if visible:  # a list of indices (UUIDs count as one each): keep that many
        names = names[: len([v for v in visible.split(",") if v.strip()])]
    return names, "" if names else "NVML found no GPU"


def onnx_cuda_provider() -> tuple[bool, str]:
    """Whether ONNX Runtime has its CUDA provider (onnxruntime-gpu), after loading the CUDA/cuDNN
    libraries that torch's wheels bring (onnxruntime.preload_dlls, ORT >= 1.21)."""
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if CUDA_PROVIDER not in providers:
        return False, (
            f"ONNX Runtime {ort.__version__} has no {CUDA_PROVIDER} (providers: {providers}; "
            "install onnxruntime-gpu: `make setup-gpu`)"
        )
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    return True, ""


def _cgroup_limit(
    v2_file: str, v1_controller: str, v1_read, v2_read, root: Path, proc_cgroup: Path
) -> float | None:
    """The tightest limit of one cgroup controller on this process's cgroup path, v2 (`v2_file` in the
    unified hierarchy) or v1 (the `v1_controller` hierarchy), from the process's cgroup up to the root of
    the mount (inside a container the path is usually "/", and the container's own limit sits there)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: one unified hierarchy
            base, read = root, lambda folder: v2_read(folder / v2_file)
        elif v1_controller in controllers.split(","):  # cgroup v1: the controller's own hierarchy
            names = [v1_controller, *(d for d in ("cpu,cpuacct", "cpuacct,cpu") if v1_controller == "cpu")]
            base = next((root / d for d in names if (root / d).is_dir()), None)
            if base is None:
                continue
            read = v1_read
        else:
            continue
        parts = [p for p in path.strip("/").split("/") if p]
        for depth in range(len(parts), -1, -1):
            limit = read(base.joinpath(*parts[:depth]))
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs granted by the tightest cgroup CPU quota on this process's cgroup path (v2 `cpu.max`, v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`), e.g. 2.0 for `docker run --cpus 2`; None without one."""
    return _cgroup_limit("cpu.max", "cpu", _v1_quota, _v2_quota, root, proc_cgroup)


def cgroup_memory_limit(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> int | None:
    """Bytes of memory granted by the tightest cgroup memory limit on this process's cgroup path (v2
    `memory.max`, v1 `memory.limit_in_bytes`), e.g. 2 GiB for `docker run --memory 2g`; None without one."""
    limit = _cgroup_limit("memory.max", "memory", _v1_memory, _v2_memory, root, proc_cgroup)
    return None if limit is None else int(limit)


def _v2_quota(file: Path) -> float | None:
    try:
        quota, period = file.read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def _v2_memory(file: Path) -> float | None:
    try:
        value = file.read_text().strip()
    except OSError:
        return None
    return None if value == "max" or not value.isdigit() else int(value)


# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number (or close to it).
_V1_UNLIMITED = 1 << 62


def _v1_memory(folder: Path) -> float | None:
    try:
        value = int((folder / "memory.limit_in_bytes").read_text())
    except (OSError, ValueError):
        return None
    return None if value <= 0 or value >= _V1_UNLIMITED else value


@cache
def available_memory() -> int:
    """Bytes of memory this process may use: the machine's memory, capped by a cgroup memory limit (a
    2 GiB container on a 512 GiB host gets 2 GiB). Read once per process."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = cgroup_memory_limit()
    return min(total, limit) if limit else total


@cache
def available_cpus() -> int:
    """CPUs this process may use: its affinity mask (taskset, cpusets), capped by a cgroup CPU quota
    rounded down (a 2-CPU container on a 64-core host gets 2, not 64); at least 1. Read once per process
    (settings ask for it on every /status)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)
