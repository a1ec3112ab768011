"""Bounded request heads and bodies (uvicorn's httptools protocol, which sets no limit on either):

- size: the request line and headers of one request may take at most `max_bytes`; past that the
  connection gets a 431 with a JSON error. Without it a single 64 MB header was read into memory and
  answered 200, so a few such connections could exhaust a worker's memory. Proxies use similar
  limits (nginx 8-32 KiB, Node.js 16 KiB). Counted per chunk read while the head is incomplete, so
  memory stays within the limit plus one read.
- time: a head must arrive within `header_timeout_s` of the connection opening or of the request's
  first byte, and a body within `body_timeout_s` of its head (a client sending a byte a second,
  slowloris-style); past that 408 with a JSON error. A sweep once a second per worker checks the open
  connections, so a request pays for a timestamp, not for a timer. Idle keep-alive connections are
  uvicorn's own timeout_keep_alive.
After either answer the connection is half-closed and whatever the client still sends is read and
dropped for LINGER_S before closing: closing at once, with the client's data unread, makes the kernel
reset the connection and the client never sees the answer.
"""

from __future__ import annotations

import asyncio
import json
import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

stock_connection_made = HttpToolsProtocol.connection_made
stock_data_received = HttpToolsProtocol.data_received
stock_on_message_begin = HttpToolsProtocol.on_message_begin
stock_on_headers_complete = HttpToolsProtocol.on_headers_complete
stock_on_message_complete = HttpToolsProtocol.on_message_complete
LINGER_S = 2.0
SWEEP_S = 1.0
HEAD, BODY = "head", "body"
STATUS_LINES = {408: b"408 Request Timeout", 431: b"431 Request Header Fields Too Large"}
_limits = {"max_bytes": 64 * 1024, "header_timeout_s": 10.0, "body_timeout_s": 30.0}
_swept_loops: set = set()


def _refuse(self, status: int, message: str) -> None:
    """Answer `status` with a JSON error, half-close, drop what still comes for LINGER_S, close."""
    self._phase, self._rejected = None, True
    body = json.dumps({"error": message}).encode()
    self.transport.write(
        b"HTTP/1.1 " + STATUS_LINES[status] + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )
    if self.transport.can_write_eof():
        self.transport.write_eof()
    self.loop.call_later(LINGER_S, self.transport.close)


def _sweep(loop: asyncio.AbstractEventLoop, connections: set) -> None:
    """Once a second: refuse the connections whose head or body is overdue."""
    try:
        _refuse_overdue(connections)
    finally:  # whatever happened, keep sweeping
        loop.call_later(SWEEP_S, _sweep, loop, connections)


def _refuse_overdue(connections: set) -> None:
    now = time.monotonic()
    for conn in list(connections):
        phase = getattr(conn, "_phase", None)
        if phase is None or conn.transport.is_closing():
            continue
        waited = now - conn._phase_since
        if phase == HEAD and waited > _limits["header_timeout_s"]:
            limit = _limits["header_timeout_s"]
            _refuse(conn, 408, f"request line and headers not received within {limit:g} s (HEADER_TIMEOUT_S)")
        elif phase == BODY and waited > _limits["body_timeout_s"]:
            cycle = getattr(conn, "cycle", None)
            if cycle is not None and not cycle.response_started:
                limit = _limits["body_timeout_s"]
                _refuse(conn, 408, f"request body not received within {limit:g} s (BODY_TIMEOUT_S)")


def _enter(self, phase: str | None) -> None:
    self._phase, self._phase_since = phase, time.monotonic()


def connection_made(self, transport) -> None:
    stock_connection_made(self, transport)
    self._head_bytes = 0
    _enter(self, HEAD)  # a connection that opens and sends nothing
    if self.loop not in _swept_loops:
        _swept_loops.add(self.loop)
        self.loop.call_later(SWEEP_S, _sweep, self.loop, self.connections)


def on_message_begin(self) -> None:
    self._head_bytes = 0
    _enter(self, HEAD)
    stock_on_message_begin(self)


def on_headers_complete(self) -> None:
    _enter(self, BODY)
    stock_on_headers_complete(self)


def on_message_complete(self) -> None:
    self._phase = None
    stock_on_message_complete(self)


def data_received(self, data: bytes) -> None:
    if getattr(self, "_rejected", False):  # lingering after a refusal: drop
        return
    stock_data_received(self, data)
    if self._phase == HEAD and not self.transport.is_closing():
        self._head_bytes += len(data)
        if self._head_bytes > _limits["max_bytes"]:
            limit = _limits["max_bytes"]
            _refuse(self, 431, f"request line and headers exceed {limit} bytes (MAX_HEADER_BYTES)")


def apply(max_bytes: int, header_timeout_s: float, body_timeout_s: float) -> None:
    _limits.update(max_bytes=max_bytes, header_timeout_s=header_timeout_s, body_timeout_s=body_timeout_s)
    HttpToolsProtocol.connection_made = connection_made
    HttpToolsProtocol.on_message_begin = on_message_begin
    HttpToolsProtocol.on_headers_complete = on_headers_complete
    HttpToolsProtocol.on_message_complete = on_message_complete
    HttpToolsProtocol.data_received = data_received
