"""Input/output contract of each exported model (see DESIGN.md, "The exported model is self-contained").

Torch-free on purpose: the service and the load tests import it without pulling in training code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelSpec:
    """Name in the BentoML model store and the graph's named input/output (batch axis excluded)."""

    name: str
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    output_shape: tuple[int, ...]
    train_command: str  # what a user runs to (re)create this model in the store

    def io_metadata(self) -> dict:
        """Input/output names and shapes as stored in the model's metadata (-1 = dynamic batch)."""
        d = asdict(self)
        return {
            "input": {"name": d["input_name"], "shape": [-1, *d["input_shape"]], "dtype": "float32"},
            "output": {"name": d["output_name"], "shape": [-1, *d["output_shape"]], "dtype": "float32"},
        }


# scikit-learn's column order for fetch_california_housing().data
HOUSING_FEATURES: tuple[str, ...] = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)
MNIST_IMAGE_SIZE = 28
MNIST_NUM_CLASSES = 10
DIGITS_IMAGE_SIZE = 8  # scikit-learn's load_digits: 8x8 images, intensities 0..16

HOUSING = ModelSpec(
    name="housing_mlp",
    input_name="features",
    input_shape=(len(HOUSING_FEATURES),),
    output_name="value",
    output_shape=(1,),
    train_command="python -m training.housing",
)
MNIST = ModelSpec(
    name="mnist_cnn",
    input_name="images",
    input_shape=(1, MNIST_IMAGE_SIZE, MNIST_IMAGE_SIZE),
    output_name="logits",
    output_shape=(MNIST_NUM_CLASSES,),
    train_command="python -m training.mnist",
)
DIGITS = ModelSpec(
    name="digits_mlp",
    input_name="images",
    input_shape=(1, DIGITS_IMAGE_SIZE, DIGITS_IMAGE_SIZE),
    output_name="logits",
    output_shape=(MNIST_NUM_CLASSES,),
    train_command="python -m training.digits",
)
