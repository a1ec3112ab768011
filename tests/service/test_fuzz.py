"""Schemathesis against the service's own OpenAPI document (/docs.json) of a real `bentoml serve`:
positive and negative cases for every operation, all of schemathesis' checks (no 5xx, status codes,
content types and bodies as documented, schema-valid input accepted, invalid input rejected) plus
ours: every error is JSON with a message.

Bounded in CI (FUZZ_EXAMPLES per operation, default 25); a larger run on demand:
    FUZZ_EXAMPLES=500 FUZZ_REPORT=reports/fuzz.json pytest tests/service/test_fuzz.py
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from loadtests.server import Server

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
STATUSES: Counter = Counter()  # (operation, status code) -> responses
# A schema cannot say "the picture shows a digit": a schema-valid upload of a blank or unreadable
# image gets its documented 400, so schemathesis' "schema-valid data is accepted" check is skipped
# there (and only there); every other check still applies to it.
# Nor "data holds exactly prod(shape) numbers in the model's range" for an Open Inference Protocol
# request: a schema-valid V2 request is mostly a documented 400.
EXCLUDED = {
    "POST /classify_digit_image": [positive_data_acceptance],
    "POST /v2/models/{name}/infer": [positive_data_acceptance],
    "POST /v2/models/{name}/versions/{version}/infer": [positive_data_acceptance],
}


@pytest.fixture(scope="module")
def fuzz_server(smoke_models):
    env = {
        "MODEL_DEVICE": "cpu",
        "HOUSING_MODEL": smoke_models["housing_mlp"]["tag"],
        "MNIST_MODEL": smoke_models["mnist_cnn"]["tag"],
    }
    with Server(env) as server:
        yield server
    report = os.environ.get("FUZZ_REPORT")
    if report:
        rows = [
            {"operation": op, "status": status, "responses": n}
            for (op, status), n in sorted(STATUSES.items())
        ]
        Path(report).write_text(
            json.dumps({"examples_per_operation": FUZZ_EXAMPLES, "responses": rows}, indent=2)
        )


@schemathesis.check
def errors_are_json_with_a_message(ctx, response, case):
    """Every 4xx/5xx body is a JSON object with a non-empty "error" string."""
    if response.status_code < 400:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} body is not JSON: {response.content[:200]!r}") from None
    if not (isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]):
        raise AssertionError(f"{response.status_code} body has no error message: {body!r}"[:300])


def test_fuzz_every_operation_positive_and_negative(fuzz_server):
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/docs.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {
        "POST /predict_housing",
        "POST /classify_digits",
        "POST /classify_digit_image",
        "GET /v2",
        "GET /v2/models/{name}",
        "GET /v2/models/{name}/config",
        "GET /v2/models/stats",
        "POST /v2/models/{name}/infer",
        "POST /v2/models/{name}/versions/{version}/infer",
    } <= {op.label for op in operations}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                      database=None)  # fmt: skip
            def fuzz(case):
                response = case.call_and_validate(
                    timeout=60, excluded_checks=EXCLUDED.get(case.operation.label)
                )
                STATUSES[(case.operation.label, response.status_code)] += 1

            try:
                fuzz()
            except Unsatisfiable:  # nothing to make invalid (GET /healthz, /metrics, ...: no input)
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert not [k for k in STATUSES if k[1] >= 500], STATUSES
