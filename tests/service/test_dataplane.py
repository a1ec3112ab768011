"""The data plane in-process, and the gRPC layer over it on fake backends: settings reach a data plane
as arguments (two planes, two sets of limits, one process), one error table for both protocols, the
same admission for gRPC as for HTTP (a flood of large messages is refused by the worker's byte budget,
never a call that fits), answers and trailing Server-Timing over tritonclient's gRPC client.
Milliseconds each; tests/service/test_grpc.py runs the gRPC path on a real `bentoml serve`."""

from __future__ import annotations

import asyncio
import threading

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from models.specs import HOUSING, MNIST
from service.errors import Kind, Refused
from service.oip_grpc import GrpcServer
from service.timing import Timing
from tests.service.inprocess import FakeBackend, fake_plane

pytestmark = pytest.mark.inprocess


def infer_input(name: str, x: np.ndarray) -> triton_aio.InferInput:
    tensor = triton_aio.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


async def decoding(x: np.ndarray):
    from service.interface import InferRequest

    return InferRequest(x)


def test_two_data_planes_keep_their_own_limits():
    """Settings are arguments: two planes in one process, each batching and refusing by its own."""
    strict = fake_plane(
        models={"housing_mlp": {"max_items": 2, "max_batch_size": 4}}, max_inflight_bytes=1000
    )
    roomy = fake_plane(models={"housing_mlp": {"max_items": 50, "max_latency_ms": 7}})
    a, b = strict.model("housing_mlp"), roomy.model("housing_mlp")
    assert (a.interface.max_items, a.batcher.max_batch_size) == (2, 4)
    assert (b.interface.max_items, b.batcher.max_latency_s) == (50, 0.007)
    assert strict.memory.budget == 1000 and roomy.memory.budget > 1000
    body = b'{"features": [[1,1,1,1,1,1,1,1],[1,1,1,1,1,1,1,1],[1,1,1,1,1,1,1,1]]}'
    with pytest.raises(Refused) as info:
        a.interface.codec.decode(body)
    assert info.value.kind is Kind.INVALID
    assert b.interface.codec.decode(body).shape == (3, 8)

    async def main():
        rows = await roomy.predict(b, 10_000, decoding(np.ones((3, 8), np.float32)), Timing())
        strict.memory.hold(600)  # another request holds 600 of the 1000 bytes
        with pytest.raises(Refused) as info:
            await strict.predict(a, 600, decoding(np.ones((1, 8), np.float32)), Timing())
        return rows, info.value

    (request, rows), refused = asyncio.run(main())
    assert rows[:, 0].tolist() == [8.0, 8.0, 8.0]
    assert refused.kind is Kind.OVERLOADED and "MAX_INFLIGHT_BYTES 1000" in refused.message


def test_one_error_table_for_both_protocols():
    assert {kind.http for kind in Kind} >= {400, 401, 404, 413, 415, 429, 500, 503, 504}
    for kind in Kind:
        assert grpc.StatusCode[kind.grpc] not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN)
    assert Refused(Kind.OVERLOADED, "x", retry_after_s=2.4).http_headers() == [(b"retry-after", b"2")]


# Both servers GRPC_SERVER offers under the servicer
SERVERS = pytest.mark.parametrize("grpc_server", ["native", "grpcio"])


async def serving(plane, body, grpc_server: str = "native"):
    """Run `body(client)` against the plane's gRPC server (GRPC_SERVER `grpc_server`) on a free port."""
    server = GrpcServer(plane, plane.settings.model_copy(update={"grpc_server": grpc_server}))
    await server.start(port=0)
    try:
        async with triton_aio.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
            return await body(client)
    finally:
        await server.stop(0.5)
        await plane.close()


@SERVERS
def test_grpc_answers_from_the_data_plane_with_its_status_codes(grpc_server):
    plane = fake_plane()

    async def body(client):
        x = np.arange(16, dtype=np.float32).reshape(2, 8)
        result = await client.infer("housing_mlp", [infer_input("features", x)])
        images = np.zeros((2, 1, 28, 28), np.float32)
        images[1, 0, 0, 0] = 1.0
        digits = await client.infer("mnist_cnn", [infer_input("images", images)])
        errors = {}
        for what, call in {
            "unknown model": client.infer("nope", [infer_input("features", x)]),
            "unknown version": client.infer("housing_mlp", [infer_input("features", x)], model_version="7"),
            "wrong input": client.infer("housing_mlp", [infer_input("images", x)]),
            "too many rows": client.infer(
                "housing_mlp", [infer_input("features", np.ones((1001, 8), np.float32))]
            ),
        }.items():
            try:
                await call
            except InferenceServerException as exc:
                errors[what] = (exc.status(), exc.message())
        ready = await client.is_model_ready("housing_mlp"), await client.is_model_ready("nope")
        config = await client.get_model_config("housing_mlp", as_json=True)
        return result, digits, errors, ready, config

    result, digits, errors, ready, config = asyncio.run(serving(plane, body, grpc_server))
    assert result.as_numpy("value")[:, 0].tolist() == [28.0, 92.0]
    assert result.get_response().model_version == "1"
    assert digits.as_numpy("probabilities").shape == (2, 10) and digits.as_numpy("logits")[1, 9] == 10.0
    assert (
        errors["unknown model"][0] == "StatusCode.NOT_FOUND" and "unknown model" in errors["unknown model"][1]
    )
    assert errors["unknown version"][0] == "StatusCode.NOT_FOUND"
    assert (
        errors["wrong input"][0] == "StatusCode.INVALID_ARGUMENT"
        and "takes 'features'" in errors["wrong input"][1]
    )
    assert (
        errors["too many rows"][0] == "StatusCode.INVALID_ARGUMENT"
        and "at most 1000" in errors["too many rows"][1]
    )
    assert ready == (True, False)
    assert (
        config["config"]["dynamic_batching"]["default_queue_policy"]["default_timeout_microseconds"]
        == "500000"
    )


@SERVERS
def test_a_grpc_flood_of_large_messages_is_refused_by_the_byte_budget(grpc_server):
    """64 concurrent calls of 64 images (200 KB each, 12.8 MB together) against a 1 MB budget while the
    model is held: the calls past the budget are refused at once with UNAVAILABLE naming
    MAX_INFLIGHT_BYTES, the bytes held never pass the budget by more than the one call that always
    fits an idle worker, every admitted call is answered, and good calls are answered afterwards."""
    gate = threading.Event()
    plane = fake_plane({"mnist_cnn": FakeBackend(MNIST, gate=gate)}, max_inflight_bytes=1 << 20)
    images = np.full((64, 1, 28, 28), 0.5, np.float32)

    async def call(client, x):
        try:
            return await client.infer("mnist_cnn", [infer_input("images", x)])
        except InferenceServerException as exc:
            return exc

    async def body(client):
        calls = [asyncio.ensure_future(call(client, images)) for _ in range(64)]
        await asyncio.sleep(1.0)
        gate.set()
        answers = await asyncio.gather(*calls)
        after = [await call(client, images[:1]) for _ in range(3)]
        return answers, after

    answers, after = asyncio.run(serving(plane, body, grpc_server))
    refused = [a for a in answers if isinstance(a, InferenceServerException)]
    answered = [a for a in answers if not isinstance(a, InferenceServerException)]
    assert refused and answered, (len(refused), len(answered))
    assert {a.status() for a in refused} == {"StatusCode.UNAVAILABLE"}
    assert all("MAX_INFLIGHT_BYTES" in a.message() for a in refused)
    assert all(a.as_numpy("logits").shape == (64, 10) for a in answered)
    assert plane.memory.peak <= plane.memory.budget + images.nbytes + 1024, plane.memory.peak
    assert plane.memory.held == 0
    assert all(not isinstance(a, InferenceServerException) for a in after)


def test_grpc_refuses_what_would_miss_its_deadline():
    gate = threading.Event()
    plane = fake_plane({"housing_mlp": FakeBackend(HOUSING, gate=gate)}, max_latency_ms=50)
    plane.model("housing_mlp").batcher.cost.per_row = 0.01  # 10 ms per row

    async def body(client):
        first = asyncio.ensure_future(
            client.infer("housing_mlp", [infer_input("features", np.ones((1, 8), np.float32))])
        )
        await asyncio.sleep(0.1)
        try:
            await client.infer("housing_mlp", [infer_input("features", np.ones((10, 8), np.float32))])
        except InferenceServerException as exc:
            refused = exc
        gate.set()
        return await first, refused

    first, refused = asyncio.run(serving(plane, body))
    assert first.as_numpy("value").shape == (1, 1)
    assert refused.status() == "StatusCode.UNAVAILABLE" and "past its deadline of 50 ms" in refused.message()
    assert "MODELS__HOUSING_MLP__MAX_LATENCY_MS" in refused.message()


def test_grpc_calls_past_the_request_timeout_end_with_deadline_exceeded():
    """REQUEST_TIMEOUT_S over gRPC: the data plane's watchdog ends a call held past it (within a tenth
    of it) with DEADLINE_EXCEEDED, and the worker holds nothing afterwards."""
    gate = threading.Event()
    plane = fake_plane({"housing_mlp": FakeBackend(HOUSING, gate=gate)}, request_timeout_s=1)

    async def body(client):
        start = asyncio.get_running_loop().time()
        try:
            await client.infer("housing_mlp", [infer_input("features", np.ones((1, 8), np.float32))])
        except InferenceServerException as exc:
            refused = exc
        elapsed = asyncio.get_running_loop().time() - start
        gate.set()
        return refused, elapsed

    refused, elapsed = asyncio.run(serving(plane, body))
    assert refused.status() == "StatusCode.DEADLINE_EXCEEDED" and "REQUEST_TIMEOUT_S" in refused.message()
    assert 1.0 <= elapsed < 1.5, elapsed
    assert plane.in_flight == 0 and plane.memory.held == 0
