"""The ASGI app each BentoML worker serves: the service's routes (service/http.py) in front of BentoML's
own app, which keeps what BentoML does well (/livez, /healthz, /readyz, /metrics, the service's
life cycle, the Swagger UI's assets).

    request -> authentication (API_TOKEN)                         every path but AUTH_OPEN_PATHS
            -> BentoML's paths: BentoML's app, as it is            /livez /readyz /metrics ...
            -> the service's route table, matched once (404, 405), then MAX_CONCURRENCY (429),
               REQUEST_TIMEOUT_S (504), request metrics -> the route's handler (a prediction: its
               body limits and the data plane's admission: 413/415/503)

BentoML's per-request middleware (its Prometheus request metrics, OpenTelemetry, access log, timeout
and concurrency middleware) cost more CPU per request than a batched model (BENCHMARKS.md), and each
of those jobs is done here more cheaply, so the service's routes skip it. With BENTOML_MIDDLEWARE,
ACCESS_LOG or TRACING set, they go through BentoML's app instead (its request metrics, access log and
request spans; the service's routes are mounted there with `@bentoml.asgi_app`).

The worker's gRPC server (service/oip_grpc.py, GRPC_PORT) starts once BentoML's start-up (which loads
the models) completes, and stops first at shutdown, before the data plane's batchers drain.
`ModelServingService.to_asgi` (service/service.py) puts this in front of the app BentoML builds: the
public hook BentoML's worker calls for the app it serves.
"""

from __future__ import annotations

import asyncio

from service.auth import BearerAuth
from service.codecs import dumps
from service.errors import Refused, timed_out
from service.http import ROUTE_KEY, HttpApi, Routes, respond, respond_refused
from service.metrics import HttpMetrics
from service.settings import ServiceSettings

# BentoML's own routes (its probes, metrics, service schema, the Swagger UI's assets)
BENTOML_PATHS = frozenset(("/livez", "/healthz", "/readyz", "/metrics", "/schema.json"))
BENTOML_PREFIXES = ("/static_content/",)
OTHER = "other"  # the metrics label of a path that is no route


class FrontDoor:
    def __init__(self, api: HttpApi, bentoml_app, settings: ServiceSettings) -> None:
        self.api = api
        self.plane = api.plane
        self.routes = api.routes
        self.bentoml = bentoml_app
        self.through_bentoml = settings.bentoml_middleware or settings.access_log or settings.tracing
        self.timeout = settings.request_timeout_s
        self.metrics = HttpMetrics()
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

            self.grpc = GrpcServer(self.plane, settings)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(scope, receive, send)
        if scope["type"] != "http":  # websockets
            return await self.bentoml(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _lifespan(self, scope, receive, send) -> None:
        """BentoML's life cycle (its start-up loads the models), with the worker's gRPC server
        (GRPC_PORT) started once the models are loaded; at shutdown the gRPC server stops, then the
        batchers answer what they hold, then BentoML's shutdown runs."""

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
            if message["type"] == "lifespan.shutdown":
                if self.grpc is not None:
                    await self.grpc.stop()
                await self.plane.close()
            return message

        return await self.bentoml(scope, on_receive, on_send)

    async def _dispatch(self, scope, receive, send) -> None:
        path = scope["path"]
        if path in BENTOML_PATHS or path.startswith(BENTOML_PREFIXES):
            return await self.bentoml(scope, receive, send)
        routes, params = self.routes.match(scope["method"], path)
        route = Routes.pick(routes, scope["method"])
        if route is not None:
            scope["path_params"] = params
            scope[ROUTE_KEY] = route
        label = route.path if route is not None else OTHER
        try:
            task = self.plane.enter()  # MAX_CONCURRENCY (429); REQUEST_TIMEOUT_S (504)
        except Refused as exc:
            return await respond_refused(send, exc)
        status = 0

        async def send_with_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.started(label)
        try:
            if self.through_bentoml:
                await self.bentoml(scope, receive, send_with_status)
            elif route is None:
                await self.routes.missing(routes, scope, send_with_status)
            else:
                await route.handler(scope, receive, send_with_status)
        except asyncio.CancelledError:
            if not self.plane.timed_out(task):
                raise
            if status == 0:
                status = 504
                await respond(send, 504, dumps({"error": timed_out(self.timeout)}))
        finally:
            self.plane.leave(task)
            self.metrics.finished(label, status)
