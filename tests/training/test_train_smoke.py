"""Smoke training runs exactly as a user starts them; the registered model must be usable."""

import json

import bentoml
import numpy as np
import onnxruntime as ort
import pytest

from models.specs import HOUSING, MNIST, ONNX_FILE, TORCHSCRIPT_FILE
from tests.conftest import run_module


def _run(module, data_dir, out_dir, *flags):
    proc = run_module(module, "--data-dir", str(data_dir), "--out-dir", str(out_dir), "--no-download", *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out_dir / "metrics.json").read_text())


def _stored(tag: str):
    model = bentoml.models.get(tag)
    assert model.path_of(ONNX_FILE) and model.path_of(TORCHSCRIPT_FILE)
    return model


def test_housing_smoke_run_registers_a_usable_model(data_dir, housing, tmp_path):
    summary = _run("training.housing", data_dir, tmp_path, "--epochs", "2", "--limit", "2000")
    for png in ("loss_curves.png", "predicted_vs_true.png"):
        assert (tmp_path / png).stat().st_size > 10_000
    model = _stored(summary["tag"])
    meta = model.info.metadata
    assert meta["test_rmse"] == pytest.approx(summary["test_rmse"])
    assert {"test_mae", "test_r2", "split", "io", "parity", "versions", "config"} <= set(meta)
    assert meta["io"]["input"] == {"name": "features", "shape": [-1, 8], "dtype": "float32"}
    assert meta["training"]["limit"] == 2000
    # the stored ONNX file, fed the raw test split, reproduces the stored metric
    session = ort.InferenceSession(model.path_of(ONNX_FILE), providers=["CPUExecutionProvider"])
    pred = session.run(None, {HOUSING.input_name: housing.test.x})[0][:, 0]
    rmse = float(np.sqrt(np.mean((pred.astype(np.float64) - housing.test.y) ** 2)))
    assert rmse == pytest.approx(meta["test_rmse"], rel=1e-4)
    # a second run is a new version of the same model
    summary2 = _run("training.housing", data_dir, tmp_path / "again", "--epochs", "1", "--limit", "500")
    assert summary2["tag"] != summary["tag"]
    assert bentoml.models.get(f"{HOUSING.name}:latest").tag == bentoml.models.get(summary2["tag"]).tag


def test_mnist_smoke_run_registers_a_usable_model(data_dir, mnist, tmp_path):
    summary = _run("training.mnist", data_dir, tmp_path, "--epochs", "1", "--limit", "2000")
    for png in ("loss_curves.png", "confusion_matrix.png"):
        assert (tmp_path / png).stat().st_size > 10_000
    model = _stored(summary["tag"])
    meta = model.info.metadata
    assert meta["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert meta["test_accuracy"] > 0.5  # 1 epoch on 2,000 images: far above chance (0.1)
    assert np.array(meta["confusion_matrix"]).sum() == 10000
    session = ort.InferenceSession(model.path_of(ONNX_FILE), providers=["CPUExecutionProvider"])
    logits = np.concatenate(
        [session.run(None, {MNIST.input_name: mnist.test.x[i : i + 2000]})[0] for i in range(0, 10000, 2000)]
    )
    assert float((logits.argmax(1) == mnist.test.y).mean()) == meta["test_accuracy"]
