import json

from loadtests.offline import batches, main
from models import registry


def test_offline_benchmark_measures_every_model_and_batch_size(smoke_models, tmp_path):
    out = tmp_path / "offline.json"
    results = main(["--backends", "onnx,torchscript", "--seconds", "0.05", "--out", str(out)])
    assert json.loads(out.read_text()) == results
    expected = {(b, m, n) for b in ("onnx", "torchscript") for m in registry.models() for n in batches(m)}
    assert {(r["backend"], r["model"], r["batch"]) for r in results} == expected
    assert all(r["items_per_s"] > 0 and r["ms_per_batch"] > 0 for r in results)
