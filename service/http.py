"""The service's HTTP API, ours end to end: the JSON endpoints, the image upload, the Open Inference
Protocol (KServe V2) REST routes, /status, the first page, /docs and /docs.json.

A prediction, whatever its protocol:

    body -> codec (service/codecs.py, service/oip.py, service/images.py): one float32 array, or a 4xx
         -> the model's batcher (service/batching.py): admission by deadline (503), batched with the
            other requests of that model, run on the backend, its output rows sliced back
         -> post-processing and encoding (service/endpoints.py) -> 200 with `Server-Timing`

`HttpApi.app` is a Starlette app with every route; the service mounts it in BentoML
(`@bentoml.asgi_app`), and service/front.py sends the prediction routes to the handlers here
directly, in front of BentoML's per-request middleware. The handlers of the hot routes are plain ASGI
callables (no Request/Response objects per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from models.formats import FORMATS
from service import oip, pages
from service.batching import Batcher, BatchFailed, CostModel, Overloaded
from service.codecs import InvalidRequest, dumps, error
from service.endpoints import ENDPOINTS, UPLOAD_MODEL, UPLOAD_ROUTE, Endpoint
from service.images import decode_upload
from service.loading import ServedModel
from service.metrics import ModelMetrics
from service.openapi import document
from service.settings import ServiceSettings
from service.stats_board import StatsBoard
from service.timing import Timing, TritonStats

logger = logging.getLogger("bentoml.model_serving.http")
NOT_READY = "the service is starting; retry when /readyz answers 200"
INFERENCE_FAILED = "inference failed; the server log has the details"
UNEXPECTED = "unexpected error; the server log has the details"
# A request expected to wait longer than this in its batcher watches its connection meanwhile: when
# the client goes away, its rows are dropped from the queue instead of computed. Shorter waits are not
# worth a watcher task per request.
WATCH_DISCONNECT_S = 0.05
JSON = b"application/json"
# Content types a JSON endpoint refuses (415): other encodings of a body. Any other type is read as
# JSON (as BentoML did; `curl -d` sends application/x-www-form-urlencoded).
NOT_JSON = ("application/vnd.bentoml+pickle", "multipart/")


T = TypeVar("T")


class ClientGone(Exception):
    """The client closed the connection while its request waited in the batcher."""


@dataclass
class LiveModel:
    """One model in this worker: what it serves, its batcher and its statistics."""

    endpoint: Endpoint
    served: ServedModel
    batcher: Batcher
    stats: TritonStats

    @classmethod
    def start(
        cls,
        endpoint: Endpoint,
        served: ServedModel,
        cost: CostModel,
        metrics: bool = True,
        board: StatsBoard | None = None,
    ) -> LiveModel:
        """The model's batcher, observed by its Triton statistics, (`metrics`) Prometheus metrics and
        (`board`) the statistics shared with the other workers."""
        stats = TritonStats()
        observers = [stats, *([ModelMetrics(endpoint.name, served.version)] if metrics else [])]
        if board is not None:
            observers.append(board.watch(endpoint.name, served.version, stats))
        batcher = Batcher(
            endpoint.name,
            served.backend,
            endpoint.spec.input_shape,
            endpoint.max_batch_size,
            endpoint.deadline_ms / 1000,
            cost=cost,
            allocate=getattr(served.backend, "allocate", None),  # pinned host memory on a GPU
            observers=observers,
            deadline_setting=endpoint.deadline_setting,
            queue_delay_s=endpoint.queue_delay_us / 1e6,
        )
        return cls(endpoint, served, batcher, stats)

    @property
    def version(self) -> str:
        return self.served.version

    async def admitted(self, decoding: Coroutine[Any, Any, T]) -> T:
        """A request's decoding (read and parse its body), once the batcher admits a request of the
        recent mean size (Batcher.reserve: refused at once, unread, when the queue is past its
        deadline); the reservation is given back if the decoding fails (a 4xx, a client gone)."""
        try:
            self.batcher.reserve()
        except BaseException:
            decoding.close()
            raise
        try:
            return await decoding
        except BaseException:
            self.batcher.release()
            raise

    async def infer(self, x: np.ndarray, timing: Timing, receive=None, reserved: bool = False) -> np.ndarray:
        """The model's output rows for `x` (Overloaded, BatchFailed or ClientGone otherwise).
        `reserved`: admitted before its body was read (Batcher.reserve)."""
        batcher = self.batcher
        request = batcher.submit(x, timing, reserved)
        if receive is None or request.expected_s < WATCH_DISCONNECT_S:
            return await batcher.result(request)
        result = asyncio.ensure_future(batcher.result(request))
        watcher = asyncio.ensure_future(_disconnected(receive))
        try:
            done, _ = await asyncio.wait((result, watcher), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # this task was cancelled (REQUEST_TIMEOUT_S): so is the request
            watcher.cancel()
            result.cancel()
            raise
        watcher.cancel()
        if result in done:
            return result.result()
        result.cancel()  # the client went away first: its queued rows are never computed
        raise ClientGone()


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def read_body(receive) -> bytes:
    """The whole request body (its size limits are service/limits.py's, before this)."""
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


async def respond(send, status: int, body: bytes, content_type: bytes = JSON, headers=()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def respond_error(send, exc: Exception) -> None:
    """The JSON answer of a request that got no prediction."""
    if isinstance(exc, oip.ProtocolError):
        return await respond(send, exc.status, dumps({"error": str(exc)}))
    if isinstance(exc, InvalidRequest):
        headers = [(k.lower().encode(), str(v).encode()) for k, v in exc.headers.items()]
        return await respond(send, exc.status, dumps(exc.body), headers=headers)
    if isinstance(exc, Overloaded):
        retry = str(max(1, round(exc.retry_after_s))).encode()
        return await respond(send, 503, dumps({"error": str(exc)}), headers=[(b"retry-after", retry)])
    if isinstance(exc, BatchFailed):
        return await respond(send, 500, dumps({"error": INFERENCE_FAILED}))
    logger.error("unexpected error on a prediction", exc_info=exc)
    return await respond(send, 500, dumps({"error": UNEXPECTED}))


def header_length(scope) -> str | None:
    """The binary tensor extension's Inference-Header-Content-Length, if any."""
    for key, value in scope["headers"]:
        if key == b"inference-header-content-length":
            return value.decode("latin-1")
    return None


def content_type(scope) -> str:
    for key, value in scope["headers"]:
        if key == b"content-type":
            return value.decode("latin-1").lower()
    return ""


class Prediction:
    """A prediction route (POST only: another method gets Starlette's 405 with Allow). `predict` decodes
    the request into one array, has its model's batcher answer it, and encodes the answer; every
    refusal is a JSON error; a client that went away gets nothing."""

    def __init__(self, api: HttpApi) -> None:
        self.api = api

    async def __call__(self, scope, receive, send) -> None:
        if scope["method"] != "POST":
            return await self.api.app(scope, receive, send)
        timing = Timing()
        try:
            content, content_type, headers = await self.predict(scope, receive, timing)
        except ClientGone:
            return
        except Exception as exc:
            return await respond_error(send, exc)
        headers = [(b"server-timing", self.api.server_timing(timing)), *headers]
        await respond(send, 200, content, content_type, headers)

    async def predict(self, scope, receive, timing: Timing) -> tuple[bytes, bytes, list]:
        """(body, content type, extra headers) of the answer."""
        raise NotImplementedError


class JsonPredict(Prediction):
    """POST <endpoint.route>: the JSON endpoint of one model."""

    def __init__(self, api: HttpApi, endpoint: Endpoint) -> None:
        super().__init__(api)
        self.endpoint = endpoint

    async def predict(self, scope, receive, timing: Timing) -> tuple[bytes, bytes, list]:
        model = self.api.model(self.endpoint.name)
        media = content_type(scope)
        if media.startswith(NOT_JSON):
            raise error(
                415, f"Content-Type {media.split(';')[0]} is not supported here; send application/json"
            )
        x = await model.admitted(self._decode(receive))
        rows = await model.infer(x, timing, receive, reserved=True)
        return dumps(self.endpoint.answer(rows)), JSON, []

    async def _decode(self, receive) -> np.ndarray:
        return self.endpoint.codec.decode(await read_body(receive))


class UploadPredict(Prediction):
    """POST /classify_digit_image: a picture of a digit (multipart `image`, optional `invert`)."""

    async def predict(self, scope, receive, timing: Timing) -> tuple[bytes, bytes, list]:
        model = self.api.model(UPLOAD_MODEL)
        x = await model.admitted(self._decode(scope, receive))
        rows = await model.infer(x, timing, receive, reserved=True)
        return dumps(model.endpoint.answer(rows)[0]), JSON, []

    async def _decode(self, scope, receive) -> np.ndarray:
        settings = self.api.settings
        request = Request(scope, receive)
        try:
            async with request.form(max_files=1, max_fields=8) as form:
                upload, invert = form.get("image"), form.get("invert", "auto")
                if upload is None or isinstance(upload, str):
                    raise error(400, "image: a file field named `image` is required (multipart/form-data)")
                data = await upload.read()
        except HTTPException as exc:  # Starlette's multipart parser: a malformed body
            raise error(exc.status_code, str(exc.detail)) from None
        except MultiPartException as exc:  # the same, where Starlette's app is not in the scope
            raise error(400, exc.message) from None
        # decoding a picture can take milliseconds: off the event loop
        return await asyncio.to_thread(
            decode_upload, data, str(invert), settings.max_upload_bytes, settings.max_upload_pixels
        )


class V2Infer(Prediction):
    """POST /v2/models/{name}[/versions/{version}]/infer (JSON or binary tensors)."""

    async def predict(self, scope, receive, timing: Timing) -> tuple[bytes, bytes, list]:
        model = self.api.v2_model(scope["path_params"])
        parsed = await model.admitted(self._decode(scope, receive, model))
        rows = await model.infer(parsed.array, timing, receive, reserved=True)
        values = model.endpoint.v2.output_values(rows, [name for name, _ in parsed.outputs])
        content, headers = oip.encode_infer(model.endpoint.v2, model.version, parsed, values)
        extra = []
        if oip.HEADER_LENGTH in headers:
            extra.append((b"inference-header-content-length", headers[oip.HEADER_LENGTH].encode()))
        return content, headers["Content-Type"].encode(), extra

    @staticmethod
    async def _decode(scope, receive, model: LiveModel) -> oip.InferRequest:
        return oip.parse_infer(await read_body(receive), header_length(scope), model.endpoint.v2)


def _json_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's 404 (no such route) and 405 (wrong method) as `{"error": ...}`."""
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


def _json_protocol_error(request: Request, exc: oip.ProtocolError) -> JSONResponse:
    """An Open Inference Protocol route's refusal (unknown model or version, not ready yet)."""
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


class HttpApi:
    """Every route of the service. `attach()` gives it the worker's models (the service instance does,
    once they are loaded and warmed up); until then predictions answer 503."""

    def __init__(self, settings: ServiceSettings, server_name: str) -> None:
        self.settings = settings
        self.server_name = server_name
        self.models: dict[str, LiveModel] = {}
        self.board: StatsBoard | None = None  # the statistics shared between workers
        self.placement: dict = {}
        self._backend_label = ""  # Server-Timing's backend: "onnx/cpu"
        self.handlers = {e.route: JsonPredict(self, e) for e in ENDPOINTS.values()}
        self.handlers[UPLOAD_ROUTE] = UploadPredict(self)
        self.v2_infer = V2Infer(self)
        model = "/v2/models/{name}"
        routes = [Route(path, handler, methods=["POST"]) for path, handler in self.handlers.items()]
        routes += [
            Route("/", self.index, methods=["GET"]),
            Route("/docs", self.docs_page, methods=["GET"]),
            Route("/docs.json", self.docs_json, methods=["GET"]),
            Route("/status", self.status, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.v2_ready, methods=["GET"]),
            Route("/v2/models/stats", self.stats, methods=["GET"]),
        ]
        for base in (model, model + "/versions/{version}"):
            routes += [
                Route(base, self.model_metadata, methods=["GET"]),
                Route(base + "/ready", self.model_ready, methods=["GET"]),
                Route(base + "/config", self.model_config, methods=["GET"]),
                Route(base + "/stats", self.stats, methods=["GET"]),
                Route(base + "/infer", self.v2_infer, methods=["POST"]),
            ]
        handlers = {HTTPException: _json_http_error, oip.ProtocolError: _json_protocol_error}
        self.app = Starlette(routes=routes, exception_handlers=handlers, lifespan=self._lifespan)

    # --- the worker's models

    def attach(self, models: dict[str, LiveModel], placement: dict, board: StatsBoard | None = None) -> None:
        self.models = models
        self.board = board
        self.placement = placement
        self._backend_label = f"{placement['backend']}/{placement['device']}"

    @property
    def ready(self) -> bool:
        return bool(self.models)

    def model(self, name: str) -> LiveModel:
        model = self.models.get(name)
        if model is None:
            raise error(503, NOT_READY)
        return model

    def v2_model(self, params: dict) -> LiveModel:
        """The model of a V2 path; ProtocolError 404: unknown model or version, 503: not loaded yet."""
        name = params["name"]
        if name not in ENDPOINTS:
            raise oip.ProtocolError(f"unknown model {name!r}; served: {sorted(ENDPOINTS)}", 404)
        model = self.models.get(name)
        if model is None:
            raise oip.ProtocolError(NOT_READY, 503)
        version = params.get("version")
        if version is not None and version not in (model.version, model.served.bentoml_version):
            raise oip.ProtocolError(
                f"{name} version {version!r} is not served; served: {model.version!r} ({model.served.tag})",
                404,
            )
        return model

    def server_timing(self, timing: Timing) -> bytes:
        return timing.header(self._backend_label).encode()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        yield
        for model in self.models.values():  # the requests in flight are answered first
            await model.batcher.close()

    # --- pages, documents, status

    async def index(self, request: Request) -> Response:
        return HTMLResponse(pages.index(self))

    async def docs_page(self, request: Request) -> Response:
        return HTMLResponse(pages.swagger(self.server_name))

    async def docs_json(self, request: Request) -> Response:
        return JSONResponse(document(self.server_name, auth=self.settings.api_token is not None
                                     or self.settings.api_token_file is not None))  # fmt: skip

    async def status(self, request: Request) -> Response:
        return JSONResponse(
            {
                "ready": self.ready,
                "worker": {"index": bentoml.server_context.worker_index, "pid": os.getpid()},
                "workers": self.settings.worker_count(),
                "placement": self.placement,
                "settings": self.settings.model_dump(mode="json"),  # secrets as "**********"
                "models": {
                    name: {
                        **m.served.status(),
                        "batching": {
                            "max_batch_size": m.batcher.max_batch_size,
                            "deadline_ms": m.endpoint.deadline_ms,
                            "cost_ms": {
                                "fixed": m.batcher.cost.fixed * 1e3,
                                "per_row": m.batcher.cost.per_row * 1e3,
                            },
                        },
                    }
                    for name, m in self.models.items()
                },
            }
        )

    # --- Open Inference Protocol: everything but inference

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(oip.server_metadata(self.server_name, bentoml.__version__))

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        if self.ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "error": NOT_READY}, status_code=503)

    async def model_metadata(self, request: Request) -> Response:
        return JSONResponse(self.metadata_of(self.v2_model(request.path_params)))

    def metadata_of(self, model: LiveModel) -> dict:
        """The V2 model metadata of a served model (REST and gRPC)."""
        platform = FORMATS[model.served.backend.kind].triton[0]
        return oip.model_metadata(model.endpoint.v2, model.version, platform)

    async def model_ready(self, request: Request) -> Response:
        model = self.v2_model(request.path_params)
        return JSONResponse({"name": model.endpoint.name, "ready": True})

    async def model_config(self, request: Request) -> Response:
        return JSONResponse(self.config_of(self.v2_model(request.path_params)))

    def config_of(self, model: LiveModel) -> dict:
        """Triton's model configuration of a served model (REST and gRPC)."""
        endpoint = model.endpoint
        return oip.model_config(
            endpoint.v2,
            model.version,
            FORMATS[model.served.backend.kind].triton,
            model.served.backend.device,
            self.settings.worker_count(),
            endpoint.max_batch_size,
            endpoint.deadline_ms,
            model.served.tag,
            endpoint.queue_delay_us,
        )

    async def stats(self, request: Request) -> Response:
        """Triton's statistics, summed over all workers (service/stats_board.py)."""
        names = list(ENDPOINTS)
        if "name" in request.path_params:
            names = [self.v2_model(request.path_params).endpoint.name]
        if not self.ready:
            return JSONResponse({"error": NOT_READY}, status_code=503)
        return JSONResponse({"model_stats": self.statistics(names)})

    def statistics(self, names: list[str] | None = None) -> list[dict]:
        """Triton's `model_stats` of the models named (all by default), summed over the workers."""
        totals = self.board.totals() if self.board else {n: m.stats for n, m in self.models.items()}
        return [totals[name].as_triton(name, self.models[name].version) for name in names or self.models]
