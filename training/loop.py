"""Generic fit / predict loop: tqdm progress, per-epoch metrics, early stopping on validation loss."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

Metric = Callable[[torch.Tensor, torch.Tensor], float]


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    valid_loss: float
    valid_metric: float
    lr: float
    seconds: float


def make_loader(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, device: torch.device, seed: int = 0
) -> DataLoader:
    """In-memory loader; pinned host memory when batches go to a GPU (async copies)."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        pin_memory=device.type == "cuda",
    )


def _evaluate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, metric: Metric, device):
    model.eval()
    outputs, targets = [], []
    with torch.inference_mode():
        for xb, yb in loader:
            outputs.append(model(xb.to(device, non_blocking=True)).float().cpu())
            targets.append(yb)
    out, tgt = torch.cat(outputs), torch.cat(targets)
    return float(loss_fn(out, tgt)), metric(out, tgt)


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    valid_loader: DataLoader,
    *,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    device: torch.device,
    metric: tuple[str, Metric],
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    patience: int | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[EpochLog]:
    """Train for `epochs` (scheduler stepped per batch), keep the weights with the best validation
    loss and stop after `patience` epochs without improvement. Returns the per-epoch history."""
    metric_name, metric_fn = metric
    model.to(device)
    history: list[EpochLog] = []
    best_loss, best_state, since_best = float("inf"), None, 0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{epochs}", leave=False, disable=None)
        for xb, yb in bar:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if augment is not None:
                xb = augment(xb)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach()) * len(yb)
            count += len(yb)
            bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
        valid_loss, valid_metric = _evaluate(model, valid_loader, loss_fn, metric_fn, device)
        log = EpochLog(
            epoch=epoch,
            train_loss=total / count,
            valid_loss=valid_loss,
            valid_metric=valid_metric,
            lr=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - start,
        )
        history.append(log)
        logger.info(
            "epoch %d/%d  train_loss %.4f  valid_loss %.4f  valid_%s %.4f  lr %.2e  %.1fs",
            epoch,
            epochs,
            log.train_loss,
            valid_loss,
            metric_name,
            valid_metric,
            log.lr,
            log.seconds,
        )
        if valid_loss < best_loss:
            best_loss, since_best = valid_loss, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
            if patience is not None and since_best >= patience:
                logger.info("early stopping: no improvement in %d epochs", patience)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
        best = min(history, key=lambda h: h.valid_loss)
        logger.info("restored weights of epoch %d (valid_loss %.4f)", best.epoch, best.valid_loss)
    return history


def predict(model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 1024) -> np.ndarray:
    """Eager inference in eval mode under torch.inference_mode(); returns float32 NumPy."""
    model.eval().to(device)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device)
            outs.append(model(xb).float().cpu().numpy())
    return np.concatenate(outs)
