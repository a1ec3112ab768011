"""The Open Inference Protocol routes (service/http.py) as OpenAPI 3.0 paths, part of the service's
/docs.json (service/openapi.py) so that the Swagger UI lists them and the schemathesis run
(tests/service/test_fuzz.py) fuzzes them. JSON bodies only: a JSON Schema cannot
describe the binary tensor extension's bodies (a JSON header of `Inference-Header-Content-Length`
bytes, then raw tensors), which tests/service/test_oip.py covers with tritonclient.
"""

from __future__ import annotations

from service.oip import DATATYPE, EXTENSIONS, HEADER_LENGTH

TAG = ["Open Inference Protocol (KServe V2)"]
_ERROR = {
    "description": '`{"error": message}`',
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
        }
    },
}
_OBJECT = {"type": "object"}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_TENSOR_META = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {"name": {"type": "string"}, "datatype": {"type": "string"}, "shape": {"type": "array"}},
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
        "inputs": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "datatype", "shape", "data"],
                "properties": {
                    "name": {"type": "string"},
                    "datatype": {"type": "string", "enum": [DATATYPE]},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "data": {"type": "array", "items": {"type": "number"}},
                },
            },
        },
        "outputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
                },
            },
        },
    },
}
_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": _TENSOR_META},
    },
}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _get(summary: str, ok: dict, *errors: int) -> dict:
    return {
        "get": {
            "tags": TAG,
            "summary": summary,
            "responses": {"200": ok, **{str(code): _ERROR for code in errors}},
        }
    }


def paths(model_names: list[str]) -> dict:
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": model_names}}
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    flag = {"type": "boolean"}
    out = {
        "/v2": _get(
            f"Server metadata; extensions: {', '.join(EXTENSIONS)}",
            _json(
                {
                    "type": "object",
                    "required": ["name", "version", "extensions"],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "string"},
                        "extensions": _STRINGS,
                    },
                }
            ),
        ),  # fmt: skip
        "/v2/health/live": _get("Liveness", _json({"type": "object", "properties": {"live": flag}})),
        "/v2/health/ready": _get("Readiness", _json({"type": "object", "properties": {"ready": flag}}), 503),
        "/v2/models/stats": _get(
            "Triton statistics of every model (counted by the worker that answers)",
            _json(
                {
                    "type": "object",
                    "required": ["model_stats"],
                    "properties": {"model_stats": {"type": "array"}},
                }
            ),
            503,
        ),
    }
    for base, params in (
        ("/v2/models/{name}", [name]),
        ("/v2/models/{name}/versions/{version}", [name, version]),
    ):
        model_paths = {
            base: _get(
                "Model metadata (versions: the BentoML model version served)",
                _json(
                    {
                        "type": "object",
                        "required": ["name", "versions", "platform", "inputs", "outputs"],
                        "properties": {
                            "inputs": {"type": "array", "items": _TENSOR_META},
                            "outputs": {"type": "array", "items": _TENSOR_META},
                        },
                    }
                ),
                404,
                503,
            ),  # fmt: skip
            base + "/ready": _get("Model readiness", _json(_OBJECT), 404, 503),
            base + "/config": _get("Triton model configuration", _json(_OBJECT), 404, 503),
            base + "/stats": _get("Triton statistics of the model", _json(_OBJECT), 404, 503),
            base + "/infer": {
                "post": {
                    "tags": TAG,
                    "summary": "Inference; joins the batches of the model's JSON endpoint",
                    "description": (
                        "JSON tensors as below, or the binary tensor data extension: send the JSON header, "
                        f"then the tensors' bytes (FP32, little-endian, row-major), with `{HEADER_LENGTH}` "
                        "set to the header's size and `parameters.binary_data_size` on the input instead "
                        "of `data`. Outputs come back as binary data when `binary_data_output` (or an "
                        "output's `binary_data`) is true."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _INFER_REQUEST}},
                    },
                    "responses": {
                        "200": {
                            "description": "The outputs (a JSON header then binary tensor data when asked)",
                            "content": {
                                "application/json": {"schema": _INFER_RESPONSE},
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                },
                            },
                        },
                        **{str(code): _ERROR for code in (400, 404, 413, 415, 503)},
                    },
                }
            },
        }
        for item in model_paths.values():
            for operation in item.values():
                operation["parameters"] = params
        out.update(model_paths)
    return out
