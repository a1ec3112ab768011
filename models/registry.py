"""The one registry of models, as models/formats.py is of formats: what the rest of the code needs to
know of each model. Training (`python -m training <model>`), export and re-export from a stored
checkpoint (`python -m training.export <model>:<version>`), the dataset checks, the service (its JSON
and V2 routes, settings, /status, warm-up, `bentoml build`), the load tests and the test fixtures all
iterate `MODELS`; a new model is one entry (plus its network and its training code).

| model | data | JSON route | task | metric |
|---|---|---|---|---|
| housing_mlp | California Housing (DATA_DIR) | /predict_housing | regression | test_rmse |
| mnist_cnn | MNIST (DATA_DIR) | /classify_digits | classification | test_accuracy |
| digits_mlp | sklearn 8x8 digits (in its wheel) | /classify_digits_8x8 | classification | test_accuracy |

Torch-free: the service's ONNX worker and the load generators import it. Names of code that needs
torch or the training data are strings ("module:attribute"), imported when used (`load`).

More entries without editing this file: MODEL_PLUGINS="pkg.module:ENTRY,..." names ModelEntry objects
(or lists of them) in importable modules; every process reads it (the server's workers, Locust), so a
model defined in one's own package (or a test) is served and load-tested like the built-in ones.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

from models.specs import DIGITS, HOUSING, HOUSING_FEATURES, MNIST, ModelSpec

PLUGINS_ENV = "MODEL_PLUGINS"
# The checkpoint every stored version holds beside its exported files (training/export/checkpoint.py):
WEIGHTS_FILE = "weights.safetensors"  # the trained state dict (parameters and buffers), no pickle
CONFIG_FILE = "config.json"  # the network's config: `entry.build(config)` rebuilds the network


def reexport_command(tag: str, folder, train_command: str) -> str:
    """What recreates a stored version's files: re-export from its checkpoint, or retrain (a version
    stored before checkpoints were, or under a name that is not a model of the registry)."""
    from pathlib import Path

    if (Path(folder) / WEIGHTS_FILE).is_file() and tag.split(":")[0] in models():
        return f"python -m training.export {tag}"
    return train_command


@dataclass(frozen=True)
class JsonApi:
    """The model's JSON endpoint: `POST route` with `{field: [item, ...]}`, each item a nested list of
    `item_shape` numbers within `value_range` (an item is one row of the model's input, reshaped to
    spec.input_shape); at most `max_items` items per request (setting MODELS__<NAME>__MAX_ITEMS)."""

    route: str
    field: str
    item_shape: tuple[int, ...]
    value_range: tuple[float, float]
    max_items: int
    summary: str  # the route's one line in /docs
    description: str  # the field's
    example: list | None = None  # one item, for /docs and the first page


@dataclass(frozen=True)
class ModelEntry:
    spec: ModelSpec  # name in the store, input/output names, shapes (float32)
    task: Literal["regression", "classification"]  # classification answers {label, probabilities}
    network: str  # "module:function": function(config dict) -> the untrained nn.Module of that config
    training: str  # the training module: `python -m <training>` trains, exports and registers it
    dataset: str  # the dataset's name, in messages
    loader: str  # "module:function": function(data_dir, download) -> training.data.Splits
    data_files: tuple[str, ...]  # what the loader reads under DATA_DIR (() = shipped with a package)
    metric: str  # the stored test metric served answers are compared with (loadtests.accuracy)
    json: JsonApi
    max_batch_size: int  # rows per batch (MODELS__<NAME>__MAX_BATCH_SIZE)
    max_latency_ms: int  # a request's deadline in its batcher (MODELS__<NAME>__MAX_LATENCY_MS)
    # how long a batch short of max_batch_size waits for more requests (MODELS__<NAME>__QUEUE_DELAY_US;
    # Triton's max_queue_delay_microseconds); 0: it runs as soon as the model is free
    queue_delay_us: int = 0
    labels: dict[str, str] = field(default_factory=dict)  # BentoML labels of each version
    smoke_args: tuple[str, ...] = ()  # training flags of a smoke run (tests, rehearsals): seconds
    # "module:function": function(data_dir, download) -> training.data.Split, the test split alone
    # (load generators: no training data, no torch); None: the loader's test split
    test_loader: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def load_splits(self, data_dir, download: bool = True):
        return load(self.loader)(data_dir, download)

    def load_test(self, data_dir, download: bool = False):
        """The fixed test split (what load tests send and accuracy checks score)."""
        if self.test_loader:
            return load(self.test_loader)(data_dir, download)
        return self.load_splits(data_dir, download).test

    def build(self, config: dict):
        """The network of `config` (as stored in the metadata), untrained: load a checkpoint into it."""
        return load(self.network)(config)


def load(ref: str):
    """ "module:attribute" -> the attribute (the module imported now)."""
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


BUILTIN = (
    ModelEntry(
        spec=HOUSING,
        task="regression",
        network="models.housing:from_config",
        training="training.housing",
        dataset="California Housing",
        loader="training.data:load_housing",
        data_files=("cal_housing_py3.pkz",),
        metric="test_rmse",
        json=JsonApi(
            route="/predict_housing",
            field="features",
            item_shape=HOUSING.input_shape,
            # bounded so that no accepted row can overflow float32 inside the model (the real data
            # stays below 40,000; log1p columns are clamped at 0 in the graph, so negatives are safe)
            value_range=(-1e6, 1e6),
            max_items=1000,
            summary="Median house value (in $100,000) for each row of raw California Housing features",
            description="Rows of raw feature values in the order " + ", ".join(HOUSING_FEATURES),
            example=[8.3252, 41.0, 6.9841, 1.0238, 322.0, 2.5556, 37.88, -122.23],
        ),
        # 1000 rows are ~4 ms of ONNX time on this CPU (BENCHMARKS.md, offline)
        max_batch_size=1000,
        max_latency_ms=500,
        labels={"task": "regression", "dataset": "california_housing"},
        smoke_args=("--epochs", "2", "--limit", "2000"),
    ),
    ModelEntry(
        spec=MNIST,
        task="classification",
        network="models.mnist:from_config",
        training="training.mnist",
        dataset="MNIST",
        loader="training.data:load_mnist",
        data_files=("MNIST/raw/t10k-images-idx3-ubyte",),
        metric="test_accuracy",
        json=JsonApi(
            route="/classify_digits",
            field="images",
            item_shape=MNIST.input_shape[1:],
            value_range=(0.0, 1.0),
            max_items=256,
            summary="Label and class probabilities for each 28x28 image (intensities in [0, 1], white on "
            "black)",
            description="28x28 images, pixel intensities in [0, 1], white digit on black (as MNIST)",
        ),
        # 64 images (~11-22 ms) is where the CNN's throughput per image stops growing on this CPU
        max_batch_size=64,
        max_latency_ms=3000,
        labels={"task": "classification", "dataset": "mnist"},
        smoke_args=("--epochs", "1", "--limit", "2000"),
        test_loader="training.data:load_mnist_test",
    ),
    ModelEntry(
        spec=DIGITS,
        task="classification",
        network="models.digits:from_config",
        training="training.digits",
        dataset="scikit-learn digits",
        loader="training.data:load_digits",
        data_files=(),
        metric="test_accuracy",
        json=JsonApi(
            route="/classify_digits_8x8",
            field="images",
            item_shape=DIGITS.input_shape[1:],
            value_range=(0.0, 16.0),
            max_items=256,
            summary="Label and class probabilities for each 8x8 digit image (scikit-learn's digits: "
            "intensities 0-16)",
            description="8x8 images, intensities in [0, 16] as sklearn.datasets.load_digits gives them",
        ),
        max_batch_size=256,
        max_latency_ms=1000,
        labels={"task": "classification", "dataset": "sklearn_digits"},
        smoke_args=("--epochs", "3"),
    ),
)


@cache
def models() -> dict[str, ModelEntry]:
    """Every model: the built-in ones, then those MODEL_PLUGINS names (read once per process)."""
    entries = list(BUILTIN)
    for ref in (r.strip() for r in os.environ.get(PLUGINS_ENV, "").split(",") if r.strip()):
        try:
            found = load(ref)
        except (ImportError, AttributeError, ValueError) as exc:
            raise RuntimeError(f"{PLUGINS_ENV}: cannot load {ref!r} ({exc}); use module:ATTRIBUTE") from None
        entries += list(found) if isinstance(found, list | tuple) else [found]
    by_name: dict[str, ModelEntry] = {}
    for entry in entries:
        if entry.name in by_name:
            raise RuntimeError(f"two models are named {entry.name!r} ({PLUGINS_ENV})")
        by_name[entry.name] = entry
    return by_name


def get(name: str) -> ModelEntry:
    try:
        return models()[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(models())}") from None
