"""Smoke training runs exactly as a user starts them; the registered model must be usable."""

from pathlib import Path

import bentoml
import numpy as np
import onnxruntime as ort
import pytest

from models.formats import FORMATS
from models.integrity import sha256
from models.specs import HOUSING, MNIST
from tests.conftest import train


def _stored(tag: str):
    """The registered model: every format of the registry is in it (the metadata says which file for
    which device), each with the sha256 the service checks at load."""
    model = bentoml.models.get(tag)
    formats = model.info.metadata["formats"]
    assert set(formats) == set(FORMATS)
    assert formats["aoti"]["files"]["cpu"] == "model.cpu.pt2"
    for name in {f for entry in formats.values() for f in entry["files"].values()}:
        path = Path(model.path_of(name))
        assert model.info.metadata["files"][name] == {"sha256": sha256(path), "bytes": path.stat().st_size}
    return model


def test_housing_smoke_run_registers_a_usable_model(data_dir, housing, smoke_models, tmp_path):
    summary = smoke_models["housing_mlp"]
    for png in ("loss_curves.png", "predicted_vs_true.png"):
        assert (summary["out_dir"] / png).stat().st_size > 10_000
    model = _stored(summary["tag"])
    meta = model.info.metadata
    assert meta["test_rmse"] == pytest.approx(summary["test_rmse"])
    assert {"test_mae", "test_r2", "split", "io", "parity", "versions", "config"} <= set(meta)
    assert meta["io"]["input"] == {"name": "features", "shape": [-1, 8], "dtype": "float32"}
    assert meta["training"]["limit"] == 2000
    # the stored ONNX file, fed the raw test split, reproduces the stored metric
    session = ort.InferenceSession(model.path_of(FORMATS["onnx"].file), providers=["CPUExecutionProvider"])
    pred = session.run(None, {HOUSING.input_name: housing.test.x})[0][:, 0]
    rmse = float(np.sqrt(np.mean((pred.astype(np.float64) - housing.test.y) ** 2)))
    assert rmse == pytest.approx(meta["test_rmse"], rel=1e-4)
    # a second run is a new version of the same model
    summary2 = train(
        "training.housing", data_dir, tmp_path, "--epochs", "1", "--limit", "500", "--formats", "onnx"
    )
    assert summary2["tag"] != summary["tag"]
    assert bentoml.models.get(f"{HOUSING.name}:latest").tag == bentoml.models.get(summary2["tag"]).tag


def test_mnist_smoke_run_registers_a_usable_model(mnist, smoke_models):
    summary = smoke_models["mnist_cnn"]
    for png in ("loss_curves.png", "confusion_matrix.png"):
        assert (summary["out_dir"] / png).stat().st_size > 10_000
    model = _stored(summary["tag"])
    meta = model.info.metadata
    assert meta["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert meta["test_accuracy"] > 0.5  # 1 epoch on 2,000 images: far above chance (0.1)
    assert np.array(meta["confusion_matrix"]).sum() == 10000
    session = ort.InferenceSession(model.path_of(FORMATS["onnx"].file), providers=["CPUExecutionProvider"])
    logits = np.concatenate(
        [session.run(None, {MNIST.input_name: mnist.test.x[i : i + 2000]})[0] for i in range(0, 10000, 2000)]
    )
    assert float((logits.argmax(1) == mnist.test.y).mean()) == meta["test_accuracy"]
