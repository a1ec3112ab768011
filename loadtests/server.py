"""Start and stop a real server process on 127.0.0.1 (used by the load-test runners and the tests):
`bentoml serve` of the service or of the stock-BentoML baseline, or uvicorn with the FastAPI baseline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
SERVICE = "service.app:ModelService"
SERVERS = {  # --servers of loadtests.run and loadtests.wrk
    "ours": SERVICE,
    "stock": "loadtests.stock_service:StockService",  # the same model.onnx files on stock BentoML
    "fastapi": "loadtests.fastapi_baseline:app",  # the same files behind plain FastAPI (uvicorn)
}


def serve_command(target: str, port: int) -> list[str]:
    """`bentoml serve <service>`, or uvicorn (its defaults: one process) for a plain ASGI app."""
    if target.endswith(":app"):
        return [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning"]  # fmt: skip
    return [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real server process on 127.0.0.1, stopped by its PID (process group) on exit. `repo`: the
    checkout it runs from (another one: the service as it was, for before/after measurements)."""

    def __init__(
        self,
        env: dict,
        startup_timeout: float = 180,
        target: str = SERVICE,
        port: int | None = None,
        repo: Path = REPO,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # the service's gRPC port (GRPC_PORT): a free one too, unless the environment names it; never
        # a port another server listens on (SO_REUSEPORT would make them share it)
        env = {"GRPC_PORT": str(free_port()), **env}
        self.grpc_port = int(env["GRPC_PORT"])
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.worker_pids: set[int] = set()  # workers seen answering /status while waiting for ready
        self.workers = 1  # the server's worker count, from /status once ready (the stock baseline: 1)
        token = env.get("API_TOKEN", os.environ.get("API_TOKEN"))
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}  # for /status
        self.log = tempfile.NamedTemporaryFile("w+", prefix="bentoml-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            serve_command(target, self.port),
            cwd=repo,
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"bentoml serve exited with {self.proc.returncode}:\n{self.output()[-4000:]}"
                )
            try:
                ready = requests.get(f"{self.url}/readyz", timeout=2).status_code == 200
                if ready and self._all_workers_up():
                    return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still starting
                pass
            time.sleep(0.5)
        raise RuntimeError(f"bentoml serve not ready in {timeout} s:\n{self.output()[-4000:]}")

    def _all_workers_up(self) -> bool:
        """/readyz answers from any ready worker; with several workers, also see every one of them answer
        /status (so that a load test does not start while one is still loading). Each call opens a
        batch of fresh connections at once (the kernel spreads them over the workers' SO_REUSEPORT
        sockets) and the PIDs seen add up across calls, so 16 workers are found as surely as 2.
        Servers without /status (the baselines) have one worker."""

        def status() -> requests.Response:
            headers = {"Connection": "close", **self.headers}
            return requests.get(f"{self.url}/status", headers=headers, timeout=5)

        first = status()
        if first.status_code == 404:
            return True
        expected = self.workers = first.json()["workers"]
        self.worker_pids.add(first.json()["worker"]["pid"])
        with ThreadPoolExecutor(min(32, 2 * expected)) as pool:
            for r in pool.map(lambda _: status(), range(2 * expected)):
                if r.status_code == 200:
                    self.worker_pids.add(r.json()["worker"]["pid"])
        return len(self.worker_pids) >= expected

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
