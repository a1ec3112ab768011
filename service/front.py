"""The ASGI app each BentoML worker serves: the service's routes (service/http.py) in front of BentoML's
own app, which keeps what BentoML does well (/livez, /healthz, /readyz, /metrics, the service's
life cycle, the Swagger UI's assets).

    request -> authentication (API_TOKEN)                         every path but AUTH_OPEN_PATHS
            -> BentoML's paths: BentoML's app, as it is            /livez /readyz /metrics ...
            -> the service's routes: limits (body size, compression, bytes in flight: 413/415/503),
               MAX_CONCURRENCY (429), REQUEST_TIMEOUT_S (504), request metrics -> the route's handler

BentoML's per-request middleware (its Prometheus request metrics, OpenTelemetry, access log, timeout
and concurrency middleware) cost more CPU per request than a batched model (BENCHMARKS.md), and each
of those jobs is done here more cheaply, so the service's routes skip it. With BENTOML_MIDDLEWARE,
ACCESS_LOG or TRACING set, they go through BentoML's app instead (its request metrics, access log and
request spans; the service's routes are mounted there with `@bentoml.asgi_app`).

`ModelServingService.to_asgi` (service/service.py) puts this in front of the app BentoML builds: the
public hook BentoML's worker calls for the app it serves.
"""

from __future__ import annotations

import asyncio

from service.auth import BearerAuth
from service.codecs import dumps
from service.http import HttpApi, respond
from service.limits import RequestLimits
from service.metrics import HttpMetrics
from service.settings import ServiceSettings

# BentoML's own routes (its probes, metrics, service schema, the Swagger UI's assets)
BENTOML_PATHS = frozenset(("/livez", "/healthz", "/readyz", "/metrics", "/schema.json"))
BENTOML_PREFIXES = ("/static_content/",)
V2_INFER = "/v2/models/{name}/infer"
V2_VERSION_INFER = "/v2/models/{name}/versions/{version}/infer"


def v2_infer_params(path: str) -> dict | None:
    """{"name", "version"?} of an Open Inference Protocol inference path, else None."""
    if not (path.startswith("/v2/models/") and path.endswith("/infer")):
        return None
    parts = path.split("/")
    if len(parts) == 5 and parts[3]:
        return {"name": parts[3]}
    if len(parts) == 7 and parts[4] == "versions" and parts[3] and parts[5]:
        return {"name": parts[3], "version": parts[5]}
    return None


class FrontDoor:
    def __init__(self, api: HttpApi, bentoml_app, settings: ServiceSettings) -> None:
        self.api = api
        self.bentoml = bentoml_app
        self.through_bentoml = settings.bentoml_middleware or settings.access_log or settings.tracing
        self.max_concurrency = settings.max_concurrency
        self.timeout = settings.request_timeout_s
        self.in_flight = 0
        self.metrics = HttpMetrics()
        self.limited = RequestLimits(
            self._route, max_body_bytes=settings.max_body_bytes,
            max_inflight_bytes=settings.inflight_bytes_budget(),
        )  # fmt: skip
        try:
            token = settings.token()
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
        self.app = (
            self._dispatch if token is None else BearerAuth(self._dispatch, token, settings.auth_open_paths)
        )
        self.grpc = None
        if settings.grpc_port:
            from service.oip_grpc import GrpcServer

            self.grpc = GrpcServer(api, settings)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(scope, receive, send)
        if scope["type"] != "http":  # websockets
            return await self.bentoml(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _lifespan(self, scope, receive, send) -> None:
        """BentoML's life cycle (its start-up loads the models), with the worker's gRPC server
        (GRPC_PORT) started once the models are loaded and stopped first at shutdown."""

        async def on_send(message) -> None:
            if message["type"] == "lifespan.startup.complete" and self.grpc is not None:
                try:
                    await self.grpc.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": f"gRPC: {exc}"})
                    return
            await send(message)

        async def on_receive():
            message = await receive()
            if message["type"] == "lifespan.shutdown" and self.grpc is not None:
                await self.grpc.stop()
            return message

        return await self.bentoml(scope, on_receive, on_send)

    async def _dispatch(self, scope, receive, send) -> None:
        path = scope["path"]
        if path in BENTOML_PATHS or path.startswith(BENTOML_PREFIXES):
            return await self.bentoml(scope, receive, send)
        return await self._ours(scope, receive, send)

    async def _ours(self, scope, receive, send) -> None:
        """A route of the service: counted, capped, timed out, limited, then handled."""
        route = scope["path"] if scope["path"] in self.api.handlers else None
        if route is None and (params := v2_infer_params(scope["path"])) is not None:
            scope["path_params"] = params
            route = V2_VERSION_INFER if "version" in params else V2_INFER
        label = route or "other"
        if self.in_flight >= self.max_concurrency:
            message = f"Too many requests: more than {self.max_concurrency} in flight (MAX_CONCURRENCY)"
            return await respond(send, 429, dumps({"error": message}))
        status = 0

        async def send_with_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.in_flight += 1
        self.metrics.started(label)
        try:
            async with asyncio.timeout(self.timeout):
                await self.limited(scope, receive, send_with_status)
        except TimeoutError:
            if status == 0:
                status = 504
                message = f"Not able to process the request in {self.timeout} seconds (REQUEST_TIMEOUT_S)"
                await respond(send, 504, dumps({"error": message}))
        finally:
            self.in_flight -= 1
            self.metrics.finished(label, status)

    async def _route(self, scope, receive, send) -> None:
        if not self.through_bentoml:
            handler = self.api.handlers.get(scope["path"])
            if handler is not None:
                return await handler(scope, receive, send)
            if "path_params" in scope:
                return await self.api.v2_infer(scope, receive, send)
            return await self.api.app(scope, receive, send)
        return await self.bentoml(scope, receive, send)
