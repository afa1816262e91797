"""The portable (opset-11, standard ops only) grid-sample lowering against torch's F.grid_sample.

Tolerances (absolute, scaled by max(1, max|x|); x is standard normal here):
- nearest: exact. The lowering computes the source coordinate with torch's float32 operations,
  rounding included (torch's fused multiply-add is emulated exactly), and rounds half to even
  like torch, so it reads the very same pixel: ties and far-out-of-range reflections included.
- bilinear: 1e-5. Same coordinates and weights; only the order (and fusing) of torch's 4-term
  sum differs: a few float32 ulps of the output.
- bicubic: 1e-5 as well. Same taps and coefficients up to an ulp (torch may fuse the
  multiply-adds of its cubic polynomials, ORT rounds every step), summed along x then y as torch.
Measured: 1,500 hypothesis examples (|g| up to 1e3) give at most 0 / 7.9e-8 / 1.8e-7 (scaled);
28x28 and 224x224 with |g| up to 1e3 and reflection 0 / 2.4e-7 / 7.2e-7 (absolute). The bounds
leave a >10x margin; a wrong tap, weight or padding rule shows up as 1e-2..1, and dropping the
FMA emulation as ~3e-5 at 224 pixels.

Those bounds hold against torch's SIMD kernels (AVX2, AVX-512: every x86-64 CPU since 2013),
whose fused multiply-adds the lowering emulates. torch's DEFAULT kernel (no SIMD, forced with
``ATEN_CPU_CAPABILITY=default``, as CI's second run does) rounds them twice: nearest still
reads the same pixel (exact), but weights differ by an ulp, and far out of range (coordinates
~1e4 px, where an ulp is ~1e-3 px) so do reflected coordinates. Against that reference the
bounds are TOL_UNFUSED: measured 0 / 7.7e-6 / 1.1e-4 (scaled) on the 28x28 and 224x224 cases.
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

from stn_deploy.errors import StnDeployError
from stn_deploy.export.graph import GraphBuilder, value_info
from stn_deploy.export.portable import MODES, PADDING_MODES, grid_sample, grid_sample_model

ort = pytest.importorskip("onnxruntime")

TOL = {"nearest": 0.0, "bilinear": 1e-5, "bicubic": 1e-5}
#: against torch's non-SIMD DEFAULT kernel, which does not fuse multiply-adds (see above)
TOL_UNFUSED = {"nearest": 0.0, "bilinear": 1e-4, "bicubic": 1e-3}
TORCH_FUSES = torch.backends.cpu.get_cpu_capability() != "DEFAULT"
COMBOS = list(itertools.product(MODES, PADDING_MODES, (False, True)))
#: every op the lowering may emit; all exist in the standard domain at opset 11
OPSET11_OPS = {
    "Abs", "Add", "And", "Cast", "Clip", "Concat", "Div", "Equal", "Expand", "Flatten", "Floor",
    "GatherElements", "IsNaN", "Less", "MatMul", "Max", "Min", "Mul", "Pad", "ReduceSum",
    "Reshape", "Round", "Shape", "Slice", "Sub", "Transpose", "Unsqueeze", "Where",
}  # fmt: skip


def _newest_ort_opset() -> int:
    """The newest ai.onnx opset both onnx and this onnxruntime build know."""
    newest = onnx.defs.onnx_opset_version()
    try:
        from onnxruntime.capi import _pybind_state as C

        kernels = [k for k in C.get_all_opkernel_def() if k.domain in ("", "ai.onnx")]
        newest = min(newest, max(k.version_range[0] for k in kernels))
    except Exception:  # private API moved: trust onnx's number
        pass
    return newest


NEWEST = _newest_ort_opset()


def _session(model: onnx.ModelProto):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    return _session(model).run(None, {"x": x, "grid": grid})[0]


def _torch(x, grid, mode, padding_mode, align_corners) -> np.ndarray:
    with torch.no_grad():
        return F.grid_sample(
            torch.from_numpy(x),
            torch.from_numpy(grid),
            mode=mode,
            padding_mode=padding_mode,
            align_corners=align_corners,
        ).numpy()


def _assert_close(y, ref, mode, x, what=""):
    assert y.shape == ref.shape, (y.shape, ref.shape)
    assert np.isfinite(y).all(), f"non-finite output {what}"
    tol = (TOL if TORCH_FUSES else TOL_UNFUSED)[mode] * max(1.0, float(np.abs(x).max()))
    err = float(np.abs(y.astype(np.float64) - ref).max()) if y.size else 0.0
    assert err <= tol, f"{what} max abs error {err:.3g} > {tol:.3g}"


def _special(size: int, align_corners: bool) -> np.ndarray:
    """Normalised coordinates of exact pixel centres and exact half-pixel ties for one axis."""
    i = np.arange(size + 1, dtype=np.float64)
    if align_corners:
        d = max(size - 1, 1)
        centres, ties = 2 * i / d - 1, (2 * i + 1) / d - 1
    else:
        centres, ties = (2 * i + 1) / size - 1, 2 * i / size - 1
    return np.concatenate([centres, ties, [-1.0, 1.0]]).astype(np.float32)


def _grid(rng, n, ho, wo, h, w, align_corners) -> np.ndarray:
    """A grid mixing in range, slightly out, far out (|g| <= 1e3), exact +-1, pixel centres and
    half-pixel ties (per axis: x uses W, y uses H)."""
    grid = rng.uniform(-1, 1, (n, ho, wo, 2)).astype(np.float32)
    for axis, size in ((0, w), (1, h)):
        flat = grid[..., axis].reshape(-1)
        kind = rng.integers(0, 6, flat.size)
        flat[kind == 1] = rng.uniform(-1.6, 1.6, (kind == 1).sum())
        flat[kind == 2] = rng.uniform(-1e3, 1e3, (kind == 2).sum())
        flat[kind == 3] = rng.choice([-1.0, 1.0], (kind == 3).sum())
        special = _special(size, align_corners)
        flat[kind >= 4] = rng.choice(special, (kind >= 4).sum())
        far = rng.random(flat.size) < 0.1  # far out, but on a tie / centre in torch's arithmetic
        flat[far & (kind >= 4)] += rng.choice([-1000.0, 512.0], (far & (kind >= 4)).sum())
        grid[..., axis] = flat.reshape(n, ho, wo)
    return grid


# n, C, H, W, H_out, W_out, channels given to the builder
SHAPES = [
    pytest.param((3, 1, 5, 8, 9, 11, 1), id="C1-static"),
    pytest.param((2, 3, 7, 4, 6, 10, None), id="C3-dynamic"),
    pytest.param((2, 2, 16, 8, 5, 7, 2), id="C2-pow2"),  # power-of-two sizes: no FMA emulation
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("mode", "padding_mode", "align_corners"), COMBOS)
def test_parity_with_torch_on_ort(mode, padding_mode, align_corners, shape):
    n, c, h, w, ho, wo, channels = shape
    rng = np.random.default_rng([COMBOS.index((mode, padding_mode, align_corners)), c])
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    grid = _grid(rng, n, ho, wo, h, w, align_corners)
    model = grid_sample_model(n, channels, h, w, ho, wo, mode, padding_mode, align_corners)
    y = _run(model, x, grid)
    _assert_close(y, _torch(x, grid, mode, padding_mode, align_corners), mode, x)


@pytest.mark.parametrize("mode", MODES)
def test_realistic_sizes_match_torch(mode):
    """28x28 (the STN) and 224x224: sizes where torch's fused unnormalisation matters."""
    rng = np.random.default_rng(4)
    for n, c, h, w in ((3, 1, 28, 28), (1, 2, 224, 224)):
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        grid = rng.uniform(-1.1, 1.1, (n, h, w, 2)).astype(np.float32)
        far = rng.random(grid.shape) < 0.2
        grid[far] = rng.uniform(-1e3, 1e3, far.sum())
        for padding_mode in PADDING_MODES:
            model = grid_sample_model(n, c, h, w, h, w, mode, padding_mode, False)
            y = _run(model, x, grid)
            _assert_close(y, _torch(x, grid, mode, padding_mode, False), mode, x, f"{h}x{w}")


def test_exact_fma_false_is_smaller_and_close():
    n, c, h, w = 2, 1, 28, 28
    rng = np.random.default_rng(6)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    grid = rng.uniform(-1.1, 1.1, (n, h, w, 2)).astype(np.float32)
    exact = grid_sample_model(n, c, h, w, h, w, "bilinear", "zeros", False)
    plain = grid_sample_model(n, c, h, w, h, w, "bilinear", "zeros", False, exact_fma=False)
    assert len(plain.graph.node) < len(exact.graph.node) - 10
    # two roundings move a coordinate by at most half an ulp: |dy| <= ulp(w) * max|dx|
    bound = np.spacing(np.float32(w)) * 2 * np.abs(x).max() + 1e-5
    ref = _torch(x, grid, "bilinear", "zeros", False)
    assert np.abs(_run(plain, x, grid) - ref).max() <= bound
    # align_corners and power-of-two sizes need no emulation: the flag changes nothing there
    for args in ((1, 1, 28, 28, 5, 5, "bilinear", "zeros", True), (1, 1, 16, 8, 5, 5, "nearest", "zeros", False)):  # fmt: skip
        assert (
            grid_sample_model(*args).SerializeToString()
            == grid_sample_model(*args, exact_fma=False).SerializeToString()
        )


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_nearest_half_pixel_ties_match_torch(padding_mode, align_corners):
    n, c, h, w = 2, 2, 6, 8
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    gx, gy = _special(w, align_corners), _special(h, align_corners)
    xs, ys = np.meshgrid(np.concatenate([gx, gx + 4.0]), gy)  # in range and reflected ties
    grid = np.broadcast_to(np.stack([xs, ys], -1), (n, *xs.shape, 2)).astype(np.float32)
    # the grid really has ties in torch's arithmetic: (g + 1) * (size / 2) - 0.5 on .5
    ux = (grid[..., 0] + np.float32(1)) * np.float32(
        (w - 1) / 2 if align_corners else w / 2
    ) - np.float32(0 if align_corners else 0.5)
    assert (np.abs(ux - np.floor(ux)) == 0.5).sum() >= 8
    model = grid_sample_model(n, c, h, w, *xs.shape, "nearest", padding_mode, align_corners)
    y = _run(model, x, np.ascontiguousarray(grid))
    np.testing.assert_array_equal(y, _torch(x, grid, "nearest", padding_mode, align_corners))


def test_opsets_agree_and_match_torch():
    n, c, h, w, ho, wo = 2, 2, 5, 6, 4, 7
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    opsets = sorted({11, 13, 16, 17, NEWEST})
    for mode, padding_mode, align_corners in COMBOS:
        grid = _grid(rng, n, ho, wo, h, w, align_corners)
        ref = _torch(x, grid, mode, padding_mode, align_corners)
        outs = {}
        for opset in opsets:
            model = grid_sample_model(
                n, None, h, w, ho, wo, mode, padding_mode, align_corners, opset=opset
            )
            assert model.opset_import[0].version == opset
            outs[opset] = _run(model, x, grid)
            _assert_close(outs[opset], ref, mode, x, f"{mode}/{padding_mode}/{opset}")
        for opset in opsets[1:]:
            np.testing.assert_array_equal(outs[opset], outs[11], err_msg=f"opset {opset}")


def _reference_gather_elements():
    """GatherElements for the onnx reference evaluator without its np.choose limit.

    onnx's reference GatherElements goes through ``np.choose``, which takes at most 64 choices
    (its 2-D fallback reads only the first index of each row), so it fails as soon as the
    gathered axis is longer than 64: here, any framed input above 64 pixels. The stock
    evaluator is used on inputs below that."""
    from onnx.reference.op_run import OpRun

    class GatherElements(OpRun):
        def _run(self, data, indices, axis=None):
            return (np.take_along_axis(data, indices.astype(np.int64), axis=axis),)

    return GatherElements


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("hw", "fixed"), [((3, 4), False), ((9, 7), True)], ids=["stock-small", "fixed-gather"]
)
def test_reference_evaluator_opset11(mode, hw, fixed):
    from onnx.reference import ReferenceEvaluator

    (h, w), n, c, ho, wo = hw, 2, 2, 3, 4
    new_ops = [_reference_gather_elements()] if fixed else None
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    for padding_mode, align_corners in itertools.product(PADDING_MODES, (False, True)):
        grid = _grid(rng, n, ho, wo, h, w, align_corners)
        model = grid_sample_model(n, c, h, w, ho, wo, mode, padding_mode, align_corners)
        (y,) = ReferenceEvaluator(model, new_ops=new_ops).run(None, {"x": x, "grid": grid})
        _assert_close(y, _torch(x, grid, mode, padding_mode, align_corners), mode, x, "reference")


_coord = st.one_of(
    st.floats(-1.5, 1.5, width=32),
    st.floats(-1e3, 1e3, width=32),
    st.sampled_from([-1.0, 1.0, 0.0, -0.5, 0.5, 0.25, -0.75, 1e3, -1e3]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dims=st.tuples(*(st.integers(1, 4) for _ in range(2)), *(st.integers(1, 6) for _ in range(4))),
    mode=st.sampled_from(MODES),
    padding_mode=st.sampled_from(PADDING_MODES),
    align_corners=st.booleans(),
    static_c=st.booleans(),
    data=st.data(),
)
def test_property_matches_torch(dims, mode, padding_mode, align_corners, static_c, data):
    n, c, h, w, ho, wo = dims
    coords = data.draw(st.lists(_coord, min_size=n * ho * wo * 2, max_size=n * ho * wo * 2))
    grid = np.asarray(coords, np.float32).reshape(n, ho, wo, 2)
    seed = data.draw(st.integers(0, 2**16))
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)
    model = grid_sample_model(
        n, c if static_c else None, h, w, ho, wo, mode, padding_mode, align_corners
    )
    _assert_close(_run(model, x, grid), _torch(x, grid, mode, padding_mode, align_corners), mode, x)


@pytest.mark.parametrize("mode", MODES)
def test_dynamic_batch_and_output_size(mode):
    rng = np.random.default_rng(5)
    model = grid_sample_model(2, 3, 6, 5, None, None, mode, "reflection", False)
    session = _session(model)
    for n, ho, wo in ((1, 4, 4), (5, 3, 8), (2, 6, 5)):
        x = rng.standard_normal((n, 3, 6, 5)).astype(np.float32)
        grid = _grid(rng, n, ho, wo, 6, 5, False)
        y = session.run(None, {"x": x, "grid": grid})[0]
        _assert_close(y, _torch(x, grid, mode, "reflection", False), mode, x, f"batch {n}")
    static = grid_sample_model(2, 3, 6, 5, 4, 4, mode, "zeros", False, dynamic_batch=False)
    assert static.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


@pytest.mark.parametrize("opset", sorted({11, NEWEST}))
def test_checker_shape_inference_determinism_and_ops(opset):
    for (mode, padding_mode, align_corners), channels in itertools.product(COMBOS, (1, None)):
        args = (2, channels, 7, 9, 4, 5, mode, padding_mode, align_corners, opset)
        model = grid_sample_model(*args)
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        out = inferred.graph.output[0].type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in out] == ["N", channels or "C", 4, 5]
        assert model.SerializeToString() == grid_sample_model(*args).SerializeToString()
        ops = {node.op_type for node in model.graph.node}
        assert ops <= OPSET11_OPS, ops - OPSET11_OPS
        assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
        for op in ops:  # a standard op that already existed at opset 11
            assert onnx.defs.get_schema(op, 11, "").since_version <= 11
    assert {"GridSample", "AffineGrid"}.isdisjoint(OPSET11_OPS)


def test_large_coordinates_stay_finite():
    n, c, h, w = 1, 2, 5, 7
    rng = np.random.default_rng(9)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    big = np.array([1e6, -1e6, 3e7, -3e7, 1e10, -1e10, 1e20, -1e20], np.float32)
    grid = np.stack(np.meshgrid(big, big), -1)[None].astype(np.float32)
    for mode, padding_mode, align_corners in COMBOS:
        model = grid_sample_model(n, c, h, w, *grid.shape[1:3], mode, padding_mode, align_corners)
        y = _run(model, x, grid)
        assert np.isfinite(y).all(), (mode, padding_mode, align_corners)
        if padding_mode != "reflection":  # torch is well defined here: clipped or all-zero
            ref = _torch(x, grid, mode, padding_mode, align_corners)
            _assert_close(y, ref, mode, x, f"{mode}/{padding_mode}")


def test_two_samplers_in_one_graph():
    """Two lowerings share one builder (STNs in series) without name clashes."""
    g = GraphBuilder(opset=13)
    y1 = grid_sample(
        g, "x", "grid1", in_hw=(6, 6), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    y2 = grid_sample(
        g, y1, "grid2", in_hw=(4, 5), mode="bicubic", padding_mode="border", align_corners=True
    )
    model = g.make_model(
        [
            value_info("x", np.float32, ["N", 2, 6, 6]),
            value_info("grid1", np.float32, ["N", 4, 5, 2]),
            value_info("grid2", np.float32, ["N", 3, 3, 2]),
        ],
        [value_info(y2, np.float32, ["N", 2, 3, 3])],
    )
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    g1 = _grid(rng, 2, 4, 5, 6, 6, False)
    g2 = _grid(rng, 2, 3, 3, 4, 5, True)
    (y,) = _session(model).run(None, {"x": x, "grid1": g1, "grid2": g2})
    mid = _torch(x, g1, "bilinear", "zeros", False)
    _assert_close(y, _torch(mid, g2, "bicubic", "border", True), "bicubic", x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "linear"}, "unknown grid-sample mode 'linear'"),
        ({"mode": "cubic"}, "unknown grid-sample mode"),
        ({"padding_mode": "wrap"}, "unknown padding mode 'wrap'"),
        ({"padding_mode": "constant"}, "unknown padding mode"),
        ({"align_corners": "yes"}, "align_corners"),
        ({"opset": 10}, "opset must be between 11"),
        ({"h": 0}, "input height"),
        ({"c": 0}, "channels"),
        ({"h": 5000, "w": 5000}, "2\\*\\*24"),
    ],
)
def test_bad_settings_raise_one_line_error(kwargs, match):
    args = dict(
        n=1, c=1, h=4, w=4, h_out=2, w_out=2, mode="bilinear", padding_mode="zeros",
        align_corners=False,
    )  # fmt: skip
    args.update(kwargs)
    with pytest.raises(StnDeployError, match=match) as info:
        grid_sample_model(**args)
    assert "\n" not in str(info.value)


def test_graph_builder_basics():
    g = GraphBuilder(opset=11, prefix="p_", taken=["p_a"])
    assert g.unique("a") == "p_a_1" and g.unique("a") == "p_a_2"
    c1 = g.const(np.float32(2.0))
    assert g.const(np.float32(2.0)) == c1 and g.const(np.int64(2)) != c1
    r11 = g.with_axes("ReduceSum", "x", [1], keepdims=0)
    assert list(g.nodes[-1].input) == ["x"] and g.nodes[-1].attribute[0].ints == [1]
    g13 = GraphBuilder(opset=13, constants="node")
    r13 = g13.with_axes("ReduceSum", "x", [1], keepdims=0)
    assert [n.op_type for n in g13.nodes] == ["Constant", "ReduceSum"] and not g13.initializers
    assert len(g13.nodes[-1].input) == 2
    g.rename(r11, "out")
    assert g.nodes[-1].output[0] == "out"
    with pytest.raises(StnDeployError):
        g.rename("x", c1)
    with pytest.raises(StnDeployError):
        g.with_axes("Gather", "x", [0])
    with pytest.raises(StnDeployError, match="opset 11 or newer"):
        grid_sample(
            GraphBuilder(opset=10), "x", "grid", in_hw=(2, 2), mode="nearest",
            padding_mode="zeros", align_corners=False,
        )  # fmt: skip
    with pytest.raises(StnDeployError, match="in_hw"):
        grid_sample(
            g, "x", "grid", in_hw=(2,), mode="nearest", padding_mode="zeros", align_corners=False
        )
    assert r13


def test_import_is_torch_free():
    import subprocess
    import sys

    code = (
        "import sys, stn_deploy.export.portable, stn_deploy.export.graph; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
