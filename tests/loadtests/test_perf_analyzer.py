"""Triton's perf_analyzer, unchanged (scripts/perf_analyzer.sh), against a real `bentoml serve`: both
models, over HTTP and gRPC, with its default random data and with zeros; every run finishes and its
server-side columns are filled in (Triton's statistics of the server, summed over its workers).
Skipped, saying why, where the tool cannot be set up (no PyPI / Debian archive, not x86-64 Linux)."""

from __future__ import annotations

import pytest

from loadtests.server import Server
from tests.conftest import models_env, run_perf_analyzer


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
    run_perf_analyzer(perf_analyzer, model, address, protocol, data, concurrency=(1, 4))
