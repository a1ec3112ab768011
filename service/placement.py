"""Which backend runs the models, on which device, and why: resolved once per process from
MODEL_BACKEND / MODEL_DEVICE and reported by GET /status.

| MODEL_BACKEND | MODEL_DEVICE | result |
|---|---|---|
| auto (default) | auto (default) | usable GPU: AUTO_BACKEND["cuda"] on cuda, else AUTO_BACKEND["cpu"] |
| auto | cpu / cuda | AUTO_BACKEND of that device |
| onnx | auto | cuda when onnxruntime-gpu's CUDA provider and a GPU are both there, else cpu |
| torchscript, aoti (torch formats) | auto | cuda when torch sees a GPU, else cpu |
| any | cuda | cuda, or a start-up error (DeviceUnavailableError) naming what is missing |

The backends are the formats of models/formats.py; what each needs comes from its `runtime`. In an
environment without torch (the cpu container image), a torch format and `auto` + `cuda` stop
start-up with BackendUnavailableError naming the gpu image; `auto` on a GPU host falls back to onnx
on cpu there, saying why. `auto` is a choice made in the open (the reason is in /status and the
log); an explicit `cuda` that cannot be honoured is an error, never a silent fallback. The ONNX path
decides without importing torch: GPUs are found through NVML (models.device.nvidia_gpus).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass
from functools import cache

from models.device import DeviceUnavailableError, nvidia_gpus, onnx_cuda_provider
from models.formats import FORMATS

logger = logging.getLogger(__name__)

# What `auto` picks on each device (BENCHMARKS.md: ONNX Runtime is the faster of the two on CPU; on a
# GPU the torch backend runs the model under torch.inference_mode without onnxruntime-gpu).
AUTO_BACKEND = {"cpu": "onnx", "cuda": "torchscript"}


@dataclass(frozen=True)
class Placement:
    backend: str  # a format of models/formats.py
    device: str  # cpu | cuda
    reason: str
    gpu: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class BackendUnavailableError(RuntimeError):
    """The backend asked for needs a library this environment (image) does not have."""


# The container images (bentofile.yaml: cpu; deploy/container/gpu_bentofile.py derives the gpu one)
# differ in what they install:
# the cpu image has ONNX Runtime and no torch. A backend that needs torch there is a start-up error
# that names the image to use.
TORCH_MISSING = (
    "torch is not installed here (the cpu image, bentofile.yaml, ships ONNX Runtime only): use "
    "MODEL_BACKEND=onnx, or the gpu image (`make container-gpu`), which has torch"
)


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def torch_cuda() -> tuple[str | None, str]:
    """(name of the GPU torch would use, or None; why not)."""
    if not has_torch():
        return None, "torch is not installed (cpu image)"
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0), ""
    return None, f"torch {torch.__version__} (CUDA build {torch.version.cuda}) cannot use it"


def choose(backend: str, device: str) -> Placement:
    """Resolve MODEL_BACKEND / MODEL_DEVICE; raises DeviceUnavailableError for a `cuda` that cannot be had."""
    if backend == "auto":
        if device == "cpu":
            return Placement(
                AUTO_BACKEND["cpu"], "cpu", f"auto: MODEL_DEVICE=cpu -> {AUTO_BACKEND['cpu']} on cpu"
            )
        gpus, why_none = nvidia_gpus()
        if device == "auto" and not gpus:
            return Placement(
                AUTO_BACKEND["cpu"], "cpu", f"auto: no GPU ({why_none}) -> {AUTO_BACKEND['cpu']} on cpu"
            )
        if device == "cuda" and not has_torch():
            raise BackendUnavailableError(f"MODEL_BACKEND=auto, MODEL_DEVICE=cuda: {TORCH_MISSING}")
        gpu, why_not = torch_cuda()
        if gpu is None:
            if device == "cuda":
                raise DeviceUnavailableError(f"MODEL_DEVICE=cuda: {why_not}; use MODEL_DEVICE=cpu or auto")
            return Placement(
                AUTO_BACKEND["cpu"],
                "cpu",
                f"auto: {gpus[0]} present but {why_not} -> {AUTO_BACKEND['cpu']} on cpu",
            )
        return Placement(
            AUTO_BACKEND["cuda"], "cuda", f"auto: {gpu} present -> {AUTO_BACKEND['cuda']} on cuda", gpu
        )
    if backend not in FORMATS:
        raise ValueError(f"unknown backend {backend!r}; known: auto, {', '.join(FORMATS)}")
    if FORMATS[backend].runtime == "torch":
        if not has_torch():
            raise BackendUnavailableError(f"MODEL_BACKEND={backend}: {TORCH_MISSING}")
        if device == "cpu":
            return Placement(backend, "cpu", f"MODEL_BACKEND={backend}, MODEL_DEVICE=cpu")
        gpu, why_not = torch_cuda()
        if gpu is None:
            if device == "cuda":
                raise DeviceUnavailableError(
                    f"MODEL_DEVICE=cuda with MODEL_BACKEND={backend}: {why_not}; use MODEL_DEVICE=cpu or auto"
                )
            return Placement(backend, "cpu", f"{backend}, MODEL_DEVICE=auto: {why_not} -> cpu")
        return Placement(backend, "cuda", f"{backend}, MODEL_DEVICE={device}: {gpu} -> cuda", gpu)
    # onnxruntime
    if device == "cpu":
        return Placement(backend, "cpu", f"MODEL_BACKEND={backend}, MODEL_DEVICE=cpu")
    gpus, why_none = nvidia_gpus()
    has_provider, why_no_provider = onnx_cuda_provider() if gpus or device == "cuda" else (False, "")
    if gpus and has_provider:
        return Placement(backend, "cuda", f"{backend}, MODEL_DEVICE={device}: {gpus[0]} -> cuda", gpus[0])
    missing = why_none if not gpus else why_no_provider
    if device == "cuda":
        raise DeviceUnavailableError(
            f"MODEL_DEVICE=cuda with MODEL_BACKEND={backend} needs a GPU and onnxruntime-gpu: {missing}; "
            "use MODEL_DEVICE=cpu or auto on this machine"
        )
    return Placement(backend, "cpu", f"{backend}, MODEL_DEVICE=auto: {missing} -> cpu")


@cache
def resolve(backend: str, device: str) -> Placement:
    """`choose`, once per process (every worker resolves the same settings the same way)."""
    placement = choose(backend, device)
    logger.info("placement: %s", placement.reason)
    return placement
