"""Short, real headless Locust runs against real servers: the report is produced, every request
succeeded and every response was checked; a combination that cannot start is recorded and the sweep
goes on; distributed Locust (--processes) runs; a missing dataset stops the runner with one line.
Bounded: a few seconds per run, 127.0.0.1 only."""

import argparse
import json

import pytest

from loadtests.run import ENDPOINTS, combo_list, main
from models.device import available_cpus


def test_short_headless_run_produces_a_checked_report(smoke_models, tmp_path, monkeypatch):
    # The GPU is hidden, so the cuda combination cannot start whatever the machine: it is recorded in
    # the report with its error, and the cpu runs still happen.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("HOUSING_MODEL", smoke_models["housing_mlp"]["tag"])
    monkeypatch.setenv("MNIST_MODEL", smoke_models["mnist_cnn"]["tag"])
    report = main([
        "--devices", "cuda,cpu", "--backends", "onnx", "--workers", "2", "--users", "2", "--duration", "4",
        "--endpoints", ",".join(ENDPOINTS), "--out", str(tmp_path),
    ])  # fmt: skip
    text = report.read_text()
    assert (
        "- ours/cuda/onnx/workers=2: failed to start: error: MODEL_DEVICE=cuda with MODEL_BACKEND=onnx"
        in text
    )
    assert text.count("| server | device | backend | workers | items_per_request | users |") == len(ENDPOINTS)
    assert "## Open Inference Protocol vs the JSON endpoints" in text and "latency_split.png" in text
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == len(ENDPOINTS)
    for row in results:
        assert (row["device"], row["workers"]) == ("cpu", 2)
        assert row["requests"] > 0 and row["failures"] == 0, row
        assert row["checked"] >= row["requests"], row
        prefix = tmp_path / f"ours-cpu-onnx-w2-{row['endpoint']}-u2"
        assert prefix.with_suffix(".html").exists() and (tmp_path / f"{prefix.name}-resources.csv").exists()
        assert row["rss_mb"] > 0 and (tmp_path / f"{row['endpoint']}.png").exists()
        # CPU over the seconds the load ran: together at most what the machine's CPUs can give.
        assert 1 <= row["load_seconds"] <= 6, row
        assert 0 < row["server_cpu_pct"] and 0 < row["generator_cpu_pct"], row
        assert row["server_cpu_pct"] + row["generator_cpu_pct"] <= 110 * available_cpus(), row
        # every answer said where its time went (Server-Timing): queue and compute, the rest outside
        assert row["queue_ms"] >= 0 and row["compute_ms"] > 0, row
    batched = {r["endpoint"]: r["mean_batch"] for r in results}
    assert all(batched[e] >= 1 for e in ENDPOINTS if e != "classify_digit_image"), batched


def test_distributed_locust_runs_exact_combinations_and_sizes(smoke_models, tmp_path, monkeypatch):
    """Distributed Locust; --combos starts exactly the combinations named, and each server start runs
    every request size asked for (a section per size in the report)."""
    monkeypatch.setenv("HOUSING_MODEL", smoke_models["housing_mlp"]["tag"])
    monkeypatch.setenv("MNIST_MODEL", smoke_models["mnist_cnn"]["tag"])
    report = main([
        "--combos", "cpu/onnx/1", "--users", "4", "--duration", "5", "--processes", "2",
        "--endpoints", "predict_housing", "--housing-rows", "1,3", "--out", str(tmp_path),
    ])  # fmt: skip
    row, row3 = json.loads((tmp_path / "results.json").read_text())
    assert (row3["items_per_request"], row3["workers"], row3["backend"]) == (3, 1, "onnx"), row3
    assert row3["requests"] > 0 and row3["failures"] == 0 and row3["items_per_s"] == 3 * row3["rps"], row3
    assert "## predict_housing-x3" in report.read_text() and (tmp_path / "predict_housing-x3.png").exists()
    assert row["items_per_request"] == 1 and row["requests"] > 0 and row["failures"] == 0, row
    # Both Locust worker processes sent requests and checked their answers.
    checks = sorted(tmp_path.glob("ours-cpu-onnx-w1-predict_housing-u4-checks-*.json"))
    counts = [json.loads(p.read_text())["checked"].get("predict_housing", 0) for p in checks]
    assert len([c for c in counts if c > 0]) == 2, counts
    assert sum(counts) >= row["requests"] and 3 <= row["load_seconds"] <= 8, row


def test_a_combination_is_device_backend_and_optional_workers():
    assert combo_list("cpu/onnx,cuda/aoti/4") == [("cpu", "onnx", 0), ("cuda", "aoti", 4)]
    for bad in ("cpu", "tpu/onnx", "cpu/tensorrt", "cpu/onnx/four"):
        with pytest.raises(argparse.ArgumentTypeError, match="device/backend|workers"):
            combo_list(bad)


def test_missing_datasets_stop_the_runner_with_one_line(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "r")])
    message = str(exc.value)
    assert message.startswith("error: the request bodies come from the test splits: California Housing not")
    assert "\n" not in message
