"""Export eager -> TorchScript + ONNX, the parity gate, and registration in the BentoML model store.

`export()` writes `model.torchscript` and `model.onnx` (weights inside, dynamic batch axis, named
input/output from models.specs). `register()` runs the parity gate on those files and only then
creates a new version of the BentoML model; a mismatch raises `ParityError` and registers nothing.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import integrity
from models.jit import torchscript_allowed
from models.specs import ONNX_FILE, TORCHSCRIPT_FILE, ModelSpec

logger = logging.getLogger(__name__)

PARITY_BATCH_SIZES = (1, 7, 64)
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-4


class ParityError(RuntimeError):
    """An exported graph disagrees with eager PyTorch beyond tolerance."""


@dataclass(frozen=True)
class ExportedFiles:
    torchscript: Path
    onnx: Path

    @classmethod
    def in_dir(cls, out_dir: Path) -> ExportedFiles:
        return cls(out_dir / TORCHSCRIPT_FILE, out_dir / ONNX_FILE)


def export(model: nn.Module, spec: ModelSpec, example: np.ndarray, out_dir: Path) -> ExportedFiles:
    """Write TorchScript (torch.jit.script) and ONNX (dynamo exporter) of `model` to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ExportedFiles.in_dir(out_dir)
    model = model.eval().cpu()
    x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
    if len(x) < 2:
        raise ValueError("export needs an example batch of at least 2 rows (batch 1 would be specialized)")
    with torchscript_allowed():
        torch.jit.save(torch.jit.script(model), str(files.torchscript))
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        model,
        (x,),
        str(files.onnx),
        dynamo=True,
        external_data=False,
        input_names=[spec.input_name],
        output_names=[spec.output_name],
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    logger.info("exported %s and %s", files.torchscript, files.onnx)
    return files


def runners(spec: ModelSpec, files: ExportedFiles) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Every exported graph on every device this machine has: TorchScript and ONNX Runtime on the CPU,
    TorchScript on the GPU when torch sees one, ONNX Runtime's CUDA provider when onnxruntime-gpu is
    installed and a GPU is present (the serving devices of service.placement)."""
    import onnxruntime as ort

    from models.device import (
        CUDA_PROVIDER,
        CUDA_PROVIDER_OPTIONS,
        full_precision_cuda,
        nvidia_gpus,
        onnx_cuda_provider,
    )

    def torchscript_on(device: str):
        with torchscript_allowed():
            module = torch.jit.load(str(files.torchscript), map_location=device).eval()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x).to(device)).cpu().numpy()

        return run

    def onnx_on(provider: str, options: dict | None = None):
        session = ort.InferenceSession(str(files.onnx), providers=[(provider, options or {})])
        if session.get_providers()[0] != provider:
            raise ParityError(f"{spec.name}: ONNX Runtime did not get {provider}: {session.get_providers()}")
        return lambda x: session.run([spec.output_name], {spec.input_name: x})[0]

    out = {"torchscript": torchscript_on("cpu"), "onnx": onnx_on("CPUExecutionProvider")}
    if torch.cuda.is_available():
        full_precision_cuda()
        out["torchscript_cuda"] = torchscript_on("cuda")
        if nvidia_gpus()[0] and onnx_cuda_provider()[0]:
            out["onnx_cuda"] = onnx_on(CUDA_PROVIDER, CUDA_PROVIDER_OPTIONS)
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
            got = run(x_np)
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
        "onnx_opset": int(onnx.load(str(files.onnx), load_external_data=False).opset_import[0].version),
        "versions": library_versions(),
        # sha256 of the files that passed the gate: the service refuses a file that differs
        integrity.METADATA_KEY: integrity.describe([files.onnx, files.torchscript]),
    }
    # JSON round trip: tuples -> lists, str subclasses (torch's TorchVersion) -> str, for model.yaml.
    full_metadata = json.loads(json.dumps(full_metadata))
    tag = None
    try:
        with bentoml.models.create(
            spec.name, labels=labels or {}, metadata=full_metadata, module="training.export"
        ) as bento_model:
            tag = bento_model.tag
            shutil.copyfile(files.onnx, bento_model.path_of(ONNX_FILE))
            shutil.copyfile(files.torchscript, bento_model.path_of(TORCHSCRIPT_FILE))
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
) -> str | None:
    """The tail of every training run: export to `out_dir`, then parity gate (+ registration).
    `parity_inputs` are real test inputs (at least max(PARITY_BATCH_SIZES) rows)."""
    files = export(model, spec, parity_inputs[:8], out_dir)
    if not do_register:
        check_parity(model, spec, files, parity_inputs)
        return None
    return register(model, spec, files, parity_inputs, metadata, labels)
