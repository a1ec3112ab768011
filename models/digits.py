"""scikit-learn's 8x8 digits classifier (the worked example of README "Bring your own model"):
in-graph scaling followed by a small MLP.

Input: images (N, 1, 8, 8), float32 intensities in [0, 16] as sklearn.datasets.load_digits gives them.
Output: logits (N, 10).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.specs import DIGITS_IMAGE_SIZE, MNIST_NUM_CLASSES


@dataclass
class DigitsConfig:
    """Architecture of the digits model; stored in the model's metadata."""

    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    max_intensity: float = 16.0  # load_digits' scale: the graph divides by it


class DigitsMLP(nn.Module):
    def __init__(self, config: DigitsConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("scale", torch.tensor(1.0 / config.max_intensity, dtype=torch.float32))
        layers: list[nn.Module] = [nn.Flatten()]
        width = DIGITS_IMAGE_SIZE * DIGITS_IMAGE_SIZE
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(config.dropout)]
            width = h
        layers.append(nn.Linear(width, MNIST_NUM_CLASSES))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * self.scale)


def from_config(config: dict) -> DigitsMLP:
    """The network of a stored config (metadata["config"]), untrained."""
    return DigitsMLP(DigitsConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}))
