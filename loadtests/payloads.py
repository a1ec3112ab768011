"""Request payloads drawn from the real test splits (loaded once per process)."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

from training.data import Splits, default_data_dir, load_housing, load_mnist


@lru_cache(maxsize=1)
def housing_test() -> Splits:
    return load_housing(default_data_dir(), download=False)


@lru_cache(maxsize=1)
def mnist_test() -> Splits:
    return load_mnist(default_data_dir(), download=False)


def png_bytes(image: np.ndarray) -> bytes:
    """A (28, 28) float image in [0, 1] as an 8-bit grayscale PNG file."""
    buf = io.BytesIO()
    Image.fromarray((np.asarray(image) * 255).round().astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()
