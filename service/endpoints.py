"""What each model of the registry (models/registry.py) speaks: its JSON endpoint (route, codec,
answer), its Open Inference Protocol view (input, outputs computed from the model's output rows) and
its batching policy (its settings, service/settings.py). The HTTP app (service/http.py), the OpenAPI
document and the service (service/service.py) all read `ENDPOINTS`.

| task | JSON request | answer | V2 outputs |
|---|---|---|---|
| regression (housing_mlp) | `{"features": [[8 values], ...]}` | `[value, ...]` | value |
| classification (mnist_cnn, ...) | `{"images": [HxW, ...]}` | `[{label, probabilities}]` | logits, probs |

(and POST /classify_digit_image: an uploaded picture, into mnist_cnn's batches.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models import registry
from models.registry import ModelEntry
from models.specs import MNIST, ModelSpec
from service import oip
from service.codecs import JsonRows, digit_predictions, softmax
from service.schemas import input_model, prediction_model
from service.settings import get_settings

PROBABILITIES = "probabilities"  # a classifier's second V2 output: the softmax the JSON API answers with


@dataclass(frozen=True)
class Endpoint:
    spec: ModelSpec
    route: str  # the JSON endpoint
    summary: str
    codec: JsonRows
    answer: Callable[[np.ndarray], object]  # the model's output rows of one request -> the JSON answer
    answer_schema: dict  # its OpenAPI schema
    v2: oip.ModelInterface
    max_batch_size: int  # rows per batch
    deadline_ms: int  # admission: a request that would be answered later is refused (503)
    deadline_setting: str  # the environment variable that sets it
    queue_delay_us: int  # a batch short of max_batch_size waits this long for more requests

    @property
    def name(self) -> str:
        return self.spec.name


def _regression_answer(rows: np.ndarray) -> np.ndarray:
    return rows[:, 0].astype(np.float64)  # the values as JSON doubles, as float(value) prints them


def _probabilities(rows: np.ndarray) -> np.ndarray:
    return softmax(rows).astype(np.float32)


def endpoint_of(entry: ModelEntry) -> Endpoint:
    """A model's endpoint, with its settings (service/settings.py `model(name)`)."""
    spec, limits = entry.spec, get_settings().model(entry.name)
    api = entry.json
    outputs = [oip.Tensor(spec.output_name, spec.output_shape)]
    if entry.task == "classification":
        outputs.append(oip.Tensor(PROBABILITIES, spec.output_shape))
        answer, prediction = digit_predictions, prediction_model(spec.output_shape[0]).model_json_schema()
        answer_schema = {"type": "array", "items": prediction, "title": "Predictions"}
    else:
        answer = _regression_answer
        answer_schema = {"type": "array", "items": {"type": "number"}, "title": "Values"}
    return Endpoint(
        spec=spec,
        route=api.route,
        summary=api.summary,
        codec=JsonRows(
            input_model(entry, limits.max_items),
            api.field,
            api.item_shape,
            spec.input_shape,
            api.value_range,
            limits.max_items,
        ),  # fmt: skip
        answer=answer,
        answer_schema=answer_schema,
        v2=oip.ModelInterface(
            spec.name,
            oip.Tensor(spec.input_name, spec.input_shape),
            tuple(outputs),
            limits.max_items,
            compute={PROBABILITIES: _probabilities} if entry.task == "classification" else {},
        ),
        max_batch_size=limits.max_batch_size,
        deadline_ms=limits.max_latency_ms,
        deadline_setting=f"MODELS__{entry.name.upper()}__MAX_LATENCY_MS",
        queue_delay_us=limits.queue_delay_us,
    )


ENDPOINTS: dict[str, Endpoint] = {name: endpoint_of(entry) for name, entry in registry.models().items()}
UPLOAD_ROUTE = "/classify_digit_image"  # a picture of a digit, classified by mnist_cnn
UPLOAD_MODEL = MNIST.name
