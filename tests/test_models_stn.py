"""The STN building blocks on the torch side: every transform x mode x padding x align_corners."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stn_deploy.errors import StnDeployError
from stn_deploy.pytorch.models import (
    SamplerConfig,
    SpatialTransformer,
    STNParallel,
    STNSeries,
    make_transform,
)
from stn_deploy.pytorch.models.transforms import TRANSFORMS, base_grid, rotation_theta

MODES = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection")
MATRIX = list(itertools.product(TRANSFORMS, MODES, PADDINGS, (False, True)))


def small_stn(
    transform: str, mode="bilinear", padding="zeros", align=False, out_size=None, in_ch=1
):
    loc = nn.Sequential(nn.Conv2d(in_ch, 4, 5), nn.ReLU(), nn.AdaptiveAvgPool2d(3))
    sampler = SamplerConfig(mode=mode, padding_mode=padding, align_corners=align, out_size=out_size)
    return SpatialTransformer(loc, 36, make_transform(transform), sampler)


@pytest.mark.parametrize("transform,mode,padding,align", MATRIX)
def test_identity_init_shapes_and_gradients(transform, mode, padding, align):
    torch.manual_seed(0)
    stn = small_stn(transform, mode, padding, align)
    x = torch.rand(3, 2 if transform == "affine" else 1, 16, 20, requires_grad=True)
    if x.shape[1] == 2:
        stn = SpatialTransformer(
            nn.Sequential(nn.Conv2d(2, 4, 5), nn.ReLU(), nn.AdaptiveAvgPool2d(3)),
            36,
            make_transform(transform),
            stn.sampler,
        )
    out, theta = stn.forward_with_theta(x)
    assert out.shape == x.shape
    assert theta.shape == (3, stn.transform.num_params)
    # identity init: the regressor's last layer is zero and its bias the identity
    assert torch.count_nonzero(stn.fc_loc[-1].weight) == 0
    torch.testing.assert_close(theta, stn.transform.identity().expand(3, -1))
    torch.testing.assert_close(out, x, atol=2e-5, rtol=0)
    # gradients reach the input and, for differentiable samplers, θ's regressor
    (out * torch.linspace(0, 1, out.numel()).view_as(out)).sum().backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0
    last = stn.fc_loc[-1]
    if mode == "nearest":  # nearest sampling has no gradient with respect to the grid
        assert torch.count_nonzero(last.weight.grad) == 0
    else:
        assert torch.count_nonzero(last.weight.grad) > 0
        assert torch.count_nonzero(last.bias.grad) > 0


@pytest.mark.parametrize("transform,mode,padding,align", MATRIX)
def test_zoom_output_size_and_loc_gradients(transform, mode, padding, align):
    torch.manual_seed(1)
    stn = small_stn(transform, mode, padding, align, out_size=(12, 10))
    with torch.no_grad():  # leave identity so gradients reach the localisation net too
        stn.fc_loc[-1].weight.normal_(0, 0.01)
    x = torch.rand(2, 1, 24, 24)
    out = stn(x)
    assert out.shape == (2, 1, 12, 10)
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    conv = stn.localization[0]
    if mode != "nearest":
        assert torch.count_nonzero(conv.weight.grad) > 0


@pytest.mark.parametrize("align", [False, True])
def test_base_grid_matches_affine_grid(align):
    theta = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])
    ref = F.affine_grid(theta, [1, 1, 5, 7], align_corners=align)
    got = base_grid(5, 7, align)[:, :2].view(1, 5, 7, 2)
    torch.testing.assert_close(got, ref)


def test_affine_rotation_by_90_degrees_is_rot90():
    x = torch.arange(36.0).view(1, 1, 6, 6)
    t = make_transform("affine")
    grid = t.grid(rotation_theta(90.0)[None], (1, 1, 6, 6), align_corners=False)
    out = F.grid_sample(x, grid, mode="nearest", align_corners=False)
    # output (i, j) reads input at (x', y') = (-y, x): a quarter turn
    assert torch.equal(out, torch.rot90(x, k=1, dims=(2, 3))) or torch.equal(
        out, torch.rot90(x, k=-1, dims=(2, 3))
    )
    assert not torch.equal(out, x)


def test_attention_equals_affine_with_scale_and_translation():
    size = (2, 1, 9, 11)
    att = make_transform("attention").grid(
        torch.tensor([[0.5, 0.1, -0.2], [1.3, -0.4, 0.0]]), size, False
    )
    aff = make_transform("affine").grid(
        torch.tensor([[0.5, 0, 0.1, 0, 0.5, -0.2], [1.3, 0, -0.4, 0, 1.3, 0.0]]), size, False
    )
    torch.testing.assert_close(att, aff)


def test_projective_without_perspective_equals_affine():
    size = (1, 1, 8, 8)
    theta = torch.tensor([[0.9, 0.2, 0.1, -0.3, 1.1, 0.05]])
    proj = make_transform("projective").grid(torch.cat([theta, torch.zeros(1, 2)], 1), size, True)
    aff = make_transform("affine").grid(theta, size, True)
    torch.testing.assert_close(proj, aff)


def test_projective_perspective_divides_and_stays_finite():
    t = make_transform("projective")
    theta = torch.tensor([[1.0, 0, 0, 0, 1.0, 0, 0.5, 0.0]])
    g = t.grid(theta, (1, 1, 4, 4), False)
    x = base_grid(4, 4, False)[:, 0].view(4, 4)
    torch.testing.assert_close(g[0, ..., 0], x / (0.5 * x + 1))
    degenerate = torch.tensor([[1.0, 0, 0, 0, 1.0, 0, -1.0, 0.0]])  # w = 0 on the line x = 1
    assert torch.isfinite(t.grid(degenerate, (1, 1, 7, 7), True)).all()


def test_tps_reproduces_affine_maps():
    t = make_transform("tps", grid_size=(3, 4))
    ctrl = t.identity().view(-1, 2)
    a = torch.tensor([[0.8, -0.3], [0.25, 1.1]])
    b = torch.tensor([0.1, -0.2])
    moved = (ctrl @ a.T + b).reshape(1, -1)
    tps = t.grid(moved, (1, 1, 10, 9), False)
    aff = make_transform("affine").grid(
        torch.tensor([[a[0, 0], a[0, 1], b[0], a[1, 0], a[1, 1], b[1]]]), (1, 1, 10, 9), False
    )
    torch.testing.assert_close(tps, aff, atol=1e-5, rtol=0)


def test_tps_interpolates_its_control_points():
    t = make_transform("tps", grid_size=(4, 4))
    theta = t.identity()[None] + 0.05 * torch.randn(
        1, 32, generator=torch.Generator().manual_seed(0)
    )
    # with align_corners=True, a 4x4 output grid samples exactly at the control points
    g = t.grid(theta, (1, 1, 4, 4), True)
    torch.testing.assert_close(g.view(-1, 2), theta.view(-1, 2), atol=1e-5, rtol=0)


def test_series_and_parallel_compose():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 24, 24)
    series = STNSeries([small_stn("affine"), small_stn("tps", out_size=(16, 16))])
    assert series(x).shape == (2, 1, 16, 16)
    assert series.out_shape((1, 24, 24)) == (1, 16, 16)
    par = STNParallel(
        [small_stn("affine", out_size=(16, 16)), small_stn("attention", out_size=(16, 16))]
    )
    out = par(x)
    assert out.shape == (2, 2, 16, 16)
    torch.testing.assert_close(out[:, :1], out[:, 1:])  # both identity at init
    with pytest.raises(StnDeployError, match="share an output size"):
        STNParallel([small_stn("affine", out_size=(16, 16)), small_stn("affine")]).out_shape(
            (1, 24, 24)
        )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mode": "linear"}, "unknown sampler mode"),
        ({"padding_mode": "wrap"}, "unknown padding mode"),
        ({"out_size": (0, 5)}, "out_size"),
        ({"align_corners": "yes"}, "align_corners"),
    ],
)
def test_sampler_config_rejects_bad_values(kwargs, match):
    with pytest.raises(StnDeployError, match=match):
        SamplerConfig(**kwargs)


def test_unknown_transform_and_bad_theta():
    with pytest.raises(StnDeployError, match="unknown transform"):
        make_transform("similarity")
    with pytest.raises(StnDeployError, match=r"\(N, 6\)"):
        make_transform("affine").grid(torch.zeros(1, 5), (1, 1, 4, 4), False)
    with pytest.raises(StnDeployError, match="2x2"):
        make_transform("tps", grid_size=(1, 4))


def test_localisation_size_mismatch_is_a_clear_error():
    stn = SpatialTransformer(nn.Conv2d(1, 1, 3), 9, make_transform("affine"))
    with pytest.raises(StnDeployError, match="features"):
        stn(torch.rand(1, 1, 10, 10))
