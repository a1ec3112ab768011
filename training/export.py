"""Export eager -> every format of the registry (models/formats.py), the parity gate, and registration
in the BentoML model store.

`export()` writes each format's file(s) (`model.onnx`, `model.torchscript`, `model.cpu.pt2`, and
`model.cuda.pt2` on a GPU machine): weights inside, dynamic batch axis, named input/output from
models.specs; and the checkpoint: the trained weights (`weights.safetensors`, no pickle) and the
network's config (`config.json`). `register()` runs the parity gate on those files, through the
serving backends, and only then creates a new version of the BentoML model; a mismatch raises
`ParityError` and registers nothing.

Re-export a stored version without retraining (on this machine's devices: a CUDA AOTInductor package
on a GPU machine), parity gate included; a new version whose metadata names its parent and keeps its
metrics:

    python -m training.export mnist_cnn:latest                    # every format
    python -m training.export housing_mlp:abc123 --formats aoti   # only these
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import integrity
from models.device import available_cpus, nvidia_gpus, onnx_cuda_provider
from models.formats import FORMATS
from models.registry import CONFIG_FILE, WEIGHTS_FILE
from models.specs import ModelSpec

logger = logging.getLogger("training.export")  # also when run as __main__

# 1, 7 and 64 (the acceptance sizes) and 100: none of them the export example's 8 rows, 100 beyond it.
PARITY_BATCH_SIZES = (1, 7, 64, 100)
EXAMPLE_ROWS = 8  # the example batch every format is exported (traced) with: the first test inputs
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-4
METADATA_KEY = "formats"  # metadata["formats"][format] = {"files": {device: file name}}


class ParityError(RuntimeError):
    """An exported graph disagrees with eager PyTorch beyond tolerance."""


def machine_devices() -> tuple[str, ...]:
    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


class StoredModelError(RuntimeError):
    """A stored version that cannot be re-exported (missing, or registered without a checkpoint)."""


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
                error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
                failures.setdefault(name, {})[device] = error
                logger.error("export of %s for %s failed, skipped: %s", name, device, error)
                continue
            files.setdefault(name, {})[device] = path
            logger.info("exported %s (%s, %s)", path, name, device)
    if not files:
        raise RuntimeError(f"{spec.name}: no format exported: {failures}")
    return ExportedFiles(files, failures, write_checkpoint(model, out_dir))


def write_checkpoint(model: nn.Module, out_dir: Path) -> tuple[Path, ...]:
    """The trained weights as safetensors and the network's config (its `config` dataclass) as JSON."""
    from safetensors.torch import save_file

    weights, config = out_dir / WEIGHTS_FILE, out_dir / CONFIG_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"format": "pt"})
    settings = getattr(model, "config", None)
    config.write_text(json.dumps(asdict(settings) if is_dataclass(settings) else {}, indent=2))
    return weights, config


def load_checkpoint(entry, folder: Path) -> nn.Module:
    """The network of a stored version, rebuilt from its config with its trained weights, in eval mode."""
    from safetensors.torch import load_file

    model = entry.build(json.loads((folder / CONFIG_FILE).read_text()))
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    return model.eval()


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
                failures.append(
                    f"{backend} batch {b}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                )
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
    """Remove one version's folder from the model store (it may lack its model.yaml, which
    `bentoml models delete` needs) and point `latest` back at the newest complete version."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    store = Path(BentoMLContainer.model_store_dir.get())
    shutil.rmtree(store / tag.name / tag.version, ignore_errors=True)
    latest = store / tag.name / "latest"
    if latest.exists() and latest.read_text().strip() == tag.version:
        versions = sorted(
            (p for p in (store / tag.name).iterdir() if (p / "model.yaml").is_file()),
            key=lambda p: p.stat().st_mtime,
        )
        if versions:
            latest.write_text(versions[-1].name)
        else:
            latest.unlink()
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


def main(argv: list[str] | None = None) -> str:
    import argparse
    import tempfile

    from training.cli import format_list
    from training.data import default_data_dir

    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Re-export a stored model version from its checkpoint (no retraining): every format of "
        "models/formats.py, or --formats, on this machine's devices; parity gate; a new version.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("tag", help="MODEL:VERSION in the BentoML model store (MODEL:latest for the newest)")
    parser.add_argument("--formats", type=format_list, default=None, help="only these formats (default: all)")
    parser.add_argument(
        "--data-dir", type=Path, default=default_data_dir(), help="dataset of the parity gate's test split"
    )
    parser.add_argument("--no-download", action="store_true", help="never try to download the dataset")
    parser.add_argument("--out-dir", type=Path, default=None, help="keep the exported files here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reexport-") as tmp:
        tag = reexport(args.tag, args.data_dir, args.out_dir or Path(tmp), args.formats, not args.no_download)
    print(f"registered {tag} (re-exported from {args.tag})")
    return tag


if __name__ == "__main__":
    # through the imported module, not this __main__ copy: its exception classes are the ones
    # training.cli turns into one-line errors
    from training import export
    from training.cli import run

    run(export.main)
