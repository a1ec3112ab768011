"""A comparison baseline of BENCHMARKS.md: the same two model.onnx files behind plain FastAPI, written
the way FastAPI's and ONNX Runtime's documentation show (a pydantic body, a sync endpoint that runs
the session on its rows, no batching), with the same routes and JSON as the service, so that the same
load tests and wrk cases load both. A benchmark fixture, not a service to deploy.

    uvicorn loadtests.fastapi_baseline:app --port 3002      # HOUSING_MODEL / MNIST_MODEL pick the tags
    python -m loadtests.wrk --servers fastapi,ours --cases housing_1,mnist_1
"""

from __future__ import annotations

import bentoml
import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel
from scipy.special import softmax

from models.formats import FORMATS
from models.specs import HOUSING, MNIST
from service.settings import get_settings

settings = get_settings()  # the model tags, as the service resolves them
app = FastAPI(title="FastAPI + ONNX Runtime baseline")
_sessions: dict[str, ort.InferenceSession] = {}


def session(name: str, tag: str) -> ort.InferenceSession:
    """The model's session, tuned as the service tunes its own (one intra-op thread, idle threads not
    spinning): with ONNX Runtime's defaults the baseline spends ~4x the CPU per request."""
    if name not in _sessions:
        path = bentoml.models.get(tag).path_of(FORMATS["onnx"].file)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        _sessions[name] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return _sessions[name]


class HousingIn(BaseModel):
    features: list[list[float]]


class DigitsIn(BaseModel):
    images: list[list[list[float]]]


class Prediction(BaseModel):
    label: int
    probabilities: list[float]


@app.get("/readyz")
def readyz() -> str:
    session(HOUSING.name, settings.model(HOUSING.name).tag)
    session(MNIST.name, settings.model(MNIST.name).tag)
    return "ok"


@app.post("/predict_housing")
async def predict_housing(body: HousingIn) -> list[float]:
    x = np.asarray(body.features, dtype=np.float32)
    return (
        session(HOUSING.name, settings.model(HOUSING.name).tag)
        .run(None, {HOUSING.input_name: x})[0][:, 0]
        .tolist()
    )


@app.post("/classify_digits")
async def classify_digits(body: DigitsIn) -> list[Prediction]:
    x = np.asarray(body.images, dtype=np.float32)[:, None]
    logits = session(MNIST.name, settings.model(MNIST.name).tag).run(None, {MNIST.input_name: x})[0]
    probabilities = softmax(logits.astype(np.float64), axis=1)
    return [Prediction(label=int(p.argmax()), probabilities=p.tolist()) for p in probabilities]
