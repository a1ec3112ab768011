"""What each model speaks: its JSON endpoint (route, codec, answer), its Open Inference Protocol view
(input, outputs computed from the model's output rows) and its batching policy. The HTTP app
(service/http.py), the OpenAPI document and the service (service/service.py) all read `ENDPOINTS`.

| model | JSON endpoint | request | answer | V2 outputs |
|---|---|---|---|---|
| housing_mlp | /predict_housing | `{"features": [[8 values], ...]}` | `[value, ...]` | value |
| mnist_cnn | /classify_digits | `{"images": [28x28, ...]}` | `[{label, probabilities}]` | logits, probs |

(and POST /classify_digit_image: an uploaded picture, into mnist_cnn's batches.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.specs import HOUSING, MNIST, MNIST_IMAGE_SIZE, ModelSpec
from service import oip
from service.codecs import JsonRows, digit_predictions, softmax
from service.schemas import HOUSING_RANGE, PIXEL_RANGE, DigitPrediction, DigitsInput, HousingInput
from service.settings import get_settings

settings = get_settings()
PROBABILITIES = "probabilities"  # mnist_cnn's second V2 output: the softmax the JSON API answers with
HOUSING_EXAMPLE = [8.3252, 41.0, 6.9841, 1.0238, 322.0, 2.5556, 37.88, -122.23]


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

    @property
    def name(self) -> str:
        return self.spec.name


def _housing_answer(rows: np.ndarray) -> np.ndarray:
    return rows[:, 0].astype(np.float64)  # the values as JSON doubles, as float(value) prints them


def _probabilities(rows: np.ndarray) -> np.ndarray:
    return softmax(rows).astype(np.float32)


_digit_prediction_schema = DigitPrediction.model_json_schema()

ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        Endpoint(
            spec=HOUSING,
            route="/predict_housing",
            summary="Median house value (in $100,000) for each row of raw California Housing features",
            codec=JsonRows(
                HousingInput,
                "features",
                HOUSING.input_shape,
                HOUSING.input_shape,
                HOUSING_RANGE,
                settings.max_housing_rows,
            ),  # fmt: skip
            answer=_housing_answer,
            answer_schema={"type": "array", "items": {"type": "number"}, "title": "Values"},
            v2=oip.ModelInterface(
                HOUSING.name,
                oip.Tensor(HOUSING.input_name, HOUSING.input_shape),
                (oip.Tensor(HOUSING.output_name, HOUSING.output_shape),),
                settings.max_housing_rows,
                HOUSING_RANGE,
            ),
            max_batch_size=settings.housing_max_batch_size,
            deadline_ms=settings.housing_max_latency_ms,
            deadline_setting="HOUSING_MAX_LATENCY_MS",
        ),
        Endpoint(
            spec=MNIST,
            route="/classify_digits",
            summary="Label and class probabilities for each 28x28 image (intensities in [0, 1], white on "
            "black)",
            codec=JsonRows(
                DigitsInput,
                "images",
                (MNIST_IMAGE_SIZE, MNIST_IMAGE_SIZE),
                MNIST.input_shape,
                PIXEL_RANGE,
                settings.max_images,
            ),  # fmt: skip
            answer=digit_predictions,
            answer_schema={"type": "array", "items": _digit_prediction_schema, "title": "Predictions"},
            v2=oip.ModelInterface(
                MNIST.name,
                oip.Tensor(MNIST.input_name, MNIST.input_shape),
                (
                    oip.Tensor(MNIST.output_name, MNIST.output_shape),
                    oip.Tensor(PROBABILITIES, MNIST.output_shape),
                ),
                settings.max_images,
                PIXEL_RANGE,
                compute={PROBABILITIES: _probabilities},
            ),
            max_batch_size=settings.mnist_max_batch_size,
            deadline_ms=settings.mnist_max_latency_ms,
            deadline_setting="MNIST_MAX_LATENCY_MS",
        ),
    )
}
UPLOAD_ROUTE = "/classify_digit_image"  # a picture of a digit, classified by mnist_cnn
UPLOAD_MODEL = MNIST.name
