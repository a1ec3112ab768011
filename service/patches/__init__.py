"""Small fixes to BentoML 1.4, one module per fix, each guarded by version and each with a test
(tests/service/test_patches.py) showing that the stock behaviour it corrects is still there.

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

PATCHED_SERIES = "1.4."


def apply(workers: int, settings, route_builders=(), doc_paths=None) -> bool:
    """Install the patches on the BentoML series they were written for; True when applied.
    `route_builders`: functions of BentoML's app factory that return extra routes, `doc_paths` their
    OpenAPI paths for /docs.json (patches/routes.py)."""
    if not bentoml.__version__.startswith(PATCHED_SERIES):
        logger.warning(
            "bentoml %s: service/patches not applied (written for %sx); check each against "
            "tests/service/test_patches.py",
            bentoml.__version__,
            PATCHED_SERIES,
        )
        return False
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
    return True
