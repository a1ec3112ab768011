"""What every classifier's training run does after training: test-split accuracy, the per-class
report, the loss curves and the confusion matrix, then export and registration (training.pipeline)."""

from __future__ import annotations

import logging

import torch
from sklearn.metrics import accuracy_score, classification_report
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torch import nn

from models.registry import ModelEntry
from training import pipeline, plots
from training.loop import predict

logger = logging.getLogger(__name__)


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    return float((logits.argmax(1) == target).float().mean())


def finish(job: pipeline.Run, model: nn.Module, entry: ModelEntry, title: str) -> dict:
    """Evaluate on the test split, write the report and plots, then export + register (metrics.json)."""
    args = job.args
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
    plots.loss_curves(job.history, args.out_dir / "loss_curves.png", title, "accuracy")
    plots.confusion_matrix(
        y_true,
        y_pred,
        args.out_dir / "confusion_matrix.png",
        f"{title}: test confusion matrix (accuracy {metrics['test_accuracy']:.2%})",
    )
    return pipeline.finish(
        job,
        model,
        entry.spec,
        metrics,
        labels=entry.labels,
        extra_metadata={"confusion_matrix": sk_confusion_matrix(y_true, y_pred).tolist()},
    )
