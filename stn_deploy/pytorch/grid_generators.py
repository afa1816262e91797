"""The grid generators and sampler placeholder the exporter traces with (torch side).

For one export, ``F.affine_grid`` is one MatMul against a constant base grid (2-D and 3-D);
attention STNs with bilinear/zeros sampling may sample through two MatMuls (the separable
form); and on the TorchScript path ``aten::grid_sampler`` becomes the ``com.microsoft``
GridSample placeholder that :func:`stn_deploy.export.lower.lower_model` rewrites. Each is a
context manager that restores torch afterwards, so a user's own later exports behave as stock.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from stn_deploy.errors import StnDeployError
from stn_deploy.pytorch.models.separable import separable_attention_sample
from stn_deploy.pytorch.models.stn import SpatialTransformer
from stn_deploy.pytorch.models.transforms import AttentionTransform, base_grid


def base_grid_3d(d: int, h: int, w: int, align_corners: bool, *, dtype=torch.float32, device=None):
    """``(D*H*W, 4)`` rows of ``[x, y, z, 1]``: the grid ``F.affine_grid`` builds for an identity
    3-D θ (the volumetric :func:`base_grid`)."""

    def axis(n: int) -> torch.Tensor:
        if n == 1:
            return torch.zeros(1, dtype=dtype, device=device)
        lin = torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device)
        return lin if align_corners else lin * (n - 1) / n

    zs, ys, xs = torch.meshgrid(axis(d), axis(h), axis(w), indexing="ij")
    return torch.stack([xs, ys, zs, torch.ones_like(xs)], dim=-1).reshape(d * h * w, 4)


_MODES = {0: "bilinear", 1: "nearest", 2: "bicubic"}
_PADDINGS = {0: "zeros", 1: "border", 2: "reflection"}


def grid_sampler_symbolic(g, x, grid, mode, padding, align_corners):
    from torch.onnx import symbolic_helper as sh

    out = g.op(
        "com.microsoft::GridSample",
        x,
        grid,
        mode_s=_MODES[sh._maybe_get_const(mode, "i")],
        padding_mode_s=_PADDINGS[sh._maybe_get_const(padding, "i")],
        align_corners_i=int(sh._maybe_get_const(align_corners, "b")),
    )
    xs, gs = sh._get_tensor_sizes(x), sh._get_tensor_sizes(grid)
    if xs and gs and len(xs) == 4 and len(gs) == 4:  # (N, C, H_out, W_out): keeps shapes known
        out.setType(x.type().with_sizes([xs[0], xs[1], gs[1], gs[2]]))
    return out


def matmul_affine_grid(
    theta: torch.Tensor, size, align_corners: bool | None = None
) -> torch.Tensor:
    """``F.affine_grid`` as one MatMul against a constant base grid: ``(N, 2, 3)`` ->
    ``(N, H, W, 2)``, and for a volume ``(N, 3, 4)`` -> ``(N, D, H, W, 3)``."""
    if len(size) == 5:
        d, h, w = (int(v) for v in size[-3:])
        base = base_grid_3d(d, h, w, bool(align_corners), dtype=theta.dtype, device=theta.device)
        return torch.matmul(base, theta.transpose(1, 2)).reshape(-1, d, h, w, 3)
    if len(size) != 4:
        raise StnDeployError(
            f"affine grids are 2-D (size of 4) or 3-D (size of 5), got size {list(size)}"
        )
    h, w = int(size[-2]), int(size[-1])
    base = base_grid(h, w, bool(align_corners), dtype=theta.dtype, device=theta.device)
    return torch.matmul(base, theta.transpose(1, 2)).reshape(-1, h, w, 2)


_OPSETS = range(11, 21)


def separable_applies(stn: SpatialTransformer) -> bool:
    cfg = stn.sampler
    attention = isinstance(stn.transform, AttentionTransform)
    return attention and (cfg.mode, cfg.padding_mode) == ("bilinear", "zeros")


@contextlib.contextmanager
def separable_attention(applied: list):
    """For one export: attention STNs with bilinear/zeros sample through two MatMuls (each
    use is appended to ``applied``)."""
    original = SpatialTransformer.sample

    def sample(self, x, theta):
        if not separable_applies(self):
            return original(self, x, theta)
        applied.append(self)
        out_hw = self.sampler.out_hw(tuple(int(v) for v in x.shape[-2:]))
        return separable_attention_sample(x, theta, out_hw, self.sampler.align_corners)

    SpatialTransformer.sample = sample
    try:
        yield
    finally:
        SpatialTransformer.sample = original


@contextlib.contextmanager
def matmul_affine_grids():
    """For one export only: F.affine_grid as a MatMul against a constant base grid."""
    original = F.affine_grid
    F.affine_grid = matmul_affine_grid
    try:
        yield
    finally:
        F.affine_grid = original


@contextlib.contextmanager
def lowered_grid_generators():
    """For one export only: F.affine_grid as a MatMul, aten::grid_sampler as the placeholder.

    Both are restored afterwards, so the user's own later ``torch.onnx.export`` calls behave
    as stock.
    """
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    original = F.affine_grid
    F.affine_grid = matmul_affine_grid
    for opset in _OPSETS:
        register_custom_op_symbolic("aten::grid_sampler", grid_sampler_symbolic, opset)
    try:
        yield
    finally:
        F.affine_grid = original
        for opset in _OPSETS:
            unregister_custom_op_symbolic("aten::grid_sampler", opset)
