"""Train the MNIST CNN, evaluate it on the official test set, export and register it.

python -m training.mnist --help
DATA_DIR=../shared/datasets python -m training.mnist                           # full run (~7 min)
DATA_DIR=../shared/datasets python -m training.mnist --epochs 1 --limit 2000   # smoke run
"""

from __future__ import annotations

import logging

import torch
from sklearn.metrics import accuracy_score, classification_report
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from models.mnist import MnistCNN, MnistConfig
from models.specs import MNIST
from training import pipeline, plots
from training.augment import random_affine
from training.cli import base_parser, run
from training.data import load_mnist
from training.loop import predict

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
    parser.add_argument("--label-smoothing", type=float, default=0.05, help="cross-entropy label smoothing")
    parser.add_argument("--no-augment", action="store_true", help="disable random affine augmentation")
    return parser


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    return float((logits.argmax(1) == target).float().mean())


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    job = pipeline.start(args, load_mnist)
    model = MnistCNN(MnistConfig())
    pipeline.train(
        job,
        model,
        loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing),
        metric=("accuracy", accuracy),
        augment=None if args.no_augment else random_affine,
    )

    y_true = job.splits.test.y
    y_pred = predict(model, job.splits.test.x, job.device).argmax(1)
    metrics = {"test_accuracy": float(accuracy_score(y_true, y_pred)), "test_images": int(len(y_true))}
    logger.info(
        "test split (%d images): accuracy %.4f (%d errors); training took %.0f s",
        len(y_true),
        metrics["test_accuracy"],
        int((y_pred != y_true).sum()),
        job.wall_seconds,
    )
    report = classification_report(y_true, y_pred, digits=4)
    logger.info("per-class report on the test split:\n%s", report)
    (args.out_dir / "classification_report.txt").write_text(report)
    plots.loss_curves(job.history, args.out_dir / "loss_curves.png", "MNIST CNN", "accuracy")
    plots.confusion_matrix(
        y_true,
        y_pred,
        args.out_dir / "confusion_matrix.png",
        f"MNIST test confusion matrix (accuracy {metrics['test_accuracy']:.2%})",
    )
    return pipeline.finish(
        job,
        model,
        MNIST,
        metrics,
        labels={"task": "classification", "dataset": "mnist"},
        extra_metadata={"confusion_matrix": sk_confusion_matrix(y_true, y_pred).tolist()},
    )


if __name__ == "__main__":
    run(main)
