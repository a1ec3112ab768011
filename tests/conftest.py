"""Shared fixtures. Every test run gets its own BENTOML_HOME (set before bentoml is imported)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from loadtests.server import REPO, Server

_BENTOML_HOME = tempfile.mkdtemp(prefix="bentoml-home-")
os.environ["BENTOML_HOME"] = _BENTOML_HOME
os.environ["BENTOML_DO_NOT_TRACK"] = "true"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets (DATA_DIR, default ./data as in the training scripts)."""
    from training.data import default_data_dir

    path = default_data_dir().resolve()
    if not (path / "cal_housing_py3.pkz").exists() or not (path / "MNIST" / "raw").is_dir():
        pytest.exit(
            f"the real datasets are not in {path}: set DATA_DIR (offline: DATA_DIR=../shared/datasets)",
            returncode=2,
        )
    return path


@pytest.fixture(scope="session")
def housing(data_dir):
    from training.data import load_housing

    return load_housing(data_dir, download=False)


@pytest.fixture(scope="session")
def mnist(data_dir):
    from training.data import load_mnist

    return load_mnist(data_dir, download=False)


def run_module(
    module: str, *args: str, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `python -m module args` from the repo root as a user would."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train(module: str, data_dir: Path, out_dir: Path, *flags: str) -> dict:
    """A training script run as a user runs it; returns its metrics.json (+ out_dir)."""
    import json

    proc = run_module(module, "--data-dir", str(data_dir), "--out-dir", str(out_dir), "--no-download", *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads((out_dir / "metrics.json").read_text()), "out_dir": out_dir}


def models_env(smoke_models: dict, **override: str) -> dict:
    """Server environment that serves the session's smoke-trained models (on the CPU unless overridden)."""
    tags = {f"MODELS__{name.upper()}__TAG": m["tag"] for name, m in smoke_models.items()}
    return {"MODEL_DEVICE": "cpu", **tags, **override}


def own_home(tmp_path_factory) -> dict:
    """Environment for a server that runs beside others: its own BENTOML_HOME, sharing the session's
    model store (a symlink). `bentoml serve` empties $BENTOML_HOME/prometheus_multiproc_dir when it
    starts, so two servers of one home would wipe each other's /metrics."""
    home = tmp_path_factory.mktemp("bentoml-home")
    (home / "models").symlink_to(Path(_BENTOML_HOME) / "models", target_is_directory=True)
    return {"BENTOML_HOME": str(home)}


@contextmanager
def server_pool(tmp_path_factory, env_of, prepare=None):
    """`get(backend)`: the server of a backend, started when asked for; one runs at a time (the one
    asked for before is stopped: with 16 workers a server of a torch format holds ~20 GB), each with
    its own home (`own_home`). `env_of(backend)`: its environment; `prepare(server)`: run on each new
    server. Tests that ask for the backends in order (module-scoped `format_server`) start each once."""
    running: dict[str, Server] = {}

    def get(backend: str) -> Server:
        if backend not in running:
            for server in running.values():
                server.stop()
            running.clear()
            server = running[backend] = Server({**own_home(tmp_path_factory), **env_of(backend)})
            server.backend = backend
            if prepare is not None:
                prepare(server)
        return running[backend]

    try:
        yield get
    finally:
        for server in running.values():
            server.stop()


@pytest.fixture(scope="session")
def smoke_models(data_dir, tmp_path_factory) -> dict:
    """Every model of the registry smoke-trained (its smoke_args) once per session and registered;
    {model name: metrics.json}."""
    from models import registry

    return {
        name: train(entry.training, data_dir, tmp_path_factory.mktemp(name), *entry.smoke_args)
        for name, entry in registry.models().items()
    }


def offline_outputs(tag: str, backend: str, spec, x: np.ndarray) -> np.ndarray:
    """The stored model file of the backend under test, run directly with its runtime (no server, not
    the service's backend classes)."""
    import bentoml
    import onnxruntime as ort
    import torch

    from models.formats import FORMATS

    path = Path(bentoml.models.get(tag).path) / FORMATS[backend].filename("cpu")
    if backend == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {spec.input_name: x})[0]
    module = (
        torch.jit.load(str(path))
        if backend == "torchscript"
        else torch._inductor.aoti_load_package(str(path))
    )
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="session")
def perf_analyzer() -> str:
    """Triton's perf_analyzer (scripts/perf_analyzer.sh), or a skip saying why it cannot be set up."""
    from loadtests.perf_analyzer import SCRIPT

    try:
        proc = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"perf_analyzer could not be set up here: {exc}")
    if "Perf Analyzer Version" not in proc.stdout + proc.stderr:  # (--version exits 1)
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"perf_analyzer could not be set up here: {last}")
    return str(SCRIPT)


def run_perf_analyzer(
    model: str, address: str, protocol: str, data: str, concurrency: tuple[int, ...]
) -> str:
    """perf_analyzer (set up by the `perf_analyzer` fixture), unchanged, at each concurrency (1 s windows):
    it finishes, every level counts requests, and its server-side columns (Triton's statistics of the
    server) are filled in."""
    import re

    from loadtests.perf_analyzer import command

    levels = f"{concurrency[0]}:{concurrency[-1]}:{max(1, concurrency[-1] - concurrency[0])}"
    cmd = [
        *command(address, model, protocol, data, levels, 1000),
        "--stability-percentage",
        "50",
        "--max-trials",
        "5",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for level in concurrency:
        assert f"Request concurrency: {level}" in out, out[-3000:]
    counts = [int(n) for n in re.findall(r"Successful request count: (\d+)", out)]
    assert len(counts) == len(concurrency) and min(counts) > 0, out[-3000:]
    latency = re.findall(r"compute infer (\d+) usec", out)
    assert len(latency) == len(concurrency) and all(int(v) > 0 for v in latency), out[-3000:]
    return out
