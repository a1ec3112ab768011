"""Parsing of Locust's CSV and BentoML's /metrics format, and the report writer."""

import math

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from loadtests.report import batch_histogram, locust_stats, mean_batch, write_report

LOCUST_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
    "99.99%,100%"
)


def test_locust_stats_reads_rows_by_name(tmp_path):
    path = tmp_path / "run_stats.csv"
    path.write_text(
        LOCUST_HEADER + "\n"
        "POST,predict_housing,1458,3,5,5.35,1.9,172.9,19.6,364.37,0.5,5,6,6,6,7,7,8,10,170,170,170\n"
        ",Aggregated,1458,3,5,5.35,1.9,172.9,19.6,364.37,0.5,5,6,6,6,7,7,8,10,170,170,170\n"
    )
    stats = locust_stats(path)
    assert list(stats) == ["predict_housing"]
    row = stats["predict_housing"]
    assert (row["requests"], row["failures"], row["rps"]) == (1458, 3, 364.37)
    assert (row["p50_ms"], row["p95_ms"], row["p99_ms"], row["max_ms"]) == (5, 7, 10, 172.9)


def _metrics_text(observations: dict[str, list[int]]) -> str:
    registry = CollectorRegistry()
    ours = Histogram(  # service/metrics.py
        "model_serving_batch_requests", "Requests per batch", ["model", "version"],
        registry=registry, buckets=(1, 2, 4, 8),
    )  # fmt: skip
    stock = Histogram(  # stock BentoML's adaptive batcher (the baseline server)
        "bentoml_service_adaptive_batch_size", "Service adaptive batch size", ["method_name", "worker_index"],
        registry=registry, buckets=(1, 2, 4, 8),
    )  # fmt: skip
    for key, values in observations.items():
        for v in values:
            if key.startswith("predict_") or key.startswith("classify_"):
                stock.labels(method_name=key, worker_index="1").observe(v)
            else:
                ours.labels(model=key, version="v1").observe(v)
    return generate_latest(registry).decode()


def test_mean_batch_from_two_metrics_scrapes():
    before = batch_histogram(_metrics_text({"housing_mlp": [1, 1], "predict_housing": [3]}))
    after = batch_histogram(
        _metrics_text({"housing_mlp": [1, 1, 4, 6], "mnist_cnn": [2], "predict_housing": [3, 5]})
    )
    assert before["housing_mlp"] == (2.0, 2.0)
    assert mean_batch(before, after, "housing_mlp") == 5.0  # (4 + 6) / 2 batches in between
    assert mean_batch(before, after, "mnist_cnn") == 2.0
    assert mean_batch(before, after, "predict_housing") == 5.0  # stock BentoML's, per API
    assert math.isnan(mean_batch(before, after, "classify_digit_image"))


def test_report_has_a_table_and_plot_per_endpoint(tmp_path):
    nan = float("nan")
    rows = [
        {"server": "ours", "device": "cpu", "backend": b, "workers": 2, "endpoint": e, "users": u,
         "rps": 100.0 * u, "items_per_s": 100.0 * u, "offline_pct": 10.0 * u,
         "p50_ms": 2.0 * u, "p95_ms": 3.0 * u, "p99_ms": 4.0 * u, "max_ms": 9.0 * u, "failures": 0,
         "mean_batch": nan if e == "classify_digit_image" else 1.5, "server_cpu_pct": 80.0,
         "generator_cpu_pct": 55.0, "gpu_util_pct": nan, "gpu_mem_mb": nan, "checked": 10, "rss_mb": 512.4,
         "rss_growth_pct": 1.25}
        for b in ("onnx", "torchscript") for e in ("predict_housing", "classify_digit_image") for u in (1, 8)
    ]  # fmt: skip
    report = write_report(rows, tmp_path, "# Load test report\n").read_text()
    assert report.count("| server | device | backend | workers | items_per_request | users |") == 2
    row = "| ours | cpu | torchscript | 2 | - | 8 | 800 | 800 | 80 | 16.0 | 24.0 | 32.0 | 72 | 0 | - "
    row += "| - | - | - | 80 | 55 | - | - | 10 | 512 | +1.2 |"  # queue, compute, other: - (no timing)
    assert row in report
    for endpoint in ("predict_housing", "classify_digit_image"):
        assert (tmp_path / f"{endpoint}.png").stat().st_size > 10_000
    assert (tmp_path / "results.json").exists()


def test_report_compares_v2_runs_with_the_json_endpoint_and_splits_latency(tmp_path):
    def run(endpoint: str, items_per_s: float, queue: float, compute: float) -> dict:
        return {
            "server": "ours", "device": "cpu", "backend": "onnx", "workers": 2, "endpoint": endpoint,
            "model": "mnist_cnn", "users": 32, "items_per_request": 64, "rps": items_per_s / 64,
            "items_per_s": items_per_s, "offline_pct": 50.0, "p50_ms": 9.0, "p95_ms": 10.0, "p99_ms": 12.0,
            "max_ms": 20.0, "failures": 0, "mean_batch": 1.0, "queue_ms": queue, "compute_ms": compute,
            "other_ms": 10.0 - queue - compute, "server_cpu_pct": 150.0, "generator_cpu_pct": 30.0,
            "gpu_util_pct": float("nan"), "gpu_mem_mb": float("nan"), "checked": 5, "rss_mb": 300.0,
            "rss_growth_pct": 0.0,
        }  # fmt: skip

    rows = [run("classify_digits", 3000.0, 1.0, 5.0), run("v2_mnist_binary", 4500.0, 2.0, 6.0)]
    report = write_report(rows, tmp_path, "# Load test report\n").read_text()
    assert "## Open Inference Protocol vs the JSON endpoints" in report
    v2 = "| mnist_cnn | 64 | 32 | ours/cpu/onnx | v2_mnist_binary | 4,500 | 1.50x | 9.0 | 12.0 "
    v2 += "| 2.00 | 6.00 | 2.00 |"  # queue, compute, other
    assert v2 in report
    assert "| mnist_cnn | 64 | 32 | ours/cpu/onnx | classify_digits | 3,000 | 1.00x |" in report
    assert (tmp_path / "latency_split.png").stat().st_size > 10_000
