"""Device selection shared by training and the service: `auto`, `cpu` or `cuda`, never a silent fallback."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")


class DeviceUnavailableError(RuntimeError):
    """CUDA was requested explicitly but no usable GPU is present."""


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda if available else cpu; `cuda` without a GPU raises instead of falling back."""
    import torch  # here, not at the top: the ONNX service path must not pay torch's import (~400 MB)

    if name not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {name!r}")
    has_cuda = torch.cuda.is_available()
    if name == "cuda" and not has_cuda:
        raise DeviceUnavailableError(
            "device 'cuda' was requested but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
            "use device 'cpu' or 'auto' on a machine without a GPU"
        )
    device = torch.device("cuda" if name == "cuda" or (name == "auto" and has_cuda) else "cpu")
    if device.type == "cuda":
        logger.info("using GPU %s", torch.cuda.get_device_name(device))
    return device
