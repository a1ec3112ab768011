"""Where the models run (service/placement.py) and how many workers start (models.device): the real
functions, on this machine, with the GPUs hidden through CUDA_VISIBLE_DEVICES where a test needs none
(so they pass on a GPU machine too), and CPU limits set with the kernel's own affinity mask."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from loadtests.server import REPO
from models.device import (
    DeviceUnavailableError,
    available_cpus,
    available_memory,
    cgroup_cpu_quota,
    cgroup_memory_limit,
)
from service.placement import choose


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def test_auto_without_a_gpu_is_onnx_on_cpu_and_says_why(no_gpu):
    p = choose("auto", "auto")
    assert (p.backend, p.device, p.gpu) == ("onnx", "cpu", None)
    assert p.reason == "auto: no GPU (CUDA_VISIBLE_DEVICES='' hides every GPU) -> onnx on cpu"


def test_auto_on_cpu_is_onnx():
    p = choose("auto", "cpu")
    assert (p.backend, p.device) == ("onnx", "cpu") and "MODEL_DEVICE=cpu" in p.reason


def test_explicit_backends_on_cpu():
    assert (choose("onnx", "cpu").backend, choose("onnx", "cpu").device) == ("onnx", "cpu")
    assert (choose("torchscript", "cpu").backend, choose("torchscript", "cpu").device) == (
        "torchscript",
        "cpu",
    )


def test_onnx_auto_without_a_gpu_stays_on_cpu_and_says_why(no_gpu):
    p = choose("onnx", "auto")
    assert p.device == "cpu" and "hides every GPU" in p.reason


@pytest.mark.parametrize("backend", ["auto", "onnx"])
def test_cuda_that_cannot_be_had_is_an_error_not_a_fallback(no_gpu, backend):
    with pytest.raises(DeviceUnavailableError, match="MODEL_DEVICE=cuda"):
        choose(backend, "cuda")


def _in_subprocess(code: str, env: dict | None = None, cpus: set[int] | None = None) -> str:
    """Run code in a fresh interpreter (torch reads CUDA_VISIBLE_DEVICES once per process), optionally
    pinned to `cpus` with the kernel's affinity mask (as `taskset` does)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    ).stdout.strip()


def test_torchscript_cuda_without_a_gpu_is_an_error():
    code = (
        "from service.placement import choose\n"
        "try:\n    choose('torchscript', 'cuda')\nexcept Exception as e:\n    print(type(e).__name__, e)"
    )
    out = _in_subprocess(code, {"CUDA_VISIBLE_DEVICES": ""})
    assert out.startswith("DeviceUnavailableError MODEL_DEVICE=cuda with MODEL_BACKEND=torchscript"), out


def test_worker_count_follows_the_cpu_affinity_mask():
    """WORKERS=0 means one worker per CPU this process may use: pinned to one CPU, one worker with one
    intra-op thread, whatever the host has."""
    code = "from service.settings import ServiceSettings as S; s = S(); print(s.worker_count(), s.threads_per_worker())"  # noqa: E501
    first = min(os.sched_getaffinity(0))
    assert _in_subprocess(code, {"WORKERS": "0", "INTRA_OP_THREADS": "0"}, cpus={first}) == "1 1"
    full = available_cpus()
    assert _in_subprocess(code, {"WORKERS": "0", "INTRA_OP_THREADS": "0"}) == f"{full} 1"


def _cgroup(tmp_path, proc_line: str, files: dict[str, str]):
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(proc_line + "\n")
    for rel, text in files.items():
        path = tmp_path / "cgroup" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "cgroup", proc


@pytest.mark.parametrize(
    ("proc_line", "files", "expected"),
    [
        # `docker run --cpus 2` writes "200000 100000" to the container's cpu.max (cgroup v2)
        ("0::/", {"cpu.max": "200000 100000\n"}, 2.0),
        # the tightest quota on the path from the process's cgroup up to the root wins
        (
            "0::/kubepods/pod1/ctr",
            {"cpu.max": "max 100000\n", "kubepods/cpu.max": "800000 100000\n",
             "kubepods/pod1/ctr/cpu.max": "150000 100000\n"},
            1.5,
        ),
        # cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us in the cpu controller's hierarchy
        (
            "4:cpu,cpuacct:/docker/abc",
            {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
             "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"},
            3.0,
        ),
        ("0::/", {"cpu.max": "max 100000\n"}, None),  # no quota
    ],
    ids=["v2-container", "v2-tightest-on-path", "v1", "no-quota"],
)  # fmt: skip
def test_cgroup_cpu_quota(tmp_path, proc_line, files, expected):
    root, proc = _cgroup(tmp_path, proc_line, files)
    assert cgroup_cpu_quota(root, proc) == expected


@pytest.mark.parametrize(
    ("proc_line", "files", "expected"),
    [
        ("0::/", {"memory.max": "2147483648\n"}, 2 << 30),  # `docker run --memory 2g` (cgroup v2)
        (
            "0::/kubepods/pod1/ctr",
            {"memory.max": "max\n", "kubepods/memory.max": "8589934592\n",
             "kubepods/pod1/ctr/memory.max": "1073741824\n"},
            1 << 30,
        ),
        ("5:memory:/docker/abc", {"memory/docker/abc/memory.limit_in_bytes": "536870912\n"}, 512 << 20),  # v1
        ("5:memory:/", {"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1: no limit
        ("0::/", {"memory.max": "max\n"}, None),
    ],
    ids=["v2-container", "v2-tightest-on-path", "v1", "v1-unlimited", "no-limit"],
)  # fmt: skip
def test_cgroup_memory_limit(tmp_path, proc_line, files, expected):
    root, proc = _cgroup(tmp_path, proc_line, files)
    assert cgroup_memory_limit(root, proc) == expected


def test_inflight_byte_budget_follows_the_memory_a_worker_has():
    """MAX_INFLIGHT_BYTES=0 (default): a quarter of the memory this process may use, per worker."""
    from service.settings import ServiceSettings

    budget = ServiceSettings(workers=2, max_inflight_bytes=0).inflight_bytes_budget()
    assert budget == max(16 << 20, available_memory() // 4 // 2)
    assert ServiceSettings(max_inflight_bytes=1 << 20).inflight_bytes_budget() == 1 << 20
