"""/docs.json (bentoml 1.4.x) where it contradicts the service; both found by the schemathesis run
(tests/service/test_fuzz.py):

- Error bodies are documented as `{"error": string, "detail": string}`, but BentoML's answer to a
  request that fails validation carries `detail` as the list of pydantic errors (`[{"loc": [...],
  "msg": ..., "type": ...}]`). The patched schema documents that list; `error` stays required.
- An API's request body is documented as optional, yet every API needs its input (an empty POST is a
  400). The patched request body is `required: true`.
"""

from __future__ import annotations

import attr
from _bentoml_sdk.method import APIMethod
from bentoml._internal.service.openapi import utils
from bentoml._internal.service.openapi.specification import Schema

stock_exception_schema = utils.exception_schema
stock_openapi_request = APIMethod.openapi_request

VALIDATION_DETAIL = Schema(
    title="Error Detail",
    type="array",
    description="one entry per invalid field: its location in the request, a message and an error type",
    items=Schema(
        type="object",
        properties={
            "loc": Schema(type="array", items=Schema(anyOf=[Schema(type="string"), Schema(type="integer")])),
            "msg": Schema(type="string"),
            "type": Schema(type="string"),
        },
        required=["loc", "msg"],
    ),
)


def exception_schema_with_validation_detail(ex):
    for schema in stock_exception_schema(ex):
        yield attr.evolve(schema, properties={**schema.properties, "detail": VALIDATION_DETAIL})


def required_openapi_request(self) -> dict:
    return {**stock_openapi_request(self), "required": True}


def apply() -> None:
    utils.exception_schema = exception_schema_with_validation_detail
    utils.exception_components_schema.cache_clear()
    APIMethod.openapi_request = required_openapi_request
