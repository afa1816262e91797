"""``stn-deploy lower`` on volumetric samplers, chained samplers and ONNX's own conformance cases.

* 5-D GridSample (trilinear, nearest; every padding, both align_corners, NaN and +-inf in the
  grid) and 3-D AffineGrid lowered to native, portable and custom, run on ONNX Runtime and
  compared with torch's ``F.grid_sample`` / ``F.affine_grid`` (float64 runs are bit-exact for
  the standard-op forms: the lowering follows torch's scalar 3-D kernel operation by operation).
* chained samplers (a sampler's output feeding another, also through ops shape inference cannot
  see through) lower to the static-size forms.
* the ONNX backend node cases of GridSample and AffineGrid (22, 6 of them 5-D), built from the
  generators that ship with the onnx package (``onnx/backend/test/case/node``; this onnx wheel
  ships no ``data/node`` .pb files), each lowered to every form and run on ORT against the
  case's expected output.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from tolerances import assert_close

from stn_deploy.errors import StnDeployError
from stn_deploy.export.lower import lower_model

LOWERINGS = ("native", "portable", "custom", "ort-contrib")


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _lower(model, lowering: str) -> onnx.ModelProto:
    if lowering == "custom-inline":
        return lower_model(model, "custom", inline=True)
    return lower_model(model, lowering)


def _gs_model(x_shape, grid_shape, mode, padding, align, elem=TensorProto.FLOAT, opset=20):
    node = helper.make_node(
        "GridSample",
        ["x", "grid"],
        ["y"],
        name="vol",
        mode={"bilinear": "linear"}.get(mode, mode),
        padding_mode=padding,
        align_corners=int(align),
    )
    out = [x_shape[0], x_shape[1], *grid_shape[1:-1]]
    graph = helper.make_graph(
        [node],
        "vol",
        [
            helper.make_tensor_value_info("x", elem, x_shape),
            helper.make_tensor_value_info("grid", elem, grid_shape),
        ],
        [helper.make_tensor_value_info("y", elem, out)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _volume_feeds(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 4, 5, 6)).astype(dtype)
    grid = rng.uniform(-1.3, 1.3, (2, 3, 4, 5, 3)).astype(dtype)
    # non-finite and far-out points, exact corners
    grid[0, 0, 0] = [
        [np.nan, 0, 0],
        [0, np.inf, 0.2],
        [0.1, 0, -np.inf],
        [1e30, 0.5, 0],
        [-1, 1, -1],
    ]
    grid[1, 0, 0, :3] = [[1, 1, 1], [-1, -1, -1], [3e7, -2e6, 4e5]]
    return x, grid


# ------------------------------------------------------------------------ 5-D GridSample
@pytest.mark.parametrize("lowering", ["native", "portable", "custom"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_volumetric_grid_sample_matches_torch(lowering, mode, padding):
    for dtype, elem in ((np.float32, TensorProto.FLOAT), (np.float64, TensorProto.DOUBLE)):
        x, grid = _volume_feeds(dtype)
        for align in (False, True):
            model = _gs_model(list(x.shape), list(grid.shape), mode, padding, align, elem)
            (y,) = _run(_lower(model, lowering), {"x": x, "grid": grid})
            ref = F.grid_sample(
                torch.from_numpy(x), torch.from_numpy(grid), mode, padding, align_corners=align
            ).numpy()
            what = f"{lowering} {mode} {padding} align={align} {dtype.__name__}"
            if lowering != "native" and dtype == np.float64:
                # torch's scalar 3-D kernel, op by op: the same bits (NaN where NaN)
                np.testing.assert_array_equal(y, ref, err_msg=what)
            elif lowering == "native":
                # ORT's own kernel: non-finite and huge coordinates land elsewhere than torch's
                # (e.g. a NaN reads pixel 0, not the last one); compare the ordinary points
                ok = (np.abs(grid) <= 2).all(-1)[:, None]
                assert_close(np.where(ok, y, 0), np.where(ok, ref, 0), what=what)
            else:
                assert_close(y, ref, what=what)


def test_volumetric_dynamic_batch_and_c_and_custom_function_name():
    model = _gs_model(["N", "C", 4, 5, 6], ["N", 3, 4, 5, 3], "nearest", "border", True)
    lowered = lower_model(model, "custom")
    assert [f.name for f in lowered.functions] == ["GridSample"]
    assert "4x5x6 volume" in lowered.functions[0].doc_string
    x, grid = _volume_feeds(np.float32, seed=3)
    (y,) = _run(lowered, {"x": x[:1, :2], "grid": grid[:1]})
    ref = F.grid_sample(
        torch.from_numpy(x[:1, :2]),
        torch.from_numpy(grid[:1]),
        "nearest",
        "border",
        align_corners=True,
    )
    assert_close(y, ref)


@pytest.mark.parametrize(
    "make, lowering, match",
    [
        (
            lambda: _gs_model([1, 1, 4, 4, 4], [1, 2, 2, 2, 3], "bilinear", "zeros", False),
            "ort-contrib",
            "'vol'.*no 5-D.*native",
        ),
        (
            lambda: _gs_model([1, 1, 4, 4, 4], [1, 2, 2, 2, 3], "cubic", "zeros", False),
            "portable",
            "'vol'.*cubic.*5-D",
        ),
        (
            lambda: _gs_model([1, 1, 4, 4, 4], [1, 2, 2, 2, 3], "cubic", "zeros", False),
            "native",
            "'vol'.*cubic.*5-D",
        ),
        (
            lambda: _gs_model([1, 1, "D", 4, 4], [1, 2, 2, 2, 3], "nearest", "zeros", False),
            "custom",
            "'vol'.*depth, height and width.*not static",
        ),
    ],
)
def test_volumetric_refusals_are_one_line(make, lowering, match):
    with pytest.raises(StnDeployError, match=match) as info:
        lower_model(make(), lowering)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------ 3-D AffineGrid
def _affine_model(size, align, elem=TensorProto.FLOAT):
    k = len(size) - 2
    graph = helper.make_graph(
        [
            helper.make_node(
                "AffineGrid", ["theta", "size"], ["grid"], name="ag", align_corners=align
            )
        ],
        "ag",
        [helper.make_tensor_value_info("theta", elem, [size[0], k, k + 1])],
        [helper.make_tensor_value_info("grid", elem, [size[0], *size[2:], k])],
        initializer=[numpy_helper.from_array(np.asarray(size, np.int64), "size")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("lowering", LOWERINGS)
def test_affine_grid_3d_matches_torch(lowering, align):
    size = [2, 1, 3, 4, 5]
    theta = np.random.default_rng(1).normal(0, 1, (2, 3, 4))
    for dtype, elem in ((np.float32, TensorProto.FLOAT), (np.float64, TensorProto.DOUBLE)):
        lowered = lower_model(_affine_model(size, align, elem), lowering)
        assert "AffineGrid" not in {n.op_type for n in lowered.graph.node}
        (grid,) = _run(lowered, {"theta": theta.astype(dtype)})
        ref = F.affine_grid(torch.from_numpy(theta), size, align_corners=bool(align)).numpy()
        assert grid.shape == (2, 3, 4, 5, 3) and grid.dtype == dtype
        assert_close(
            grid,
            ref,
            rtol=1e-6 if dtype == np.float32 else 1e-14,
            atol_scale=1e-6 if dtype == np.float32 else 1e-14,
        )


def test_affine_base_grid_3d_is_torchs_bit_for_bit():
    from stn_deploy.export.lower import _affine_base_grid

    for d, h, w in ((1, 1, 1), (3, 4, 7), (5, 2, 9)):
        for align in (False, True):
            eye = torch.eye(3, 4, dtype=torch.float64)[None]
            ref = F.affine_grid(eye, [1, 1, d, h, w], align_corners=align).reshape(-1, 3)
            base = _affine_base_grid(h, w, align, np.float64, d=d)
            assert base.shape == (d * h * w, 4) and (base[:, 3] == 1).all()
            if torch.backends.cpu.get_cpu_capability() != "DEFAULT":
                np.testing.assert_array_equal(base[:, :3], ref.numpy())
            else:
                # torch's non-SIMD DEFAULT kernel (ATEN_CPU_CAPABILITY=default, CI's second run)
                # rounds its linspace twice: up to one ulp of the grid's range [-1, 1] away
                err = np.abs(base[:, :3] - ref.numpy())
                assert err.max(initial=0.0) <= np.spacing(1.0)


# --------------------------------------------------------------------------- chains
def _chain_model(dims: int, affine: bool, contrib_between: bool = False):
    """x -> sampler -> [Relu] -> sampler, the second grid of another size; with ``affine``
    both grids come from AffineGrid (AffineGrid -> GridSample -> AffineGrid -> GridSample)."""
    k = dims - 2
    sp, s1, s2 = ([8, 9], [6, 7], [5, 4]) if dims == 4 else ([5, 6, 7], [4, 3, 5], [2, 6, 3])
    domain = "com.microsoft" if contrib_between else ""
    nodes, inits = [], []
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, *sp])]
    for j, (size, mode, pad, align) in enumerate(
        ((s1, "linear", "zeros", 0), (s2, "nearest", "reflection", 1)), start=1
    ):
        if affine:
            inits.append(numpy_helper.from_array(np.asarray([2, 2, *size], np.int64), f"s{j}"))
            inputs.append(helper.make_tensor_value_info(f"t{j}", TensorProto.FLOAT, [2, k, k + 1]))
            nodes.append(
                helper.make_node(
                    "AffineGrid", [f"t{j}", f"s{j}"], [f"g{j}"], name=f"ag{j}", align_corners=align
                )
            )
        else:
            inputs.append(helper.make_tensor_value_info(f"g{j}", TensorProto.FLOAT, [2, *size, k]))
        src = "x" if j == 1 else "r1"
        if domain:
            mode = {"linear": "bilinear"}.get(mode, mode)
        nodes.append(
            helper.make_node(
                "GridSample",
                [src, f"g{j}"],
                [f"y{j}"],
                name=f"gs{j}",
                domain=domain,
                mode=mode,
                padding_mode=pad,
                align_corners=align,
            )
        )
        if j == 1:
            nodes.append(helper.make_node("Relu", ["y1"], ["r1"], name="between"))
    graph = helper.make_graph(
        nodes,
        "chain",
        inputs,
        [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [2, 2, *s2])],
        initializer=inits,
    )
    imports = [helper.make_opsetid("", 20)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=imports)


def _chain_torch(feeds, dims, affine):
    x = torch.from_numpy(feeds["x"]).double()
    sizes = ([6, 7], [5, 4]) if dims == 4 else ([4, 3, 5], [2, 6, 3])
    settings = (("bilinear", "zeros", False), ("nearest", "reflection", True))
    for j, (size, (mode, pad, align)) in enumerate(zip(sizes, settings, strict=True), start=1):
        if affine:
            theta = torch.from_numpy(feeds[f"t{j}"]).double()
            grid = F.affine_grid(theta, [2, 2, *size], align_corners=align)
        else:
            grid = torch.from_numpy(feeds[f"g{j}"]).double()
        x = F.grid_sample(x, grid, mode, pad, align_corners=align)
        if j == 1:
            x = torch.relu(x)
    return x.numpy()


@pytest.mark.parametrize("lowering", ["portable", "custom", "custom-inline"])
@pytest.mark.parametrize(
    "dims, affine, contrib",
    [
        (4, False, False),
        (4, True, False),
        (5, False, False),
        (5, True, False),
        (4, False, True),
    ],
)
def test_chained_samplers_lower_to_static_forms(lowering, dims, affine, contrib):
    model = _chain_model(dims, affine, contrib)
    lowered = _lower(model, lowering)
    assert not {"GridSample", "AffineGrid"} & {n.op_type for n in lowered.graph.node}
    rng = np.random.default_rng(dims)
    k = dims - 2
    feeds = {
        "x": rng.standard_normal([2, 2, *([8, 9] if dims == 4 else [5, 6, 7])]).astype(np.float32)
    }
    for inp in model.graph.input[1:]:
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        if affine:  # near-identity transforms: most points inside
            theta = np.eye(k, k + 1)[None] + rng.normal(0, 0.15, (2, k, k + 1))
            feeds[inp.name] = theta.astype(np.float32)
        else:
            feeds[inp.name] = rng.uniform(-1.1, 1.1, shape).astype(np.float32)
    (y,) = _run(lowered, feeds)
    ref = _chain_torch(feeds, dims, affine)
    # nearest after a float32 first stage: compare where torch's float64 coordinate is not
    # within float32 noise of a rounding tie (the only place the two may pick other voxels)
    assert_close(y, ref.astype(np.float32), atol_scale=1e-4)


# ------------------------------------------------------------------ ONNX conformance
def _onnx_node_cases() -> list[tuple[str, onnx.NodeProto, list, list]]:
    """The onnx package's GridSample and AffineGrid backend cases, as (name, node, inputs,
    expected outputs), from the generators of ``onnx.backend.test.case.node``."""
    from onnx.backend.test.case.node import affinegrid, gridsample

    cases: list = []

    def record(node, inputs, outputs, name, **_):
        cases.append((name, node, list(inputs), list(outputs)))

    for module, cls in ((gridsample, gridsample.GridSample), (affinegrid, affinegrid.AffineGrid)):
        saved = module.expect
        module.expect = record
        try:
            for attr in sorted(dir(cls)):
                if attr.startswith("export"):
                    getattr(cls, attr)()
        finally:
            module.expect = saved
    return cases


_CASES = {c[0]: c for c in _onnx_node_cases()}


def _case_model(node, inputs, outputs) -> tuple[onnx.ModelProto, dict]:
    """The case as an opset-22 model; AffineGrid's ``size`` input becomes a constant (the
    lowering precomputes the base grid from it)."""
    feeds, inits, graph_inputs = {}, [], []
    for name, value in zip(node.input, inputs, strict=True):
        if node.op_type == "AffineGrid" and name == "size":
            inits.append(numpy_helper.from_array(np.asarray(value), name))
            continue
        feeds[name] = value
        elem = helper.np_dtype_to_tensor_dtype(value.dtype)
        graph_inputs.append(helper.make_tensor_value_info(name, elem, value.shape))
    out_vi = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for n, v in zip(node.output, outputs, strict=True)
    ]
    graph = helper.make_graph([node], "case", graph_inputs, out_vi, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)]), feeds


def test_onnx_case_count():
    assert len(_CASES) == 22
    five_d = [n for n, c in _CASES.items() if np.asarray(c[2][0]).ndim == 5 or "3d" in n]
    assert len(five_d) == 6, five_d


@pytest.mark.parametrize("lowering", [*LOWERINGS, "custom-inline"])
@pytest.mark.parametrize("case", sorted(_CASES))
def test_onnx_conformance(case, lowering):
    _, node, inputs, outputs = _CASES[case]
    model, feeds = _case_model(node, inputs, outputs)
    volumetric_gs = node.op_type == "GridSample" and inputs[0].ndim == 5
    if lowering == "ort-contrib" and volumetric_gs:
        with pytest.raises(StnDeployError, match="no 5-D"):
            _lower(model, lowering)
        pytest.skip("com.microsoft GridSample is 4-D only (refused before writing)")
    lowered = _lower(model, lowering)
    got = _run(lowered, feeds)
    for g, e in zip(got, outputs, strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype
        assert_close(g, e, what=f"{case} as {lowering}")
