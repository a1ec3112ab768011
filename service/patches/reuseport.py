"""API server sockets with 2+ workers (bentoml 1.4.x): BentoML binds one listening socket in the
arbiter and every worker accepts from it. A worker's event loop accepts every pending connection
when it wakes, so keep-alive clients that connect together mostly land on one worker: with 32
connections and 2 workers, one worker ran at 100 % CPU and the other idled in 4 of 6 runs (2,100-
2,700 instead of ~4,500 single-row requests/s). Here the arbiter's socket gets SO_REUSEPORT and
worker 1 accepts on it, while every other worker binds a listening socket of its own in the same
SO_REUSEPORT group: the kernel then spreads new connections across the workers. SO_REUSEPORT would
also let a second server of the same user share the port silently, so the port is checked first.
"""

from __future__ import annotations

import errno
import socket

import uvicorn
from circus import sockets as circus_sockets

API_SERVER_SOCKET = "_bento_api_server"  # _bentoml_impl.server.serving.API_SERVER_NAME
stock_socket_init = circus_sockets.CircusSocket.__init__
stock_server_run = uvicorn.Server.run


def check_port_free(host: str, port: int, family: int = socket.AF_INET) -> None:
    """OSError(EADDRINUSE) naming the address when something is already bound to host:port."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(
                errno.EADDRINUSE, f"{host}:{port} is already in use ({exc.strerror}); pick another --port"
            ) from None


def reuseport_socket_init(self, *args, **kwargs) -> None:
    """CircusSocket.__init__ that sets SO_REUSEPORT on BentoML's API server socket (before circus binds
    it in the arbiter), after checking that nothing is bound to the port yet."""
    is_api_server = kwargs.get("name") == API_SERVER_SOCKET and kwargs.get("path") is None
    if is_api_server and kwargs.get("port"):
        check_port_free(kwargs["host"], kwargs["port"], kwargs.get("family", socket.AF_INET))
    stock_socket_init(self, *args, **kwargs)
    if is_api_server and kwargs.get("port"):
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
    from bentoml._internal.context import server_context

    if sockets and (server_context.worker_index or 1) > 1:
        own = reuseport_listener(sockets[0])
        sockets[0].close()  # this process's copy only; worker 1 and the arbiter keep theirs
        sockets = [own]
    return stock_server_run(self, sockets=sockets)


def apply() -> None:
    circus_sockets.CircusSocket.__init__ = reuseport_socket_init
    uvicorn.Server.run = worker_run
