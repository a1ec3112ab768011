"""Open Inference Protocol (KServe V2) REST routes, served by the same app and workers as the JSON APIs.

    GET  /v2                                   server metadata (name, version, extensions)
    GET  /v2/health/live, /v2/health/ready
    GET  /v2/models/{name}[/versions/{v}]      model metadata        .../ready   model readiness
    GET  /v2/models/{name}[/versions/{v}]/config                     Triton's model configuration
    GET  /v2/models/stats, /v2/models/{name}[/versions/{v}]/stats    Triton's statistics (this worker)
    POST /v2/models/{name}[/versions/{v}]/infer                      JSON or binary tensors

An inference request is parsed by service/oip.py and handed to the batchable JSON API that serves
the same model (`Binding.api`), through that API's own batcher: V2 and JSON requests share batches.
Versions are the BentoML model versions being served. Errors are `{"error": ...}` with a 4xx/5xx.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from models.formats import FORMATS
from service import oip
from service.patches import dispatch_timing
from service.patches.error_bodies import OVERLOADED

logger = logging.getLogger("bentoml.model_serving.oip")
NOT_READY = "the service is starting; retry when /v2/health/ready answers 200"


@dataclass(frozen=True)
class Binding:
    """One model over V2: its interface, the batchable API whose batcher its requests join, and the
    conversions between V2 tensors and that API's argument and per-request result."""

    interface: oip.ModelInterface
    api: str
    to_api: Callable[[np.ndarray], object]
    outputs: dict[str, Callable[[object], np.ndarray]]  # output name -> from the API's result
    batch_items: int  # the batcher's max_batch_size
    deadline_ms: int  # the batcher's max_latency_ms


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _answering_protocol_errors(handler):
    """The handler, with a ProtocolError it raises answered as `{"error": ...}` and its status."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except oip.ProtocolError as exc:
            return _error(exc.status, str(exc))

    return endpoint


class OipRoutes:
    def __init__(self, factory, bindings: dict[str, Binding], server_name: str, workers: int) -> None:
        self.factory = factory  # BentoML's ServiceAppFactory: its batchers and batch_infer
        self.bindings = bindings
        self.server_name = server_name
        self.workers = workers

    def routes(self) -> list[Route]:
        model = "/v2/models/{name}"
        table = [
            ("/v2", self.server_metadata, "GET"),
            ("/v2/health/live", self.live, "GET"),
            ("/v2/health/ready", self.ready, "GET"),
            ("/v2/models/stats", self.stats, "GET"),
        ]
        for base in (model, model + "/versions/{version}"):
            table += [
                (base, self.model_metadata, "GET"),
                (base + "/ready", self.model_ready, "GET"),
                (base + "/config", self.model_config, "GET"),
                (base + "/stats", self.stats, "GET"),
                (base + "/infer", self.infer, "POST"),
            ]
        return [Route(path, _answering_protocol_errors(handler), methods=[m]) for path, handler, m in table]

    @staticmethod
    def _service():
        """The service instance of this worker, or None before it has been created."""
        try:
            return bentoml.get_current_service()
        except Exception:
            return None

    def _served(self, request: Request):
        """(binding, served model) of the request's path; ProtocolError 404: unknown model or version."""
        name = request.path_params["name"]
        binding = self.bindings.get(name)
        service = self._service()
        if binding is None:
            raise oip.ProtocolError(f"unknown model {name!r}; served: {sorted(self.bindings)}", 404)
        if service is None:
            raise oip.ProtocolError(NOT_READY, 503)
        served = service.served(name)
        version = request.path_params.get("version")
        if version is not None and version != served.version:
            raise oip.ProtocolError(
                f"{name} version {version!r} is not served; served: {served.version!r}", 404
            )
        return binding, served

    async def server_metadata(self, _: Request) -> Response:
        return JSONResponse(oip.server_metadata(self.server_name, bentoml.__version__))

    async def live(self, _: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, _: Request) -> Response:
        service = self._service()
        if service is not None and service.__is_ready__():
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "error": NOT_READY}, status_code=503)

    async def model_metadata(self, request: Request) -> Response:
        binding, served = self._served(request)
        platform = FORMATS[served.backend.kind].triton[0]
        return JSONResponse(oip.model_metadata(binding.interface, served.version, platform))

    async def model_ready(self, request: Request) -> Response:
        binding, _ = self._served(request)
        if self._service().__is_ready__():
            return JSONResponse({"name": binding.interface.name, "ready": True})
        body = {"name": binding.interface.name, "ready": False, "error": NOT_READY}
        return JSONResponse(body, status_code=503)

    async def model_config(self, request: Request) -> Response:
        binding, served = self._served(request)
        config = oip.model_config(
            binding.interface,
            served.version,
            FORMATS[served.backend.kind].triton,
            served.backend.device,
            self.workers,
            binding.batch_items,
            binding.deadline_ms,
        )
        return JSONResponse(config)

    async def stats(self, request: Request) -> Response:
        """Counters of the worker that answers (each worker batches its own requests; /metrics has
        Prometheus histograms over all workers)."""
        names = list(self.bindings)
        if "name" in request.path_params:
            self._served(request)  # unknown model or version: 404
            names = [request.path_params["name"]]
        service = self._service()
        if service is None:
            return _error(503, NOT_READY)
        entries = []
        for name in names:
            dispatcher = self.factory.dispatchers[self.bindings[name].api]
            entries.append(dispatch_timing.stats(dispatcher).as_triton(name, service.served(name).version))
        return JSONResponse({"model_stats": entries})

    async def infer(self, request: Request) -> Response:
        binding, served = self._served(request)
        body = await request.body()
        parsed = oip.parse_infer(body, request.headers.get(oip.HEADER_LENGTH), binding.interface)
        try:
            result = await self.factory.batch_infer(binding.api, (binding.to_api(parsed.array),), {})
        except ServiceUnavailable:
            return _error(503, OVERLOADED, {"Retry-After": "1"})
        except Exception:
            logger.exception("V2 inference on %s failed", binding.interface.name)
            return _error(500, "inference failed; the server log has the details")
        values = {name: binding.outputs[name](result) for name, _ in parsed.outputs}
        content, headers = oip.encode_infer(binding.interface, served.version, parsed, values)
        return Response(content, headers=headers)
