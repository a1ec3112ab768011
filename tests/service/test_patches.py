"""service/patches: for each patch, stock BentoML still behaves the way the patch corrects (if one of
the `stock_...` tests fails, BentoML fixed it: drop that patch), and the patched code does its job."""

import asyncio
import socket

import numpy as np
import pytest
import requests
from _bentoml_sdk.io_models import IOMixin
from bentoml._internal.marshal.dispatcher import Optimizer
from bentoml._internal.runner.container import DataContainerRegistry
from bentoml._internal.server.http import traffic
from circus.sockets import CircusSocket

from loadtests.server import SERVERS, Server
from service import patches
from service.patches import batching, containers, media_type, openapi_doc, reuseport, timeout
from service.schemas import DigitPrediction


async def _ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _slow_app(scope, receive, send):
    await asyncio.sleep(1)


def _run(call, app, requests: int, timeout: float = 30.0):
    """Serve `requests` requests through `call` (a TimeoutMiddleware.__call__); return live timers
    and the statuses sent."""
    statuses = []

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def main():
        middleware = traffic.TimeoutMiddleware(app, timeout=timeout)
        for _ in range(requests):
            await call(middleware, {"type": "http", "path": "/"}, receive, send)
        loop = asyncio.get_running_loop()
        return sum(1 for h in loop._scheduled if not h.cancelled())

    return asyncio.run(main()), statuses


def test_stock_timeout_middleware_still_leaks_one_timer_per_request():
    live, statuses = _run(timeout.stock_call, _ok_app, 100)
    assert statuses == [200] * 100
    assert live == 100  # if this fails, BentoML fixed it: drop the patch


def test_patched_timeout_middleware_leaves_no_timer_and_still_times_out():
    live, statuses = _run(timeout.patched_call, _ok_app, 100)
    assert statuses == [200] * 100 and live == 0
    _, statuses = _run(timeout.patched_call, _slow_app, 1, timeout=0.05)
    assert statuses == [504]


def _root_output_spec():
    """The output spec class BentoML builds for `-> list[DigitPrediction]` (a root model)."""
    from _bentoml_sdk.io_models import IODescriptor

    def f() -> list[DigitPrediction]: ...

    return IODescriptor.from_output(f)


def _schema_builds(mime_type, spec, calls: int) -> int:
    built = 0
    stock_schema = spec.model_json_schema

    def counting_schema(*args, **kwargs):
        nonlocal built
        built += 1
        return stock_schema(*args, **kwargs)

    spec.model_json_schema = counting_schema
    try:
        answers = {mime_type(spec) for _ in range(calls)}
    finally:
        del spec.model_json_schema
    assert answers == {"application/json"}
    return built


def test_stock_mime_type_builds_the_json_schema_on_every_call():
    assert _schema_builds(media_type.stock_mime_type, _root_output_spec(), 5) == 5


def test_cached_mime_type_builds_it_once_per_class():
    assert _schema_builds(media_type.cached_mime_type.__func__, _root_output_spec(), 5) == 1


def _optimizer_after_bulk_traffic(refresh) -> Optimizer:
    opt = Optimizer(max_latency=1.0)
    for _ in range(60):  # batches of 64 images: 12 ms each, queued 0.4 s before dispatch
        opt.o_stat.append((64, 0.012, 0.4))
    refresh(opt)
    return opt


def test_stock_dispatcher_holds_requests_for_the_learned_queue_wait():
    opt = _optimizer_after_bulk_traffic(batching.stock_refresh)
    assert opt.wait == pytest.approx(0.4)  # a lone request is corked ~0.4 s, and logs that wait again


def test_patched_dispatcher_keeps_the_cost_model_but_no_hold():
    opt = _optimizer_after_bulk_traffic(batching.refresh_without_hold)
    assert opt.wait == 0.0
    assert opt.o_a * 64 + opt.o_b == pytest.approx(0.012, rel=1e-6)  # still used to shed late requests


def _registry_checks(find, calls: int, monkeypatch) -> int:
    """LazyType.issubclass checks made by `calls` lookups of the container that batches lists."""
    from bentoml._internal.types import LazyType

    counted = []
    stock_issubclass = LazyType.issubclass
    monkeypatch.setattr(
        LazyType, "issubclass", lambda self, k: counted.append(k) or stock_issubclass(self, k)
    )
    for _ in range(calls):
        find(DataContainerRegistry, list)
    return len(counted)


def test_stock_container_lookup_walks_the_registry_every_time(monkeypatch):
    one = _registry_checks(containers.stock_find_by_batch_type, 1, monkeypatch)
    assert one > 0 and _registry_checks(containers.stock_find_by_batch_type, 5, monkeypatch) == 5 * one


def test_patched_container_lookup_walks_it_once_per_type_and_agrees(monkeypatch):
    containers.FOUND.clear()
    one = _registry_checks(containers.stock_find_by_batch_type, 1, monkeypatch)
    assert _registry_checks(containers.find_by_batch_type, 5, monkeypatch) == one  # then from FOUND
    for kind in (list, np.ndarray):
        stock = containers.stock_find_by_batch_type(DataContainerRegistry, kind)
        assert containers.find_by_batch_type(DataContainerRegistry, kind) is stock


def test_stock_api_server_socket_has_no_reuseport():
    sock = CircusSocket.__new__(CircusSocket)
    reuseport.stock_socket_init(sock, name=reuseport.API_SERVER_SOCKET, host="127.0.0.1", port=0)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    finally:
        sock.close()


def test_reuseport_socket_shares_its_port_with_worker_listeners_and_refuses_a_taken_port(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        taken.listen()
        with pytest.raises(SystemExit, match=f"127.0.0.1:{port} is already in use"):
            reuseport.check_port_free("127.0.0.1", port)
    monkeypatch.setattr(reuseport, "_reuseport", True)  # as apply(workers=2) sets it
    arbiter = CircusSocket.__new__(CircusSocket)
    reuseport.reuseport_socket_init(arbiter, name=reuseport.API_SERVER_SOCKET, host="127.0.0.1", port=port)
    try:
        arbiter.bind_and_listen()
        worker = reuseport.reuseport_listener(arbiter)
        try:
            assert worker.getsockname() == arbiter.getsockname()
        finally:
            worker.close()
    finally:
        arbiter.close()


def test_stock_openapi_documents_error_detail_as_a_string():
    from bentoml.exceptions import InvalidArgument

    (schema,) = openapi_doc.stock_exception_schema(InvalidArgument)
    assert schema.properties["detail"].type == "string"  # BentoML's 400s carry a list there


def test_patched_openapi_documents_the_validation_error_list():
    from bentoml.exceptions import InvalidArgument

    (schema,) = openapi_doc.exception_schema_with_validation_detail(InvalidArgument)
    assert schema.properties["detail"].type == "array" and schema.properties["error"].type == "string"
    assert schema.required == ["error"]


def _api_method():
    import bentoml

    @bentoml.api
    def predict(self, x: list[float]) -> list[float]: ...

    return predict


def test_stock_openapi_request_body_is_optional():
    assert "required" not in openapi_doc.stock_openapi_request(_api_method())


def test_patched_openapi_request_body_is_required():
    request = openapi_doc.required_openapi_request(_api_method())
    assert request["required"] is True and "application/json" in request["content"]


def test_stock_bentoml_error_bodies_still_need_the_patch(smoke_models):
    """loadtests/stock_service.py runs without service/patches: a malformed multipart body is a 500
    there and a 4xx body is a JSON list (tests/service/test_http.py checks the patched answers)."""
    env = {
        "HOUSING_MODEL": smoke_models["housing_mlp"]["tag"],
        "MNIST_MODEL": smoke_models["mnist_cnn"]["tag"],
    }
    boundary = "7c5156fb04a2177cf9e322ad31ebde44"
    with Server(env, target=SERVERS["stock"]) as stock:
        multipart = requests.post(
            f"{stock.url}/predict_housing",
            data=f"--{boundary}\r\nNone--{boundary}--\r\n".encode(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=10,
        )
        pickle_type = {"Content-Type": "application/vnd.bentoml+pickle"}
        pickled = requests.post(f"{stock.url}/predict_housing", data=b"x", headers=pickle_type, timeout=10)
    assert multipart.status_code == 500
    assert pickled.status_code == 415 and isinstance(pickled.json(), list)


def test_fingerprints_match_the_pinned_bentoml_and_a_change_stops_start_up():
    """Every replaced function is the one its patch was verified on; were one different, start-up
    stops with one line naming the patch (here: a fingerprint table that disagrees)."""
    patches.verify()  # the installed BentoML / uvicorn: pyproject pins them
    changed = {**patches.FINGERPRINTS, "timeout.stock_call": "000000000000"}
    with pytest.raises(patches.PatchMismatch) as info:
        patches.verify(changed)
    message = str(info.value)
    assert message.startswith("error: BentoML ") and "service/patches/timeout.py (call: " in message
    assert "\n" not in message


def test_importing_the_service_patches_nothing_and_start_up_installs_them():
    """`import service.service` (definitions) changes no BentoML function; `service.app` is where
    start-up happens. Run in a fresh interpreter: this test session has already imported both."""
    import subprocess
    import sys

    code = (
        "from bentoml._internal.server.http import traffic; stock = traffic.TimeoutMiddleware.__call__\n"
        "import service.service\n"
        "assert traffic.TimeoutMiddleware.__call__ is stock, 'import patched'\n"
        "import service.app\n"
        "from service.patches import timeout\n"
        "assert traffic.TimeoutMiddleware.__call__ is timeout.patched_call, 'start-up did not patch'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_patches_are_installed_once():
    from service.settings import ServiceSettings

    patches.apply(1, ServiceSettings())
    patches.apply(1, ServiceSettings())  # a second call changes nothing
    assert traffic.TimeoutMiddleware.__call__ is timeout.patched_call
    assert IOMixin.mime_type.__func__ is media_type.cached_mime_type.__func__
    assert Optimizer.trigger_refresh is batching.refresh_without_hold
