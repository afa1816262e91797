"""Transform parameterisations: each turns the localisation net's output θ into a sampling grid.

Every transform maps points of the *output* image (in normalised coordinates, -1..1) to
points of the *input* image, the convention of ``F.affine_grid`` / ``F.grid_sample``.
Each knows its identity parameters, which the regressor's bias starts at.

=============  ======  ==============================================================
name           params  θ
=============  ======  ==============================================================
affine         6       row-major 2x3 matrix [[a, b, tx], [c, d, ty]]
attention      3       (s, tx, ty): isotropic scale and translation, [[s, 0, tx], [0, s, ty]]
projective     8       the first 8 entries of a 3x3 homography whose last entry is 1
tps            2K      target positions (x, y) of K control points on a regular grid
=============  ======  ==============================================================
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stn_deploy.errors import StnDeployError


def base_grid(h: int, w: int, align_corners: bool, *, dtype=torch.float32, device=None) -> Tensor:
    """Normalised output-pixel coordinates, ``(H*W, 3)`` rows of ``[x, y, 1]`` in row-major order.

    Matches the grid ``F.affine_grid`` builds for an identity θ.

    Example:
        >>> base_grid(2, 2, align_corners=True)[:, :2].tolist()
        [[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]
    """

    def axis(n: int) -> Tensor:
        if n == 1:
            return torch.zeros(1, dtype=dtype, device=device)
        lin = torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device)
        return lin if align_corners else lin * (n - 1) / n

    ys, xs = torch.meshgrid(axis(h), axis(w), indexing="ij")
    ones = torch.ones_like(xs)
    return torch.stack([xs, ys, ones], dim=-1).reshape(h * w, 3)


class Transform(nn.Module):
    """A parameterised grid generator: ``θ (N, P)`` -> grid ``(N, H, W, 2)``."""

    name: str = ""
    num_params: int = 0

    def identity(self) -> Tensor:
        """The parameters of the identity transform, ``(P,)``."""
        raise NotImplementedError

    def grid(self, theta: Tensor, size: tuple[int, int, int, int], align_corners: bool) -> Tensor:
        """Sampling grid ``(N, H, W, 2)`` for θ ``(N, P)`` and output ``size = (N, C, H, W)``."""
        raise NotImplementedError

    def config(self) -> dict:
        """Arguments that rebuild this transform with :func:`make_transform`."""
        return {"name": self.name}

    def _check(self, theta: Tensor) -> None:
        if theta.dim() != 2 or theta.shape[1] != self.num_params:
            raise StnDeployError(
                f"{self.name} transform expects θ of shape (N, {self.num_params}), got {tuple(theta.shape)}"
            )


class AffineTransform(Transform):
    """Full 2-D affine transform, 6 parameters (the tutorial's STN).

    Example:
        >>> t = AffineTransform()
        >>> t.grid(t.identity()[None], (1, 1, 4, 4), False).shape
        torch.Size([1, 4, 4, 2])
    """

    name = "affine"
    num_params = 6

    def identity(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    def grid(self, theta: Tensor, size, align_corners: bool) -> Tensor:
        self._check(theta)
        return F.affine_grid(theta.view(-1, 2, 3), list(size), align_corners=align_corners)


class AttentionTransform(Transform):
    """Isotropic scale and translation (the paper's attention model), 3 parameters ``(s, tx, ty)``."""

    name = "attention"
    num_params = 3

    def identity(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0])

    def grid(self, theta: Tensor, size, align_corners: bool) -> Tensor:
        self._check(theta)
        s, tx, ty = theta.unbind(dim=1)
        zero = torch.zeros_like(s)
        mat = torch.stack([s, zero, tx, zero, s, ty], dim=1).view(-1, 2, 3)
        return F.affine_grid(mat, list(size), align_corners=align_corners)


class ProjectiveTransform(Transform):
    """Homography with its last entry fixed to 1, 8 parameters.

    The homogeneous divisor is kept away from zero (``|w| >= eps``, sign preserved) so a
    degenerate θ samples far outside the image instead of producing inf/NaN.
    """

    name = "projective"
    num_params = 8
    eps = 1e-6

    def identity(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])

    def grid(self, theta: Tensor, size, align_corners: bool) -> Tensor:
        self._check(theta)
        n, _, h, w = size
        base = base_grid(h, w, align_corners, dtype=theta.dtype, device=theta.device)
        ones = torch.ones(theta.shape[0], 1, dtype=theta.dtype, device=theta.device)
        mat = torch.cat([theta, ones], dim=1).view(-1, 3, 3)
        pts = base @ mat.transpose(1, 2)  # (N, H*W, 3)
        denom = pts[..., 2:]
        sign = torch.where(denom < 0, -torch.ones_like(denom), torch.ones_like(denom))
        denom = sign * denom.abs().clamp_min(self.eps)
        return (pts[..., :2] / denom).view(-1, h, w, 2)


class TPSTransform(Transform):
    """Thin-plate spline with K = rows x cols control points on a regular grid in [-1, 1].

    θ holds the source positions of the control points, ``(N, 2K)`` as ``x0, y0, x1, y1, ...``;
    identity is the regular grid itself. The spline maps every output pixel to the input
    through one matrix product with a precomputed ``(H*W, K)`` kernel matrix, which solves the
    TPS system for the fixed control points once.

    Args:
        grid_size: control points per side ``(rows, cols)``, at least 2 each.
        span: the control grid covers ``[-span, span]`` in both axes.
    """

    name = "tps"

    def __init__(self, grid_size: tuple[int, int] = (4, 4), span: float = 1.0) -> None:
        super().__init__()
        rows, cols = (int(v) for v in grid_size)
        if rows < 2 or cols < 2:
            raise StnDeployError(f"TPS needs at least a 2x2 control grid, got {rows}x{cols}")
        self.grid_size = (rows, cols)
        self.span = float(span)
        self.num_params = 2 * rows * cols
        ys, xs = torch.meshgrid(
            torch.linspace(-span, span, rows, dtype=torch.float64),
            torch.linspace(-span, span, cols, dtype=torch.float64),
            indexing="ij",
        )
        self._ctrl = torch.stack([xs, ys], dim=-1).reshape(-1, 2)  # (K, 2), float64
        self._cache: dict[tuple, Tensor] = {}

    def config(self) -> dict:
        return {"name": self.name, "grid_size": list(self.grid_size), "span": self.span}

    def identity(self) -> Tensor:
        return self._ctrl.to(torch.float32).reshape(-1)

    def kernel_matrix(self, h: int, w: int, align_corners: bool) -> Tensor:
        """``(H*W, K)`` float64 matrix M with grid = M @ control_point_positions.

        Computed in numpy, so it is a constant to torch's tracer and exporters.
        """
        key = (int(h), int(w), bool(align_corners))
        if key not in self._cache:
            c = self._ctrl.numpy()
            k = c.shape[0]

            def u(r2: np.ndarray) -> np.ndarray:
                with np.errstate(divide="ignore", invalid="ignore"):
                    return np.where(r2 > 0, r2 * np.log(np.maximum(r2, 1e-300)), 0.0)

            p = np.concatenate([np.ones((k, 1)), c], axis=1)  # (K, 3)
            big = np.zeros((k + 3, k + 3))
            big[:k, :k] = u(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))
            big[:k, k:] = p
            big[k:, :k] = p.T
            inv = np.linalg.inv(big)[:, :k]  # (K+3, K): weights from target positions
            g = base_grid(*key[:2], key[2], dtype=torch.float64)[:, :2].numpy()  # (HW, 2)
            a = np.concatenate(
                [u(((g[:, None, :] - c[None, :, :]) ** 2).sum(-1)), np.ones((len(g), 1)), g], axis=1
            )
            self._cache[key] = torch.from_numpy(a @ inv)  # (HW, K)
        return self._cache[key]

    def grid(self, theta: Tensor, size, align_corners: bool) -> Tensor:
        self._check(theta)
        _, _, h, w = size
        m = self.kernel_matrix(int(h), int(w), align_corners).to(
            dtype=theta.dtype, device=theta.device
        )
        pts = theta.view(theta.shape[0], -1, 2)  # (N, K, 2)
        return torch.matmul(m, pts).view(-1, h, w, 2)


TRANSFORMS = {
    "affine": AffineTransform,
    "attention": AttentionTransform,
    "projective": ProjectiveTransform,
    "tps": TPSTransform,
}


def make_transform(name: str, **kwargs) -> Transform:
    """Build a transform by name (``affine``, ``attention``, ``projective``, ``tps``)."""
    if name not in TRANSFORMS:
        raise StnDeployError(f"unknown transform {name!r}: expected one of {', '.join(TRANSFORMS)}")
    cls = TRANSFORMS[name]
    if name != "tps" and kwargs:
        raise StnDeployError(f"transform {name!r} takes no arguments, got {sorted(kwargs)}")
    if "grid_size" in kwargs:
        kwargs["grid_size"] = tuple(kwargs["grid_size"])
    return cls(**kwargs)


def rotation_theta(
    angle_deg: float, scale: float = 1.0, tx: float = 0.0, ty: float = 0.0
) -> Tensor:
    """Affine θ ``(6,)`` for a rotation by ``angle_deg`` with scale and translation (tests, stress inputs)."""
    a = math.radians(angle_deg)
    c, s = math.cos(a) * scale, math.sin(a) * scale
    return torch.tensor([c, -s, tx, s, c, ty])
