"""Batched random affine augmentation for image tensors (one random transform per image)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    x: torch.Tensor,
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
) -> torch.Tensor:
    """Rotate by U(-degrees, degrees), shift by up to `translate` of the side, zoom by U(*scale).

    x: (N, C, H, W). Runs on x's device with bilinear sampling and zero padding (MNIST background).
    """
    n = x.shape[0]
    rand = lambda: torch.rand(n, device=x.device)  # noqa: E731
    angle = (rand() * 2 - 1) * math.radians(degrees)
    zoom = scale[0] + rand() * (scale[1] - scale[0])
    # affine_grid works in [-1, 1] coordinates: a shift of `translate` of the side is 2 * translate.
    shift = (torch.rand(n, 2, device=x.device) * 2 - 1) * (2 * translate)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
