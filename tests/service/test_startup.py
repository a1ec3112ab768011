"""Start-up failures are loud and name the fix; `bentoml build` packs the service and both models."""

import os
import subprocess
import sys

import pytest
import torch

from loadtests.server import Server
from tests.conftest import REPO


def _failed_start(env: dict) -> str:
    with pytest.raises(RuntimeError, match="bentoml serve exited") as info:
        Server(env, startup_timeout=120)
    return str(info.value)


def test_missing_model_names_the_training_command(smoke_models):
    out = _failed_start(
        {"HOUSING_MODEL": "housing_mlp:doesnotexist", "MNIST_MODEL": smoke_models["mnist_cnn"]["tag"]}
    )
    assert "error: model housing_mlp:doesnotexist is not in the BentoML model store" in out
    assert "python -m training.housing" in out and "Traceback" not in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_cuda_without_gpu_fails_at_start(smoke_models, backend):
    out = _failed_start(
        {
            "MODEL_BACKEND": backend,
            "MODEL_DEVICE": "cuda",
            "HOUSING_MODEL": smoke_models["housing_mlp"]["tag"],
            "MNIST_MODEL": smoke_models["mnist_cnn"]["tag"],
        }
    )
    assert "error: MODEL_DEVICE=cuda" in out or "error: device 'cuda' was requested" in out
    assert "Traceback" not in out


def test_bentoml_build_packs_service_and_models(smoke_models):
    proc = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=REPO,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import bentoml

    bento = bentoml.get("model_serving:latest")
    models = {str(m.tag) for m in bento.info.all_models}
    assert {smoke_models["housing_mlp"]["tag"], smoke_models["mnist_cnn"]["tag"]} <= models or len(
        models
    ) == 2
    dockerfile = bento.path_of("env/docker/Dockerfile")
    assert os.path.isfile(dockerfile) or os.path.isdir(bento.path_of("env/python"))
