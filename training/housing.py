"""Train the California Housing MLP, evaluate it on the fixed test split, export and register it.

python -m training.housing --help
DATA_DIR=../shared/datasets python -m training.housing                          # full run (~30 s)
DATA_DIR=../shared/datasets python -m training.housing --epochs 2 --limit 2000  # smoke run
"""

from __future__ import annotations

import logging

import torch
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from models import registry
from models.housing import FeaturePreprocess, HousingConfig, HousingMLP
from models.specs import HOUSING
from training import pipeline, plots
from training.cli import base_parser, run
from training.loop import predict

logger = logging.getLogger(__name__)
ENTRY = registry.get(HOUSING.name)


def build_parser():
    parser = base_parser(
        "python -m training.housing",
        __doc__.splitlines()[0],
        model_name=HOUSING.name,
        epochs=60,
        batch_size=512,
        lr=3e-3,
    )
    parser.add_argument("--patience", type=int, default=15, help="early-stopping patience (epochs)")
    return parser


def rmse(out: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((out - target) ** 2)))


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    job = pipeline.start(args, ENTRY.load_splits)
    config = HousingConfig()
    model = HousingMLP(config, FeaturePreprocess.fit(job.train.x, config.log_features))
    pipeline.train(
        job,
        model,
        loss_fn=torch.nn.MSELoss(),
        metric=("rmse", rmse),
        column_targets=True,
        patience=args.patience,
    )

    y_true = job.splits.test.y
    y_pred = predict(model, job.splits.test.x, job.device)[:, 0]
    metrics = {
        "test_rmse": float(root_mean_squared_error(y_true, y_pred)),
        "test_mae": float(mean_absolute_error(y_true, y_pred)),
        "test_r2": float(r2_score(y_true, y_pred)),
        "test_rows": int(len(y_true)),
    }
    logger.info(
        "test split (%d rows): RMSE %.4f  MAE %.4f  R2 %.4f; training took %.0f s",
        len(y_true),
        metrics["test_rmse"],
        metrics["test_mae"],
        metrics["test_r2"],
        job.wall_seconds,
    )
    plots.loss_curves(job.history, args.out_dir / "loss_curves.png", "California Housing MLP", "RMSE")
    plots.predicted_vs_true(
        y_true,
        y_pred,
        args.out_dir / "predicted_vs_true.png",
        f"Housing test split: RMSE {metrics['test_rmse']:.3f}, R² {metrics['test_r2']:.3f}",
    )
    return pipeline.finish(job, model, HOUSING, metrics, labels=ENTRY.labels)


if __name__ == "__main__":
    run(main)
