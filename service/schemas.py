"""The JSON API's request and response types: the one definition of its validation rules (the codecs
in service/codecs.py decode with them, /docs.json documents them). pydantic reports the field path
and reason of every malformed value as a 400, before a request can reach a batch."""

from __future__ import annotations

from typing import Annotated

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict

from models.specs import HOUSING_FEATURES, MNIST_IMAGE_SIZE, MNIST_NUM_CLASSES
from service.settings import get_settings

_settings = get_settings()

# A JSON number (never a string or a bool), finite.
FiniteFloat = Annotated[float, Strict(), AllowInfNan(False)]
# Housing values are bounded so that no accepted row can overflow float32 inside the model (the
# real data stays below 40,000; log1p columns are clamped at 0 in the graph, so negatives are safe).
# The same bounds hold for every protocol (service/oip.py checks V2 tensors against them).
MAX_ABS_FEATURE = 1e6
HOUSING_RANGE = (-MAX_ABS_FEATURE, MAX_ABS_FEATURE)
PIXEL_RANGE = (0.0, 1.0)
HousingValue = Annotated[FiniteFloat, Field(ge=HOUSING_RANGE[0], le=HOUSING_RANGE[1])]
Pixel = Annotated[float, Strict(), Field(ge=PIXEL_RANGE[0], le=PIXEL_RANGE[1])]

HousingRow = Annotated[
    list[HousingValue],
    Field(min_length=len(HOUSING_FEATURES), max_length=len(HOUSING_FEATURES)),
]
HousingFeatures = Annotated[
    list[HousingRow],
    Field(
        min_length=1,
        max_length=_settings.max_housing_rows,
        description="Rows of raw feature values in the order " + ", ".join(HOUSING_FEATURES),
        examples=[[[8.3252, 41.0, 6.9841, 1.0238, 322.0, 2.5556, 37.88, -122.23]]],
    ),
]

_PixelRow = Annotated[list[Pixel], Field(min_length=MNIST_IMAGE_SIZE, max_length=MNIST_IMAGE_SIZE)]
Image = Annotated[list[_PixelRow], Field(min_length=MNIST_IMAGE_SIZE, max_length=MNIST_IMAGE_SIZE)]
Images = Annotated[
    list[Image],
    Field(
        min_length=1,
        max_length=_settings.max_images,
        description="28x28 images, pixel intensities in [0, 1], white digit on black (as MNIST)",
    ),
]


class HousingInput(BaseModel):
    """Body of POST /predict_housing."""

    model_config = ConfigDict(title="Input")  # errors read "1 validation error for Input"
    features: HousingFeatures


class DigitsInput(BaseModel):
    """Body of POST /classify_digits."""

    model_config = ConfigDict(title="Input")
    images: Images


class DigitPrediction(BaseModel):
    label: int = Field(ge=0, le=MNIST_NUM_CLASSES - 1, description="predicted digit")  # le: OpenAPI 3.0
    probabilities: list[float] = Field(
        min_length=MNIST_NUM_CLASSES, max_length=MNIST_NUM_CLASSES, description="softmax over 0..9"
    )
