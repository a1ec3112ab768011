"""The JSON API's codec: a request body in, one float32 array out; a model's output rows in, a JSON
answer out. The rules are service/schemas.py's pydantic models, in one place:

- `JsonRows.decode` parses the body once with orjson into a NumPy array and accepts it there when it
  is provably what the schema accepts: exactly the one field, a list of numbers of the item's shape
  (no strings, booleans or nulls anywhere in the body), 1 to max_items of them, finite, in the value
  range (one parse, one scan of the bytes, one conversion: ~45 µs for a 28x28 image). Anything else
  goes through the pydantic model, whose error (field path and reason) is the
  400's body, `{"error": "1 validation error for Input", "detail": [{"loc": [...], "msg": ...}]}`.
  Validating 784 numbers per image with pydantic costs ~30x NumPy's check; the answer is the same
  (tests/service/test_codecs.py checks both paths against each other).
- Post-processing runs once per request, after unbatching, in NumPy (`softmax`, labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from service.errors import Kind, Refused

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
NOT_NUMBERS = (b"true", b"false", b"null")  # JSON literals a number field never holds
NUMBER_LISTS = b"0123456789.-+eE,[] \t\r\n}"  # every byte of a JSON value of nested lists of numbers


def validation_error(exc: ValidationError) -> Refused:
    """pydantic's verdict as a 400, in the shape BentoML gave it (the API's documented error body)."""
    return Refused(
        Kind.INVALID,
        f"{exc.error_count()} validation error for {exc.title}",
        detail=exc.errors(include_context=False, include_input=False),
    )


def dumps(obj) -> bytes:
    return orjson.dumps(obj, option=JSON_OPTIONS)


@dataclass(frozen=True)
class JsonRows:
    """A JSON body `{field: [item, ...]}` of one model's endpoint -> float32 (n, *model_shape)."""

    schema: type[BaseModel]  # the pydantic model: the rules
    field: str
    item_shape: tuple[int, ...]  # an item as JSON nests it (an image: 28 x 28)
    model_shape: tuple[int, ...]  # an item as the model takes it (an image: 1 x 28 x 28)
    value_range: tuple[float, float]
    max_items: int

    def decode(self, body: bytes) -> np.ndarray:
        array = self._fast(body)
        if array is None:
            try:
                doc = self.schema.model_validate_json(body)
            except ValidationError as exc:
                raise validation_error(exc) from None
            array = np.asarray(getattr(doc, self.field), dtype=np.float32)
        return array.reshape(len(array), *self.model_shape)

    def _fast(self, body: bytes) -> np.ndarray | None:
        """The array, when the body is certainly valid; None: let pydantic decide (and explain)."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if type(doc) is not dict or len(doc) != 1 or type(items := doc.get(self.field)) is not list:
            return None
        # the one key is the field, so everything after the first colon is its value: only numbers,
        # brackets and commas there means no string, boolean, null or object anywhere in it
        if body[body.find(b":") + 1 :].translate(None, NUMBER_LISTS):
            return None
        try:
            array = np.array(items, dtype=np.float64)
        except (ValueError, TypeError):  # ragged nesting
            return None
        if array.shape[1:] != self.item_shape or not 1 <= len(array) <= self.max_items:
            return None
        low, high = self.value_range
        if not (array.min() >= low and array.max() <= high):  # NaN fails both; orjson refuses inf
            return None
        return array.astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (the probabilities the JSON API answers with)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def digit_predictions(logits: np.ndarray) -> list[dict]:
    """`[{"label": int, "probabilities": [10 floats]}, ...]`, one per row of logits."""
    probabilities = softmax(logits)
    labels = probabilities.argmax(axis=1).tolist()
    return [{"label": label, "probabilities": row} for label, row in zip(labels, probabilities, strict=True)]
