"""Dataset loading and the fixed evaluation splits of DESIGN.md (each model's `loader` in
models/registry.py).

The housing and MNIST loaders read `DATA_DIR` (scikit-learn's cache for California Housing,
torchvision's `MNIST/raw` layout for MNIST); online they download as usual, offline they need a
prepared folder. scikit-learn's 8x8 digits ship inside its wheel.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.errors import DatasetMissingError

logger = logging.getLogger(__name__)

SPLIT_SEED = 42


def default_data_dir() -> Path:
    """DATA_DIR from the environment, else ./data (where the loaders download when online)."""
    return Path(os.environ.get("DATA_DIR", "data"))


MNIST_VALID_SIZE = 5_000


def _missing(name: str, data_dir: Path, expected: str, reason: str) -> DatasetMissingError:
    return DatasetMissingError(
        f"{name} not found in {data_dir.resolve()} (expected {expected}) and {reason}. "
        f"Point DATA_DIR (or --data-dir) at a prepared folder, "
        f"e.g. DATA_DIR=../shared/datasets, or run once with network access."
    )


def require_datasets(data_dir: Path, names: list[str] | None = None) -> None:
    """DatasetMissingError unless the datasets of every model of the registry (or of `names`) are in
    `data_dir` as the offline loaders read them (a cheap check for tools that only read the test
    splits, before they start anything)."""
    from models import registry

    for entry in (registry.get(n) for n in names or registry.models()):
        for rel in entry.data_files:
            if not (data_dir / rel).is_file():
                raise _missing(entry.dataset, data_dir, rel, "it is needed here")


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.x[:n], self.y[:n])


@dataclass
class Splits:
    train: Split
    valid: Split
    test: Split
    definition: dict

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def holdout_splits(x: np.ndarray, y: np.ndarray, dataset: str, **notes: str) -> Splits:
    """DESIGN.md's split of a dataset without an official one: 25 % test, then 25 % of the rest for
    validation (scikit-learn's train_test_split defaults, random_state=SPLIT_SEED)."""
    from sklearn.model_selection import train_test_split

    x_train_full, x_test, y_train_full, y_test = train_test_split(x, y, random_state=SPLIT_SEED)
    x_train, x_valid, y_train, y_valid = train_test_split(x_train_full, y_train_full, random_state=SPLIT_SEED)
    definition = {
        "dataset": dataset,
        "rows": int(len(y)),
        "test": f"train_test_split(X, y, random_state={SPLIT_SEED}) (25 %)",
        "valid": f"train_test_split(X_train_full, y_train_full, random_state={SPLIT_SEED}) (25 %)",
        **notes,
    }
    return Splits(Split(x_train, y_train), Split(x_valid, y_valid), Split(x_test, y_test), definition)


def load_housing(data_dir: Path, download: bool = True) -> Splits:
    """California Housing with DESIGN.md's split: 25 % test, then 25 % of the rest for validation."""
    from sklearn.datasets import fetch_california_housing

    try:
        x, y = fetch_california_housing(
            data_home=str(data_dir), download_if_missing=download, return_X_y=True
        )
    except OSError as exc:  # IOError when download_if_missing=False, URLError/socket errors online
        reason = "download is disabled" if not download else f"the download failed ({exc})"
        raise _missing("California Housing", data_dir, "cal_housing_py3.pkz", reason) from None
    splits = holdout_splits(
        x.astype(np.float32),
        y.astype(np.float32),
        dataset="sklearn.datasets.fetch_california_housing",
        standardization="fitted on the train split only",
    )
    logger.info("California Housing from %s: %s", data_dir, splits.sizes())
    return splits


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's format: magic 0x0000 08 <dims>, big-endian sizes)."""
    raw = path.read_bytes()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _mnist_arrays(data_dir: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's MNIST/raw files, read with NumPy when they are there (no torch: the load
    generator uses the test split), else fetched by torchvision (when download is allowed)."""
    prefix = data_dir / "MNIST" / "raw" / ("train" if train else "t10k")
    files = Path(f"{prefix}-images-idx3-ubyte"), Path(f"{prefix}-labels-idx1-ubyte")
    if not all(f.is_file() for f in files):
        from torchvision.datasets import MNIST

        try:
            MNIST(root=str(data_dir), train=train, download=download)  # downloads and extracts them
        except (RuntimeError, OSError) as exc:
            reason = "download is disabled" if not download else f"the download failed ({exc})"
            raise _missing("MNIST", data_dir, "MNIST/raw/*-ubyte", reason) from None
    images = read_idx(files[0]).astype(np.float32)[:, None, :, :] / 255.0
    return images, read_idx(files[1]).astype(np.int64)


def load_mnist_test(data_dir: Path, download: bool = True) -> Split:
    """Only the official 10,000-image test set (what the load tests send): no 60,000 images loaded."""
    return Split(*_mnist_arrays(data_dir, train=False, download=download))


def load_mnist(data_dir: Path, download: bool = True) -> Splits:
    """Official 60,000 / 10,000 split; a fixed, seeded 5,000 of the 60,000 held out for validation.

    Images are float32 (N, 1, 28, 28) in [0, 1]: the exported model's raw input.
    """
    x_full, y_full = _mnist_arrays(data_dir, train=True, download=download)
    x_test, y_test = _mnist_arrays(data_dir, train=False, download=download)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y_full))
    valid_idx, train_idx = order[:MNIST_VALID_SIZE], order[MNIST_VALID_SIZE:]
    definition = {
        "dataset": "torchvision.datasets.MNIST",
        "test": "official 10,000-image test set",
        "valid": f"{MNIST_VALID_SIZE} of the official 60,000 training images, "
        f"numpy.random.default_rng({SPLIT_SEED}).permutation(60000)[:{MNIST_VALID_SIZE}]",
        "train": "the remaining 55,000 training images",
    }
    splits = Splits(
        Split(x_full[train_idx], y_full[train_idx]),
        Split(x_full[valid_idx], y_full[valid_idx]),
        Split(x_test, y_test),
        definition,
    )
    logger.info("MNIST from %s: %s", data_dir, splits.sizes())
    return splits


def load_digits(data_dir: Path | None = None, download: bool = True) -> Splits:
    """scikit-learn's 8x8 digits (1,797 images, in its wheel: no DATA_DIR, no download) with the split
    of California Housing: 25 % test, then 25 % of the rest for validation (random_state=SPLIT_SEED).
    Images are float32 (N, 1, 8, 8) with intensities 0..16: the exported model's raw input."""
    from sklearn.datasets import load_digits as sk_load_digits

    x, y = sk_load_digits(return_X_y=True)
    splits = holdout_splits(
        x.astype(np.float32).reshape(-1, 1, 8, 8), y.astype(np.int64), dataset="sklearn.datasets.load_digits"
    )
    logger.info("scikit-learn digits: %s", splits.sizes())
    return splits
