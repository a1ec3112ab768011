"""Request payloads drawn from each model's real test split (loaded once per process)."""

from __future__ import annotations

import io
import json
from functools import cache

import numpy as np
from PIL import Image

from loadtests.catalog import endpoints
from loadtests.protocol import v2_body
from models import registry
from models.specs import HOUSING, MNIST
from training.data import Split, default_data_dir


@cache
def test_split(model: str) -> Split:
    """The model's fixed test split, as its graph takes it (MNIST read with NumPy: no torch in a load
    generator)."""
    return registry.get(model).load_test(default_data_dir(), download=False)


def housing_test() -> Split:
    return test_split(HOUSING.name)


def mnist_test() -> Split:
    return test_split(MNIST.name)


def png_bytes(image: np.ndarray) -> bytes:
    """A (28, 28) float image in [0, 1] as an 8-bit grayscale PNG file."""
    buf = io.BytesIO()
    Image.fromarray((np.asarray(image) * 255).round().astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _picks(rows: np.ndarray, per_request: int, count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, len(rows), size=(count, per_request))


def json_bodies(endpoint: str, per_request: int, count: int, seed: int) -> list[bytes]:
    """`count` JSON request bodies for a model's JSON endpoint (its name in loadtests/catalog.py, e.g.
    predict_housing), each with `per_request` items (rows, images) drawn from the model's test split,
    nested as the endpoint takes them."""
    model = endpoints()[endpoint].model
    entry = registry.get(model)
    x = test_split(model).x
    rows = x.reshape(len(x), *entry.json.item_shape)
    field = entry.json.field
    return [json.dumps({field: rows[p].tolist()}).encode() for p in _picks(rows, per_request, count, seed)]


def v2_bodies(model: str, per_request: int, count: int, seed: int, binary: bool) -> list[tuple[bytes, dict]]:
    """`count` Open Inference Protocol requests (body, headers) for `model`, each with `per_request`
    rows / images of the test split, tensors as binary data or JSON, asking for the model's output."""
    spec, rows = registry.get(model).spec, test_split(model).x
    picks = _picks(rows, per_request, count, seed)
    return [v2_body(spec.input_name, rows[p], spec.output_name, binary) for p in picks]


def grpc_requests(model: str, per_request: int, count: int, seed: int) -> list:
    """`count` gRPC ModelInferRequest messages for `model`, `per_request` rows / images of the test
    split each as raw little-endian FP32 (`raw_input_contents`, as tritonclient.grpc sends them)."""
    from tritonclient.grpc import service_pb2

    spec, rows = registry.get(model).spec, test_split(model).x
    out = []
    for p in _picks(rows, per_request, count, seed):
        request = service_pb2.ModelInferRequest(model_name=model)
        request.inputs.add(name=spec.input_name, datatype="FP32", shape=[per_request, *spec.input_shape])
        request.outputs.add(name=spec.output_name)
        request.raw_input_contents.append(np.ascontiguousarray(rows[p], dtype="<f4").tobytes())
        out.append(request)
    return out
