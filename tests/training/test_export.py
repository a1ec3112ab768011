"""Export + parity gate on real test inputs, with small real-data-trained models."""

from pathlib import Path

import bentoml
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from models.backends import OnnxBackend
from models.formats import FORMATS, Format, export_onnx
from models.housing import FeaturePreprocess, HousingConfig, HousingMLP
from models.mnist import MnistCNN, MnistConfig
from models.specs import HOUSING, MNIST
from training.errors import ParityError
from training.export.graphs import ExportedFiles, export
from training.export.parity import check_parity
from training.export.store import register


@pytest.fixture(scope="module")
def housing_model(housing):
    config = HousingConfig()
    torch.manual_seed(0)
    return HousingMLP(config, FeaturePreprocess.fit(housing.train.x, config.log_features)).eval()


@pytest.fixture(scope="module")
def housing_files(housing_model, housing, tmp_path_factory) -> ExportedFiles:
    """Every format of the registry (AOTInductor included: one compile, ~15-40 s here)."""
    return export(housing_model, HOUSING, housing.test.x[:8], tmp_path_factory.mktemp("housing"))


def _file(files: ExportedFiles, name: str) -> Path:
    return files.files[name]["cpu"]


def _graph_io(path: Path):
    graph = onnx.load(str(path)).graph
    return graph.input[0], graph.output[0]


@pytest.mark.parametrize("which", ["housing", "mnist"])
def test_export_is_self_contained_with_named_io_and_dynamic_batch(
    which, housing, mnist, housing_model, tmp_path
):
    spec, model, x = (
        (HOUSING, housing_model, housing.test.x)
        if which == "housing"
        else (MNIST, MnistCNN(MnistConfig()).eval(), mnist.test.x)
    )
    files = export(model, spec, x[:8], tmp_path, formats=("onnx", "torchscript"))
    # no .data; and the checkpoint: weights (safetensors) and config
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "model.onnx",
        "model.torchscript",
        "weights.safetensors",
    ]
    inp, out = _graph_io(_file(files, "onnx"))
    assert (inp.name, out.name) == (spec.input_name, spec.output_name)
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch axis
    assert [d.dim_value for d in dims[1:]] == list(spec.input_shape)
    # raw inputs at batch sizes never seen at export time; parity gate at 1, 7, 64
    session = ort.InferenceSession(str(_file(files, "onnx")), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(_file(files, "torchscript")))
    for n in (1, 3, 100):
        batch = np.ascontiguousarray(x[:n])
        with torch.inference_mode():
            eager = model(torch.from_numpy(batch)).numpy()
            np.testing.assert_allclose(scripted(torch.from_numpy(batch)).numpy(), eager, atol=1e-5)
        got = session.run(None, {spec.input_name: batch})[0]
        assert got.shape == (n, *spec.output_shape)
        np.testing.assert_allclose(got, eager, rtol=1e-4, atol=1e-4)
    report = check_parity(model, spec, files, x[:100])
    assert set(report["max_abs_error"]["onnx"]) == {"1", "7", "64", "100"}


def test_aoti_package_has_a_dynamic_batch_and_passes_the_parity_gate(housing_model, housing, housing_files):
    """torch.export + AOTInductor: one package for the CPU (no GPU here), any batch size, equal to
    eager; the parity gate ran it through the serving backend at 1, 7, 64 and 100 rows."""
    assert set(housing_files.files["aoti"]) == {"cpu"} or torch.cuda.is_available()
    package = torch._inductor.aoti_load_package(str(_file(housing_files, "aoti")))
    for n in (1, 3, 100, 1000):
        batch = torch.from_numpy(np.ascontiguousarray(housing.test.x[:n]))
        with torch.inference_mode():
            np.testing.assert_allclose(
                package(batch).numpy(), housing_model(batch).numpy(), atol=1e-5, rtol=1e-5
            )
    report = check_parity(housing_model, HOUSING, housing_files, housing.test.x[:100])
    assert set(report["max_abs_error"]) >= {"onnx", "torchscript", "aoti"}
    assert set(report["max_abs_error"]["aoti"]) == {"1", "7", "64", "100"}


def _models_in_store(name: str) -> list:
    return [m for m in bentoml.models.list() if m.tag.name == name]


def test_parity_gate_rejects_corrupted_onnx_and_registers_nothing(
    housing_model, housing, housing_files, tmp_path
):
    proto = onnx.load(str(_file(housing_files, "onnx")))
    # perturb one linear layer's weights: a plausible, silent corruption
    init = [i for i in proto.graph.initializer if len(i.dims) == 2][-1]
    arr = numpy_helper.to_array(init) * 1.5
    init.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), init.name))
    corrupted = ExportedFiles({**housing_files.files, "onnx": {"cpu": tmp_path / "model.onnx"}})
    onnx.save(proto, str(_file(corrupted, "onnx")))
    before = len(_models_in_store(HOUSING.name))
    with pytest.raises(ParityError, match=r"onnx batch 64: max abs error .*Nothing was registered"):
        register(housing_model, HOUSING, corrupted, housing.test.x[:100], {"test_rmse": 0.0})
    assert len(_models_in_store(HOUSING.name)) == before


def test_parity_gate_rejects_torchscript_of_another_model(housing_model, housing, housing_files, tmp_path):
    other = HousingMLP(HousingConfig(), FeaturePreprocess.fit(housing.valid.x, HousingConfig().log_features))
    other_files = export(other, HOUSING, housing.test.x[:8], tmp_path, formats=("torchscript",))
    mixed = ExportedFiles({**housing_files.files, "torchscript": other_files.files["torchscript"]})
    with pytest.raises(ParityError, match="torchscript batch 64"):
        check_parity(housing_model, HOUSING, mixed, housing.test.x[:100])


class SilentBackend(OnnxBackend):
    """Loads like the ONNX backend, then fails every batch with an exception that has no message."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError()


def test_parity_gate_names_a_backend_error_that_has_no_message(monkeypatch, housing_model, housing, tmp_path):
    """An exception with an empty message is told by its type (it once raised IndexError instead,
    hiding the real error)."""
    silent = Format("onnx_silent", "model.silent.onnx", "onnxruntime", export_onnx, SilentBackend)
    monkeypatch.setitem(FORMATS, silent.name, silent)
    files = export(housing_model, HOUSING, housing.test.x[:8], tmp_path, formats=(silent.name,))
    with pytest.raises(ParityError, match=r"onnx_silent batch 1: RuntimeError; .*Nothing was registered"):
        check_parity(housing_model, HOUSING, files, housing.test.x[:100])
