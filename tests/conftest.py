"""Shared fixtures. Every test run gets its own BENTOML_HOME (set before bentoml is imported)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_BENTOML_HOME = tempfile.mkdtemp(prefix="bentoml-home-")
os.environ["BENTOML_HOME"] = _BENTOML_HOME
os.environ["BENTOML_DO_NOT_TRACK"] = "true"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets (DATA_DIR, default ./data as in the training scripts)."""
    path = Path(os.environ.get("DATA_DIR", "data")).resolve()
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(module: str, data_dir: Path, out_dir: Path, *flags: str) -> dict:
    """A training script run as a user runs it; returns its metrics.json (+ out_dir)."""
    import json

    proc = run_module(module, "--data-dir", str(data_dir), "--out-dir", str(out_dir), "--no-download", *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads((out_dir / "metrics.json").read_text()), "out_dir": out_dir}


@pytest.fixture(scope="session")
def smoke_models(data_dir, tmp_path_factory) -> dict:
    """Both models smoke-trained once per session and registered; {model name: metrics.json}."""
    return {
        "housing_mlp": train(
            "training.housing", data_dir, tmp_path_factory.mktemp("h"), "--epochs", "2", "--limit", "2000"
        ),
        "mnist_cnn": train(
            "training.mnist", data_dir, tmp_path_factory.mktemp("m"), "--epochs", "1", "--limit", "2000"
        ),
    }


class Server:
    """A real `bentoml serve` process on 127.0.0.1, stopped by its PID (process group) on exit."""

    def __init__(self, env: dict, startup_timeout: float = 180) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="bentoml-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bentoml",
                "serve",
                "service.service:ModelService",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        import time

        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"bentoml serve exited with {self.proc.returncode}:\n{self.output()[-4000:]}"
                )
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still starting
                pass
            time.sleep(0.5)
        raise RuntimeError(f"bentoml serve not ready in {timeout} s:\n{self.output()[-4000:]}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
