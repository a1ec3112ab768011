"""MNIST digit classifier: in-graph normalization followed by a small VGG-style CNN.

Input: images (N, 1, 28, 28), float32 intensities in [0, 1], white digit on black.
Output: logits (N, 10).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.specs import MNIST_IMAGE_SIZE, MNIST_NUM_CLASSES


@dataclass
class MnistConfig:
    """Architecture of the MNIST model; stored in the model's metadata."""

    channels: tuple[int, int] = (32, 64)
    hidden: int = 128
    dropout: float = 0.3
    # Pixel statistics of the MNIST training set (intensities in [0, 1]).
    mean: float = 0.1307
    std: float = 0.3081


class Normalize(nn.Module):
    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU layers, then 2x2 max-pooling (halves the resolution)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class MnistCNN(nn.Module):
    def __init__(self, config: MnistConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        side = MNIST_IMAGE_SIZE // 4
        self.normalize = Normalize(config.mean, config.std)
        self.features = nn.Sequential(_conv_block(1, c1), _conv_block(c1, c2))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(c2 * side * side, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, MNIST_NUM_CLASSES),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(images)))


def from_config(config: dict) -> MnistCNN:
    """The network of a stored config (metadata["config"]), untrained."""
    return MnistCNN(MnistConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}))
