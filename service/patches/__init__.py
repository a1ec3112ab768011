"""Small fixes to BentoML 1.4, one module per fix, each with a test (tests/service/test_patches.py)
showing that the stock behaviour it corrects is still there. Applied in one place: `apply()`, called
by the service's start-up (service/app.py); importing a patch module changes nothing.

Every function a patch replaces or wraps is kept by its module as `stock_<name>` and fingerprinted
(sha256 of its source) in FINGERPRINTS: `apply()` first checks them all and stops start-up with one
line naming the patch when the installed BentoML (or uvicorn) has a different function than the one
the patch was verified on (pyproject.toml and bentofile.yaml pin those versions).

- timeout:    cancel the per-request timeout timer that stock BentoML never cancels (heap growth, GC
              stalls, 503s under load).
- media_type: compute a root-model output's media type once per class, not once per response.
- batching:   dispatch a batch as soon as the model is free instead of corking requests for the
              learned average queue wait, which feeds on itself after bulk traffic.
- error_bodies: a malformed multipart body is a 400 (stock: 500), 4xx bodies are `{"error": ...}`
              (stock: a list), a request shed by the batcher says "overloaded, retry" (stock: "unexpected").
- openapi_doc: /docs.json as the service behaves: the `detail` of a 400 is the list of validation
              errors (stock: string), request bodies are required (stock: optional).
- header_limit: request heads are bounded in size (431), heads and bodies in time (408): httptools
              sets neither limit.
- containers: remember which batch container serves a type (stock: a registry walk per request).
- dispatch_timing: the batcher reports each request's queue wait, batch and compute time (the
              `Server-Timing` header) and keeps Triton-style statistics per batcher.
- routes:     routes beside the APIs that reach the APIs' batchers (the Open Inference Protocol's),
              listed in /docs.json.
- reuseport:  with 2+ workers, one SO_REUSEPORT listening socket per worker, so that the kernel
              spreads connections (stock: all workers accept from one socket and one takes most);
              with any number, a port in use stops start-up with one line.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging

import bentoml

from service.patches import (
    batching,
    containers,
    dispatch_timing,
    error_bodies,
    header_limit,
    media_type,
    openapi_doc,
    reuseport,
    routes,
    timeout,
)

logger = logging.getLogger(__name__)

VERIFIED_ON = "bentoml 1.4.39, uvicorn 0.54.0"
# "<patch module>.stock_<name>": fingerprint of that function as verified (see `fingerprint`)
FINGERPRINTS = {
    "batching.stock_refresh": "f87e72c1c357",
    "containers.stock_find_by_batch_type": "8120ee1b97ca",
    "containers.stock_register_container": "bad6728a3fb9",
    "dispatch_timing.stock_inbound_call": "2c6278ea1190",
    "dispatch_timing.stock_outbound_call": "d380666220b8",
    "dispatch_timing.stock_split_job": "0adc9fb8c1b4",
    "error_bodies.stock_api_endpoint": "e7721288fa86",
    "error_bodies.stock_build_app": "612f235b8e8b",
    "header_limit.stock_connection_made": "6efb565ff3d3",
    "header_limit.stock_data_received": "010a7ae59a5d",
    "header_limit.stock_on_message_begin": "96d377fdc7c2",
    "header_limit.stock_on_headers_complete": "1ea8589acfad",
    "header_limit.stock_on_message_complete": "1fbad42dc31f",
    "media_type.stock_mime_type": "babaa4832e83",
    "openapi_doc.stock_exception_schema": "d29fc5231b88",
    "openapi_doc.stock_openapi_request": "9534c2dd862c",
    "reuseport.stock_socket_init": "8d7034c2f3a9",
    "reuseport.stock_server_run": "239e0133d430",
    "routes.stock_routes": "76e13cac15d1",
    "routes.stock_openapi_spec_view": "ca9d789d8db5",
    "timeout.stock_call": "fd8b9e3da28e",
}
_applied = False


class PatchMismatch(SystemExit):
    """A function a patch replaces is not the one it was verified on: start-up stops (one line)."""


def fingerprint(obj) -> str:
    """First 12 hex digits of the sha256 of a function's source (a property's getter, a classmethod's
    function)."""
    obj = getattr(obj, "fget", None) or getattr(obj, "__func__", None) or obj
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:12]


def verify(expected: dict[str, str] = FINGERPRINTS) -> None:
    """Raise PatchMismatch naming every patch whose target changed."""
    changed = []
    for key, want in expected.items():
        module, name = key.split(".", 1)
        got = fingerprint(getattr(importlib.import_module(f"{__name__}.{module}"), name))
        if got != want:
            changed.append(
                f"service/patches/{module}.py ({name.removeprefix('stock_')}: {got}, verified {want})"
            )
    if changed:
        raise PatchMismatch(
            f"error: BentoML {bentoml.__version__} changed functions that service/patches replace, verified "
            f"on {VERIFIED_ON}: {'; '.join(changed)}. Install the pinned versions (pyproject.toml), or "
            "check those patches against tests/service/test_patches.py and update FINGERPRINTS."
        )


def apply(workers: int, settings, route_builders=(), doc_paths=None) -> None:
    """Check the fingerprints, then install every patch (once per process).
    `route_builders`: functions of BentoML's app factory that return extra routes, `doc_paths` their
    OpenAPI paths for /docs.json (patches/routes.py)."""
    global _applied
    if _applied:
        return
    verify()
    timeout.apply()
    media_type.apply()
    batching.apply()
    containers.apply()
    dispatch_timing.apply()
    routes.apply(list(route_builders), doc_paths or {})
    openapi_doc.apply()
    error_bodies.apply()
    reuseport.apply(workers)
    header_limit.apply(settings.max_header_bytes, settings.header_timeout_s, settings.body_timeout_s)
    _applied = True
