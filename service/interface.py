"""What each model of the registry (models/registry.py) speaks, whatever serves it: its JSON endpoint
(route, codec, answer), its Open Inference Protocol tensors (the input, the outputs computed from the
model's output rows) and how many items a request may carry. Built from the model's registry entry and
its settings (`interfaces(settings)`), before any model is loaded: the routes, the OpenAPI document and
the data plane (service/dataplane.py) read it.

| task | JSON request | answer | V2 outputs |
|---|---|---|---|
| regression (housing_mlp) | `{"features": [[8 values], ...]}` | `[value, ...]` | value |
| classification (mnist_cnn, ...) | `{"images": [HxW, ...]}` | `[{label, probabilities}]` | logits, probs |

(and POST /classify_digit_image: an uploaded picture, into mnist_cnn's batches.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from models import registry
from models.registry import ModelEntry
from models.specs import MNIST, ModelSpec
from service.codecs import JsonRows, digit_predictions, softmax
from service.schemas import input_model, prediction_model
from service.settings import ModelLimits, ServiceSettings

PROBABILITIES = "probabilities"  # a classifier's second V2 output: the softmax the JSON API answers with
UPLOAD_ROUTE = "/classify_digit_image"  # a picture of a digit, classified by mnist_cnn
UPLOAD_MODEL = MNIST.name


@dataclass(frozen=True)
class Tensor:
    """A V2 tensor of the model (FP32), its shape without the batch axis."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A request as every codec decodes it: ONE float32 array of 1 to max_items rows, and what the
    protocol asked for besides (V2: the outputs, each as binary data or not, and the request's id)."""

    array: np.ndarray  # (n, *input shape), float32
    outputs: tuple[tuple[str, bool], ...] = ()  # (output name, as binary data), in the order asked
    id: str | None = None


@dataclass(frozen=True)
class ModelInterface:
    spec: ModelSpec
    limits: ModelLimits  # its settings (tag, batching, max items), resolved
    route: str  # the JSON endpoint
    summary: str
    codec: JsonRows
    answer: Callable[[np.ndarray], object]  # the model's output rows of one request -> the JSON answer
    input: Tensor  # the V2 input
    outputs: tuple[Tensor, ...]  # the V2 outputs, each computed from the model's output rows
    answer_schema: dict = field(compare=False)  # the JSON answer's OpenAPI schema
    compute: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def max_items(self) -> int:
        return self.limits.max_items

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @cached_property
    def raw_outputs(self) -> tuple[tuple[str, bool], ...]:
        """Every output, as binary data: what a request that names none gets over gRPC."""
        return tuple((t.name, True) for t in self.outputs)

    def output(self, name: str) -> Tensor | None:
        return next((t for t in self.outputs if t.name == name), None)

    def output_values(self, rows: np.ndarray, names) -> dict[str, np.ndarray]:
        """The asked outputs from the model's output rows of one request."""
        return {name: self.compute.get(name, _identity)(rows) for name in names}


def _identity(rows: np.ndarray) -> np.ndarray:
    return rows


def _regression_answer(rows: np.ndarray) -> np.ndarray:
    return rows[:, 0].astype(np.float64)  # the values as JSON doubles, as float(value) prints them


def _probabilities(rows: np.ndarray) -> np.ndarray:
    return softmax(rows).astype(np.float32)


def interface_of(entry: ModelEntry, limits: ModelLimits) -> ModelInterface:
    """A model's interface with its settings (`ServiceSettings.model(name)`)."""
    spec, api = entry.spec, entry.json
    outputs = [Tensor(spec.output_name, spec.output_shape)]
    compute = {}
    if entry.task == "classification":
        outputs.append(Tensor(PROBABILITIES, spec.output_shape))
        compute[PROBABILITIES] = _probabilities
        answer, prediction = digit_predictions, prediction_model(spec.output_shape[0]).model_json_schema()
        answer_schema = {"type": "array", "items": prediction, "title": "Predictions"}
    else:
        answer = _regression_answer
        answer_schema = {"type": "array", "items": {"type": "number"}, "title": "Values"}
    codec = JsonRows(
        input_model(entry, limits.max_items), api.field, api.item_shape, spec.input_shape, api.value_range,
        limits.max_items,
    )  # fmt: skip
    return ModelInterface(
        spec=spec,
        limits=limits,
        route=api.route,
        summary=api.summary,
        codec=codec,
        answer=answer,
        answer_schema=answer_schema,
        input=Tensor(spec.input_name, spec.input_shape),
        outputs=tuple(outputs),
        compute=compute,
    )


def interfaces(settings: ServiceSettings) -> dict[str, ModelInterface]:
    """Every model of the registry, with the settings given."""
    return {name: interface_of(entry, settings.model(name)) for name, entry in registry.models().items()}
