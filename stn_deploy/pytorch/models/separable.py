"""Exact separable sampling for attention STNs (scale + translation), bilinear with zeros padding.

With θ = (s, tx, ty) the grid is axis-aligned: output row i reads input row
``y_i = unnorm(s * v_i + ty)`` and output column j reads column ``x_j = unnorm(s * u_j + tx)``.
Bilinear sampling with zeros padding is then

    out[n, c] = Wy[n] @ x[n, c] @ Wx[n]^T,   W[i, k] = max(0, 1 - |src_i - k|)

(the triangle kernel gives exactly the two bilinear weights, and taps outside the image have no
column k, i.e. read zero). Two small batched MatMuls replace a gather over every output pixel:
``(N, H_out, H)`` and ``(N, W_out, W)`` weights instead of ``(N, H_out, W_out, 2)`` coordinates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _axis(n: int, align_corners: bool, like: Tensor) -> Tensor:
    if n == 1:
        return torch.zeros(1, dtype=like.dtype, device=like.device)
    lin = torch.linspace(-1.0, 1.0, n, dtype=like.dtype, device=like.device)
    return lin if align_corners else lin * (n - 1) / n


def _weights(src_norm: Tensor, size: int, align_corners: bool) -> Tensor:
    """``(N, M)`` normalised source coordinates -> ``(N, M, size)`` bilinear weights."""
    src = (src_norm + 1) * ((size - 1) / 2) if align_corners else (src_norm + 1) * (size / 2) - 0.5
    k = torch.arange(size, dtype=src.dtype, device=src.device)
    return F.relu(1 - (src[:, :, None] - k[None, None, :]).abs())


def separable_attention_sample(
    x: Tensor, theta: Tensor, out_hw: tuple[int, int], align_corners: bool
) -> Tensor:
    """``grid_sample(x, attention_grid(θ), bilinear, zeros)`` as two MatMuls.

    Args:
        x: ``(N, C, H, W)`` input.
        theta: ``(N, 3)`` attention parameters ``(s, tx, ty)``.
        out_hw: ``(H_out, W_out)``.

    Returns:
        ``(N, C, H_out, W_out)``.

    Example:
        >>> x = torch.rand(2, 1, 8, 8)
        >>> separable_attention_sample(x, torch.tensor([[1.0, 0.0, 0.0]] * 2), (8, 8), False).shape
        torch.Size([2, 1, 8, 8])
    """
    _, _, h, w = x.shape
    ho, wo = out_hw
    s, tx, ty = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
    wy = _weights(s * _axis(ho, align_corners, x)[None] + ty, h, align_corners)  # (N, Ho, H)
    wx = _weights(s * _axis(wo, align_corners, x)[None] + tx, w, align_corners)  # (N, Wo, W)
    return wy[:, None] @ x @ wx[:, None].transpose(-1, -2)
