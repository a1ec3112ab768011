"""API server sockets with 2+ workers (bentoml 1.4.x): BentoML binds one listening socket in the
arbiter and every worker accepts from it. A worker's event loop accepts every pending connection
when it wakes, so keep-alive clients that connect together mostly land on one worker: with 32
connections and 2 workers, one worker ran at 100 % CPU and the other idled in 4 of 6 runs (2,100-
2,700 instead of ~4,500 single-row requests/s). Here the arbiter's socket gets SO_REUSEPORT and
worker 1 accepts on it, while every other worker binds a listening socket of its own in the same
SO_REUSEPORT group: the kernel then spreads new connections across the workers. SO_REUSEPORT would
also let a second server of the same user share the port silently, so the port is checked first;
that check runs with any number of workers and turns a port in use into one line (`error: 127.0.0.1:
3000 is already in use ...`) instead of stock BentoML's traceback.
"""

from __future__ import annotations

import errno
import socket

import uvicorn
from circus import sockets as circus_sockets

API_SERVER_SOCKET = "_bento_api_server"  # _bentoml_impl.server.serving.API_SERVER_NAME
stock_socket_init = circus_sockets.CircusSocket.__init__
stock_server_run = uvicorn.Server.run
_reuseport = False  # set by apply(): SO_REUSEPORT only with 2+ workers


def check_port_free(host: str, port: int, family: int = socket.AF_INET, setting: str = "--port") -> None:
    """SystemExit with one line naming the address when something is already bound to host:port."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "in use" if exc.errno == errno.EADDRINUSE else "not available"
            raise SystemExit(
                f"error: {host}:{port} is already {reason} ({exc.strerror}); stop what listens there or "
                f"pick another {setting}"
            ) from None


def reuseport_socket_init(self, *args, **kwargs) -> None:
    """CircusSocket.__init__ for BentoML's API server socket: check that nothing is bound to the port
    yet, then (2+ workers) set SO_REUSEPORT before circus binds it in the arbiter."""
    is_api_server = kwargs.get("name") == API_SERVER_SOCKET and kwargs.get("path") is None
    if is_api_server and kwargs.get("port"):
        check_port_free(kwargs["host"], kwargs["port"], kwargs.get("family", socket.AF_INET))
    stock_socket_init(self, *args, **kwargs)
    if is_api_server and kwargs.get("port") and _reuseport:
        self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def reuseport_listener(inherited: socket.socket) -> socket.socket:
    """A new listening socket on the inherited socket's address, in its SO_REUSEPORT group."""
    sock = socket.socket(inherited.family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(inherited.getsockname()[:2])
    sock.listen()  # uvicorn sets the backlog again when it starts serving on it
    sock.setblocking(False)
    return sock


def worker_run(self, sockets=None) -> None:
    """uvicorn.Server.run in a BentoML worker: worker 1 accepts on the arbiter's socket, every other
    worker on a socket of its own in the same SO_REUSEPORT group."""
    import bentoml

    if sockets and (bentoml.server_context.worker_index or 1) > 1:
        own = reuseport_listener(sockets[0])
        sockets[0].close()  # this process's copy only; worker 1 and the arbiter keep theirs
        sockets = [own]
    return stock_server_run(self, sockets=sockets)


def apply(workers: int) -> None:
    global _reuseport
    _reuseport = workers > 1
    circus_sockets.CircusSocket.__init__ = reuseport_socket_init
    if _reuseport:
        uvicorn.Server.run = worker_run
