"""The parity gate: every exported file, through the serving backend of its format, against eager
PyTorch on real test inputs, on every device this machine can run it on; a mismatch raises ParityError
and nothing is registered."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from models.device import available_cpus, nvidia_gpus, onnx_cuda_provider
from models.formats import FORMATS
from models.messages import one_line
from models.specs import ModelSpec
from training.errors import ParityError
from training.export.graphs import ExportedFiles, machine_devices

logger = logging.getLogger(__name__)

# 1, 7 and 64 (the acceptance sizes) and 100: none of them the export example's 8 rows, 100 beyond it.
PARITY_BATCH_SIZES = (1, 7, 64, 100)
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-4


def runners(spec: ModelSpec, files: ExportedFiles) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Every exported file on every device this machine can run it on, through the serving backend of
    its format: `<format>` on the CPU, `<format>_cuda` on the GPU (torch formats when torch sees a GPU,
    ONNX when onnxruntime-gpu's CUDA provider is installed too)."""
    cuda = {"torch": torch.cuda.is_available()}
    cuda["onnxruntime"] = bool(cuda["torch"] and nvidia_gpus()[0] and onnx_cuda_provider()[0])
    out = {}
    for name, by_device in files.files.items():
        fmt = FORMATS[name]
        for device in (d for d in machine_devices() if d in fmt.devices):
            path = by_device.get(device, None if fmt.device_bound else by_device.get("cpu"))
            if path is None or (device == "cuda" and not cuda.get(fmt.runtime, False)):
                continue
            backend = fmt.backend(path, spec, device, available_cpus())
            out[name if device == "cpu" else f"{name}_cuda"] = backend
    return out


def check_parity(
    model: nn.Module,
    spec: ModelSpec,
    files: ExportedFiles,
    inputs: np.ndarray,
    batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES,
    atol: float = PARITY_ATOL,
    rtol: float = PARITY_RTOL,
) -> dict:
    """Compare every exported graph on every device (`runners`) with eager PyTorch on the CPU on
    `inputs[:b]` for each batch size b, with the same tolerance everywhere (GPUs run full FP32, no
    TF32). Returns the max absolute errors; raises ParityError when any exceeds atol + rtol*|eager|."""
    if len(inputs) < max(batch_sizes):
        raise ValueError(f"parity needs at least {max(batch_sizes)} inputs, got {len(inputs)}")
    model = model.eval().cpu()
    graphs = runners(spec, files)
    errors: dict[str, dict[str, float]] = {name: {} for name in graphs}
    failures = []
    for b in batch_sizes:
        x_np = np.ascontiguousarray(inputs[:b], dtype=np.float32)
        with torch.inference_mode():
            expected = model(torch.from_numpy(x_np)).numpy()
        for backend, run in graphs.items():
            try:
                got = run(x_np)
            except Exception as exc:  # a file of another model, a package for another device
                failures.append(f"{backend} batch {b}: {one_line(exc, 200)}")
                continue
            if got.shape != expected.shape:
                failures.append(f"{backend} batch {b}: shape {got.shape} != eager {expected.shape}")
                continue
            err = float(np.max(np.abs(got - expected)))
            errors[backend][str(b)] = err
            if not np.allclose(got, expected, atol=atol, rtol=rtol):
                failures.append(f"{backend} batch {b}: max abs error {err:.3g}")
    if failures:
        raise ParityError(
            f"{spec.name}: exported model disagrees with eager PyTorch "
            f"(atol={atol}, rtol={rtol}): " + "; ".join(failures) + ". Nothing was registered."
        )
    worst = {k: max(v.values()) for k, v in errors.items()}
    logger.info("parity gate passed for %s: max abs error %s", spec.name, worst)
    return {"batch_sizes": list(batch_sizes), "atol": atol, "rtol": rtol, "max_abs_error": errors}
