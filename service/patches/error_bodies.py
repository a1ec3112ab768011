"""Error bodies (bentoml 1.4.x). Found by the schemathesis run (tests/service/test_fuzz.py):

- A malformed multipart body makes Starlette's `request.form()` raise its HTTPException(400); BentoML's
  endpoint wrapper catches every exception it does not know as a 500 ("unexpected error").
- A BentoMLException with a 4xx code (e.g. 415 for the pickle media type) is answered with the body
  `[{"error": ...}]` (a one-element tuple in BentoML's code), not the documented `{"error": ...}`.
- A request shed by the adaptive batcher (queued past max_latency_ms) is a 503 whose message says
  "An unexpected error has occurred", where the client needs "overloaded, retry".

- Starlette's own 404 (no such route) and 405 (wrong method) are plain text.

The patched `ServiceAppFactory.api_endpoint` turns these into `{"error": message}` with their own status
(and `Retry-After: 1` on the 503); every other exception still reaches BentoML's handler unchanged.
The patched `ServiceAppFactory.__call__` adds a handler for Starlette's HTTPException to the app it
builds, so that 404 and 405 answer `{"error": "GET /nope: Not Found"}` (with 405's `Allow` header).
"""

from __future__ import annotations

from _bentoml_impl.server.app import ServiceAppFactory
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

stock_api_endpoint = ServiceAppFactory.api_endpoint
stock_build_app = ServiceAppFactory.__call__
OVERLOADED = (
    "overloaded: the request waited in the batching queue past the service's max_latency_ms; retry later"
)


async def api_endpoint(self, name, request):
    try:
        return await stock_api_endpoint(self, name, request)
    except HTTPException as exc:
        if exc.status_code >= 500:
            raise
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)
    except ServiceUnavailable:
        return JSONResponse({"error": OVERLOADED}, status_code=503, headers={"Retry-After": "1"})
    except BentoMLException as exc:
        status = exc.error_code.value
        if status >= 500 or status in (401, 403):  # BentoML's own answers: generic 5xx, auth message
            raise
        return JSONResponse({"error": str(exc)}, status_code=status)


async def http_error(request, exc: HTTPException) -> JSONResponse:
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


def build_app(self):
    app = stock_build_app(self)
    app.add_exception_handler(HTTPException, http_error)
    return app


def apply() -> None:
    ServiceAppFactory.api_endpoint = api_endpoint
    ServiceAppFactory.__call__ = build_app
