"""What a gRPC call costs the server, front by front, with the model taken out.

The service's own gRPC layer (service/oip_grpc.py) and data plane (batcher, Prometheus metrics and statistics included)
over a backend that computes nothing, under each server that can carry it, beside the same data
plane over HTTP (V2 REST binary on uvicorn + httptools, as the service serves it). One server
process at a time on uvloop, perf_analyzer against it; the server's CPU seconds (all its threads)
per call are the figure.

    python -m loadtests.grpc_fronts --fronts http,grpcio,native,zttp --out reports/grpc_fronts
    pip install --no-deps --target /tmp/grpcio-1.83.2 grpcio==1.83.2      # another grpcio release:
    python -m loadtests.grpc_fronts --fronts grpcio,grpcio@/tmp/grpcio-1.83.2   # FRONT@ITS_PYTHONPATH

| front | what serves the HTTP/2 and gRPC framing |
|---|---|
| http | uvicorn + httptools (HTTP/1.1), V2 REST with binary tensors: the HTTP request's cost |
| grpcio | grpc.aio (grpcio's asyncio server: calls handed to the loop one at a time) |
| native | pygrpc-native's grpc.aio-compatible server (HTTP/2 in Rust, calls handed over in batches) |
| zttp | uvicorn's HTTP/2 (its zttp protocol, ASGI response trailers): gRPC as an ASGI route, through a
  minimal unary adapter here (a measurement, not a served front: no health, reflection, compression) |
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from loadtests.server import REPO

FRONTS = ("http", "grpcio", "native", "zttp")
# perf_analyzer's stability rule, loosened: the server and perf_analyzer share a noisy 2-core machine,
# and the figure here is the server's CPU per call, counted over the whole run, not perf_analyzer's rate
LENIENT = ("--stability-percentage", "50")


class NoModel:
    """A backend that computes nothing: zeros of the model's output shape."""

    kind = "onnx"
    device = "cpu"

    def __init__(self, spec) -> None:
        self.shape = spec.output_shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.zeros((len(x), *self.shape), np.float32)

    def describe(self) -> dict:
        return {"backend": "none", "device": "cpu"}


def plane():
    from service.batching import CostModel
    from service.dataplane import DataPlane, ServedModel
    from service.loading import warm_up
    from service.settings import ServiceSettings

    # the Prometheus metrics in multiprocess mode, as under `bentoml serve`
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="grpc-fronts-metrics-"))
    settings = ServiceSettings(workers=1)
    data_plane = DataPlane(settings, "grpc_fronts")
    models = {}
    for name, i in data_plane.interfaces.items():  # each with its cost measured, as the service's
        backend = NoModel(i.spec)
        cost = CostModel.fit(warm_up(backend, i.spec, f"{name}:bench", (1, 8, 64), repeats=3))
        models[name] = ServedModel.start(i, backend, f"{name}:bench", {}, cost=cost)
    data_plane.attach(models, {"backend": "none", "device": "cpu"})
    return data_plane


class AsgiContext:
    """What the servicer uses of a grpc.aio context, for one ASGI request."""

    class Abort(Exception):
        pass

    def __init__(self, scope) -> None:
        self.scope = scope
        self.trailing = ()
        self.status = (0, "")

    def invocation_metadata(self):
        return tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in self.scope["headers"])

    def set_trailing_metadata(self, metadata) -> None:
        self.trailing = metadata

    async def abort(self, code, details: str = ""):
        self.status = (code.value[0], details)
        raise self.Abort()


class GrpcAsgi:
    """Unary methods of a servicer as an ASGI app over HTTP/2 with response trailers."""

    def __init__(self, servicer) -> None:
        from tritonclient.grpc import service_pb2

        service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
        self.methods = {}
        for method in service.methods:
            if method.client_streaming or method.server_streaming:
                continue
            request_class = getattr(service_pb2, method.input_type.name)
            self.methods[f"/{service.full_name}/{method.name}"] = (
                request_class,
                getattr(servicer, method.name),
            )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        context = AsgiContext(scope)
        payload = b""
        found = self.methods.get(scope["path"])
        if found is None:
            context.status = (12, f"Method not found: {scope['path']}")  # UNIMPLEMENTED
        elif len(body) < 5 or body[0] != 0:
            context.status = (13, "compressed or truncated message")  # INTERNAL
        else:
            request_class, method = found
            (length,) = struct.unpack(">I", body[1:5])
            try:
                response = await method(request_class.FromString(body[5 : 5 + length]), context)
                payload = response.SerializeToString()
            except AsgiContext.Abort:
                pass
        headers = [(b"content-type", b"application/grpc")]
        await send({"type": "http.response.start", "status": 200, "headers": headers, "trailers": True})
        framed = b"\x00" + struct.pack(">I", len(payload)) + payload if context.status[0] == 0 else b""
        await send({"type": "http.response.body", "body": framed, "more_body": False})
        trailers = [(b"grpc-status", str(context.status[0]).encode())]
        if context.status[1]:
            trailers.append((b"grpc-message", quote(context.status[1]).encode()))
        trailers += [(k.encode(), v.encode()) for k, v in context.trailing]
        await send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})


async def _no_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def serve(front: str, port: int) -> None:
    import uvicorn

    data_plane = plane()
    if front in ("grpcio", "native"):
        from service.oip_grpc import GrpcServer

        settings = data_plane.settings.model_copy(update={"grpc_server": front, "grpc_port": port})
        server = GrpcServer(data_plane, settings)
        await server.start()
        print("ready", flush=True)
        await asyncio.Event().wait()
    if front == "zttp":
        from service.oip_grpc import Servicer

        app, protocol = GrpcAsgi(Servicer(data_plane, None)), {"http": "zttp", "http2": True}
    else:
        from service.front import FrontDoor
        from service.http import HttpApi

        app, protocol = FrontDoor(HttpApi(data_plane), _no_app, data_plane.settings), {"http": "httptools"}
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, loop="uvloop", lifespan="off", log_level="warning",
        access_log=False, **protocol,
    )  # fmt: skip
    server = uvicorn.Server(config)
    asyncio.get_running_loop().call_later(0.5, print, "ready")
    await server.serve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(spec: str, model: str, concurrency: int, window_ms: int) -> dict:
    """One front (FRONT, or FRONT@PYTHONPATH: its server with that first on its path, e.g. another
    grpcio release) under perf_analyzer."""
    from loadtests import perf_analyzer

    front, _, path = spec.partition("@")
    env = {**os.environ, **({"PYTHONPATH": path} if path else {})}
    version = subprocess.run(
        [sys.executable, "-c", "import grpc; print(grpc.__version__)"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "loadtests.grpc_fronts", "--serve", front, "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert server.stdout.readline().strip() == "ready", f"{front} did not start"
        protocol = "http" if front == "http" else "grpc"
        address = f"127.0.0.1:{port}"
        perf_analyzer.run(address, model, protocol, "zero", concurrency, 1000, 120, LENIENT)  # warm-up
        t0 = time.perf_counter()
        row = perf_analyzer.measured(
            address, model, protocol, "zero", concurrency, window_ms, 240, server.pid, LENIENT
        )
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(10)
    label = f"{front} (grpcio {version})" if front != "http" else front
    if "error" in row:
        return {"front": label, **row}
    cpu_pct = row["server_cpu_ms"] * row["infer_per_s"] / 10  # ms per call x calls per s, as % of a core
    return {"front": label, "model": model, "concurrency": concurrency, "wall_s": wall, **row,
            "server_cpu_pct": cpu_pct}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.grpc_fronts", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--fronts", default=",".join(FRONTS), help=f"of {','.join(FRONTS)}, each FRONT or FRONT@PYTHONPATH"
    )
    parser.add_argument("--rounds", type=int, default=1, help="measure every front this many times, in turn")
    parser.add_argument("--model", default="housing_mlp")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--window-ms", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "grpc_fronts")
    parser.add_argument("--serve", choices=FRONTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        import uvloop

        uvloop.run(serve(args.serve, args.port))
        return 0
    rows = []
    for spec in args.fronts.split(",") * args.rounds:
        row = measure(spec, args.model, args.concurrency, args.window_ms)
        rows.append(row)
        if "error" in row:
            print(f"{row['front']}: failed: {row['error']}", flush=True)
            continue
        print(
            f"{row['front']}: {row['infer_per_s']:,.0f} infer/s, p99 {row['p99_us'] / 1e3:.1f} ms, server "
            f"{row['server_cpu_ms']:.3f} ms CPU per call ({row['server_cpu_pct']:.0f} % of a core)",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grpc_fronts.json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}/grpc_fronts.json")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
