"""Routes beside the APIs (bentoml 1.4.x): a route that joins an API's adaptive batches needs BentoML's
app factory (its batchers and `batch_infer`), which BentoML hands only to its own routes; a mounted
ASGI app (`@bentoml.asgi_app`) never sees it, and /docs.json never lists it. The patched
`ServiceAppFactory.routes` appends the routes that each registered builder makes from the factory
(the Open Inference Protocol's: service/oip_routes.py); the patched /docs.json view adds their
OpenAPI paths (service/oip_openapi.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from _bentoml_impl.server.app import ServiceAppFactory
from starlette.responses import JSONResponse

stock_routes = ServiceAppFactory.routes  # a property
stock_openapi_spec_view = ServiceAppFactory.openapi_spec_view
BUILDERS: list[Callable] = []
DOC_PATHS: dict = {}


def routes(self) -> list:
    return [*stock_routes.fget(self), *(route for build in BUILDERS for route in build(self))]


async def openapi_spec_view(self, request):
    response = await stock_openapi_spec_view(self, request)
    if response.status_code != 200 or not DOC_PATHS:
        return response
    doc = json.loads(response.body)
    doc["paths"] = {**doc.get("paths", {}), **DOC_PATHS}
    return JSONResponse(doc)


def apply(builders: list[Callable], doc_paths: dict) -> None:
    BUILDERS[:] = builders
    DOC_PATHS.clear()
    DOC_PATHS.update(doc_paths)
    ServiceAppFactory.routes = property(routes)
    ServiceAppFactory.openapi_spec_view = openapi_spec_view
