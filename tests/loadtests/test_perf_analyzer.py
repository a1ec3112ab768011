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
    run_perf_analyzer(model, address, protocol, data, concurrency=(1, 4))


def test_the_comparison_runner_writes_a_row_per_run(perf_analyzer, server, tmp_path):
    """loadtests.perf_analyzer (BENCHMARKS.md's perf_analyzer tables): one row per (server, model,
    protocol, data, concurrency) from perf_analyzer's own CSV, the server-side split filled in."""
    import json

    from loadtests import perf_analyzer as runner

    target = f"ours={server.url.removeprefix('http://')},{server.grpc_address}"
    code = runner.main([
        "--target", target, "--models", "digits_mlp", "--protocols", "http,grpc", "--data", "random",
        "--concurrency", "2", "--window-ms", "1000", "--out", str(tmp_path),
    ])  # fmt: skip
    rows = json.loads((tmp_path / "perf_analyzer.json").read_text())
    assert code == 0 and [r["protocol"] for r in rows] == ["http", "grpc"], rows
    assert all(r["infer_per_s"] > 0 and r["server_infer_us"] > 0 and r["p99_us"] >= r["p50_us"] for r in rows)
    assert (tmp_path / "perf_analyzer.md").read_text().count("| ours | digits_mlp |") == 2
