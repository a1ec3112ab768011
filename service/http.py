"""The service's HTTP layer over the worker's data plane (service/dataplane.py): the JSON endpoints, the
image upload, the Open Inference Protocol (KServe V2) REST routes, /status, the first page, /docs and
/docs.json, in one route table.

A prediction, whatever its route:

    body -> its limits (service/limits.py: 413, 415) -> the data plane's admission (bytes in memory,
            the batcher's deadline: 503) -> codec (service/codecs.py, service/oip.py,
            service/images.py): one float32 array, or a 4xx -> the model's batcher -> its output rows
         -> post-processing and encoding (service/interface.py, service/oip.py) -> 200 with
            `Server-Timing`

`HttpApi.routes` is the one route table: service/front.py matches a request once (`match`) and calls
its handler; `HttpApi.app` is the same table as an ASGI app (what BentoML mounts with
`@bentoml.asgi_app`, and serves when its per-request middleware is on). The prediction handlers are
plain ASGI callables (no Request/Response objects per request); the others are Starlette endpoints.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from service import oip, pages
from service.codecs import dumps
from service.dataplane import DataPlane, ServedModel
from service.errors import NOT_READY, UNEXPECTED, ClientGone, Kind, Refused, invalid
from service.images import decode_upload
from service.interface import UPLOAD_MODEL, UPLOAD_ROUTE, InferRequest, ModelInterface
from service.limits import http_body
from service.openapi import document
from service.timing import Timing

logger = logging.getLogger("bentoml.model_serving.http")
JSON = b"application/json"
# Content types a JSON endpoint refuses (415): other encodings of a body. Any other type is read as
# JSON (as BentoML did; `curl -d` sends application/x-www-form-urlencoded).
NOT_JSON = ("application/vnd.bentoml+pickle", "multipart/")
ROUTE_KEY = "model_serving.route"  # the scope's matched route, when the front door matched it

Handler = Callable[[dict, Callable, Callable], Awaitable[None]]
Answer = tuple[bytes, bytes, list]  # a prediction's body, content type and headers


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


async def respond_refused(send, exc: Refused) -> None:
    """A refusal as its HTTP answer: the status of its kind, `{"error": ...}`, Retry-After."""
    await respond(send, exc.status, dumps(exc.body()), headers=exc.http_headers())


async def respond_error(send, exc: Exception) -> None:
    """The JSON answer of a request that got no prediction."""
    if isinstance(exc, Refused):
        return await respond_refused(send, exc)
    logger.error("unexpected error on a prediction", exc_info=exc)
    return await respond(send, 500, dumps({"error": UNEXPECTED}))


def header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Prediction:
    """A prediction route (POST): the body's limits, then the data plane's `predict` with this route's
    decoding, then its encoding; every refusal is a JSON error; a client that went away gets nothing."""

    def __init__(self, api: HttpApi) -> None:
        self.api = api
        self.plane = api.plane

    async def __call__(self, scope, receive, send) -> None:
        timing = Timing()
        plane = self.plane
        try:
            model = self.model(scope)
            nbytes, receive = await http_body(scope, receive, plane.settings.max_body_bytes, plane.memory)
            request, rows = await plane.predict(
                model, nbytes, self.decode(scope, receive, model), timing, lambda: _disconnected(receive)
            )
            content, content_type, headers = self.encode(model, request, rows)
        except ClientGone:
            return
        except Exception as exc:
            return await respond_error(send, exc)
        headers.append((b"server-timing", plane.server_timing(timing).encode()))
        await respond(send, 200, content, content_type, headers)

    def model(self, scope) -> ServedModel:
        raise NotImplementedError

    async def decode(self, scope, receive, model: ServedModel) -> InferRequest:
        raise NotImplementedError

    def encode(self, model: ServedModel, request: InferRequest, rows: np.ndarray) -> Answer:
        """The answer's body, content type and headers."""
        raise NotImplementedError


class JsonPredict(Prediction):
    """POST <interface.route>: the JSON endpoint of one model."""

    def __init__(self, api: HttpApi, interface: ModelInterface) -> None:
        super().__init__(api)
        self.name = interface.name

    def model(self, scope) -> ServedModel:
        media = header(scope, b"content-type") or ""
        if media.lower().startswith(NOT_JSON):
            message = f"Content-Type {media.split(';')[0]} is not supported here; send application/json"
            raise Refused(Kind.UNSUPPORTED, message)
        return self.plane.model(self.name)

    async def decode(self, scope, receive, model: ServedModel) -> InferRequest:
        return InferRequest(model.interface.codec.decode(await read_body(receive)))

    def encode(self, model: ServedModel, request: InferRequest, rows: np.ndarray) -> Answer:
        return dumps(model.interface.answer(rows)), JSON, []


class UploadPredict(JsonPredict):
    """POST /classify_digit_image: a picture of a digit (multipart `image`, optional `invert`)."""

    def model(self, scope) -> ServedModel:
        return self.plane.model(self.name)

    async def decode(self, scope, receive, model: ServedModel) -> InferRequest:
        settings = self.plane.settings
        request = Request(scope, receive)
        try:
            async with request.form(max_files=1, max_fields=8) as form:
                upload, invert = form.get("image"), form.get("invert", "auto")
                if upload is None or isinstance(upload, str):
                    raise invalid("image: a file field named `image` is required (multipart/form-data)")
                data = await upload.read()
        except HTTPException as exc:  # Starlette's multipart parser: a malformed body
            raise Refused(Kind.of_http(exc.status_code), str(exc.detail)) from None
        except MultiPartException as exc:  # the same, where Starlette's app is not in the scope
            raise invalid(exc.message) from None
        # decoding a picture can take milliseconds: off the event loop
        x = await asyncio.to_thread(
            decode_upload, data, str(invert), settings.max_upload_bytes, settings.max_upload_pixels
        )
        return InferRequest(x)

    def encode(self, model: ServedModel, request: InferRequest, rows: np.ndarray) -> Answer:
        return dumps(model.interface.answer(rows)[0]), JSON, []


class V2Infer(Prediction):
    """POST /v2/models/{name}[/versions/{version}]/infer (JSON or binary tensors)."""

    def model(self, scope) -> ServedModel:
        params = scope["path_params"]
        return self.plane.model(params["name"], params.get("version"))

    async def decode(self, scope, receive, model: ServedModel) -> InferRequest:
        length = header(scope, b"inference-header-content-length")
        return oip.parse_infer(await read_body(receive), length, model.interface)

    def encode(self, model: ServedModel, request: InferRequest, rows: np.ndarray) -> Answer:
        interface = model.interface
        values = interface.output_values(rows, [name for name, _ in request.outputs])
        content, headers = oip.encode_infer(interface, model.version, request, values)
        extra = []
        if oip.HEADER_LENGTH in headers:
            extra.append((b"inference-header-content-length", headers[oip.HEADER_LENGTH].encode()))
        return content, headers["Content-Type"].encode(), extra


def endpoint(method: Callable[[Request], Awaitable[Response]]) -> Handler:
    """A Starlette endpoint (Request -> Response) as a handler of the route table; a refusal is its
    JSON answer."""

    async def handle(scope, receive, send) -> None:
        try:
            response = await method(Request(scope, receive))
        except Refused as exc:
            response = JSONResponse(exc.body(), status_code=exc.status)
        await response(scope, receive, send)

    return handle


@dataclass(frozen=True)
class Route:
    path: str  # the template, e.g. /v2/models/{name}/infer; also the label of its request metrics
    method: str  # GET or POST
    handler: Handler

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))


class Routes:
    """The route table: exact paths in a dict, templated ones (`{name}` segments) by their number of
    segments; `match` returns the route and its path parameters, or answers 404 / 405 (`missing`)."""

    def __init__(self, routes: list[Route]) -> None:
        self.all = tuple(routes)
        self.exact: dict[str, list[Route]] = {}
        self.templated: dict[int, list[tuple[tuple[str, ...], Route]]] = {}
        for route in routes:
            if "{" in route.path:
                self.templated.setdefault(len(route.segments), []).append((route.segments, route))
            else:
                self.exact.setdefault(route.path, []).append(route)

    def match(self, method: str, path: str) -> tuple[list[Route], dict]:
        """The routes of `path` (each one method) and its parameters; ([], {}) when none."""
        routes = self.exact.get(path)
        if routes is not None:
            return routes, {}
        parts = path.split("/")
        found: list[Route] = []
        params: dict = {}
        for segments, route in self.templated.get(len(parts), ()):
            values = {}
            for want, got in zip(segments, parts, strict=True):
                if want[:1] == "{":
                    if not got:
                        break
                    values[want[1:-1]] = got
                elif want != got:
                    break
            else:
                found.append(route)
                params = values
        return found, params

    @staticmethod
    def pick(routes: list[Route], method: str) -> Route | None:
        for route in routes:
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route
        return None

    async def missing(self, routes: list[Route], scope, send) -> None:
        """404 (no such path) or 405 (not with this method, Allow: the ones it takes)."""
        path = f"{scope['method']} {scope['path']}"
        if not routes:
            return await respond(send, 404, dumps({"error": f"{path}: Not Found"}))
        allow = ", ".join(sorted({r.method for r in routes}))
        await respond(
            send, 405, dumps({"error": f"{path}: Method Not Allowed"}), headers=[(b"allow", allow.encode())]
        )


class HttpApi:
    """Every HTTP route of the service, over the worker's data plane."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        model, version = "/v2/models/{name}", "/v2/models/{name}/versions/{version}"
        infer = V2Infer(self)
        routes = [Route(i.route, "POST", JsonPredict(self, i)) for i in plane.interfaces.values()]
        routes += [
            Route(UPLOAD_ROUTE, "POST", UploadPredict(self, plane.interfaces[UPLOAD_MODEL])),
            Route(model + "/infer", "POST", infer),
            Route(version + "/infer", "POST", infer),
        ]
        gets = {
            "/": self.index,
            "/docs": self.docs_page,
            "/docs.json": self.docs_json,
            "/status": self.status,
            "/v2": self.server_metadata,
            "/v2/health/live": self.live,
            "/v2/health/ready": self.v2_ready,
            "/v2/models/stats": self.stats,
        }
        for base in (model, version):
            gets[base] = self.model_metadata
            gets[base + "/ready"] = self.model_ready
            gets[base + "/config"] = self.model_config
            gets[base + "/stats"] = self.stats
        routes += [Route(path, "GET", endpoint(method)) for path, method in gets.items()]
        self.routes = Routes(routes)

    async def app(self, scope, receive, send) -> None:
        """The route table as an ASGI app (BentoML's mount; the front door's match is reused)."""
        if scope["type"] != "http":
            return
        matched = scope.get(ROUTE_KEY)
        if matched is None:
            routes, params = self.routes.match(scope["method"], scope["path"])
            matched = Routes.pick(routes, scope["method"])
            if matched is None:
                return await self.routes.missing(routes, scope, send)
            scope["path_params"] = params
        await matched.handler(scope, receive, send)

    # --- pages, documents, status

    async def index(self, request: Request) -> Response:
        return HTMLResponse(pages.index(self.plane))

    async def docs_page(self, request: Request) -> Response:
        return HTMLResponse(pages.swagger(self.plane.server_name))

    async def docs_json(self, request: Request) -> Response:
        settings = self.plane.settings
        auth = settings.api_token is not None or settings.api_token_file is not None
        return JSONResponse(document(self.plane.server_name, tuple(self.plane.interfaces.values()), auth))

    async def status(self, request: Request) -> Response:
        return JSONResponse(self.plane.status())

    # --- Open Inference Protocol: everything but inference

    def _model(self, request: Request) -> ServedModel:
        return self.plane.model(request.path_params["name"], request.path_params.get("version"))

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(self.plane.server_metadata())

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        if self.plane.ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "error": NOT_READY}, status_code=503)

    async def model_metadata(self, request: Request) -> Response:
        return JSONResponse(self.plane.metadata(self._model(request)))

    async def model_ready(self, request: Request) -> Response:
        model = self._model(request)
        return JSONResponse({"name": model.name, "ready": True})

    async def model_config(self, request: Request) -> Response:
        return JSONResponse(self.plane.config(self._model(request)))

    async def stats(self, request: Request) -> Response:
        """Triton's statistics, summed over all workers (service/stats_board.py)."""
        names = [self._model(request).name] if "name" in request.path_params else None
        return JSONResponse({"model_stats": self.plane.statistics(names)})
