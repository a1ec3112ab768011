"""Training plots written next to each run's outputs (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from training.loop import EpochLog  # noqa: E402


def save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def loss_curves(history: list[EpochLog], path: Path, title: str, metric_name: str) -> Path:
    epochs = [h.epoch for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [h.train_loss for h in history], marker="o", ms=3, label="train")
    ax_loss.plot(epochs, [h.valid_loss for h in history], marker="o", ms=3, label="valid")
    best = min(history, key=lambda h: h.valid_loss)
    ax_loss.axvline(best.epoch, color="grey", ls="--", lw=1, label=f"best (epoch {best.epoch})")
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss", yscale="log")
    ax_loss.legend()
    ax_metric.plot(epochs, [h.valid_metric for h in history], marker="o", ms=3, color="C2")
    ax_metric.set(xlabel="epoch", ylabel=metric_name, title=f"{title}: validation {metric_name}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    return save(fig, path)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 6))
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(title)
    return save(fig, path)


def predicted_vs_true(y_true: np.ndarray, y_pred: np.ndarray, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(y_true, y_pred, s=4, alpha=0.3)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([lo, hi], [lo, hi], color="C3", lw=1, label="y = x")
    ax.set(xlabel="true median value ($100k)", ylabel="predicted ($100k)", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    return save(fig, path)
