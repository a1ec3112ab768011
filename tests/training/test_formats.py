"""The registry of formats (models/formats.py) drives export, the parity gate, registration, the
service's settings, placement and loading, and the load-test runners: a format added to the registry
in this test, and nowhere else, goes all the way."""

from __future__ import annotations

import bentoml
import numpy as np
import pytest
import torch

from loadtests import run
from models.backends import AotiBackend, OnnxBackend
from models.formats import FORMATS, Format, export_onnx
from models.housing import FeaturePreprocess, HousingConfig, HousingMLP
from models.specs import HOUSING
from service.placement import choose
from service.settings import ServiceSettings
from training.export.graphs import export
from training.export.parity import check_parity
from training.export.store import register

# An ONNX file under another name: exported, checked and served by the ONNX code it names.
DUMMY = Format("onnx_copy", "model.copy.onnx", "onnxruntime", export_onnx, OnnxBackend)


@pytest.fixture
def dummy_format(monkeypatch):
    monkeypatch.setitem(FORMATS, DUMMY.name, DUMMY)
    return DUMMY


def test_a_format_added_to_the_registry_is_exported_checked_registered_and_served(
    dummy_format, housing, tmp_path
):
    torch.manual_seed(0)
    config = HousingConfig()
    model = HousingMLP(config, FeaturePreprocess.fit(housing.train.x, config.log_features)).eval()
    x = housing.test.x

    files = export(model, HOUSING, x[:8], tmp_path, formats=(DUMMY.name,))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "model.copy.onnx",
        "weights.safetensors",
    ]
    report = check_parity(model, HOUSING, files, x[:100])
    assert set(report["max_abs_error"]) == {DUMMY.name}  # through the format's own backend
    tag = register(model, HOUSING, files, x[:100], {"test_rmse": 0.0})
    stored = bentoml.models.get(tag)
    assert stored.info.metadata["formats"] == {DUMMY.name: {"files": {"cpu": "model.copy.onnx"}}}
    assert "model.copy.onnx" in stored.info.metadata["files"]  # its sha256, checked when served

    # the service: its setting accepts the name, placement resolves it, the model loads and answers
    from service.loading import StoreModel, load_model

    settings = ServiceSettings(model_backend=DUMMY.name, model_device="cpu")
    assert choose(DUMMY.name, "auto").backend == DUMMY.name
    stored, backend = load_model(StoreModel(tag), HOUSING, settings)
    with torch.inference_mode():
        eager = model(torch.from_numpy(np.ascontiguousarray(x[:5]))).numpy()
    np.testing.assert_allclose(backend(np.ascontiguousarray(x[:5])), eager, atol=1e-5)
    assert str(stored.tag) == tag and backend.kind == "onnx" and backend.describe()["backend"] == "onnx"

    # the load-test runner sweeps every registered format by default
    assert DUMMY.name in run.build_parser().parse_args([]).backends


def fail_to_compile(model, spec, example, path, device):
    path.write_bytes(b"half a file")
    raise RuntimeError("no kernel could be compiled for this device\n(the compiler's long log)")


@pytest.mark.parametrize("device_bound", [True, False])
def test_a_device_bound_export_that_fails_is_recorded_and_the_others_register(
    device_bound, housing, tmp_path, monkeypatch
):
    """An AOTInductor compile for the GPU that fails must not cost the run its other formats: it is
    logged, recorded in the metadata and skipped. A device-independent format that fails still stops
    the export (nothing is registered)."""
    broken = Format(
        "broken", "model.{device}.broken", "torch", fail_to_compile, AotiBackend, device_bound=True
    )
    if not device_bound:
        broken = Format("broken", "model.broken", "torch", fail_to_compile, AotiBackend)
    monkeypatch.setitem(FORMATS, broken.name, broken)
    torch.manual_seed(0)
    config = HousingConfig()
    model = HousingMLP(config, FeaturePreprocess.fit(housing.train.x, config.log_features)).eval()
    x = housing.test.x
    if not device_bound:
        with pytest.raises(RuntimeError, match="no kernel could be compiled"):
            export(model, HOUSING, x[:8], tmp_path, formats=("onnx", "broken"))
        return
    files = export(model, HOUSING, x[:8], tmp_path, formats=("onnx", "broken"))
    assert files.failures == {"broken": {"cpu": "RuntimeError: no kernel could be compiled for this device"}}
    # the half-written file is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.onnx", "weights.safetensors"]
    metadata = bentoml.models.get(register(model, HOUSING, files, x[:100], {})).info.metadata
    assert set(metadata["formats"]) == {"onnx"} and set(metadata["parity"]["max_abs_error"]) == {"onnx"}
    assert metadata["export_failures"] == files.failures


def test_unknown_backend_is_refused_by_the_settings():
    with pytest.raises(ValueError, match="MODEL_BACKEND must be auto or one of onnx, torchscript, aoti"):
        ServiceSettings(model_backend="tensorrt")
