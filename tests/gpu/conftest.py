"""The GPU tests use the models the store already holds (trained and exported on this GPU machine by
`make gpu-train` or scripts/gpu_window.sh), never retraining: GPU_MODELS_HOME names that store (a
BENTOML_HOME; default ~/bentoml; `make test-gpu` passes the BENTOML_HOME it was given)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from models import registry

ENV = "GPU_MODELS_HOME"


def _copy_latest(source: Path, name: str, target: Path) -> str:
    version = (source / "models" / name / "latest").read_text().strip()
    destination = target / "models" / name
    shutil.copytree(source / "models" / name / version, destination / version, dirs_exist_ok=True)
    (destination / "latest").write_text(version)
    return f"{name}:{version}"


@pytest.fixture(scope="session")
def gpu_models() -> dict:
    """{model name: {"tag": tag}} of the latest stored versions, copied into this session's store.
    Skips, saying what to run, when the store lacks a model or it was not exported on a GPU."""
    import bentoml

    source = Path(os.environ.get(ENV) or Path.home() / "bentoml").expanduser()
    models = {}
    for name in registry.models():
        if not (source / "models" / name / "latest").is_file():
            pytest.skip(f"{ENV}={source} holds no {name}: train on this GPU first (make gpu-train)")
        tag = _copy_latest(source, name, Path(os.environ["BENTOML_HOME"]))
        parity = bentoml.models.get(tag).info.metadata.get("parity", {}).get("max_abs_error", {})
        if "torchscript_cuda" not in parity:
            pytest.skip(f"{tag} in {source} was not exported on a GPU (no cuda parity): make gpu-train")
        models[name] = {"tag": tag}
    return models
