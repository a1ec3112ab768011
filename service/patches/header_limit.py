"""Bounded request heads (uvicorn's httptools protocol, which sets no limit): the request line and
headers of one request may take at most `max_bytes`; past that the connection gets a 431 with a JSON
error and is closed. Without it a single 64 MB header was read into memory and answered 200, so a
few such connections could exhaust a worker's memory. Proxies use similar limits (nginx 8-32 KiB,
Node.js 16 KiB). Counted per chunk read while the head is incomplete, so memory stays within the
limit plus one read. After the 431 the connection is half-closed and whatever the client still sends
is read and dropped for LINGER_S before closing: closing at once, with the client's data unread, makes
the kernel reset the connection and the client never sees the 431."""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

stock_data_received = HttpToolsProtocol.data_received
stock_on_message_begin = HttpToolsProtocol.on_message_begin
stock_on_headers_complete = HttpToolsProtocol.on_headers_complete
_max_bytes = 64 * 1024
LINGER_S = 2.0


def on_message_begin(self) -> None:
    self._head_bytes, self._in_head = 0, True
    stock_on_message_begin(self)


def on_headers_complete(self) -> None:
    self._in_head = False
    stock_on_headers_complete(self)


def data_received(self, data: bytes) -> None:
    if getattr(self, "_rejected", False):  # lingering after a 431: drop
        return
    stock_data_received(self, data)
    if getattr(self, "_in_head", False) and not self.transport.is_closing():
        self._head_bytes += len(data)
        if self._head_bytes > _max_bytes:
            self._in_head, self._rejected = False, True
            body = json.dumps(
                {"error": f"request line and headers exceed {_max_bytes} bytes (MAX_HEADER_BYTES)"}
            ).encode()
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
            )
            if self.transport.can_write_eof():
                self.transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_S, self.transport.close)


def apply(max_bytes: int) -> None:
    global _max_bytes
    _max_bytes = max_bytes
    HttpToolsProtocol.on_message_begin = on_message_begin
    HttpToolsProtocol.on_headers_complete = on_headers_complete
    HttpToolsProtocol.data_received = data_received
