"""Export eager -> every format of the registry (models/formats.py): `export()` writes each format's
file(s) (`model.onnx`, `model.torchscript`, `model.cpu.pt2`, and `model.cuda.pt2` on a GPU machine):
weights inside, dynamic batch axis, named input/output from models.specs; and the checkpoint
(training/export/checkpoint.py). The parity gate (training/export/parity.py) checks the files, the
store (training/export/store.py) registers them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.formats import FORMATS
from models.messages import one_line
from models.specs import ModelSpec
from training.export.checkpoint import write_checkpoint

logger = logging.getLogger(__name__)

EXAMPLE_ROWS = 8  # the example batch every format is exported (traced) with: the first test inputs
METADATA_KEY = "formats"  # metadata["formats"][format] = {"files": {device: file name}}


def machine_devices() -> tuple[str, ...]:
    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


@dataclass(frozen=True)
class ExportedFiles:
    """What `export` wrote: {format: {device: path}} (a device-independent file listed for "cpu"),
    the checkpoint files, and the device-bound exports that failed: {format: {device: error}}."""

    files: dict[str, dict[str, Path]]
    failures: dict[str, dict[str, str]] = field(default_factory=dict)
    checkpoint: tuple[Path, ...] = ()

    def paths(self) -> list[Path]:
        graphs = {p for by_device in self.files.values() for p in by_device.values()}
        return sorted(graphs | set(self.checkpoint))

    def metadata(self) -> dict:
        return {
            name: {"files": {d: p.name for d, p in by_device.items()}}
            for name, by_device in self.files.items()
        }


def export(
    model: nn.Module,
    spec: ModelSpec,
    example: np.ndarray,
    out_dir: Path,
    formats: tuple[str, ...] | None = None,
) -> ExportedFiles:
    """Write every format of the registry (or `formats`) for `model` to `out_dir`: device-bound formats
    once per device this machine has. A device-bound export that fails (an AOTInductor compile for the
    GPU, say) is logged and recorded in `failures`, and the other files are still written; any other
    failure raises."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    files: dict[str, dict[str, Path]] = {}
    failures: dict[str, dict[str, str]] = {}
    for name in formats or tuple(FORMATS):
        fmt = FORMATS[name]
        for device in fmt.export_devices(machine_devices()):
            path = out_dir / fmt.filename(device)
            try:
                fmt.export(model, spec, example, path, device)
            except Exception as exc:
                if not fmt.device_bound:
                    raise
                model.cpu()
                path.unlink(missing_ok=True)
                error = one_line(exc)
                failures.setdefault(name, {})[device] = error
                logger.error("export of %s for %s failed, skipped: %s", name, device, error)
                continue
            files.setdefault(name, {})[device] = path
            logger.info("exported %s (%s, %s)", path, name, device)
    if not files:
        raise RuntimeError(f"{spec.name}: no format exported: {failures}")
    return ExportedFiles(files, failures, write_checkpoint(model, out_dir))
