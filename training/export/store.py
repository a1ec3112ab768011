"""Registration in the BentoML model store: the parity gate on the exported files, then a new version
with every file and its metadata (`register`); a version left half-written by an interrupt is removed
(`discard_version`); and the re-export of a stored version from its checkpoint (`reexport`), on this
machine's devices, parity gate included: a new version whose metadata names its parent and keeps its
metrics. The store is used through BentoML's public API only (`bentoml.models.create`, `get`, `delete`,
which also points `latest` back at the newest complete version)."""

from __future__ import annotations

import json
import logging
import platform
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import integrity
from models.formats import FORMATS
from models.registry import WEIGHTS_FILE
from models.specs import ModelSpec
from training.errors import StoredModelError
from training.export.checkpoint import load_checkpoint
from training.export.graphs import EXAMPLE_ROWS, METADATA_KEY, ExportedFiles, export, machine_devices
from training.export.parity import PARITY_BATCH_SIZES, check_parity

logger = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    import bentoml
    import onnx
    import onnxruntime
    import onnxscript

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": onnxscript.__version__,
        "bentoml": bentoml.__version__,
    }


def register(
    model: nn.Module,
    spec: ModelSpec,
    files: ExportedFiles,
    parity_inputs: np.ndarray,
    metadata: dict,
    labels: dict[str, str] | None = None,
) -> str:
    """Parity gate, then a new version `spec.name:<version>` in the BentoML model store
    (BENTOML_HOME). Returns the tag. Nothing is created when the gate fails."""
    import bentoml
    import onnx

    parity = check_parity(model, spec, files, parity_inputs)
    full_metadata = {
        **metadata,
        "io": spec.io_metadata(),
        "parity": parity,
        METADATA_KEY: files.metadata(),  # which formats, and for which devices
        "export_failures": files.failures,  # device-bound exports that failed and were skipped
        "versions": library_versions(),
        # sha256 of the files that passed the gate: the service refuses a file that differs
        integrity.METADATA_KEY: integrity.describe(files.paths()),
    }
    if "onnx" in files.files:
        onnx_file = files.files["onnx"]["cpu"]
        full_metadata["onnx_opset"] = int(
            onnx.load(str(onnx_file), load_external_data=False).opset_import[0].version
        )
    # JSON round trip: tuples -> lists, str subclasses (torch's TorchVersion) -> str, for model.yaml.
    full_metadata = json.loads(json.dumps(full_metadata))
    tag = None
    try:
        with bentoml.models.create(
            spec.name, labels=labels or {}, metadata=full_metadata, module="training.export"
        ) as bento_model:
            tag = bento_model.tag
            for path in files.paths():
                shutil.copyfile(path, bento_model.path_of(path.name))
    except BaseException:
        # BentoML removes a half-copied model on an Exception but not on Ctrl+C (KeyboardInterrupt):
        # whatever of this version reached the store goes, so that nothing half-written is served.
        if tag is not None:
            discard_version(tag)
        raise
    logger.info("registered %s in the BentoML model store", bento_model.tag)
    return str(bento_model.tag)


def discard_version(tag) -> None:
    """Remove one version from the model store, whatever of it was written (BentoML's public
    `bentoml.models.delete`: it removes the folder, model.yaml or not, and points `latest` at the
    newest complete version left)."""
    import bentoml

    try:
        bentoml.models.delete(tag)
    except bentoml.exceptions.NotFound:  # nothing of it reached the store
        return
    logger.warning("removed the unfinished %s from the model store", tag)


def export_and_register(
    model: nn.Module,
    spec: ModelSpec,
    parity_inputs: np.ndarray,
    out_dir: Path,
    metadata: dict,
    *,
    labels: dict[str, str] | None = None,
    do_register: bool = True,
    formats: tuple[str, ...] | None = None,
) -> str | None:
    """The tail of every training run: export to `out_dir` (every format, or `formats`), then parity
    gate (+ registration). `parity_inputs` are real test inputs (at least max(PARITY_BATCH_SIZES) rows)."""
    files = export(model, spec, parity_inputs[:EXAMPLE_ROWS], out_dir, formats)
    if not do_register:
        check_parity(model, spec, files, parity_inputs)
        return None
    return register(model, spec, files, parity_inputs, metadata, labels)


# Metadata a re-export writes anew (register()); the rest (metrics, split, config, training) is kept.
GENERATED_KEYS = (
    "io",
    "parity",
    METADATA_KEY,
    "export_failures",
    "versions",
    integrity.METADATA_KEY,
    "onnx_opset",
)


def reexport(tag: str, data_dir: Path, out_dir: Path, formats: tuple[str, ...] | None, download: bool) -> str:
    """A new version of a stored model: its checkpoint rebuilt, every (or each named) format exported
    on this machine's devices, the parent's files of the other formats and devices kept (a CUDA
    package added on a GPU machine leaves the ONNX file served on CPUs in place), the parity gate on
    all of them with the test split, its metrics and labels kept, its parent named in the metadata.
    Returns the new tag."""
    import bentoml

    from models import registry

    try:
        stored = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise StoredModelError(f"{tag} is not in the model store (bentoml models list)") from None
    entry = registry.get(stored.tag.name)
    folder = Path(stored.path)
    if not (folder / WEIGHTS_FILE).is_file():
        raise StoredModelError(
            f"{stored.tag} was registered without its checkpoint ({WEIGHTS_FILE}); retrain it with "
            f"`{entry.spec.train_command}`"
        )
    integrity.verify(folder / WEIGHTS_FILE, stored.info.metadata)  # IntegrityError if it changed
    model = load_checkpoint(entry, folder)
    parity_inputs = entry.load_splits(data_dir, download).test.x[: max(PARITY_BATCH_SIZES)]
    parent = dict(stored.info.metadata)
    metadata = {k: v for k, v in parent.items() if k not in GENERATED_KEYS}
    metadata["parent"] = {"tag": str(stored.tag), "formats": sorted(parent.get(METADATA_KEY, {}))}
    logger.info("re-exporting %s (%s) on %s", stored.tag, ", ".join(formats or FORMATS), machine_devices())
    fresh = export(model, entry.spec, parity_inputs[:EXAMPLE_ROWS], out_dir, formats)
    files: dict[str, dict[str, Path]] = {}
    for name, info in parent.get(METADATA_KEY, {}).items():
        kept = {d: folder / f for d, f in info["files"].items() if name in FORMATS and (folder / f).is_file()}
        if kept:
            files[name] = kept
    for name, by_device in fresh.files.items():
        files[name] = {**files.get(name, {}), **by_device}
    merged = ExportedFiles(files, fresh.failures, fresh.checkpoint)
    return register(model, entry.spec, merged, parity_inputs, metadata, labels=dict(stored.info.labels))
