"""A model defined only in the tests (MODEL_PLUGINS=tests.training.sum_model:ENTRY): its registry
entry, network, synthetic dataset and training code, all here. tests/training/test_registry.py takes
it through training, export, parity, registration, serving (JSON and V2) and a load-test run without
any change outside tests/: the registry is the only place a model is named.

    MODEL_PLUGINS=tests.training.sum_model:ENTRY python -m training sum_linear --epochs 30
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.registry import JsonApi, ModelEntry
from models.specs import ModelSpec

WEIGHTS = (1.0, 2.0, -1.0, 0.5)  # y = x . WEIGHTS + BIAS (+ noise): the synthetic task
BIAS = 0.3


@dataclass
class SumConfig:
    features: int = len(WEIGHTS)


class SumLinear(nn.Module):
    def __init__(self, config: SumConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def build(config: dict) -> SumLinear:
    return SumLinear(SumConfig(**config))


def load_sums(data_dir=None, download: bool = True):
    """2,000 synthetic rows (seeded): 1,200 train, 400 valid, 400 test."""
    from training.data import Split, Splits

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(2000, len(WEIGHTS))).astype(np.float32)
    y = (x @ np.array(WEIGHTS, dtype=np.float32) + BIAS + rng.normal(0, 0.01, 2000)).astype(np.float32)
    parts = [Split(x[a:b], y[a:b]) for a, b in ((0, 1200), (1200, 1600), (1600, 2000))]
    return Splits(*parts, definition={"dataset": "synthetic: x . (1, 2, -1, 0.5) + 0.3, seed 0"})


SPEC = ModelSpec("sum_linear", "x", (len(WEIGHTS),), "y", (1,), "python -m training sum_linear")
ENTRY = ModelEntry(
    spec=SPEC,
    task="regression",
    network=f"{__name__}:build",
    training=__name__,
    dataset="synthetic sums",
    loader=f"{__name__}:load_sums",
    data_files=(),
    metric="test_rmse",
    json=JsonApi(
        route="/predict_sum",
        field="x",
        item_shape=(len(WEIGHTS),),
        value_range=(-10.0, 10.0),
        max_items=100,
        summary="A weighted sum of 4 numbers (a model of the tests)",
        description="rows of 4 numbers in [-10, 10]",
        example=[0.1, 0.2, 0.3, 0.4],
    ),
    max_batch_size=64,
    max_latency_ms=500,
    labels={"task": "regression", "dataset": "synthetic"},
    smoke_args=("--epochs", "40"),
)


def mse(out: torch.Tensor, target: torch.Tensor) -> float:
    return float(nn.functional.mse_loss(out, target))


def main(argv: list[str] | None = None) -> dict:
    from training import pipeline
    from training.cli import base_parser
    from training.loop import predict

    args = base_parser(
        f"python -m {__name__}",
        __doc__.splitlines()[0],
        model_name=SPEC.name,
        epochs=40,
        batch_size=64,
        lr=3e-2,
    ).parse_args(argv)
    job = pipeline.start(args, ENTRY.load_splits)
    model = build({})
    pipeline.train(job, model, loss_fn=nn.MSELoss(), metric=("mse", mse), column_targets=True)
    y_pred = predict(model, job.splits.test.x, job.device)[:, 0]
    rmse = float(np.sqrt(np.mean((y_pred - job.splits.test.y) ** 2)))
    return pipeline.finish(job, model, SPEC, {"test_rmse": rmse}, labels=ENTRY.labels)


if __name__ == "__main__":
    from training.cli import run

    run(main)
