"""A 3x224x224 RGB spatial transformer whose output is the rectified image (N, 3, 224, 224).

A factory file, loaded the way a user's model is: ``stn-deploy export
benchmarks/stn224.py:stn224 --input-shape 3,224,224`` or ``verify F.onnx --reference
benchmarks/stn224.py:stn224 --input-shape 3,224,224``. Weights are seeded, so every call builds
the same model. The localisation net (two strided convolutions, pooling, two linear layers) ends
at a 15-degree rotation with a slight zoom, so the sampler has real work to do; ``benchmarks/
verify_cost.py`` times ``verify`` on it and on deliberately broken exports of it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ImageSTN(nn.Module):
    """localisation net -> affine theta (N, 2, 3) -> ``grid_sample`` of the input: (N, C, H, W)
    (with ``pair``: that image and theta, a two-output model)."""

    def __init__(
        self, channels: int = 3, size: int = 224, gain: float = 0.05, pair: bool = False
    ) -> None:
        super().__init__()
        self.pair = pair
        side = size // 16  # 224 -> 112 (conv s2) -> 56 (pool) -> 28 (conv s2) -> 14 (pool)
        self.loc = nn.Sequential(
            nn.Conv2d(channels, 8, 7, stride=2, padding=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 10, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Linear(10 * side * side, 32), nn.ReLU(), nn.Linear(32, 6))
        a = math.radians(15.0)
        with torch.no_grad():
            self.fc[2].weight.mul_(gain)
            self.fc[2].bias.copy_(
                torch.tensor(
                    [0.9 * math.cos(a), -0.9 * math.sin(a), 0.05]
                    + [0.9 * math.sin(a), 0.9 * math.cos(a), -0.05]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.fc(self.loc(x).flatten(1)).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return (out, theta) if self.pair else out


def stn224() -> nn.Module:
    """The 3x224x224 image-output STN, seeded."""
    torch.manual_seed(224)
    return ImageSTN(3, 224).eval()


def stn32() -> nn.Module:
    """The same architecture on 3x32x32 (fast tests)."""
    torch.manual_seed(32)
    return ImageSTN(3, 32).eval()


def stn48_sensitive() -> nn.Module:
    """3x48x48, theta 20x more sensitive to the input than :func:`stn224`'s: on the stress set's
    noise image float32 itself errs beyond atol/rtol (the ill-conditioned case of verify's
    tests)."""
    torch.manual_seed(48)
    return ImageSTN(3, 48, gain=1.0).eval()


def stn32_pair() -> nn.Module:
    """:func:`stn32` returning ``(image, theta)``: a two-output model."""
    torch.manual_seed(32)
    return ImageSTN(3, 32, pair=True).eval()
