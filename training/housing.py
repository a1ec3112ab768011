"""Train the California Housing MLP, evaluate it on the fixed test split, export and register it.

python -m training.housing --help
DATA_DIR=../shared/datasets python -m training.housing                  # full run (~1 min)
DATA_DIR=../shared/datasets python -m training.housing --epochs 2 --limit 2000   # smoke run
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict

import torch
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from models.device import resolve_device
from models.housing import FeaturePreprocess, HousingConfig, HousingMLP
from models.specs import HOUSING
from training import plots
from training.cli import base_parser, run, seed_everything
from training.data import load_housing
from training.export import PARITY_BATCH_SIZES, export_and_register
from training.loop import fit, make_loader, predict

logger = logging.getLogger(__name__)


def build_parser():
    parser = base_parser(
        "python -m training.housing",
        __doc__.splitlines()[0],
        model_name=HOUSING.name,
        epochs=60,
        batch_size=512,
        lr=3e-3,
    )
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    parser.add_argument("--patience", type=int, default=15, help="early-stopping patience (epochs)")
    return parser


def rmse(out: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((out - target) ** 2)))


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    splits = load_housing(args.data_dir, download=not args.no_download)
    train, valid = splits.train.head(args.limit), splits.valid.head(args.limit)

    config = HousingConfig()
    model = HousingMLP(config, FeaturePreprocess.fit(train.x, config.log_features))
    train_loader = make_loader(
        train.x, train.y[:, None], args.batch_size, shuffle=True, device=device, seed=args.seed
    )
    valid_loader = make_loader(valid.x, valid.y[:, None], 4096, shuffle=False, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * len(train_loader)
    )
    logger.info("training %s on %s: %d train / %d valid rows", HOUSING.name, device, len(train), len(valid))
    start = time.perf_counter()
    history = fit(
        model,
        train_loader,
        valid_loader,
        loss_fn=torch.nn.MSELoss(),
        optimizer=optimizer,
        epochs=args.epochs,
        device=device,
        metric=("rmse", rmse),
        scheduler=scheduler,
        patience=args.patience,
    )
    wall = time.perf_counter() - start

    y_pred = predict(model, splits.test.x, device)[:, 0]
    y_true = splits.test.y
    metrics = {
        "test_rmse": float(root_mean_squared_error(y_true, y_pred)),
        "test_mae": float(mean_absolute_error(y_true, y_pred)),
        "test_r2": float(r2_score(y_true, y_pred)),
        "test_rows": int(len(y_true)),
    }
    logger.info(
        "test split (%d rows): RMSE %.4f  MAE %.4f  R2 %.4f",
        len(y_true),
        metrics["test_rmse"],
        metrics["test_mae"],
        metrics["test_r2"],
    )
    plots.loss_curves(history, out_dir / "loss_curves.png", "California Housing MLP", "RMSE")
    plots.predicted_vs_true(
        y_true,
        y_pred,
        out_dir / "predicted_vs_true.png",
        f"Housing test split: RMSE {metrics['test_rmse']:.3f}, R² {metrics['test_r2']:.3f}",
    )
    training_info = {
        "epochs_run": len(history),
        "best_epoch": min(history, key=lambda h: h.valid_loss).epoch,
        "wall_seconds": round(wall, 1),
        "device": str(device),
        "limit": args.limit or 0,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
    }
    tag = export_and_register(
        model,
        HOUSING,
        splits.test.x[: max(PARITY_BATCH_SIZES)],
        out_dir,
        {
            **metrics,
            "split": splits.definition,
            "split_sizes": splits.sizes(),
            "config": asdict(config),
            "training": training_info,
        },
        labels={"task": "regression", "dataset": "california_housing"},
        do_register=not args.no_register,
    )
    summary = {"tag": tag, **metrics, "training": training_info, "history": [asdict(h) for h in history]}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    logger.info("wrote %s (plots, metrics.json, exported files); model %s", out_dir, tag or "not registered")
    return summary


if __name__ == "__main__":
    run(main)
