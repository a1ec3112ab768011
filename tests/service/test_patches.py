"""service/patches: for each remaining patch, the stock library still behaves the way the patch corrects
(if a `stock` test fails, the library fixed it: drop that patch), and the patched code does its job.
The patched HTTP answers (431, 408) are checked on a real server in test_http.py / test_slow_clients.py."""

import socket
import subprocess
import sys
import time

import pytest
import requests
from circus.sockets import CircusSocket
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from loadtests.server import REPO, free_port
from service import patches
from service.patches import header_limit, reuseport


async def ok_app(scope, receive, send):
    """A bare ASGI app for the stock uvicorn below."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_stock_uvicorn_httptools_reads_any_header_size():
    """Stock uvicorn with httptools (what BentoML's workers run) reads an 8 MiB header and answers 200:
    no limit (the patched server answers 431: test_http.py)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.service.test_patches:ok_app", "--http", "httptools",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                response = requests.get(
                    f"http://127.0.0.1:{port}/", headers={"X-Big": "a" * (8 << 20)}, timeout=30
                )
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            pytest.fail("stock uvicorn did not start")
        assert response.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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


def test_fingerprints_match_the_pinned_libraries_and_a_change_stops_start_up():
    """Every replaced function is the one its patch was verified on; were one different, start-up
    stops with one line naming the patch (here: a fingerprint table that disagrees)."""
    patches.verify()  # the installed uvicorn / circus: pyproject pins uvicorn
    changed = {**patches.FINGERPRINTS, "reuseport.stock_server_run": "000000000000"}
    with pytest.raises(patches.PatchMismatch) as info:
        patches.verify(changed)
    message = str(info.value)
    assert message.startswith("error: uvicorn ") and "service/patches/reuseport.py (server_run: " in message
    assert "\n" not in message


def test_no_bentoml_function_is_replaced():
    """The service uses BentoML through its public surface only: no patch targets BentoML's code."""
    for key in patches.FINGERPRINTS:
        module, name = key.split(".", 1)
        target = getattr(getattr(patches, module), name)
        assert not target.__module__.startswith(("bentoml", "_bentoml")), key


def test_importing_the_service_patches_nothing_and_start_up_installs_them():
    """`import service.service` (definitions) changes no library function; `service.app` is where
    start-up happens. Run in a fresh interpreter: this test session has already imported both."""
    code = (
        "from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as P; stock = P.data_received\n"
        "import service.service\n"
        "assert P.data_received is stock, 'import patched'\n"
        "import service.app\n"
        "from service.patches import header_limit\n"
        "assert P.data_received is header_limit.data_received, 'start-up did not patch'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_patches_are_installed_once():
    from service.settings import ServiceSettings

    patches.apply(1, ServiceSettings())
    patches.apply(1, ServiceSettings())  # a second call changes nothing
    assert HttpToolsProtocol.data_received is header_limit.data_received
