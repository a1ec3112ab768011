"""Every refusal of the service, in one table: what went wrong -> the HTTP status, the gRPC status code
and the text. Codecs, admission, the batcher and the data plane raise `Refused(kind, message)`; the
protocol layers (service/http.py, service/oip_grpc.py) only look its kind up here.

| kind | HTTP | gRPC | when |
|---|---|---|---|
| INVALID | 400 | INVALID_ARGUMENT | malformed request (name, datatype, shape, byte count, values, rows) |
| UNAUTHENTICATED | 401 | UNAUTHENTICATED | no or wrong bearer token |
| NOT_FOUND | 404 | NOT_FOUND | unknown model or version (or route) |
| TOO_LARGE | 413 | RESOURCE_EXHAUSTED | a body or message past MAX_BODY_BYTES (an upload past its limits) |
| UNSUPPORTED | 415 | INVALID_ARGUMENT | a content type or encoding the route does not read |
| TOO_MANY | 429 | RESOURCE_EXHAUSTED | more than MAX_CONCURRENCY requests in flight in the worker |
| BATCH_FAILED | 500 | INTERNAL | the backend raised for the batch the request was in |
| UNEXPECTED | 500 | INTERNAL | a bug: logged with its traceback |
| OVERLOADED | 503 | UNAVAILABLE | it would miss its deadline, or pass the bytes in memory (Retry-After) |
| NOT_READY | 503 | UNAVAILABLE | the worker's models are still loading |
| TIMED_OUT | 504 | DEADLINE_EXCEEDED | not answered within REQUEST_TIMEOUT_S |

Importing this module imports neither grpc nor Starlette: the codes are names (`grpc.StatusCode[...]`).
"""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    # (HTTP status, gRPC status code's name)
    INVALID = (400, "INVALID_ARGUMENT")
    UNAUTHENTICATED = (401, "UNAUTHENTICATED")
    NOT_FOUND = (404, "NOT_FOUND")
    TOO_LARGE = (413, "RESOURCE_EXHAUSTED")
    UNSUPPORTED = (415, "INVALID_ARGUMENT")
    TOO_MANY = (429, "RESOURCE_EXHAUSTED")
    BATCH_FAILED = (500, "INTERNAL")
    UNEXPECTED = (500, "INTERNAL")
    OVERLOADED = (503, "UNAVAILABLE")
    NOT_READY = (503, "UNAVAILABLE")
    TIMED_OUT = (504, "DEADLINE_EXCEEDED")

    @property
    def http(self) -> int:
        return self.value[0]

    @property
    def grpc(self) -> str:
        return self.value[1]

    @classmethod
    def of_http(cls, status: int) -> Kind:
        """The kind of an HTTP status another library decided (Starlette's multipart parser)."""
        return next((kind for kind in cls if kind.http == status), cls.INVALID)


# The texts that are the same wherever they are said
NOT_READY = "the service is starting; retry when /readyz answers 200"
INFERENCE_FAILED = "inference failed; the server log has the details"
UNEXPECTED = "unexpected error; the server log has the details"


def timed_out(seconds: float) -> str:
    return f"Not able to process the request in {seconds:g} seconds (REQUEST_TIMEOUT_S)"


def too_many(limit: int) -> str:
    return f"Too many requests: more than {limit} in flight (MAX_CONCURRENCY)"


class Refused(Exception):
    """A request that gets no prediction, and why. `detail`: pydantic's per-field errors of a JSON
    body (in the 400's body); `retry_after_s`: when to try again (Retry-After, OVERLOADED)."""

    def __init__(
        self, kind: Kind, message: str, *, detail: list | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.detail = detail
        self.retry_after_s = retry_after_s

    @property
    def status(self) -> int:
        return self.kind.http

    def body(self) -> dict:
        """The JSON answer's body: `{"error": message}` (and `detail`)."""
        return (
            {"error": self.message} if self.detail is None else {"error": self.message, "detail": self.detail}
        )

    def http_headers(self) -> list[tuple[bytes, bytes]]:
        if self.retry_after_s is None:
            return []
        return [(b"retry-after", str(max(1, round(self.retry_after_s))).encode())]


class ClientGone(Exception):
    """The client closed the connection before its answer: nothing is sent (its rows still queued are
    dropped, never computed)."""


def invalid(message: str) -> Refused:
    return Refused(Kind.INVALID, message)


class Overloaded(Refused):
    """Refused at admission: the request would miss its deadline, or its bytes would pass the worker's
    budget. `retry_after_s`: when the queue ahead of it will have drained enough."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(Kind.OVERLOADED, message, retry_after_s=retry_after_s)


class BatchFailed(Refused):
    """The backend raised for a batch this request was in (the error is logged once, with the batch;
    the answer says only INFERENCE_FAILED)."""

    def __init__(self, cause: str) -> None:
        super().__init__(Kind.BATCH_FAILED, INFERENCE_FAILED)
        self.cause = cause

    def __str__(self) -> str:
        return self.cause
