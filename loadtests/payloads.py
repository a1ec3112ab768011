"""Request payloads drawn from the real test splits (loaded once per process)."""

from __future__ import annotations

import io
import json
from functools import lru_cache

import numpy as np
from PIL import Image

from loadtests.protocol import v2_body
from models.specs import HOUSING, MNIST
from training.data import Split, default_data_dir, load_housing, load_mnist_test


@lru_cache(maxsize=1)
def housing_test() -> Split:
    """The fixed California Housing test split."""
    return load_housing(default_data_dir(), download=False).test


@lru_cache(maxsize=1)
def mnist_test() -> Split:
    """The official MNIST test set (read with NumPy: no torch in a load generator)."""
    return load_mnist_test(default_data_dir(), download=False)


def png_bytes(image: np.ndarray) -> bytes:
    """A (28, 28) float image in [0, 1] as an 8-bit grayscale PNG file."""
    buf = io.BytesIO()
    Image.fromarray((np.asarray(image) * 255).round().astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _picks(rows: np.ndarray, per_request: int, count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, len(rows), size=(count, per_request))


def json_bodies(endpoint: str, per_request: int, count: int, seed: int) -> list[bytes]:
    """`count` JSON request bodies for a batched endpoint, each with `per_request` rows / images drawn
    from the test split."""
    if endpoint == "predict_housing":
        rows, field = housing_test().x, "features"
    elif endpoint == "classify_digits":
        rows, field = mnist_test().x[:, 0], "images"
    else:
        raise ValueError(f"no JSON body for {endpoint}")
    return [json.dumps({field: rows[p].tolist()}).encode() for p in _picks(rows, per_request, count, seed)]


def v2_bodies(model: str, per_request: int, count: int, seed: int, binary: bool) -> list[tuple[bytes, dict]]:
    """`count` Open Inference Protocol requests (body, headers) for `model`, each with `per_request`
    rows / images of the test split, tensors as binary data or JSON, asking for the model's output."""
    spec, rows = {
        HOUSING.name: (HOUSING, housing_test().x),
        MNIST.name: (MNIST, mnist_test().x),  # (N, 1, 28, 28), as the model takes them
    }[model]
    picks = _picks(rows, per_request, count, seed)
    return [v2_body(spec.input_name, rows[p], spec.output_name, binary) for p in picks]
