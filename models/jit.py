"""TorchScript is deprecated from torch 2.10 on (FutureWarning on every jit call) but is one of the
two formats this product ships; training (export) and the service (backend) both use this guard."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torchscript_allowed() -> Iterator[None]:
    """Silence only torch's `torch.jit.*` deprecation FutureWarnings inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r"`torch\.jit\.")
        yield
