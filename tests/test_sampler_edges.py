"""Edge cases of the portable and custom grid-sample lowerings (issue 11), against torch.

- Non-finite grids: NaN / +-inf / overflowing coordinates give torch's per-pixel result (NaN
  exactly where torch's is NaN, every other pixel and image as usual) instead of an
  out-of-range GatherElements index that fails the whole batch on ONNX Runtime.
- Empty tensors (N, H_out or W_out = 0) give the empty result of torch's shape.
- Reflection far out of range (|grid| up to 3e38) and widths above 4096 (where the exact
  unnormalisation needs the product split of both factors) match torch's fused arithmetic:
  nearest bit for bit, bilinear and bicubic to float32 rounding.
- float16 / float64 GridSample and AffineGrid go through ``stn-deploy lower`` (portable, custom,
  native, ort-contrib) on small onnx.helper models and match torch in float64 to a tolerance
  scaled to the type; ort-contrib refuses float64 with one line before writing anything.

The far-reflection and wide-image cases compare with torch's SIMD kernels, whose fused
multiply-adds the lowering reproduces; torch's non-SIMD DEFAULT kernel rounds twice, so there
they are skipped (the other cases hold for both).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from stn_deploy.errors import StnDeployError
from stn_deploy.export.lower import lower_file, lower_model
from stn_deploy.export.portable import MODES, PADDING_MODES, grid_sample_model

ort = pytest.importorskip("onnxruntime")

COMBOS = list(itertools.product(MODES, PADDING_MODES, (False, True)))
#: float32 results: nearest is exact, the others differ from torch by reordering only
TOL32 = {"nearest": 0.0, "bilinear": 1e-6, "bicubic": 1e-6}
#: against torch's non-SIMD DEFAULT kernel (see test_export_portable)
TOL_UNFUSED = {"nearest": 0.0, "bilinear": 1e-4, "bicubic": 1e-3}
TORCH_FUSES = torch.backends.cpu.get_cpu_capability() != "DEFAULT"
needs_fused_torch = pytest.mark.skipif(
    not TORCH_FUSES, reason="torch's DEFAULT kernel does not fuse multiply-adds"
)
F32_MAX = float(np.finfo(np.float32).max)


def _session(model: onnx.ModelProto):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, **feeds: np.ndarray) -> np.ndarray:
    return _session(model).run(None, feeds)[0]


def _torch(x, grid, mode, padding_mode, align_corners, dtype=None) -> np.ndarray:
    x, grid = torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(grid))
    if dtype is not None:
        x, grid = x.to(dtype), grid.to(dtype)
    with torch.no_grad():
        y = F.grid_sample(
            x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners
        )
    return y.numpy()


def _assert_matches(y, ref, tol, scale, what=""):
    """Same shape, NaN exactly where ref is NaN, the rest within ``tol * max(1, scale)``."""
    assert y.shape == ref.shape, (what, y.shape, ref.shape)
    y, ref = y.astype(np.float64), ref.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref), err_msg=f"NaN mask {what}")
    ok = ~np.isnan(ref)
    err = float(np.abs(y[ok] - ref[ok]).max()) if ok.any() else 0.0
    assert err <= tol * max(1.0, scale), f"{what}: max abs error {err:.3g}"
    return err


# ------------------------------------------------------------ non-finite grids
_BAD = np.array([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e30, F32_MAX, 2.5e7], np.float32)


@pytest.mark.parametrize(("mode", "padding_mode", "align_corners"), COMBOS)
def test_nan_and_inf_spoil_only_their_own_pixel(mode, padding_mode, align_corners):
    """One bad coordinate (x or y, of one image) gives torch's value for that pixel only."""
    rng = np.random.default_rng(COMBOS.index((mode, padding_mode, align_corners)))
    n, c, h, w, ho, wo = 3, 2, 5, 7, 4, 8
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    grid = rng.uniform(-1.2, 1.2, (n, ho, wo, 2)).astype(np.float32)
    grid[0, 0, : len(_BAD), 0] = _BAD  # bad x
    grid[0, 1, : len(_BAD), 1] = _BAD  # bad y
    grid[0, 2, : len(_BAD), :] = _BAD[:, None]  # both
    grid[1, 3, 0] = [np.nan, np.inf]  # image 1 has one bad point, image 2 none
    model = grid_sample_model(n, c, h, w, ho, wo, mode, padding_mode, align_corners)
    y = _run(model, x=x, grid=grid)
    ref = _torch(x, grid, mode, padding_mode, align_corners)
    assert np.isnan(ref).any() == (
        mode != "nearest" and (mode == "bicubic" or padding_mode == "zeros")
    )
    _assert_matches(y, ref, TOL32[mode], np.abs(x).max(), f"{mode}/{padding_mode}")
    np.testing.assert_array_equal(y[2], _run(model, x=x[2:], grid=grid[2:])[0])


_any_float = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.floats(-1.5, 1.5, width=32),
    st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 1.0, 0.0, 3.3e38, 2.0**24]),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    combo=st.sampled_from(COMBOS),
    hw=st.tuples(st.integers(1, 5), st.integers(1, 6)),
    opset=st.sampled_from([11, 17]),
    data=st.data(),
)
def test_property_any_float_grid_matches_torch(combo, hw, opset, data):
    mode, padding_mode, align_corners = combo
    (h, w), n, c, ho, wo = hw, 2, 2, 3, 2
    coords = data.draw(st.lists(_any_float, min_size=n * ho * wo * 2, max_size=n * ho * wo * 2))
    grid = np.asarray(coords, np.float32).reshape(n, ho, wo, 2)
    x = np.random.default_rng(data.draw(st.integers(0, 999))).standard_normal((n, c, h, w))
    x = x.astype(np.float32)
    model = grid_sample_model(n, None, h, w, ho, wo, mode, padding_mode, align_corners, opset)
    ref = _torch(x, grid, mode, padding_mode, align_corners)
    tol = TOL32[mode]
    if not TORCH_FUSES:  # rounds twice: an ulp of the weights; far reflections move (any pixel)
        tol = np.inf if padding_mode == "reflection" else TOL_UNFUSED[mode]
    _assert_matches(_run(model, x=x, grid=grid), ref, tol, np.abs(x).max(), str(combo))


# --------------------------------------------------------------- empty tensors
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("opset", [11, 17])
def test_empty_tensors(mode, opset):
    """N, H_out or W_out = 0 (any combination from opset 14; one at a time before)."""
    model = grid_sample_model(None, None, 5, 6, None, None, mode, "reflection", False, opset)
    session = _session(model)
    shapes = [(0, 3, 4), (2, 0, 4), (2, 3, 0)]
    if opset >= 14:
        shapes += [(0, 0, 4), (0, 3, 0), (2, 0, 0), (0, 0, 0)]
    for n, ho, wo in shapes:
        x = np.ones((n, 3, 5, 6), np.float32)
        grid = np.zeros((n, ho, wo, 2), np.float32)
        y = session.run(None, {"x": x, "grid": grid})[0]
        assert y.shape == _torch(x, grid, mode, "reflection", False).shape == (n, 3, ho, wo)


@pytest.mark.parametrize("sampler", ["portable", "custom"])
def test_empty_batch_through_lower(sampler):
    model = _grid_sample_onnx(TensorProto.FLOAT, "bilinear", "zeros", 0, opset=16)
    lowered = lower_model(model, sampler)
    x, grid = np.ones((0, 2, 5, 7), np.float32), np.zeros((0, 3, 4, 2), np.float32)
    assert _run(lowered, x=x, grid=grid).shape == (0, 2, 3, 4)


# ----------------------------------------------- far reflection, wide images
@needs_fused_torch
@pytest.mark.parametrize("align_corners", [False, True])
def test_reflection_far_out_of_range_is_exact(align_corners):
    """|grid| from 1e4 to 3e38: torch's fused ``|c| - flips * 2span`` reproduced bit for bit
    (a plain Mul + Sub moved nearest by up to 128 px at |grid| = 1e7)."""
    rng = np.random.default_rng(int(align_corners))
    n, c, h, w = 2, 1, 5, 7
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    mag = 10.0 ** rng.uniform(4, 38.5, (n, 16, 16, 2))
    grid = (rng.choice([-1.0, 1.0], mag.shape) * mag).astype(np.float32)
    grid = np.where(np.isfinite(grid), grid, np.float32(F32_MAX))
    for mode in MODES:
        model = grid_sample_model(n, c, h, w, 16, 16, mode, "reflection", align_corners)
        y = _run(model, x=x, grid=grid)
        ref = _torch(x, grid, mode, "reflection", align_corners)
        _assert_matches(y, ref, TOL32[mode], np.abs(x).max(), f"{mode} reflection")


@needs_fused_torch
@pytest.mark.parametrize("w", [4097, 10007, 999_983])
def test_wide_images_match_torch(w):
    """Widths above 4096 (13 to 20 significant bits): 2.9e-4 bilinear error at 4097 before.
    Two roundings differ from torch's one where ``(g + 1) * W / 2`` and the result lie in
    different binades: just below each power of two, where half the points are put."""
    rng = np.random.default_rng(w)
    x = rng.standard_normal((1, 1, 2, w)).astype(np.float32)
    grid = rng.uniform(-1.05, 1.05, (1, 2, 600, 2)).astype(np.float32)
    powers = 2.0 ** rng.integers(1, int(np.log2(w)) + 1, 600)
    below = powers - rng.uniform(0, 0.5, 600)  # unnormalised u in [2**k - 0.5, 2**k)
    grid[0, 0, :, 0] = ((below + 0.5) / (w / 2) - 1).astype(np.float32)
    far = rng.choice([-1.0, 1.0], 600) * 10.0 ** rng.uniform(-1, 38.5, 600)  # reflected spans
    grid[0, 1, :, 0] = np.where(np.isfinite(far.astype(np.float32)), far, 3e38)  # of 14-21 bits
    for mode, padding_mode in itertools.product(MODES, PADDING_MODES):
        model = grid_sample_model(1, 1, 2, w, 2, 600, mode, padding_mode, False)
        y = _run(model, x=x, grid=grid)
        ref = _torch(x, grid, mode, padding_mode, False)
        _assert_matches(y, ref, TOL32[mode], np.abs(x).max(), f"{mode}/{padding_mode} W={w}")


# ---------------------------------------------------------- float16 / float64
def _grid_sample_onnx(elem, mode, padding_mode, align, opset=16, n="N"):
    node = helper.make_node(
        "GridSample",
        ["x", "grid"],
        ["y"],
        name="gs",
        mode=mode,
        padding_mode=padding_mode,
        align_corners=align,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", elem, [n, 2, 5, 7]),
            helper.make_tensor_value_info("grid", elem, [n, 3, 4, 2]),
        ],
        [helper.make_tensor_value_info("y", elem, [n, 2, 3, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _affine_onnx(elem, align, h=4, w=6):
    size = helper.make_tensor("size", TensorProto.INT64, [4], [2, 1, h, w])
    node = helper.make_node("AffineGrid", ["theta", "size"], ["grid"], align_corners=align)
    graph = helper.make_graph(
        [node],
        "a",
        [helper.make_tensor_value_info("theta", elem, ["N", 2, 3])],
        [helper.make_tensor_value_info("grid", elem, ["N", h, w, 2])],
        initializer=[size],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


_NP = {TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}


def _type_tolerance(ref: np.ndarray, elem: int, scale: float) -> np.ndarray:
    """float64: 1e-12 (scaled); float16: one half-precision ulp of the value (the float32
    result rounded once, with margin) plus float32's 1e-6 (scaled)."""
    if elem == TensorProto.DOUBLE:
        return np.full(ref.shape, 1e-12 * max(1.0, scale))
    half = np.abs(np.nan_to_num(ref)).astype(np.float16)
    return np.spacing(half).astype(np.float64) + 1e-6 * max(1.0, scale)


@pytest.mark.parametrize("elem", [TensorProto.FLOAT16, TensorProto.DOUBLE], ids=["fp16", "fp64"])
@pytest.mark.parametrize("sampler", ["portable", "custom"])
def test_half_and_double_grid_sample_lowered(elem, sampler):
    rng = np.random.default_rng(elem)
    x = rng.standard_normal((2, 2, 5, 7)).astype(_NP[elem])
    grid = rng.uniform(-1.2, 1.2, (2, 3, 4, 2)).astype(_NP[elem])
    grid[0, 0, 0] = [np.nan, 0.5]
    for mode, padding_mode, align in COMBOS:
        model = _grid_sample_onnx(elem, mode, padding_mode, int(align))
        lowered = lower_model(model, sampler)
        y = _run(lowered, x=x, grid=grid)
        assert y.dtype == x.dtype
        ref = _torch(x, grid, mode, padding_mode, align, torch.float64)
        assert np.array_equal(np.isnan(y), np.isnan(ref))
        ok = ~np.isnan(ref)
        tol = _type_tolerance(ref, elem, float(np.abs(x).max()))
        assert (np.abs(y[ok].astype(np.float64) - ref[ok]) <= tol[ok]).all(), (mode, padding_mode)


@pytest.mark.parametrize("elem", [TensorProto.FLOAT16, TensorProto.DOUBLE], ids=["fp16", "fp64"])
@pytest.mark.parametrize("sampler", ["portable", "custom", "native", "ort-contrib"])
def test_half_and_double_affine_grid_lowered(elem, sampler):
    rng = np.random.default_rng(3)
    theta = (np.eye(2, 3)[None] + rng.uniform(-0.4, 0.4, (3, 2, 3))).astype(_NP[elem])
    for align in (0, 1):
        lowered = lower_model(_affine_onnx(elem, align), sampler)
        grid = _run(lowered, theta=theta)
        assert grid.dtype == theta.dtype
        ref = F.affine_grid(torch.from_numpy(theta).double(), [3, 1, 4, 6], bool(align)).numpy()
        tol = _type_tolerance(ref, elem, 1.0)
        assert (np.abs(grid.astype(np.float64) - ref) <= tol).all()


@needs_fused_torch  # its linspace rounds twice: one ulp of [-1, 1] (see test_export_lower)
@pytest.mark.parametrize("align", [False, True])
def test_double_affine_base_grid_is_torchs_bit_for_bit(align):
    theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    lowered = lower_model(_affine_onnx(TensorProto.DOUBLE, int(align), 7, 13), "portable")
    ref = F.affine_grid(theta, [1, 1, 7, 13], align).numpy()
    np.testing.assert_array_equal(_run(lowered, theta=theta.numpy()), ref)


def test_half_ort_contrib_runs_and_matches():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 5, 7)).astype(np.float16)
    grid = rng.uniform(-1.1, 1.1, (2, 3, 4, 2)).astype(np.float16)
    lowered = lower_model(
        _grid_sample_onnx(TensorProto.FLOAT16, "bilinear", "border", 0), "ort-contrib"
    )
    ref = _torch(x, grid, "bilinear", "border", False, torch.float64)
    err = np.abs(_run(lowered, x=x, grid=grid).astype(np.float64) - ref)
    assert (err <= 4 * _type_tolerance(ref, TensorProto.FLOAT16, 1.0)).all()


def test_double_ort_contrib_is_refused_before_writing(tmp_path):
    src, dst = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(_grid_sample_onnx(TensorProto.DOUBLE, "bilinear", "zeros", 0), src)
    with pytest.raises(StnDeployError, match="no float64 kernel") as info:
        lower_file(src, dst, "ort-contrib")
    assert "\n" not in str(info.value) and not dst.exists()
    assert lower_file(src, dst, "portable").nodes_rewritten == 1  # the other forms work
    x, grid = np.ones((1, 2, 5, 7)), np.zeros((1, 3, 4, 2))
    np.testing.assert_allclose(_run(onnx.load(dst), x=x, grid=grid), np.ones((1, 2, 3, 4)))


def test_unsupported_input_type_is_one_line():
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs")
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 4, 4]),
            helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 2, 2, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 1, 2, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    with pytest.raises(StnDeployError, match="uint8/float inputs cannot be lowered") as info:
        lower_model(model, "portable")
    assert "\n" not in str(info.value)
