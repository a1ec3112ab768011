"""The registry of models (models/registry.py): a model added in the tests alone (tests/training/
sum_model.py, through MODEL_PLUGINS) goes through training, export, parity, registration, serving over
JSON and V2, and a load-test run; a stored version is re-exported from its checkpoint without
retraining."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests

from loadtests.protocol import v2_body, v2_output
from loadtests.server import Server
from models import registry
from tests.conftest import models_env, run_module
from tests.training import sum_model

PLUGIN = {registry.PLUGINS_ENV: "tests.training.sum_model:ENTRY"}


@pytest.fixture
def with_plugin(monkeypatch):
    monkeypatch.setenv(registry.PLUGINS_ENV, PLUGIN[registry.PLUGINS_ENV])
    registry.models.cache_clear()
    yield registry.get(sum_model.SPEC.name)
    monkeypatch.delenv(registry.PLUGINS_ENV)
    registry.models.cache_clear()


def test_a_model_added_in_a_test_is_trained_served_and_load_tested(smoke_models, with_plugin, tmp_path):
    import bentoml

    # training, export in every format, parity gate, registration: the generic entry point
    proc = run_module("training", "sum_linear", "--out-dir", str(tmp_path / "run"), *with_plugin.smoke_args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_rmse"] < 0.05, metrics  # it learned the sum
    stored = bentoml.models.get(metrics["tag"])
    assert set(stored.info.metadata["formats"]) == {"onnx", "torchscript", "aoti"}
    assert max(max(e.values()) for e in stored.info.metadata["parity"]["max_abs_error"].values()) < 1e-4
    assert (Path(stored.path) / registry.WEIGHTS_FILE).is_file()

    # served over JSON and V2 beside the built-in models, answers equal to the model's own
    x = sum_model.load_sums().test.x[:5]
    expected = x @ np.array(sum_model.WEIGHTS, dtype=np.float32) + sum_model.BIAS
    env = {**PLUGIN, **models_env(smoke_models, WORKERS="1"), "MODELS__SUM_LINEAR__TAG": metrics["tag"]}
    with Server(env) as server:
        got = requests.post(f"{server.url}/predict_sum", json={"x": x.tolist()}, timeout=10)
        assert got.status_code == 200 and np.allclose(got.json(), expected, atol=0.05), got.text
        bad = requests.post(f"{server.url}/predict_sum", json={"x": [[1, 2, 3]]}, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"] == "1 validation error for Input", bad.text
        body, headers = v2_body("x", x, "y", binary=True)
        r = requests.post(f"{server.url}/v2/models/sum_linear/infer", data=body, headers=headers, timeout=10)
        assert r.status_code == 200 and np.allclose(
            v2_output(r.content, r.headers, "y")[:, 0], expected, atol=0.05
        )
        status = requests.get(f"{server.url}/status", timeout=10).json()["models"]["sum_linear"]
        assert status["tag"] == metrics["tag"] and status["batching"]["max_batch_size"] == 64, status

    # one load-test run: its Locust user, generated from the registry, checks every answer
    out = tmp_path / "load"
    proc = run_module(
        "loadtests.run", "--combos", "cpu/onnx/1", "--endpoints", "predict_sum,v2_sum_linear_binary",
        "--items", "4", "--users", "2", "--duration", "3", "--out", str(out),
        env={**env, "WORKERS": "1"}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads((out / "results.json").read_text())
    assert {r["endpoint"] for r in rows} == {"predict_sum", "v2_sum_linear_binary"}
    for row in rows:
        assert row["requests"] > 0 and row["failures"] == 0 and row["items_per_request"] == 4, row


def test_a_stored_version_is_re_exported_from_its_checkpoint(smoke_models, tmp_path):
    """`python -m training.export MODEL:VERSION` rebuilds the network from the stored weights and
    config, exports, passes the parity gate and registers a new version naming its parent, with its
    metrics; a version without a checkpoint says to retrain."""
    import bentoml

    parent = bentoml.models.get(smoke_models["digits_mlp"]["tag"])
    proc = run_module("training.export", str(parent.tag), "--formats", "onnx,torchscript")
    assert proc.returncode == 0, proc.stderr[-3000:]
    tag = proc.stdout.strip().splitlines()[-1].split()[1]
    child = bentoml.models.get(tag)
    assert child.tag != parent.tag and child.tag.name == "digits_mlp"
    meta = child.info.metadata
    assert meta["parent"] == {"tag": str(parent.tag), "formats": sorted(parent.info.metadata["formats"])}
    assert meta["test_accuracy"] == parent.info.metadata["test_accuracy"]
    assert (
        meta["config"] == parent.info.metadata["config"]
        and meta["training"] == parent.info.metadata["training"]
    )
    # the formats named are exported anew, the parent's others (AOTInductor here) kept byte for byte;
    # the parity gate ran on all of them
    assert set(meta["formats"]) == set(parent.info.metadata["formats"]) == {"onnx", "torchscript", "aoti"}
    assert set(meta["parity"]["max_abs_error"]) == {"onnx", "torchscript", "aoti"}
    kept = "model.cpu.pt2"
    assert meta["files"][kept] == parent.info.metadata["files"][kept]
    assert (Path(child.path) / kept).read_bytes() == (Path(parent.path) / kept).read_bytes()
    # the same network: the re-exported graph answers as the parent's
    import onnxruntime as ort

    x = registry.get("digits_mlp").load_test(None).x[:20]
    outs = [
        ort.InferenceSession(str(Path(m.path) / "model.onnx")).run(None, {"images": x})[0]
        for m in (parent, child)
    ]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
    assert (
        registry.reexport_command(str(child.tag), child.path, "x") == f"python -m training.export {child.tag}"
    )

    # a version registered before checkpoints were stored: one line, retrain
    with bentoml.models.create("digits_mlp", metadata=dict(parent.info.metadata)) as old:
        for f in Path(parent.path).iterdir():
            if f.is_file() and f.name not in ("model.yaml", registry.WEIGHTS_FILE):
                shutil.copy(f, old.path)
    proc = run_module("training.export", str(old.tag))
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"error: {old.tag} was registered without its checkpoint ({registry.WEIGHTS_FILE}); retrain it with "
        "`python -m training.digits`"
    )
    assert registry.reexport_command(str(old.tag), old.path, "python -m training.digits") == (
        "python -m training.digits"
    )
