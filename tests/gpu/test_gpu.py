"""On the GPU (`make test-gpu`): parity of the exported graphs on CUDA, `auto` choosing the GPU,
serving on CUDA with answers equal to the stored files run on the CPU, and accuracy over HTTP equal
to the stored metrics. Skipped, with the reason, on a machine without a usable GPU (CI)."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from loadtests.accuracy import RMSE_TOLERANCE, check
from loadtests.server import Server
from models.device import nvidia_gpus
from models.specs import HOUSING, MNIST
from tests.conftest import models_env, offline_outputs


def _torch_gpu() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        _torch_gpu() is None,
        reason=f"no usable GPU (torch.cuda.is_available() is False; {nvidia_gpus()[1] or 'NVML: a GPU'})",
    ),
]


def test_parity_gate_ran_torchscript_and_aoti_on_the_gpu(gpu_models):
    """Training on a GPU machine registers parity errors of TorchScript and the CUDA AOTInductor package
    run on CUDA (and ONNX Runtime's CUDA provider when onnxruntime-gpu is installed), all within the
    gate's tolerance, after training in full FP32."""
    import bentoml

    for name in ("housing_mlp", "mnist_cnn"):
        metadata = bentoml.models.get(gpu_models[name]["tag"]).info.metadata
        assert metadata["export_failures"] == {}, metadata["export_failures"]
        assert metadata["training"].get("precision") == "fp32", metadata["training"]
        parity = metadata["parity"]
        errors = parity["max_abs_error"]
        for graph in ("torchscript_cuda", "aoti_cuda"):  # the AOTInductor package compiled for CUDA
            assert set(errors[graph]) == {"1", "7", "64", "100"}, errors
            assert max(errors[graph].values()) <= parity["atol"] * 10, errors


@pytest.fixture(scope="module")
def gpu_server(gpu_models):
    with Server(models_env(gpu_models, MODEL_BACKEND="auto", MODEL_DEVICE="auto", WORKERS="2")) as server:
        yield server


def test_auto_serves_torchscript_on_the_gpu_and_names_it(gpu_server):
    status = requests.get(f"{gpu_server.url}/status", timeout=10).json()
    placement, gpu = status["placement"], _torch_gpu()
    assert (placement["backend"], placement["device"], placement["gpu"]) == ("torchscript", "cuda", gpu)
    assert placement["reason"] == f"auto: {gpu} present -> torchscript on cuda"
    for model in status["models"].values():
        assert (model["backend"], model["device"], model["gpu"]) == ("torchscript", "cuda", gpu)


def test_gpu_answers_equal_the_stored_files_run_on_the_cpu(gpu_server, housing, mnist, gpu_models):
    x = housing.test.x[:300]
    expected = offline_outputs(gpu_models["housing_mlp"]["tag"], "torchscript", HOUSING, x)[:, 0]
    got = np.array(requests.post(f"{gpu_server.url}/predict_housing", json={"features": x.tolist()}).json())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    images = mnist.test.x[:256]
    logits = offline_outputs(gpu_models["mnist_cnn"]["tag"], "torchscript", MNIST, images)
    answers = []
    for i in range(0, 256, 64):
        r = requests.post(
            f"{gpu_server.url}/classify_digits", json={"images": images[i : i + 64, 0].tolist()}
        )
        answers += r.json()
    assert [a["label"] for a in answers] == logits.argmax(1).tolist()


def test_accuracy_over_http_on_the_gpu_equals_the_stored_metrics(gpu_server, data_dir):
    result = check(gpu_server.url)
    h, m = result["housing_mlp"], result["mnist_cnn"]
    assert abs(h["served_test_rmse"] - h["stored_test_rmse"]) < RMSE_TOLERANCE, h
    assert m["served_test_accuracy"] == m["stored_test_accuracy"], m


def test_aoti_cuda_package_serves_on_the_gpu(gpu_models):
    """Training on a GPU machine also compiles `model.cuda.pt2`; MODEL_BACKEND=aoti serves it."""
    env = models_env(gpu_models, MODEL_BACKEND="aoti", MODEL_DEVICE="cuda", WORKERS="1")
    with Server(env) as server:
        status = requests.get(f"{server.url}/status", timeout=10).json()
        assert {(m["backend"], m["device"]) for m in status["models"].values()} == {("aoti", "cuda")}
        result = check(server.url)
    assert result["mnist_cnn"]["served_test_accuracy"] == result["mnist_cnn"]["stored_test_accuracy"]


def test_onnx_runtime_on_the_gpu_when_installed(gpu_models):
    from models.device import onnx_cuda_provider

    has, why = onnx_cuda_provider()
    if not has:
        pytest.skip(why)
    with Server(models_env(gpu_models, MODEL_BACKEND="onnx", MODEL_DEVICE="cuda", WORKERS="1")) as server:
        status = requests.get(f"{server.url}/status", timeout=10).json()
        assert status["models"]["mnist_cnn"]["execution_providers"][0] == "CUDAExecutionProvider"
        result = check(server.url)
    assert result["mnist_cnn"]["served_test_accuracy"] == result["mnist_cnn"]["stored_test_accuracy"]
