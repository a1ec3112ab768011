"""ASGI middleware for request bodies: over the size limit -> 413, compressed -> 415 (JSON errors)."""

from __future__ import annotations

from starlette.responses import JSONResponse


class BodySizeLimit:
    """413 for bodies over `max_bytes`: at once from Content-Length, or while a chunked body is read
    (buffered up to the limit, then replayed to the app)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, scope, receive, send, size: str) -> None:
        message = f"request body is {size} bytes; the limit is {self.max_bytes} bytes"
        await JSONResponse({"error": message}, status_code=413)(scope, receive, send)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding != b"identity":  # not decoded here: a gzip bomb would pass any body limit
            name = encoding.decode(errors="replace")
            message = f"Content-Encoding {name} is not supported; send the body uncompressed"
            return await JSONResponse({"error": message}, status_code=415)(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await self._reject(scope, receive, send, "of unknown size")
            if int(length) > self.max_bytes:
                return await self._reject(scope, receive, send, length.decode())
            return await self.app(scope, receive, send)
        # No Content-Length (chunked): read up to the limit before handing the body on.
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > self.max_bytes:
                return await self._reject(scope, receive, send, f"more than {self.max_bytes}")
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
