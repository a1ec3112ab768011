"""ASGI middleware for what a request may cost a worker before it reaches the API:

- its body: over `max_body_bytes` -> 413 (from Content-Length at once, or while a chunked body is
  read); compressed (`Content-Encoding`) -> 415, never decoded (a gzip bomb passes any body limit);
- the memory of all requests in flight in this worker: their bodies and headers together may hold at
  most `max_inflight_bytes`; a request that would pass it is shed at once with 503 and `Retry-After`
  (admission by cost: 64 single-row requests are a few KB, 64 requests of 256 images 80 MB).
A body that does not arrive in time is service/patches/header_limit.py's (408). JSON error bodies."""

from __future__ import annotations

from starlette.responses import JSONResponse


class RequestLimits:
    def __init__(self, app, max_body_bytes: int, max_inflight_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_body_bytes
        self.max_inflight_bytes = max_inflight_bytes
        self.inflight_bytes = 0  # bodies + headers of the requests this worker holds now

    @staticmethod
    async def _error(scope, receive, send, status: int, message: str, headers: dict | None = None) -> None:
        await JSONResponse({"error": message}, status_code=status, headers=headers)(scope, receive, send)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding != b"identity":  # not decoded here: a gzip bomb would pass any body limit
            name = encoding.decode(errors="replace")
            message = f"Content-Encoding {name} is not supported; send the body uncompressed"
            return await self._error(scope, receive, send, 415, message)
        head = sum(len(k) + len(v) for k, v in scope["headers"])
        length = headers.get(b"content-length")
        if length is None:  # chunked: read up to the limit, then admitted with its real size
            return await self._chunked(scope, receive, send, head)
        if not length.isdigit():
            return await self._error(scope, receive, send, 413, "request body of unknown size")
        if int(length) > self.max_bytes:
            message = f"request body is {length.decode()} bytes; the limit is {self.max_bytes} bytes"
            return await self._error(scope, receive, send, 413, message)
        return await self._admitted(scope, receive, send, head + int(length))

    async def _chunked(self, scope, receive, send, head: int) -> None:
        """A body of unknown size: read here, its bytes counted in the budget as they arrive, then
        handed on as one message."""
        chunks, total = [], 0
        self.inflight_bytes += head
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                chunk = message.get("body", b"")
                chunks.append(chunk)
                total += len(chunk)
                self.inflight_bytes += len(chunk)
                if total > self.max_bytes:
                    message = (
                        f"request body is more than {self.max_bytes} bytes; the limit is {self.max_bytes}"
                    )
                    return await self._error(scope, receive, send, 413, message)
                if self.inflight_bytes > self.max_inflight_bytes and self.inflight_bytes > head + total:
                    return await self._shed(scope, receive, send, head + total)
                if not message.get("more_body", False):
                    break
        finally:
            self.inflight_bytes -= head + total
        body = b"".join(chunks)
        del chunks
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self._admitted(scope, replay, send, head + len(body), counted=True)

    async def _shed(self, scope, receive, send, cost: int) -> None:
        message = (
            f"overloaded: {self.inflight_bytes} bytes of requests are in memory in this worker and "
            f"this one brings {cost} (MAX_INFLIGHT_BYTES {self.max_inflight_bytes}); retry later"
        )
        return await self._error(scope, receive, send, 503, message, {"Retry-After": "1"})

    async def _admitted(self, scope, receive, send, cost: int, counted: bool = False) -> None:
        """Run the request if its cost fits the in-flight budget (one request always fits an idle
        worker); `counted`: a chunked body whose bytes already passed the budget while being read."""
        if not counted and self.inflight_bytes and self.inflight_bytes + cost > self.max_inflight_bytes:
            return await self._shed(scope, receive, send, cost)
        self.inflight_bytes += cost
        try:
            return await self.app(scope, receive, send)
        finally:
            self.inflight_bytes -= cost
