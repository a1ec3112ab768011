"""/docs.json: the OpenAPI 3.0 document of every route the service answers, as it behaves (the
schemathesis run, tests/service/test_fuzz.py, holds it to that). Request schemas are the pydantic
models of service/schemas.py; the Open Inference Protocol's paths are service/oip_openapi.py's."""

from __future__ import annotations

from functools import cache
from importlib import metadata

from models.specs import MNIST
from service import oip_openapi
from service.images import INVERT_CHOICES
from service.interface import UPLOAD_ROUTE, ModelInterface
from service.schemas import prediction_model

ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
VALIDATION_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "detail": {
            "type": "array",
            "description": "one entry per invalid field: its location in the request, a message, a type",
            "items": {
                "type": "object",
                "required": ["loc", "msg"],
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
ERRORS = {  # status -> when
    "400": "malformed request (`detail`: the invalid fields)",
    "401": "missing or wrong bearer token (when the service has one)",
    "413": "body over MAX_BODY_BYTES, or an upload over its limits",
    "415": "compressed body, or a content type the endpoint does not take",
    "429": "more requests in flight than MAX_CONCURRENCY in this worker",
    "503": "overloaded (the request would miss its deadline, or the worker's bytes budget); retry later",
    "504": "not answered within REQUEST_TIMEOUT_S",
}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str) -> dict:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _openapi_30(schema):
    """pydantic's JSON Schema in OpenAPI 3.0's dialect: `examples: [x]` -> `example: x`; `title`s of
    nested fields dropped (noise in the Swagger UI)."""
    if isinstance(schema, list):
        return [_openapi_30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "examples" and isinstance(value, list) and value:
            out["example"] = value[0]
        elif key == "properties":
            out[key] = {name: _openapi_30(s) for name, s in value.items()}
        else:
            out[key] = _openapi_30(value)
    return out


def _errors(*codes: str) -> dict:
    return {code: _json(VALIDATION_ERROR if code == "400" else ERROR, ERRORS[code]) for code in codes}


def _prediction(summary: str, request_body: dict, answer: dict, *codes: str) -> dict:
    return {
        "post": {
            "tags": ["Predictions"],
            "summary": summary,
            "requestBody": request_body,
            "responses": {
                "200": {
                    **_json(answer, "The prediction (`Server-Timing`: queue, compute, batch, backend)"),
                    "headers": {"Server-Timing": {"schema": {"type": "string"}}},
                },
                **_errors(*codes),
                "500": _json(ERROR, "the batch this request ran in failed"),
            },
        }
    }


def _get(summary: str, ok: dict, tag: str, **responses) -> dict:
    return {"get": {"tags": [tag], "summary": summary, "responses": {"200": ok, **responses}}}


def _version() -> str:
    """The project's version (pyproject.toml), where it is installed; a bento runs it from source."""
    try:
        return metadata.version("model-serving")
    except metadata.PackageNotFoundError:
        return "source"


@cache
def document(server_name: str, models: tuple[ModelInterface, ...], auth: bool = False) -> dict:
    """The OpenAPI document of the service's routes for these models."""
    codes = ("400", *(("401",) if auth else ()), "413", "415", "429", "503", "504")
    paths = {}
    for endpoint in models:
        body = {
            "required": True,
            "content": {
                "application/json": {"schema": _openapi_30(endpoint.codec.schema.model_json_schema())}
            },
        }
        paths[endpoint.route] = _prediction(
            endpoint.summary, body, _openapi_30(endpoint.answer_schema), *codes
        )
    upload = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "PNG, JPEG, ..."},
                        "invert": {
                            "type": "string",
                            "enum": list(INVERT_CHOICES),
                            "default": "auto",
                            "description": "auto: dark-on-light drawings are detected from the border",
                        },
                    },
                }
            }
        },
    }
    paths[UPLOAD_ROUTE] = _prediction(
        "Classify one uploaded picture of a digit (PNG, JPEG, ... any size, RGB or grayscale)",
        upload,
        _openapi_30(prediction_model(MNIST.output_shape[0]).model_json_schema()),
        *codes,
    )
    service = "Service"
    paths["/status"] = _get(
        "Models served (tag, backend, device, test metrics, batching), placement, settings, this worker",
        _json({"type": "object"}, "OK"),
        service,
        **({"401": _json(ERROR, ERRORS["401"])} if auth else {}),
    )
    html = {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
    paths["/"] = _get("This page: the models, example requests, links", html, service)
    paths["/docs"] = _get("This API in the Swagger UI", html, service)
    paths["/docs.json"] = _get("This document", _json({"type": "object"}, "OpenAPI 3.0"), service)
    infra = "Infrastructure (BentoML)"
    paths["/livez"] = _get("Liveness probe", _text("alive"), infra)
    paths["/healthz"] = _get("Liveness probe (alias)", _text("alive"), infra)
    ready = "Readiness probe: 200 once every worker's models are loaded"
    paths["/readyz"] = _get(ready, _text("ready"), infra, **{"503": _text("not ready")})
    paths["/metrics"] = _get("Prometheus metrics of all workers", _text("Prometheus text format"), infra)
    paths.update(oip_openapi.paths([m.name for m in models]))
    return {
        "openapi": "3.0.2",
        "info": {
            "title": server_name,
            "version": _version(),
            "description": (
                "Two PyTorch models (California Housing MLP, MNIST CNN) served with batching: JSON "
                "endpoints, an image upload, and the Open Inference Protocol (KServe V2) as Triton speaks "
                "it. Every prediction answers with `Server-Timing` (queue, compute, batch, backend)."
            ),
        },
        "paths": paths,
    }
