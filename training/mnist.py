"""Train the MNIST CNN, evaluate it on the official test set, export and register it.

python -m training.mnist --help
DATA_DIR=../shared/datasets python -m training.mnist                    # full run
DATA_DIR=../shared/datasets python -m training.mnist --epochs 1 --limit 2000     # smoke run
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict

import torch
from sklearn.metrics import accuracy_score, classification_report
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from models.device import resolve_device
from models.mnist import MnistCNN, MnistConfig
from models.specs import MNIST
from training import plots
from training.augment import random_affine
from training.cli import base_parser, run, seed_everything
from training.data import load_mnist
from training.export import PARITY_BATCH_SIZES, export_and_register
from training.loop import fit, make_loader, predict

logger = logging.getLogger(__name__)


def build_parser():
    parser = base_parser(
        "python -m training.mnist",
        __doc__.splitlines()[0],
        model_name=MNIST.name,
        epochs=6,
        batch_size=128,
        lr=3e-3,
    )
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="AdamW weight decay")
    parser.add_argument("--label-smoothing", type=float, default=0.05)
    parser.add_argument("--no-augment", action="store_true", help="disable random affine augmentation")
    return parser


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    return float((logits.argmax(1) == target).float().mean())


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    splits = load_mnist(args.data_dir, download=not args.no_download)
    train, valid = splits.train.head(args.limit), splits.valid.head(args.limit)

    config = MnistConfig()
    model = MnistCNN(config)
    train_loader = make_loader(train.x, train.y, args.batch_size, shuffle=True, device=device, seed=args.seed)
    valid_loader = make_loader(valid.x, valid.y, 1000, shuffle=False, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * len(train_loader)
    )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "training %s (%d parameters) on %s: %d train / %d valid images",
        MNIST.name,
        n_params,
        device,
        len(train),
        len(valid),
    )
    start = time.perf_counter()
    history = fit(
        model,
        train_loader,
        valid_loader,
        loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing),
        optimizer=optimizer,
        epochs=args.epochs,
        device=device,
        metric=("accuracy", accuracy),
        scheduler=scheduler,
        augment=None if args.no_augment else random_affine,
    )
    wall = time.perf_counter() - start

    y_pred = predict(model, splits.test.x, device).argmax(1)
    y_true = splits.test.y
    metrics = {"test_accuracy": float(accuracy_score(y_true, y_pred)), "test_images": int(len(y_true))}
    logger.info(
        "test split (%d images): accuracy %.4f (%d errors); training took %.0f s",
        len(y_true),
        metrics["test_accuracy"],
        int((y_pred != y_true).sum()),
        wall,
    )
    report = classification_report(y_true, y_pred, digits=4)
    logger.info("per-class report on the test split:\n%s", report)
    (out_dir / "classification_report.txt").write_text(report)
    plots.loss_curves(history, out_dir / "loss_curves.png", "MNIST CNN", "accuracy")
    plots.confusion_matrix(
        y_true,
        y_pred,
        out_dir / "confusion_matrix.png",
        f"MNIST test confusion matrix (accuracy {metrics['test_accuracy']:.2%})",
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
        "label_smoothing": args.label_smoothing,
        "augment": not args.no_augment,
        "seed": args.seed,
        "parameters": n_params,
    }
    tag = export_and_register(
        model,
        MNIST,
        splits.test.x[: max(PARITY_BATCH_SIZES)],
        out_dir,
        {
            **metrics,
            "confusion_matrix": sk_confusion_matrix(y_true, y_pred).tolist(),
            "split": splits.definition,
            "split_sizes": splits.sizes(),
            "config": asdict(config),
            "training": training_info,
        },
        labels={"task": "classification", "dataset": "mnist"},
        do_register=not args.no_register,
    )
    summary = {"tag": tag, **metrics, "training": training_info, "history": [asdict(h) for h in history]}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    logger.info("wrote %s (plots, metrics.json, exported files); model %s", out_dir, tag or "not registered")
    return summary


if __name__ == "__main__":
    run(main)
