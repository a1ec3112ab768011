"""Models from the BentoML model store into a worker: found, checked (file, sha256), loaded on the
chosen backend and device, warmed up; and the preflight that stops `bentoml serve` with one line
before any worker starts when one of those steps would fail.

A missing model, a file changed after registration, a file the runtime cannot load or that does not
behave like the model, a device that cannot be had: each is one line naming the fix (the command that
trains or re-exports the model, the setting to change).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import attrs
import bentoml
import numpy as np

from models import integrity
from models.messages import first_line
from models.registry import reexport_command
from models.specs import ModelSpec
from service.placement import BackendUnavailableError, resolve
from service.settings import ServiceSettings

# A child of BentoML's logger: `bentoml serve` configures only that one (INFO, its format); others are muted.
logger = logging.getLogger("bentoml.model_serving")


class ModelNotFoundError(RuntimeError):
    pass


class ModelLoadError(RuntimeError):
    """A stored model file that the backend cannot load, or that does not behave like the model."""


def missing_model(tag, train_command: str) -> str:
    home = os.environ.get("BENTOML_HOME", "~/bentoml")
    return (
        f"model {tag} is not in the BentoML model store (BENTOML_HOME={home}). "
        f"Train and register it with `{train_command}` (or `make train`)."
    )


@attrs.frozen
class StoreModel(bentoml.models.BentoModel):
    """A reference to a model in the local store. BentoML resolves the service's models before the
    workers start (`bentoml serve`) and when it packs a bento (`bentoml build`); a missing one stops
    either with one line naming the command that trains it (stock: a NotFound traceback, after
    trying BentoCloud)."""

    train_command: str = attrs.field(default="make train", eq=False)

    def resolve(self, base_path=None):
        if self.stored is None:
            raise SystemExit(f"error: {missing_model(self.tag, self.train_command)}")
        return super().resolve(base_path)

    def to_info(self, alias=None):
        if self.stored is None:
            raise SystemExit(f"error: {missing_model(self.tag, self.train_command)}")
        return super().to_info(alias)


def stored_model(ref: bentoml.models.BentoModel, spec: ModelSpec):
    stored = ref.stored
    if stored is None:
        raise ModelNotFoundError(missing_model(ref.tag, spec.train_command))
    return stored


def preflight(models: list[tuple[bentoml.models.BentoModel, ModelSpec]], settings: ServiceSettings) -> None:
    """Checks that stop `bentoml serve` with one line before any worker starts (the service's
    @bentoml.on_deployment hook: once, in the serving process): every model is in the store, the
    requested device exists (MODEL_DEVICE=cuda without a GPU is an error), each model has the file of
    the chosen format for that device with its recorded sha256, and that file loads and answers a
    warm-up batch correctly. A corrupted model.onnx or a TorchScript file of another model never gets
    as far as a worker that would crash and be restarted over and over behind a server that never
    turns ready. Loaded on the CPU, so that this long-lived process keeps no CUDA context (GPU memory)
    that only the workers need; a package compiled for the GPU only (aoti on cuda) is checked by
    file and hash here, and loaded by the workers."""
    from models.device import DeviceUnavailableError
    from models.formats import FORMATS

    try:
        for ref, spec in models:
            stored_model(ref, spec)
        placement = resolve(settings.model_backend, settings.model_device)
        logger.info("%s; %d worker(s)", placement.reason, settings.worker_count())
        fmt = FORMATS[placement.backend]
        for ref, spec in models:
            if fmt.device_bound and placement.device != "cpu":
                model_file(ref, spec, fmt, placement.device)
            else:
                stored, backend = load_model(ref, spec, settings, device="cpu")
                warm_up(backend, spec, str(stored.tag), (1, 2))
    except (ModelNotFoundError, DeviceUnavailableError, BackendUnavailableError, ModelLoadError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if settings.grpc_port:
        # the workers share the gRPC port with SO_REUSEPORT, which would let them share it with another
        # server too: refuse a port something already listens on
        from service.patches.reuseport import check_port_free

        check_port_free(settings.grpc_host, settings.grpc_port, setting="GRPC_PORT (0: no gRPC)")


def load_model(
    ref: bentoml.models.BentoModel, spec: ModelSpec, config: ServiceSettings, device: str | None = None
):
    """(the stored model, its backend): the model's file for the chosen backend, checked against its
    recorded sha256 and loaded on the chosen device (or on `device`)."""
    from models.device import DeviceUnavailableError
    from models.formats import FORMATS

    placement = resolve(config.model_backend, config.model_device)
    device = device or placement.device
    fmt = FORMATS[placement.backend]
    stored = model_file(ref, spec, fmt, device)
    filename = fmt.filename(device)
    try:
        backend = fmt.load(Path(stored.path), spec, device, config.threads_per_worker())
    except DeviceUnavailableError:
        raise
    except ImportError as exc:  # the runtime itself is missing: an environment problem, not the file
        raise BackendUnavailableError(
            f"MODEL_BACKEND={placement.backend} needs {exc.name or exc}, which is not installed here; "
            "reinstall the environment (`make setup`) or rebuild the image (`make container`)"
        ) from exc
    except Exception as exc:  # whatever the runtime raises for a bad file: name the file and the fix
        raise ModelLoadError(
            f"{stored.tag}: {filename} could not be loaded by {placement.backend} "
            f"({type(exc).__name__}: {first_line(exc)}); re-export it with "
            f"`{reexport_command(str(stored.tag), stored.path, spec.train_command)}`"
        ) from exc
    return stored, backend


def version_number(stored) -> int:
    """1 + how many versions of the model the store registered before this one (by creation time)."""
    older = [
        m for m in bentoml.models.list(stored.tag.name)
        if (m.info.creation_time, m.tag.version) < (stored.info.creation_time, stored.tag.version)
    ]  # fmt: skip
    return 1 + len(older)


def model_file(ref: bentoml.models.BentoModel, spec: ModelSpec, fmt, device: str):
    """The stored model, once its file of format `fmt` for `device` is there with the sha256 recorded
    at registration (ModelLoadError otherwise)."""
    stored = stored_model(ref, spec)
    filename = fmt.filename(device)
    if not (Path(stored.path) / filename).is_file():
        where = " on a machine with a GPU" if fmt.device_bound and device == "cuda" else ""
        command = reexport_command(str(stored.tag), stored.path, spec.train_command)
        raise ModelLoadError(
            f"{stored.tag} has no {filename} (MODEL_BACKEND={fmt.name} on {device}); re-export it{where} "
            f"with `{command}`, or choose another MODEL_BACKEND"
        )
    try:
        if not integrity.verify(Path(stored.path) / filename, stored.info.metadata):
            logger.warning(
                "%s: no sha256 recorded for %s (registered before integrity checks)", stored.tag, filename
            )
    except integrity.IntegrityError as exc:
        command = reexport_command(str(stored.tag), stored.path, spec.train_command)
        raise ModelLoadError(f"{stored.tag}: {exc}; re-export it with `{command}`") from None
    return stored


def _reexport(tag: str, spec: ModelSpec) -> str:
    return reexport_command(tag, bentoml.models.get(tag).path, spec.train_command)


def warm_up(backend, spec: ModelSpec, tag: str, batch_sizes: tuple[int, ...], repeats: int = 1):
    """Run the backend at a few batch sizes (allocations, kernel selection) and check the output: a
    file of another model fails here (wrong input or output shape). Returns (rows, seconds) of the
    last of `repeats` runs per size: the batcher's first cost estimates."""
    kind = backend.kind
    timings = []
    for n in batch_sizes:
        x = np.full((n, *spec.input_shape), 0.5, dtype=np.float32)
        for _ in range(repeats):
            start = time.perf_counter()
            try:
                out = backend(x)
            except Exception as exc:
                raise ModelLoadError(
                    f"{tag}: its {kind} model does not take {spec.name}'s input (batch of shape "
                    f"{(n, *spec.input_shape)}): {type(exc).__name__}: {first_line(exc)}; re-export it "
                    f"with `{_reexport(tag, spec)}`"
                ) from exc
            seconds = time.perf_counter() - start
        if out.shape != (n, *spec.output_shape) or not np.isfinite(out).all():
            raise ModelLoadError(
                f"{tag}: its {kind} model answered a batch of {n} with shape {out.shape} "
                f"(expected {(n, *spec.output_shape)}, finite); re-export it with `{_reexport(tag, spec)}`"
            )
        timings.append((n, seconds))
    logger.info("warmed up %s at batch sizes %s", tag, batch_sizes)
    return timings


def serve(ref: bentoml.models.BentoModel, interface, settings: ServiceSettings, board=None):
    """One model loaded from the store, warmed up and given its batcher: the data plane's ServedModel."""
    from service.batching import CostModel
    from service.dataplane import ServedModel

    spec, limits = interface.spec, interface.limits
    stored, backend = load_model(ref, spec, settings)
    tag = str(stored.tag)
    sizes = tuple(sorted({1, 8, limits.max_batch_size}))
    cost = CostModel.fit(warm_up(backend, spec, tag, sizes, repeats=3))
    logger.info(
        "%s: batches of up to %d rows, deadline %d ms; cost %.3f ms + %.4f ms per row",
        tag, limits.max_batch_size, limits.max_latency_ms, cost.fixed * 1e3, cost.per_row * 1e3,
    )  # fmt: skip
    metadata = dict(stored.info.metadata)
    return ServedModel.start(interface, backend, tag, metadata, version_number(stored), cost, board=board)
