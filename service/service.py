"""The BentoML service: housing_mlp and mnist_cnn behind validated, adaptively batched HTTP APIs.

    bentoml serve                                  # from the repo root (bentofile.yaml)
    MODEL_BACKEND=torchscript bentoml serve --port 3000
    curl -s localhost:3000/status

Life cycle: load both models from the BentoML model store (a missing one names its training
command) -> warm each backend up at a few batch sizes -> ready. Requests: pydantic validation (its own
400 per request) -> adaptive batching -> backend -> one output per input.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import attrs
import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from models import integrity
from models.specs import HOUSING, MNIST, ModelSpec
from service import oip
from service.images import Invert
from service.oip_routes import Binding
from service.placement import BackendUnavailableError, resolve
from service.schemas import HOUSING_RANGE, PIXEL_RANGE, DigitPrediction, HousingFeatures, Images
from service.settings import ServiceSettings, get_settings
from service.timing import record_unbatched

# A child of BentoML's logger: `bentoml serve` configures only that one (INFO, its format); others are muted.
logger = logging.getLogger("bentoml.model_serving")
settings = get_settings()
SERVICE_NAME = "model_serving"
PROBABILITIES = "probabilities"  # mnist_cnn's second V2 output: the softmax the JSON API answers with

# The Open Inference Protocol's view of each model (service/oip_routes.py): V2 requests join the
# batches of the JSON API that serves the same model.
V2_MODELS = {
    HOUSING.name: Binding(
        oip.ModelInterface(
            HOUSING.name,
            oip.Tensor(HOUSING.input_name, HOUSING.input_shape),
            (oip.Tensor(HOUSING.output_name, HOUSING.output_shape),),
            settings.max_housing_rows,
            HOUSING_RANGE,
        ),
        api="predict_housing",
        to_api=list,  # rows
        outputs={HOUSING.output_name: lambda values: np.asarray(values, dtype=np.float32)[:, None]},
        batch_items=settings.housing_max_batch_size,
        deadline_ms=settings.housing_max_latency_ms,
    ),
    MNIST.name: Binding(
        oip.ModelInterface(
            MNIST.name,
            oip.Tensor(MNIST.input_name, MNIST.input_shape),
            (
                oip.Tensor(MNIST.output_name, MNIST.output_shape),
                oip.Tensor(PROBABILITIES, MNIST.output_shape),
            ),
            settings.max_images,
            PIXEL_RANGE,
        ),
        api="classify_digits",
        to_api=lambda images: list(images[:, 0]),  # (28, 28) images, as the JSON API takes them
        outputs={
            MNIST.output_name: lambda predictions: np.stack([p._logits for p in predictions]),
            PROBABILITIES: lambda predictions: np.asarray(
                [p.probabilities for p in predictions], dtype=np.float32
            ),
        },
        batch_items=settings.mnist_max_batch_size,
        deadline_ms=settings.mnist_max_latency_ms,
    ),
}


class ModelNotFoundError(RuntimeError):
    pass


class ModelLoadError(RuntimeError):
    """A stored model file that the backend cannot load, or that does not behave like the model."""


@dataclass
class ServedModel:
    spec: ModelSpec
    tag: str
    metadata: dict
    backend: object  # models.backends.Backend

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.backend(np.ascontiguousarray(x, dtype=np.float32))

    def status(self) -> dict:
        return {
            "tag": self.tag,
            **self.backend.describe(),
            "input": self.metadata.get("io", {}).get("input"),
            "test_metrics": {k: v for k, v in self.metadata.items() if k.startswith("test_")},
        }


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


HOUSING_REF = StoreModel(settings.housing_model, train_command=HOUSING.train_command)
MNIST_REF = StoreModel(settings.mnist_model, train_command=MNIST.train_command)
MODELS = ((HOUSING_REF, HOUSING), (MNIST_REF, MNIST))


def stored_model(ref: bentoml.models.BentoModel, spec: ModelSpec):
    stored = ref.stored
    if stored is None:
        raise ModelNotFoundError(missing_model(ref.tag, spec.train_command))
    return stored


def preflight() -> None:
    """Checks that stop `bentoml serve` with one line before any worker starts (the service's
    @bentoml.on_deployment hook: once, in the serving process): both models are in the store, the
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
        for ref, spec in MODELS:
            stored_model(ref, spec)
        placement = resolve(settings.model_backend, settings.model_device)
        logger.info("%s; %d worker(s)", placement.reason, settings.worker_count())
        fmt = FORMATS[placement.backend]
        for ref, spec in MODELS:
            if fmt.device_bound and placement.device != "cpu":
                model_file(ref, spec, fmt, placement.device)
            else:
                warm_up(load_model(ref, spec, settings, device="cpu"), (1, 2))
    except (ModelNotFoundError, DeviceUnavailableError, BackendUnavailableError, ModelLoadError) as exc:
        raise SystemExit(f"error: {exc}") from None


def load_model(
    ref: bentoml.models.BentoModel, spec: ModelSpec, config: ServiceSettings, device: str | None = None
) -> ServedModel:
    """The model's file for the chosen backend, checked against its recorded sha256 and loaded on the
    chosen device (or on `device`)."""
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
            f"({type(exc).__name__}: {first_line(exc)}); re-export it with `{spec.train_command}`"
        ) from exc
    return ServedModel(spec, str(stored.tag), dict(stored.info.metadata), backend)


def model_file(ref: bentoml.models.BentoModel, spec: ModelSpec, fmt, device: str):
    """The stored model, once its file of format `fmt` for `device` is there with the sha256 recorded
    at registration (ModelLoadError otherwise)."""
    stored = stored_model(ref, spec)
    filename = fmt.filename(device)
    if not (Path(stored.path) / filename).is_file():
        where = " on a machine with a GPU" if fmt.device_bound and device == "cuda" else ""
        raise ModelLoadError(
            f"{stored.tag} has no {filename} (MODEL_BACKEND={fmt.name} on {device}); re-export it{where} "
            f"with `{spec.train_command}`, or choose another MODEL_BACKEND"
        )
    try:
        if not integrity.verify(Path(stored.path) / filename, stored.info.metadata):
            logger.warning(
                "%s: no sha256 recorded for %s (registered before integrity checks)", stored.tag, filename
            )
    except integrity.IntegrityError as exc:
        raise ModelLoadError(f"{stored.tag}: {exc}; re-export it with `{spec.train_command}`") from None
    return stored


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def warm_up(model: ServedModel, batch_sizes: tuple[int, ...]) -> None:
    """Run the backend at a few batch sizes (allocations, kernel selection) and check the output: a
    file of another model fails here (wrong input or output shape)."""
    spec, kind = model.spec, model.backend.kind
    for n in batch_sizes:
        try:
            out = model.predict(np.full((n, *spec.input_shape), 0.5, dtype=np.float32))
        except Exception as exc:
            raise ModelLoadError(
                f"{model.tag}: its {kind} model does not take {spec.name}'s input (batch of shape "
                f"{(n, *spec.input_shape)}): {type(exc).__name__}: {first_line(exc)}; re-export it with "
                f"`{spec.train_command}`"
            ) from exc
        if out.shape != (n, *spec.output_shape) or not np.isfinite(out).all():
            raise ModelLoadError(
                f"{model.tag}: its {kind} model answered a batch of {n} with shape {out.shape} "
                f"(expected {(n, *spec.output_shape)}, finite); re-export it with `{spec.train_command}`"
            )
    logger.info("warmed up %s at batch sizes %s", model.tag, batch_sizes)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def digit_predictions(logits: np.ndarray) -> list[DigitPrediction]:
    probs = softmax(logits.astype(np.float64))
    predictions = [DigitPrediction(label=int(p.argmax()), probabilities=p.tolist()) for p in probs]
    for prediction, row in zip(predictions, logits, strict=True):
        prediction._logits = row
    return predictions


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _status(_: Request) -> JSONResponse:
    return JSONResponse(bentoml.get_current_service().status())


status_app = Starlette(routes=[Route("/status", _status, methods=["GET"])])


@bentoml.service(
    name=SERVICE_NAME,
    # BentoML divides traffic.max_concurrency by the worker count; MAX_CONCURRENCY is per worker.
    traffic={
        "timeout": settings.request_timeout_s,
        "max_concurrency": settings.max_concurrency * settings.worker_count(),
    },
    workers=settings.worker_count(),
    http={"host": "127.0.0.1", "port": 3000},
    logging={"access": {"enabled": settings.access_log}},
    # Without TRACING, every path is excluded from OpenTelemetry's ASGI middleware (no span per request).
    tracing={} if settings.tracing else {"excluded_urls": ["/"]},
)
@bentoml.asgi_app(status_app, path="/")
class ModelService:
    housing_ref = HOUSING_REF  # class attributes: `bentoml build` packs both models
    mnist_ref = MNIST_REF

    @bentoml.on_deployment
    def check_before_workers() -> None:
        preflight()

    def __init__(self) -> None:
        self.ready = False
        self.housing = load_model(HOUSING_REF, HOUSING, settings)
        self.mnist = load_model(MNIST_REF, MNIST, settings)
        warm_up(self.housing, (1, 8, settings.housing_max_batch_size))
        warm_up(self.mnist, (1, 8, settings.mnist_max_batch_size))
        # Everything alive now (models, libraries) lives as long as the process: move it out of the
        # collector's generations so that full collections under load only scan request garbage.
        gc.collect()
        gc.freeze()
        self.ready = True

    def __is_ready__(self) -> bool:
        return self.ready

    def served(self, name: str) -> ServedModel:
        return {self.housing.spec.name: self.housing, self.mnist.spec.name: self.mnist}[name]

    def status(self) -> dict:
        from bentoml._internal.context import server_context

        return {
            "ready": self.ready,
            "worker": {"index": server_context.worker_index, "pid": os.getpid()},
            "workers": settings.worker_count(),
            "placement": resolve(settings.model_backend, settings.model_device).as_dict(),
            "settings": settings.model_dump(mode="json"),  # secrets as "**********"
            "models": {m.spec.name: m.status() for m in (self.housing, self.mnist)},
        }

    @bentoml.api(
        batchable=True,
        max_batch_size=settings.housing_max_batch_size,
        max_latency_ms=settings.housing_max_latency_ms,
    )
    def predict_housing(self, features: HousingFeatures) -> list[float]:
        """Median house value (in $100,000) for each row of raw California Housing features."""
        out = self.housing.predict(np.asarray(features, dtype=np.float32))[:, 0]
        if not np.isfinite(out).all():  # unreachable for rows inside the schema's bounds; never emit NaN
            raise RuntimeError(f"non-finite housing prediction for a batch of {len(out)} rows")
        return out.tolist()

    @bentoml.api(
        batchable=True,
        max_batch_size=settings.mnist_max_batch_size,
        max_latency_ms=settings.mnist_max_latency_ms,
    )
    def classify_digits(self, images: Images) -> list[DigitPrediction]:
        """Label and class probabilities for each 28x28 image (intensities in [0, 1], white on black)."""
        x = np.asarray(images, dtype=np.float32)[:, None, :, :]
        return digit_predictions(self.mnist.predict(x))

    @bentoml.api
    def classify_digit_image(self, image: Path, invert: Invert = "auto") -> DigitPrediction:
        """Classify one uploaded picture of a digit (PNG, JPEG, ... any size, RGB or grayscale).

        invert: `auto` detects dark-on-light drawings from the border; `yes` / `no` force it."""
        from PIL import Image, UnidentifiedImageError

        from service.images import BlankImageError, to_mnist

        start = time.time()
        size = image.stat().st_size
        if size > settings.max_upload_bytes:
            return error(413, f"image file is {size} bytes; the limit is {settings.max_upload_bytes}")
        try:
            with Image.open(image) as img:
                w, h = img.size
                if w * h > settings.max_upload_pixels:
                    return error(
                        413, f"image is {w}x{h} pixels; the limit is {settings.max_upload_pixels} pixels"
                    )
                img.load()
                x = to_mnist(img, invert)
        except UnidentifiedImageError:
            return error(
                400, "image: not an image file Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP, ...)"
            )
        except BlankImageError as exc:
            return error(400, f"image: {exc}")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            return error(400, f"image: could not be decoded ({exc})")
        prediction = digit_predictions(self.mnist.predict(x[None, None]))[0]
        record_unbatched(start, 1)
        return prediction
