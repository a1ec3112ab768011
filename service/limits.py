"""What a request may cost a worker, in bytes:

- `InflightBytes`: the memory of all requests in flight in this worker, whatever their protocol: their
  bodies (messages) and headers together may hold at most MAX_INFLIGHT_BYTES; a request that would
  pass it is refused at once (OVERLOADED: 503 + Retry-After, gRPC UNAVAILABLE), before it is decoded
  or queued (admission by cost: 64 single-row requests are a few KB, 64 requests of 256 images 80 MB).
  One request always fits an idle worker. The data plane holds it (service/dataplane.py `predict`).
- `http_body`: an HTTP body's limits before it is read: over MAX_BODY_BYTES -> 413 (from
  Content-Length at once, or while a chunked body is read, its bytes counted in the budget as they
  arrive); compressed (`Content-Encoding`) -> 415, never decoded (a gzip bomb passes any body limit).
  gRPC's own limit is the server's largest message (MAX_BODY_BYTES too: RESOURCE_EXHAUSTED).
A body that does not arrive in time is service/patches/header_limit.py's (408).
"""

from __future__ import annotations

from service.errors import ClientGone, Kind, Overloaded, Refused

RETRY_AFTER_S = 1.0


class InflightBytes:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.held = 0  # bodies + headers of the requests this worker holds now
        self.peak = 0  # the most it held

    def hold(self, nbytes: int, own: int = 0) -> None:
        """Count `nbytes` more of a request that already holds `own` bytes; Overloaded when that
        would pass the budget while other requests hold bytes too."""
        if self.held > own and self.held + nbytes > self.budget:
            raise Overloaded(
                f"overloaded: {self.held - own} bytes of requests are in memory in this worker and this "
                f"one brings {own + nbytes} (MAX_INFLIGHT_BYTES {self.budget}); retry later",
                RETRY_AFTER_S,
            )
        self.held += nbytes
        if self.held > self.peak:
            self.peak = self.held

    def release(self, nbytes: int) -> None:
        self.held -= nbytes


def too_large(size: str, limit: int) -> Refused:
    return Refused(Kind.TOO_LARGE, f"request body is {size} bytes; the limit is {limit} bytes")


async def http_body(scope, receive, max_body_bytes: int, memory: InflightBytes):
    """(the bytes the request brings: head + body, the `receive` that reads its body), or Refused:
    413 past max_body_bytes, 415 for a compressed body. A chunked body (no Content-Length) is read
    here, its bytes counted in `memory` as they arrive (and given back once read: the caller holds
    them with the size returned), then replayed as one message."""
    head, length, encoding = 0, None, b"identity"
    for key, value in scope["headers"]:
        head += len(key) + len(value)
        if key == b"content-length":
            length = value
        elif key == b"content-encoding":
            encoding = value.strip().lower()
    if encoding != b"identity":  # not decoded here: a gzip bomb would pass any body limit
        name = encoding.decode(errors="replace")
        message = f"Content-Encoding {name} is not supported; send the body uncompressed"
        raise Refused(Kind.UNSUPPORTED, message)
    if length is not None:
        if not length.isdigit():
            raise Refused(Kind.TOO_LARGE, "request body of unknown size")
        if int(length) > max_body_bytes:
            raise too_large(length.decode(), max_body_bytes)
        return head + int(length), receive
    chunks, total = [], 0
    memory.hold(head)
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone()
            chunk = message.get("body", b"")
            if total + len(chunk) > max_body_bytes:
                raise too_large(f"more than {max_body_bytes}", max_body_bytes)
            memory.hold(len(chunk), own=head + total)
            chunks.append(chunk)
            total += len(chunk)
            if not message.get("more_body", False):
                break
    finally:
        memory.release(head + total)
    body = b"".join(chunks)
    del chunks
    replayed = False

    async def replay():
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return head + len(body), replay
