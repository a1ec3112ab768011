"""A short, real headless Locust run against a real server: the report is produced, every request
succeeded and every response was checked. Bounded: a few seconds per run, 127.0.0.1 only."""

import json

from loadtests.run import main


def test_short_headless_run_produces_a_checked_report(smoke_models, tmp_path):
    report = main([
        "--backends", "onnx", "--users", "2", "--duration", "3",
        "--endpoints", "predict_housing,classify_digits,classify_digit_image", "--out", str(tmp_path),
    ])  # fmt: skip
    text = report.read_text()
    assert text.count("| server | device | backend | users |") == 3
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == 3
    for row in results:
        assert row["requests"] > 0 and row["failures"] == 0, row
        assert row["checked"] >= row["requests"], row
        assert (tmp_path / f"ours-cpu-onnx-{row['endpoint']}-u2.html").exists()
        assert row["rss_mb"] > 0 and (tmp_path / f"ours-cpu-onnx-{row['endpoint']}-u2-memory.csv").exists()
        assert (tmp_path / f"{row['endpoint']}.png").exists()
    batched = {r["endpoint"]: r["mean_batch"] for r in results}
    assert batched["predict_housing"] >= 1 and batched["classify_digits"] >= 1
