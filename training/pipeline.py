"""The steps every training entry point shares: start (seed, device, data), train (AdamW + one-cycle,
early stopping) and finish (export, parity gate, registration, metrics.json)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from models.device import full_precision_cuda, resolve_device
from models.specs import ModelSpec
from training.cli import seed_everything
from training.data import Split, Splits
from training.export.parity import PARITY_BATCH_SIZES
from training.export.store import export_and_register
from training.loop import EpochLog, Metric, fit, make_loader

logger = logging.getLogger(__name__)


@dataclass
class Run:
    args: argparse.Namespace
    device: torch.device
    splits: Splits
    train: Split  # splits.train, cut to --limit
    valid: Split  # splits.valid, cut to --limit
    history: list[EpochLog] | None = None
    wall_seconds: float = 0.0


def start(args: argparse.Namespace, load: Callable[[Path, bool], Splits]) -> Run:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    if device.type == "cuda":
        # Train in full FP32 as the exported graphs serve (no TF32 in cuDNN convolutions, PyTorch's
        # default): the stored test metric is then the one the service reproduces on the GPU.
        full_precision_cuda()
    splits = load(args.data_dir, not args.no_download)
    return Run(args, device, splits, splits.train.head(args.limit), splits.valid.head(args.limit))


def train(
    run: Run,
    model: nn.Module,
    *,
    loss_fn: nn.Module,
    metric: tuple[str, Metric],
    column_targets: bool = False,
    patience: int | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """AdamW with a one-cycle schedule peaking at --lr; keeps the best-validation weights.
    `column_targets` reshapes regression targets to (N, 1) like the model output."""
    args = run.args

    def loader(split: Split, batch_size: int, shuffle: bool):
        y = split.y[:, None] if column_targets else split.y
        return make_loader(split.x, y, batch_size, shuffle=shuffle, device=run.device, seed=args.seed)

    train_loader, valid_loader = loader(run.train, args.batch_size, True), loader(run.valid, 2048, False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * len(train_loader)
    )
    logger.info(
        "training %s (%d parameters) on %s: %d train / %d valid samples",
        type(model).__name__,
        sum(p.numel() for p in model.parameters()),
        run.device,
        len(run.train),
        len(run.valid),
    )
    start_time = time.perf_counter()
    run.history = fit(
        model,
        train_loader,
        valid_loader,
        loss_fn=loss_fn,
        optimizer=optimizer,
        epochs=args.epochs,
        device=run.device,
        metric=metric,
        scheduler=scheduler,
        patience=patience,
        augment=augment,
    )
    run.wall_seconds = time.perf_counter() - start_time


def finish(
    run: Run,
    model: nn.Module,
    spec: ModelSpec,
    metrics: dict,
    *,
    labels: dict[str, str],
    extra_metadata: dict | None = None,
) -> dict:
    """Export, parity gate and (unless --no-register) registration; writes metrics.json."""
    args = run.args
    info = {
        "epochs_run": len(run.history),
        "best_epoch": min(run.history, key=lambda h: h.valid_loss).epoch,
        "wall_seconds": round(run.wall_seconds, 1),
        "device": str(run.device),
        "precision": "fp32" if run.device.type == "cpu" or not torch.backends.cudnn.allow_tf32 else "tf32",
        "parameters": sum(p.numel() for p in model.parameters()),
        # every flag of the run (paths as strings); --limit 0 means the full splits
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "limit"},
        "limit": args.limit or 0,
    }
    metadata = {
        **metrics,
        **(extra_metadata or {}),
        "split": run.splits.definition,
        "split_sizes": run.splits.sizes(),
        "config": asdict(model.config),
        "training": info,
    }
    tag = export_and_register(
        model,
        spec,
        run.splits.test.x[: max(PARITY_BATCH_SIZES)],
        args.out_dir,
        metadata,
        labels=labels,
        do_register=not args.no_register,
        formats=args.formats,
    )
    summary = {"tag": tag, **metrics, "training": info, "history": [asdict(h) for h in run.history]}
    (args.out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    logger.info(
        "wrote %s (plots, metrics.json, exported files); model %s", args.out_dir, tag or "not registered"
    )
    return summary
