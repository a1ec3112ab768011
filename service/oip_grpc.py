"""The Open Inference Protocol over gRPC: KServe V2's `inference.GRPCInferenceService` with Triton's
extensions (ModelConfig, ModelStatistics), as `tritonclient.grpc`, perf_analyzer and KServe's clients
speak it. The protocol code is the one tritonclient ships (`tritonclient.grpc.service_pb2`,
`service_pb2_grpc` with the servicer base class), not a vendored proto.

Every worker serves it on GRPC_PORT (Triton's 8001; 0 = off), bound with SO_REUSEPORT so the kernel
spreads connections over the workers, from the moment its models are loaded (service/front.py starts
it when BentoML's start-up completes and stops it first at shutdown). A request takes the path of a
V2 REST request: the same validation (service/oip.py `check_input`), the same batcher, the same
limits: the message size (MAX_BODY_BYTES), the token (`authorization: Bearer <API_TOKEN>` metadata),
MAX_CONCURRENCY, REQUEST_TIMEOUT_S. Refusals carry gRPC status codes:

| what | status |
|---|---|
| malformed request (name, datatype, shape, byte count, rows) | INVALID_ARGUMENT |
| unknown model or version | NOT_FOUND |
| overloaded (deadline, bytes in memory), not ready | UNAVAILABLE |
| more than MAX_CONCURRENCY in flight, message too large | RESOURCE_EXHAUSTED |
| no or wrong token | UNAUTHENTICATED |
| past REQUEST_TIMEOUT_S | DEADLINE_EXCEEDED |
| the batch failed in the backend | INTERNAL |

Every answer's trailing metadata has `server-timing`, as the HTTP answers' header.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

import grpc
import numpy as np
from google.protobuf import json_format
from grpc import aio
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from service import oip
from service.batching import BatchFailed, Overloaded
from service.timing import Timing

logger = logging.getLogger("bentoml.model_serving")
STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    503: grpc.StatusCode.UNAVAILABLE,
}


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The service's models over gRPC; `api`: the worker's service.http.HttpApi."""

    def __init__(self, api, token: str | None, timeout_s: float) -> None:
        self.api = api
        self.token = token
        self.timeout_s = timeout_s

    async def _authorized(self, context) -> None:
        if self.token is None:
            return
        sent = dict(context.invocation_metadata() or ()).get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {self.token}".encode()):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "missing or wrong `authorization: Bearer` token"
            )

    async def _model(self, context, name: str, version: str):
        try:
            return self.api.v2_model(_path_params(name, version))
        except oip.ProtocolError as exc:
            await context.abort(STATUS.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), str(exc))

    # --- health and metadata

    async def ServerLive(self, request, context):
        await self._authorized(context)
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        await self._authorized(context)
        return service_pb2.ServerReadyResponse(ready=self.api.ready)

    async def ModelReady(self, request, context):
        await self._authorized(context)
        try:
            self.api.v2_model(_path_params(request.name, request.version))
        except oip.ProtocolError:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):
        await self._authorized(context)
        import bentoml

        doc = oip.server_metadata(self.api.server_name, bentoml.__version__)
        return json_format.ParseDict(doc, service_pb2.ServerMetadataResponse())

    async def ModelMetadata(self, request, context):
        await self._authorized(context)
        model = await self._model(context, request.name, request.version)
        return json_format.ParseDict(self.api.metadata_of(model), service_pb2.ModelMetadataResponse())

    async def ModelConfig(self, request, context):
        await self._authorized(context)
        model = await self._model(context, request.name, request.version)
        config = self.api.config_of(model)
        message = json_format.ParseDict(config, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
        return service_pb2.ModelConfigResponse(config=message)

    async def ModelStatistics(self, request, context):
        await self._authorized(context)
        names = None
        if request.name:
            names = [(await self._model(context, request.name, request.version)).endpoint.name]
        doc = {"model_stats": self.api.statistics(names)}
        return json_format.ParseDict(doc, service_pb2.ModelStatisticsResponse())

    # --- inference

    async def ModelInfer(self, request, context):
        await self._authorized(context)
        model = await self._model(context, request.model_name, request.model_version)
        v2 = model.endpoint.v2
        names = [o.name for o in request.outputs] or [t.name for t in v2.outputs]
        unknown = [n for n in names if v2.output(n) is None]
        if unknown:  # refused before it can reach a batch
            known = [t.name for t in v2.outputs]
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"outputs: {unknown} unknown; {v2.name} has {known}"
            )
        timing = Timing()
        try:
            x = decode(request, model.endpoint.v2)
            async with asyncio.timeout(self.timeout_s):
                rows = await model.infer(x, timing)
        except oip.ProtocolError as exc:
            await context.abort(STATUS.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), str(exc))
        except Overloaded as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except BatchFailed:
            await context.abort(grpc.StatusCode.INTERNAL, "inference failed; the server log has the details")
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"Not able to process the request in {self.timeout_s:g} seconds (REQUEST_TIMEOUT_S)",
            )
        values = v2.output_values(rows, names)
        response = service_pb2.ModelInferResponse(
            model_name=v2.name, model_version=model.version, id=request.id
        )
        for name in names:
            array = np.ascontiguousarray(values[name], dtype=oip.WIRE_DTYPE)
            response.outputs.add(name=name, datatype=oip.DATATYPE, shape=list(array.shape))
            response.raw_output_contents.append(array.tobytes())
        context.set_trailing_metadata((("server-timing", self.api.server_timing(timing).decode()),))
        return response


def _path_params(name: str, version: str) -> dict:
    """A gRPC request's model and version as the REST routes' path parameters (version "" = any)."""
    return {"name": name, **({"version": version} if version else {})}


def decode(request, model: oip.ModelInterface) -> np.ndarray:
    """The input of a ModelInferRequest: its structure checked as REST's (oip.check_input), the values
    from `raw_input_contents` (little-endian FP32, as tritonclient sends them) or `contents.fp32_contents`."""
    if len(request.inputs) != 1:
        raise oip.ProtocolError(f"inputs must be a list of one tensor, {model.input.name!r}")
    tensor = request.inputs[0]
    shape = list(tensor.shape)
    count = oip.check_input(tensor.name, tensor.datatype, shape, model)
    raw = request.raw_input_contents
    if len(raw) > 1:
        raise oip.ProtocolError(f"raw_input_contents has {len(raw)} entries; there is one input")
    if raw:
        if tensor.HasField("contents"):
            raise oip.ProtocolError("inputs[0] has both contents and raw_input_contents")
        if len(raw[0]) != count * oip.WIRE_DTYPE.itemsize:
            raise oip.ProtocolError(
                f"raw_input_contents[0] has {len(raw[0])} bytes; shape {shape} of {oip.DATATYPE} is "
                f"{count * oip.WIRE_DTYPE.itemsize} bytes"
            )
        return np.frombuffer(raw[0], dtype=oip.WIRE_DTYPE).astype(np.float32).reshape(shape)
    values = tensor.contents.fp32_contents
    if len(values) != count:
        raise oip.ProtocolError(
            f"inputs[0].contents.fp32_contents has {len(values)} values; shape {shape} needs {count}"
        )
    return np.asarray(values, dtype=np.float32).reshape(shape)


class GrpcServer:
    """The worker's gRPC server: started on the worker's event loop, stopped before its batchers."""

    def __init__(self, api, settings) -> None:
        self.api = api
        self.settings = settings
        self.server: aio.Server | None = None

    async def start(self) -> None:
        s = self.settings
        self.server = aio.server(
            maximum_concurrent_rpcs=s.max_concurrency,
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", s.max_body_bytes),
                ("grpc.max_send_message_length", 1 << 30),
            ],
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            Servicer(self.api, s.token(), s.request_timeout_s), self.server
        )
        health_servicer(self.api, self.server)
        reflection(self.server)
        address = f"{s.grpc_host}:{s.grpc_port}"
        if self.server.add_insecure_port(address) == 0:
            raise RuntimeError(f"gRPC: cannot listen on {address} (GRPC_PORT)")
        await self.server.start()
        logger.info("Open Inference Protocol over gRPC on %s", address)

    async def stop(self, grace_s: float = 5.0) -> None:
        if self.server is not None:
            await self.server.stop(grace_s)
            self.server = None


def reflection(server) -> None:
    """gRPC server reflection (grpcurl, Postman, ... list and describe the services without .proto
    files): the inference service, health and reflection itself."""
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection as grpc_reflection

    names = (
        service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        grpc_reflection.SERVICE_NAME,
    )
    grpc_reflection.enable_server_reflection(names, server)


def health_servicer(api, server) -> None:
    """The standard `grpc.health.v1.Health` (Kubernetes' gRPC probes): SERVING once the models are
    loaded (the service "" and each model's name)."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    servicer = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    status = (
        health_pb2.HealthCheckResponse.SERVING if api.ready else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *api.models):
        result = servicer.set(name, status)
        if asyncio.iscoroutine(result):
            asyncio.ensure_future(result)
