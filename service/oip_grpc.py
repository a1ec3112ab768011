"""The Open Inference Protocol over gRPC: KServe V2's `inference.GRPCInferenceService` with Triton's
extensions (ModelConfig, ModelStatistics), as `tritonclient.grpc`, perf_analyzer and KServe's clients
speak it, over the worker's data plane (service/dataplane.py). The protocol code is the one tritonclient
ships (`tritonclient.grpc.service_pb2`, `service_pb2_grpc` with the servicer base class), not a
vendored proto.

Every worker serves it on GRPC_PORT (Triton's 8001; 0 = off), bound with SO_REUSEPORT so the kernel
spreads connections over the workers, from the moment its models are loaded (service/front.py starts
it when BentoML's start-up completes and stops it first at shutdown). GRPC_SERVER picks the server
under the servicer (`GrpcServer`): `native` (pygrpc-native: HTTP/2 in Rust, calls handed to the event
loop in batches) or `grpcio` (grpc.aio). A request takes the path of a V2 REST request: the same
decoding into one InferRequest (service/oip.py's tensor checks), the same admission (bytes in memory,
the batcher's deadline), the same batcher; the limits are the same settings: the message size
(MAX_BODY_BYTES), the token (`authorization: Bearer <API_TOKEN>` metadata), MAX_CONCURRENCY,
REQUEST_TIMEOUT_S. A refusal's status code is its kind's (service/errors.py):

| what | status |
|---|---|
| malformed request (name, datatype, shape, byte count, rows, outputs) | INVALID_ARGUMENT |
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
import logging

import grpc
import numpy as np
from google.protobuf import json_format
from grpc import aio
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from service import oip
from service.auth import Token
from service.dataplane import DataPlane, ServedModel
from service.errors import UNEXPECTED, Kind, Refused, invalid, timed_out
from service.interface import InferRequest, ModelInterface
from service.timing import Timing

logger = logging.getLogger("bentoml.model_serving")


def status_code(kind: Kind) -> grpc.StatusCode:
    return grpc.StatusCode[kind.grpc]


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The worker's data plane over gRPC."""

    def __init__(self, plane: DataPlane, token: str | None) -> None:
        self.plane = plane
        self.token = Token(token) if token is not None else None

    def _authorize(self, context) -> None:
        if self.token is None:
            return
        sent = dict(context.invocation_metadata() or ()).get("authorization", "")
        problem = self.token.problem(sent.encode())
        if problem is not None:
            raise Refused(Kind.UNAUTHENTICATED, f"unauthorized: {problem} (`authorization` metadata)")

    async def _answer(self, context, what):
        """`what()` (authorized first); a refusal aborts the call with its status code."""
        try:
            self._authorize(context)
            return what()
        except Refused as exc:
            refused = exc
        await context.abort(status_code(refused.kind), refused.message)

    def _model(self, name: str, version: str) -> ServedModel:
        return self.plane.model(name, version or None)  # version "" = the one served

    # --- health and metadata

    async def ServerLive(self, request, context):
        return await self._answer(context, lambda: service_pb2.ServerLiveResponse(live=True))

    async def ServerReady(self, request, context):
        return await self._answer(context, lambda: service_pb2.ServerReadyResponse(ready=self.plane.ready))

    async def ModelReady(self, request, context):
        def ready():
            try:
                self._model(request.name, request.version)
            except Refused:
                return service_pb2.ModelReadyResponse(ready=False)
            return service_pb2.ModelReadyResponse(ready=True)

        return await self._answer(context, ready)

    async def ServerMetadata(self, request, context):
        def metadata():
            return json_format.ParseDict(self.plane.server_metadata(), service_pb2.ServerMetadataResponse())

        return await self._answer(context, metadata)

    async def ModelMetadata(self, request, context):
        def metadata():
            doc = self.plane.metadata(self._model(request.name, request.version))
            return json_format.ParseDict(doc, service_pb2.ModelMetadataResponse())

        return await self._answer(context, metadata)

    async def ModelConfig(self, request, context):
        def config():
            doc = self.plane.config(self._model(request.name, request.version))
            message = json_format.ParseDict(doc, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
            return service_pb2.ModelConfigResponse(config=message)

        return await self._answer(context, config)

    async def ModelStatistics(self, request, context):
        def statistics():
            names = [self._model(request.name, request.version).name] if request.name else None
            doc = {"model_stats": self.plane.statistics(names)}
            return json_format.ParseDict(doc, service_pb2.ModelStatisticsResponse())

        return await self._answer(context, statistics)

    # --- inference

    async def ModelInfer(self, request, context):
        plane = self.plane
        timing = Timing()
        try:
            self._authorize(context)
            model = self._model(request.model_name, request.model_version)
            task = plane.enter()
            try:
                decoded, rows = await plane.predict(
                    model, request.ByteSize(), _decoding(request, model.interface), timing
                )
            except asyncio.CancelledError:
                if not plane.timed_out(task):
                    raise
                raise Refused(Kind.TIMED_OUT, timed_out(plane.timeout_s)) from None
            finally:
                plane.leave(task)
            response = encode(model, decoded, rows)
        except Refused as exc:
            failure = (status_code(exc.kind), exc.message)
        except Exception:
            logger.exception("unexpected error on a gRPC ModelInfer")
            failure = (grpc.StatusCode.INTERNAL, UNEXPECTED)
        else:
            context.set_trailing_metadata((("server-timing", plane.server_timing(timing)),))
            return response
        await context.abort(*failure)


async def _decoding(request, model: ModelInterface) -> InferRequest:
    return decode(request, model)


def decode(request, model: ModelInterface) -> InferRequest:
    """A ModelInferRequest as the data plane's InferRequest: its input checked as REST's
    (oip.check_input), the values from `raw_input_contents` (little-endian FP32, as tritonclient sends
    them) or `contents.fp32_contents`; the outputs asked for (all by default), unknown ones refused."""
    if request.outputs:
        names = [o.name for o in request.outputs]
        unknown = [n for n in names if n not in model.output_names]
        if unknown:
            raise invalid(f"outputs: {unknown} unknown; {model.name} has {list(model.output_names)}")
        outputs = tuple((name, True) for name in names)
    else:
        outputs = model.raw_outputs
    if len(request.inputs) != 1:
        raise invalid(f"inputs must be a list of one tensor, {model.input.name!r}")
    tensor = request.inputs[0]
    shape = list(tensor.shape)
    oip.check_input(tensor.name, tensor.datatype, shape, model)
    raw = request.raw_input_contents
    if len(raw) > 1:
        raise invalid(f"raw_input_contents has {len(raw)} entries; there is one input")
    if raw:
        if tensor.HasField("contents"):
            raise invalid("inputs[0] has both contents and raw_input_contents")
        array = oip.from_bytes(raw[0], shape, "raw_input_contents[0]")
    else:
        array = oip.from_values(tensor.contents.fp32_contents, shape, "inputs[0].contents.fp32_contents")
    return InferRequest(array, outputs, request.id)


def encode(model: ServedModel, request: InferRequest, rows: np.ndarray):
    """The ModelInferResponse: every output asked for as raw little-endian FP32."""
    interface = model.interface
    values = interface.output_values(rows, [name for name, _ in request.outputs])
    response = service_pb2.ModelInferResponse(
        model_name=interface.name, model_version=model.version, id=request.id or ""
    )
    for name, _ in request.outputs:
        array = oip.wire(values[name])
        response.outputs.add(name=name, datatype=oip.DATATYPE, shape=list(array.shape))
        response.raw_output_contents.append(array.tobytes())
    return response


# The servers under the servicer (GRPC_SERVER): name -> the module with its `aio.server()`
SERVERS = {"native": "pygrpc_native.aio", "grpcio": "grpc.aio"}


def server_factory(name: str):
    """The `server()` of GRPC_SERVER's implementation (both build a grpc.aio.Server)."""
    import importlib

    return importlib.import_module(SERVERS[name]).server


class GrpcServer:
    """The worker's gRPC server: started on the worker's event loop, stopped before its batchers."""

    def __init__(self, plane: DataPlane, settings) -> None:
        self.plane = plane
        self.settings = settings
        self.server: aio.Server | None = None
        self.port = 0  # the port it listens on (GRPC_PORT; a free one when that is 0 in a test)

    async def start(self, port: int | None = None) -> None:
        """Listen on GRPC_HOST:GRPC_PORT (or `port`: 0 = any free port) and serve."""
        s = self.settings
        self.server = server_factory(s.grpc_server)(
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", s.max_body_bytes),
                ("grpc.max_send_message_length", 1 << 30),
            ],
        )
        servicer = Servicer(self.plane, s.token())
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self.server)
        health_servicer(self.plane, self.server)
        reflection(self.server)
        address = f"{s.grpc_host}:{s.grpc_port if port is None else port}"
        try:
            bound = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # pygrpc-native raises where grpc.aio returns 0
            raise RuntimeError(f"gRPC: cannot listen on {address} (GRPC_PORT): {exc}") from None
        if bound == 0:
            raise RuntimeError(f"gRPC: cannot listen on {address} (GRPC_PORT)")
        self.port = bound
        await self.server.start()
        logger.info("Open Inference Protocol over gRPC on %s (GRPC_SERVER=%s)", address, s.grpc_server)

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


def health_servicer(plane: DataPlane, server) -> None:
    """The standard `grpc.health.v1.Health` (Kubernetes' gRPC probes): SERVING once the models are
    loaded (the service "" and each model's name)."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    servicer = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    serving = health_pb2.HealthCheckResponse.SERVING
    status = serving if plane.ready else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *plane.models):
        result = servicer.set(name, status)
        if asyncio.iscoroutine(result):
            asyncio.ensure_future(result)
