"""The JSON API's request and response types, built from each model's registry entry
(models/registry.py, `entry.json`): the one definition of its validation rules (the codecs in
service/codecs.py decode with them, /docs.json documents them). pydantic reports the field path and
reason of every malformed value as a 400, before a request can reach a batch."""

from __future__ import annotations

from typing import Annotated

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, create_model

from models.registry import ModelEntry

# A JSON number (never a string or a bool), finite.
FiniteFloat = Annotated[float, Strict(), AllowInfNan(False)]


def items_type(entry: ModelEntry, max_items: int):
    """`[item, ...]`: 1..max_items items, each nested lists of `item_shape` numbers in the model's
    value range (the same bounds hold for every protocol: service/oip.py checks V2 tensors with them)."""
    lo, hi = entry.json.value_range
    kind = Annotated[FiniteFloat, Field(ge=lo, le=hi)]
    for size in reversed(entry.json.item_shape):
        kind = Annotated[list[kind], Field(min_length=size, max_length=size)]
    example = {"examples": [[entry.json.example]]} if entry.json.example is not None else {}
    return Annotated[
        list[kind], Field(min_length=1, max_length=max_items, description=entry.json.description, **example)
    ]


def input_model(entry: ModelEntry, max_items: int) -> type[BaseModel]:
    """The body of the model's JSON endpoint: `{field: [item, ...]}`."""
    model = create_model(
        "Input",
        __config__=ConfigDict(title="Input"),  # errors read "1 validation error for Input"
        **{entry.json.field: (items_type(entry, max_items), ...)},
    )
    model.__doc__ = f"Body of POST {entry.json.route}."
    return model


def prediction_model(classes: int) -> type[BaseModel]:
    """A classifier's answer for one item: the label and the softmax over the classes."""
    return create_model(
        "Prediction",
        label=(int, Field(ge=0, le=classes - 1, description="predicted class")),  # le: OpenAPI 3.0
        probabilities=(
            list[float],
            Field(min_length=classes, max_length=classes, description=f"softmax over 0..{classes - 1}"),
        ),
    )
