"""Triton's perf_analyzer, unchanged (scripts/perf_analyzer.sh), against a real `bentoml serve`: both
models, over HTTP and gRPC, with its default random data and with zeros; every run finishes and its
server-side columns are filled in (Triton's statistics of the server, summed over its workers).
Skipped, saying why, where the tool cannot be set up (no PyPI / Debian archive, not x86-64 Linux)."""

from __future__ import annotations

import re
import subprocess

import pytest

from loadtests.server import REPO, Server
from tests.conftest import models_env

SCRIPT = REPO / "scripts" / "perf_analyzer.sh"


@pytest.fixture(scope="module")
def perf_analyzer() -> str:
    try:
        proc = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"perf_analyzer could not be set up here: {exc}")
    if "Perf Analyzer Version" not in proc.stdout + proc.stderr:  # (--version exits 1)
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"perf_analyzer could not be set up here: {last}")
    return str(SCRIPT)


@pytest.fixture(scope="module")
def server(smoke_models):
    with Server(models_env(smoke_models, WORKERS="2")) as srv:
        yield srv


@pytest.mark.parametrize(
    "model, protocol, data",
    [
        ("housing_mlp", "http", "random"),
        ("mnist_cnn", "http", "zero"),
        ("housing_mlp", "grpc", "zero"),
        ("mnist_cnn", "grpc", "random"),
    ],
)
def test_perf_analyzer_runs_unchanged_with_server_side_statistics(
    perf_analyzer, server, model, protocol, data
):
    address = server.grpc_address if protocol == "grpc" else server.url.removeprefix("http://")
    cmd = [
        perf_analyzer, "-m", model, "-u", address, "-i", protocol, "--concurrency-range", "1:4:3",
        "--measurement-interval", "1000", "--stability-percentage", "50", "--max-trials", "5",
    ]  # fmt: skip
    if data == "zero":
        cmd += ["--input-data", "zero"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for concurrency in (1, 4):
        assert f"Request concurrency: {concurrency}" in out, out[-3000:]
    counts = [int(n) for n in re.findall(r"Successful request count: (\d+)", out)]
    assert len(counts) == 2 and min(counts) > 0, out[-3000:]
    # the server-side split Triton reports (queue, compute input/infer/output), filled in
    latency = re.findall(r"compute infer (\d+) usec", out)
    assert len(latency) == 2 and all(int(v) > 0 for v in latency), out[-3000:]
