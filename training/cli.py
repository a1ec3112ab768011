"""Command-line plumbing shared by the training entry points: flags, logging, clean error exits."""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.device import DEVICE_CHOICES
from models.formats import FORMATS
from training.data import default_data_dir
from training.errors import USER_ERRORS


def format_list(text: str) -> tuple[str, ...]:
    names = tuple(f for f in text.split(",") if f)
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown format(s) {unknown}; known: {', '.join(FORMATS)}")
    return names


def base_parser(
    prog: str,
    description: str,
    *,
    model_name: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 1e-4,
) -> argparse.ArgumentParser:
    """Flags every training script has; each script adds its own and sets its defaults."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="dataset folder (env DATA_DIR); offline copy: ../shared/datasets",
    )
    parser.add_argument("--no-download", action="store_true", help="never try to download the dataset")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("runs") / model_name,
        help="where plots, metrics.json and the exported files go",
    )
    parser.add_argument("--epochs", type=int, default=epochs, help="maximum number of epochs")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="training batch size")
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate (one-cycle schedule)")
    parser.add_argument("--weight-decay", type=float, default=weight_decay, help="AdamW weight decay")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="smoke mode: use only the first N training and validation samples",
    )
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="training device")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, shuffling and augmentation")
    parser.add_argument(
        "--formats",
        type=format_list,
        default=tuple(FORMATS),
        help=f"export formats (models/formats.py), of: {','.join(FORMATS)}",
    )
    parser.add_argument(
        "--no-register",
        action="store_true",
        help="export and check parity but do not register in the model store",
    )
    return parser


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "bentoml"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Run an entry point; known user errors exit with status 1 and one line on stderr."""
    setup_logging()
    try:
        main(argv)
    except USER_ERRORS as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:  # Ctrl+C: registration is all or nothing (training.export.store.register)
        print("interrupted: nothing was registered for this run; run it again to train", file=sys.stderr)
        sys.exit(130)
