"""The comparison baseline of BENCHMARKS.md: the same two model.onnx files served by BentoML 1.4 the
way its documentation shows, with stock settings (one worker, access log and request tracing
middleware on, none of service/patches), and the same routes and JSON as service/service.py, so that
the same locustfile loads both. A benchmark fixture, not a service to deploy (no input validation).

    bentoml serve loadtests.stock_service:StockService --port 3001
    python -m loadtests.run --servers ours,stock --backends onnx
"""

from __future__ import annotations

import bentoml
import numpy as np
from scipy.special import softmax

from models.formats import FORMATS
from models.specs import HOUSING, MNIST
from service.settings import get_settings

settings = get_settings()  # model tags and batching limits as in the real service; no patches


@bentoml.service(traffic={"timeout": 30}, http={"host": "127.0.0.1"})
class StockService:
    housing_ref = bentoml.models.BentoModel(settings.model(HOUSING.name).tag)
    mnist_ref = bentoml.models.BentoModel(settings.model(MNIST.name).tag)

    def __init__(self) -> None:
        import onnxruntime as ort

        self.housing = ort.InferenceSession(self.housing_ref.path_of(FORMATS["onnx"].file))
        self.mnist = ort.InferenceSession(self.mnist_ref.path_of(FORMATS["onnx"].file))

    @bentoml.api(
        batchable=True,
        max_batch_size=settings.model(HOUSING.name).max_batch_size,
        max_latency_ms=settings.model(HOUSING.name).max_latency_ms,
    )
    def predict_housing(self, features: list[list[float]]) -> list[float]:
        x = np.asarray(features, dtype=np.float32)
        return self.housing.run(None, {HOUSING.input_name: x})[0][:, 0].tolist()

    @bentoml.api(
        batchable=True,
        max_batch_size=settings.model(MNIST.name).max_batch_size,
        max_latency_ms=settings.model(MNIST.name).max_latency_ms,
    )
    def classify_digits(self, images: list[list[list[float]]]) -> list[dict]:
        x = np.asarray(images, dtype=np.float32)[:, None]
        probs = softmax(self.mnist.run(None, {MNIST.input_name: x})[0].astype(np.float64), axis=1)
        return [{"label": int(p.argmax()), "probabilities": p.tolist()} for p in probs]
