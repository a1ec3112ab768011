"""The one registry of export formats: what each is called (`MODEL_BACKEND`), which file it writes in
the model's folder, how to export it, which serving backend loads it, which runtime and devices it
needs. Export (training/export/), the parity gate, the store metadata, the service's settings and
placement, and the load-test runners all read `FORMATS`; a new format is one entry here.

| name | file | runtime | devices |
|---|---|---|---|
| onnx | model.onnx | onnxruntime (CUDA: onnxruntime-gpu) | cpu, cuda |
| torchscript | model.torchscript | torch | cpu, cuda |
| aoti | model.cpu.pt2 / model.cuda.pt2 | torch | the device it was compiled on |

`aoti` is torch.export with a dynamic batch axis, compiled ahead of time by AOTInductor: a package
holds kernels for one device, so export writes one per device the exporting machine has (the CUDA
package only on a GPU machine) and the metadata lists them. Importing this module imports neither
torch nor onnxruntime (the service's ONNX worker never loads torch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.backends import AotiBackend, Backend, OnnxBackend, TorchScriptBackend
from models.jit import torchscript_allowed
from models.specs import ModelSpec

logger = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
# The largest batch an exported graph must take: more than any batch the service forms, or the offline
# benchmark runs (AOTInductor compiles guards for the range; the others are unbounded). Not 2**16:
# on CUDA, eval-mode batch norm takes cuDNN only for batches <= 65535 (ATen's Normalization.cpp), and
# torch.export refuses a batch range that this splits ("Constraints violated (batch)!", seen on an H200).
MAX_EXPORT_BATCH = 65535

# export(model on the CPU in eval mode, spec, example batch (>= 2 rows), destination file, device)
Exporter = Callable[[object, ModelSpec, np.ndarray, Path, str], None]


@dataclass(frozen=True)
class Format:
    name: str
    file: str  # file name in the model's folder; "{device}" in it: one file per device (device_bound)
    runtime: str  # the Python package that runs it: "onnxruntime" or "torch"
    export: Exporter
    backend: Callable[[Path, ModelSpec, str, int], Backend]
    # Triton's names for it (Open Inference Protocol model metadata `platform`, model config
    # `backend`); aoti has no Triton platform of its own: "torch_aoti" is ours.
    triton: tuple[str, str] = ("", "")
    devices: tuple[str, ...] = DEVICES  # where it can serve
    device_bound: bool = False  # compiled for one device: exported per device, loads only there

    def filename(self, device: str) -> str:
        return self.file.format(device=device)

    def export_devices(self, machine_devices: tuple[str, ...]) -> tuple[str, ...]:
        """Devices to export for on a machine with `machine_devices`: one file for all, or one each."""
        return tuple(d for d in machine_devices if d in self.devices) if self.device_bound else ("cpu",)

    def load(self, model_dir: Path, spec: ModelSpec, device: str, threads: int) -> Backend:
        """The serving backend of this format's file for `device` in `model_dir`."""
        backend = self.backend(Path(model_dir) / self.filename(device), spec, device, threads)
        logger.info("loaded %s: %s", spec.name, backend.describe())
        return backend


def _torch_input(example: np.ndarray, device: str):
    import torch

    x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32)).to(device)
    if len(x) < 2:
        raise ValueError("export needs an example batch of at least 2 rows (batch 1 would be specialized)")
    return x


def export_torchscript(model, spec: ModelSpec, example: np.ndarray, path: Path, device: str) -> None:
    import torch

    _torch_input(example, "cpu")
    with torchscript_allowed():
        torch.jit.save(torch.jit.script(model), str(path))


def export_onnx(model, spec: ModelSpec, example: np.ndarray, path: Path, device: str) -> None:
    import torch

    torch.onnx.export(
        model,
        (_torch_input(example, "cpu"),),
        str(path),
        dynamo=True,
        external_data=False,
        input_names=[spec.input_name],
        output_names=[spec.output_name],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        verbose=False,
    )


def export_aoti(model, spec: ModelSpec, example: np.ndarray, path: Path, device: str) -> None:
    """torch.export (dynamic batch) -> AOTInductor package for `device` (full FP32 on CUDA: no TF32)."""
    import torch

    from models.device import full_precision_cuda

    if device == "cuda":
        full_precision_cuda()
    model = model.to(device)
    try:
        batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
        program = torch.export.export(model, (_torch_input(example, device),), dynamic_shapes=({0: batch},))
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    finally:
        model.cpu()


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "onnx", "model.onnx", "onnxruntime", export_onnx, OnnxBackend, ("onnxruntime_onnx", "onnxruntime")
        ),
        Format(
            "torchscript",
            "model.torchscript",
            "torch",
            export_torchscript,
            TorchScriptBackend,
            ("pytorch_libtorch", "pytorch"),
        ),
        Format(
            "aoti",
            "model.{device}.pt2",
            "torch",
            export_aoti,
            AotiBackend,
            ("torch_aoti", "pytorch"),
            device_bound=True,
        ),
    )
}


def get(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; known: {', '.join(FORMATS)}") from None
