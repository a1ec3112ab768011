"""Start-up failures are loud, name the fix and leave no half-ready server: a missing model, a
corrupted model.onnx, a TorchScript file of another model, CUDA without a GPU, a port in use.
`bentoml build` packs the service and both models."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loadtests.server import Server
from models.formats import FORMATS
from tests.conftest import REPO, models_env

HOUSING_TAG = "MODELS__HOUSING_MLP__TAG"  # the housing model to serve


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
    assert {m["tag"] for m in smoke_models.values()} <= models or len(models) == len(smoke_models)
    # safe defaults of the container: non-root user, listens on all interfaces only inside it (a local
    # `bentoml serve` stays on 127.0.0.1), every runtime dependency pinned
    dockerfile = Path(bento.path_of("env/docker/Dockerfile")).read_text()
    assert "\nUSER bentoml" in dockerfile and "ENV BENTOML_HOST=$BENTOML_HOST" in dockerfile
    requirements = Path(bento.path_of("env/python/requirements.txt")).read_text().splitlines()
    pins = [line for line in requirements if line.strip() and not line.startswith("#")]
    assert pins and all("==" in line for line in pins), pins
    names = {line.split("==")[0] for line in pins}
    assert {"uvloop", "httptools", "onnxruntime", "nvidia-ml-py"} <= names
    assert "torch" not in names, "the cpu image has no torch (the gpu image has)"
    assert "build-essential" not in dockerfile  # deploy/container/Dockerfile.template


def test_no_untrusted_deserialization_in_our_code():
    """No pickle and no torch.load anywhere in the product (TorchScript archives are loaded with
    torch.jit.load from our own model store, ONNX with ONNX Runtime); BentoML's pickle media type is
    refused by the service (415, tests/service/test_http.py)."""
    offenders = []
    for package in ("models", "training", "service", "loadtests"):
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text()
            for needle in ("import pickle", "pickle.load", "torch.load(", "joblib.load", "dill."):
                if needle in text:
                    offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert not offenders, offenders


def _model_path(tag: str) -> str:
    import bentoml

    return bentoml.models.get(tag).path


def _tampered_copy(tag: str, name: str, filename: str, content: bytes, *, registered: bool = True) -> str:
    """A copy of a stored model under another name, with one file replaced (the original untouched).
    registered=True: the replacement is what was registered (its sha256 in the metadata), as if the
    exporter had produced it; False: the file was changed in the store afterwards."""
    import hashlib

    import bentoml

    src = bentoml.models.get(tag)
    metadata = json.loads(json.dumps(src.info.metadata))
    if registered:
        metadata["files"][filename] = {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
    with bentoml.models.create(name, metadata=metadata) as model:
        for f in Path(src.path).iterdir():
            if f.is_file() and f.name != "model.yaml":
                shutil.copy(f, model.path)
        Path(model.path, filename).write_bytes(content)
    return str(model.tag)


def test_model_without_the_format_file_stops_start_up(smoke_models):
    """A model registered without the chosen format's file (an older export, or an AOTInductor
    package compiled only for another device) stops start-up with one line naming the fix."""
    import bentoml

    tag = _tampered_copy(smoke_models["housing_mlp"]["tag"], "housing_mlp_no_pt2", "model.cpu.pt2", b"")
    Path(bentoml.models.get(tag).path, "model.cpu.pt2").unlink()
    out = _failed_start(models_env(smoke_models, MODEL_BACKEND="aoti", **{HOUSING_TAG: tag}))
    assert f"error: {tag} has no model.cpu.pt2 (MODEL_BACKEND=aoti on cpu); re-export it with" in out
    assert "python -m training.housing" in out and "Traceback" not in out


def test_corrupted_onnx_file_stops_start_up_with_its_name(smoke_models):
    onnx = Path(_model_path(smoke_models["housing_mlp"]["tag"]), FORMATS["onnx"].file).read_bytes()
    tag = _tampered_copy(
        smoke_models["housing_mlp"]["tag"],
        "housing_mlp_corrupt",
        FORMATS["onnx"].file,
        onnx[: len(onnx) // 2],
    )
    out = _failed_start(models_env(smoke_models, MODEL_BACKEND="onnx", **{HOUSING_TAG: tag}))
    assert f"error: {tag}: {FORMATS['onnx'].file} could not be loaded by onnx" in out
    assert "python -m training.housing" in out and "Traceback" not in out


@pytest.mark.parametrize("backend,filename", [(name, fmt.filename("cpu")) for name, fmt in FORMATS.items()])
def test_model_file_changed_after_registration_stops_start_up(smoke_models, backend, filename):
    """The sha256 recorded at registration (after the parity gate) is checked at load: a file
    changed in the store afterwards, even one that would still load, stops start-up with one line
    naming the file and the command that re-exports it."""
    original = Path(_model_path(smoke_models["housing_mlp"]["tag"]), filename).read_bytes()
    tag = _tampered_copy(
        smoke_models["housing_mlp"]["tag"], f"housing_mlp_changed_{backend}", filename, original + b"\0",
        registered=False,
    )  # fmt: skip
    out = _failed_start(models_env(smoke_models, MODEL_BACKEND=backend, **{HOUSING_TAG: tag}))
    assert f"error: {tag}: {filename} changed after it was registered (sha256 " in out, out[-2000:]
    assert "re-export it with `python -m training.housing`" in out and "Traceback" not in out


def test_torchscript_file_of_another_model_stops_start_up(smoke_models):
    mnist_ts = Path(_model_path(smoke_models["mnist_cnn"]["tag"]), FORMATS["torchscript"].file).read_bytes()
    tag = _tampered_copy(
        smoke_models["housing_mlp"]["tag"], "housing_mlp_swapped", FORMATS["torchscript"].file, mnist_ts
    )
    out = _failed_start(models_env(smoke_models, MODEL_BACKEND="torchscript", **{HOUSING_TAG: tag}))
    assert f"error: {tag}: its torchscript model does not take housing_mlp's input" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_in_use_stops_start_up_with_one_line(smoke_models, workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="bentoml serve exited") as info:
            Server(models_env(smoke_models, WORKERS=workers), startup_timeout=120, port=port)
    out = str(info.value)
    assert f"error: 127.0.0.1:{port} is already in use" in out and "Traceback" not in out


def test_grpc_port_in_use_stops_start_up_with_one_line(smoke_models):
    """The workers share GRPC_PORT with SO_REUSEPORT: a port another server holds is refused before
    they start (else the two servers would split its connections)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _failed_start(models_env(smoke_models, WORKERS="2", GRPC_PORT=str(port)))
    assert f"error: 127.0.0.1:{port} is already in use" in out and "GRPC_PORT" in out
    assert "Traceback" not in out
