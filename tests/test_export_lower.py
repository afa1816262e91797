"""``stn-deploy lower``: rewriting the GridSample / AffineGrid nodes of existing ONNX models.

Tolerances (absolute; x is standard normal, grids include out-of-range coordinates):
- portable / custom (either form) against torch: 1e-5 for bilinear and nearest, 1e-4 for
  bicubic (the portable sampler itself is tested far tighter in test_export_portable.py).
- native / ort-contrib against the original model on ORT: 1e-6 (the same ORT kernel).
- AffineGrid lowered to MatMul + GridSample against torch's affine_grid + grid_sample: the
  sampled-image tolerance of tests/tolerances.py (1e-4 times max(1, max|out|)): the grid is
  computed on each side (ORT's MatMul, torch's affine_grid), so the coordinates and the sampled
  values carry CPU-dependent rounding (measured 3.3e-6 on ~3).
"""

from __future__ import annotations

import copy
import io
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from tolerances import SAMPLED, assert_close

from stn_deploy.cli import main
from stn_deploy.errors import StnDeployError
from stn_deploy.export.lower import lower_file, lower_model
from stn_deploy.export.metadata import stn_metadata

ort = pytest.importorskip("onnxruntime")


#: (mode, padding, align_corners) of the three samplers in the torch-exported model
SAMPLERS_IN_MODEL = [("bilinear", "zeros", False), ("bicubic", "reflection", True)]
SAMPLERS_IN_MODEL += [("nearest", "border", False)]
TORCH_TOL = {"bilinear": 1e-5, "nearest": 1e-5, "bicubic": 1e-4}


def _session(model: onnx.ModelProto):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return _session(model).run(None, feeds)


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(
        n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        for n in model.graph.node
    )


def _attr(node: onnx.NodeProto, name: str):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


class _ThreeSamplers(torch.nn.Module):
    def forward(self, x, grid):
        return tuple(
            F.grid_sample(x, grid, mode=m, padding_mode=p, align_corners=a)
            for m, p, a in SAMPLERS_IN_MODEL
        )


@pytest.fixture(scope="module")
def torch_model():
    """A model from stock ``torch.onnx.export(dynamo=False, opset_version=16)``, its inputs and
    torch's outputs."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 10, 12, generator=gen)
    grid = torch.rand(2, 7, 9, 2, generator=gen) * 2.6 - 1.3
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _ThreeSamplers(),
            (x, grid),
            buf,
            dynamo=False,
            opset_version=16,
            input_names=["x", "grid"],
            output_names=["a", "b", "c"],
            dynamic_axes={"x": {0: "N"}, "grid": {0: "N"}},
        )
    model = onnx.load_from_string(buf.getvalue())
    assert _ops(model)["GridSample"] == 3
    with torch.inference_mode():
        ref = [t.numpy() for t in _ThreeSamplers()(x, grid)]
    return model, {"x": x.numpy(), "grid": grid.numpy()}, ref


@pytest.mark.parametrize(
    "sampler, inline", [("portable", False), ("custom", False), ("custom", True)]
)
def test_torch_export_lowered_matches_torch(torch_model, sampler, inline):
    model, feeds, ref = torch_model
    lowered = lower_model(model, sampler, inline=inline)
    onnx.checker.check_model(lowered, full_check=True)
    ops = _ops(lowered)
    assert "GridSample" not in ops
    if sampler == "custom" and not inline:
        assert len(lowered.functions) == 3  # three distinct configurations
        assert {f.domain for f in lowered.functions} == {"stn_deploy"}
        custom = [n for n in lowered.graph.node if n.domain == "stn_deploy"]
        assert len(custom) == 3
        assert {n.op_type for n in custom} == {f.name for f in lowered.functions}
        assert all(n.op_type.startswith("GridSample") for n in custom)
        assert {(_attr(n, "mode"), _attr(n, "padding_mode")) for n in custom} == {
            (m.encode(), p.encode()) for m, p, _ in SAMPLERS_IN_MODEL
        }
        assert any(o.domain == "stn_deploy" and o.version == 1 for o in lowered.opset_import)
    else:
        assert not lowered.functions
        assert not any(n.domain == "stn_deploy" for n in lowered.graph.node)
        assert "GatherElements" in ops
    assert _ops(lowered) and max(o.version for o in lowered.opset_import if o.domain == "") == 16
    meta = stn_metadata(lowered)
    assert meta["lowering"] == ("custom-inline" if inline else sampler)
    assert meta["opset"] == "16"
    out = _run(lowered, feeds)
    for (mode, _, _), o, r in zip(SAMPLERS_IN_MODEL, out, ref, strict=True):
        np.testing.assert_allclose(o, r, rtol=0, atol=TORCH_TOL[mode], err_msg=mode)


@pytest.mark.parametrize("sampler", ["native", "ort-contrib"])
def test_torch_export_native_and_contrib_match_original(torch_model, sampler):
    model, feeds, ref = torch_model
    lowered = lower_model(model, sampler)
    onnx.checker.check_model(lowered, full_check=True)
    key = "GridSample" if sampler == "native" else "com.microsoft::GridSample"
    assert _ops(lowered)[key] == 3
    if sampler == "ort-contrib":
        assert any(o.domain == "com.microsoft" for o in lowered.opset_import)
    original = _run(model, feeds)
    out = _run(lowered, feeds)
    for o, r in zip(out, original, strict=True):
        np.testing.assert_allclose(o, r, rtol=0, atol=1e-6)
    for (mode, _, _), o, r in zip(SAMPLERS_IN_MODEL, out, ref, strict=True):
        np.testing.assert_allclose(o, r, rtol=0, atol=TORCH_TOL[mode], err_msg=mode)


# ------------------------------------------------------------- opset-20 models
N, C, H, W, HO, WO = 3, 2, 12, 14, 9, 11


def _affine_model(
    align: int, *, const_node: bool = False, size_input: bool = False, softmax: bool = False
) -> onnx.ModelProto:
    """opset 20: AffineGrid(theta, size) -> GridSample(x, grid) -> Relu [-> Softmax(axis=-1)]."""
    size = numpy_helper.from_array(np.array([N, C, HO, WO], np.int64), "size")
    nodes, inits, inputs = (
        [],
        [],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, H, W]),
            helper.make_tensor_value_info("theta", TensorProto.FLOAT, ["N", 2, 3]),
        ],
    )
    if size_input:
        inputs.append(helper.make_tensor_value_info("size", TensorProto.INT64, [4]))
    elif const_node:
        nodes.append(helper.make_node("Constant", [], ["size"], name="size_const", value=size))
    else:
        inits.append(size)
    nodes += [
        helper.make_node("AffineGrid", ["theta", "size"], ["grid"], name="ag", align_corners=align),
        helper.make_node(
            "GridSample", ["x", "grid"], ["g"], name="gs", mode="linear", align_corners=align
        ),
        helper.make_node("Relu", ["g"], ["r"], name="relu"),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["r"], ["y"], name="softmax", axis=-1))
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["y"], name="id"))
    graph = helper.make_graph(
        nodes,
        "affine20",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", C, HO, WO])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def _affine_feeds_and_ref(align: int, softmax: bool = False):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N, C, H, W, generator=gen)
    theta = torch.randn(N, 2, 3, generator=gen) * 0.4 + torch.tensor([[1.0, 0, 0], [0, 1, 0]])
    grid = F.affine_grid(theta, (N, C, HO, WO), align_corners=bool(align))
    y = F.relu(F.grid_sample(x, grid, align_corners=bool(align)))
    if softmax:
        y = torch.softmax(y, dim=-1)
    return {"x": x.numpy(), "theta": theta.numpy()}, y.numpy()


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize(
    "sampler, opset, const_node",
    [("portable", 11, False), ("native", 16, True), ("native", 17, False), ("custom", 13, True)],
)
def test_affine_grid_opset20_lowered(align, sampler, opset, const_node):
    softmax = sampler == "portable"  # Softmax 13 -> 11 goes through onnx.version_converter
    model = _affine_model(align, const_node=const_node, softmax=softmax)
    feeds, ref = _affine_feeds_and_ref(align, softmax)
    lowered = lower_model(model, sampler, opset=opset)
    onnx.checker.check_model(lowered, full_check=True)
    assert [o.version for o in lowered.opset_import if o.domain == ""] == [opset]
    ops = _ops(lowered)
    assert "AffineGrid" not in ops
    assert ops["MatMul"] >= 1
    assert "Constant" not in ops or sampler == "custom"  # the dead size constant is dropped
    assert not any(t.name == "size" for t in lowered.graph.initializer)
    if sampler == "native":
        gs = [n for n in lowered.graph.node if n.op_type == "GridSample"]
        assert [_attr(n, "mode") for n in gs] == [b"bilinear"]
    else:
        assert "GridSample" not in ops
    (out,) = _run(lowered, feeds)
    assert_close(out, ref, atol_scale=SAMPLED)


def test_native_mode_renaming_16_to_20_and_back(torch_model):
    model, feeds, _ = torch_model
    up = lower_model(model, "native", opset=20)
    modes = [_attr(n, "mode") for n in up.graph.node if n.op_type == "GridSample"]
    assert modes == [b"linear", b"cubic", b"nearest"]
    onnx.checker.check_model(up, full_check=True)
    down = lower_model(up, "native", opset=16)
    modes = [_attr(n, "mode") for n in down.graph.node if n.op_type == "GridSample"]
    assert modes == [b"bilinear", b"bicubic", b"nearest"]
    for a, b in zip(_run(up, feeds), _run(down, feeds), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # an opset-20 GridSample without a mode attribute is linear
    m20 = _affine_model(0)
    gs = next(n for n in m20.graph.node if n.op_type == "GridSample")
    del gs.attribute[:]
    out = lower_model(m20, "native", opset=16)
    gs = next(n for n in out.graph.node if n.op_type == "GridSample")
    assert _attr(gs, "mode") == b"bilinear"


def test_nothing_to_lower_is_copied(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    src, dst = tmp_path / "plain.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    summary = lower_file(src, dst, "portable")
    assert summary.nodes_rewritten == 0
    assert summary.opset_before == summary.opset_after == 13
    out = onnx.load(dst)
    assert stn_metadata(out)["lowering"] == "portable"
    del out.metadata_props[:]
    assert out.graph == model.graph
    result = CliRunner().invoke(main, ["lower", str(src), str(dst), "--lowering", "native"])
    assert result.exit_code == 0, result.output
    assert "0 nodes rewritten" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_deterministic_and_checked(torch_model, tmp_path):
    model, _, _ = torch_model
    src = tmp_path / "in.onnx"
    onnx.save(model, src)
    for sampler in ("portable", "custom"):
        a, b = tmp_path / f"{sampler}_a.onnx", tmp_path / f"{sampler}_b.onnx"
        lower_file(src, a, sampler)
        lower_file(src, b, sampler)
        assert a.read_bytes() == b.read_bytes()
        onnx.checker.check_model(onnx.load(a), full_check=True)
    # the opset-conversion path (Softmax 13 -> 11 through onnx.version_converter) as well
    model20 = _affine_model(1, softmax=True)
    first, second = (
        lower_model(model20, "portable", opset=11).SerializeToString(deterministic=True)
        for _ in range(2)
    )
    assert first == second


def test_cli_lower_prints_one_line(torch_model, tmp_path):
    model, feeds, _ = torch_model
    src, dst = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    result = CliRunner().invoke(
        main, ["lower", str(src), str(dst), "--lowering", "custom", "--inline"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "3 nodes rewritten (GridSample 3)" in lines[0]
    assert "custom-inline" in lines[0] and "opset 16 -> 16" in lines[0]
    assert "GridSample" not in _ops(onnx.load(dst))


# ------------------------------------------------------------------ error paths
def _dynamic_hw_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("GridSample", ["x", "grid"], ["y"], name="dyn_gs")],
        "dyn",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"]),
            helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["N", 4, 4, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 4, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])


def _five_d_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("GridSample", ["x", "grid"], ["y"], name="vol_gs")],
        "vol",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4, 4]),
            helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 2, 2, 2, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2, 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _affine_3d_model() -> onnx.ModelProto:
    size = numpy_helper.from_array(np.array([1, 1, 2, 3, 4], np.int64), "size")
    graph = helper.make_graph(
        [helper.make_node("AffineGrid", ["theta", "size"], ["grid"], name="ag3d")],
        "ag3d",
        [helper.make_tensor_value_info("theta", TensorProto.FLOAT, [1, 3, 4])],
        [helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 2, 3, 4, 3])],
        initializer=[size],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _affine_6d_model() -> onnx.ModelProto:
    model = _affine_3d_model()
    model.graph.name = model.graph.node[0].name = "ag6d"
    model.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(np.array([1, 1, 2, 2, 3, 4], np.int64), "size")
    )
    return model


@pytest.mark.parametrize(
    "make, sampler, kwargs, match",
    [
        (_affine_6d_model, "portable", {}, "ag6d.*'size' is 6"),
        (lambda: _affine_model(0), "bogus", {}, "unknown lowering"),
        (_dynamic_hw_model, "portable", {}, "dyn_gs.*not static"),
        (_dynamic_hw_model, "custom", {}, "dyn_gs.*not static"),
        (lambda: _affine_model(0, size_input=True), "native", {}, "'ag'.*not a constant"),
        (lambda: _affine_model(0), "native", {"opset": 13}, "opset 16.*portable.*ort-contrib"),
        (_five_d_model, "ort-contrib", {}, "vol_gs.*no 5-D"),
        (lambda: _affine_model(0), "native", {"inline": True}, "--inline"),
        (lambda: _affine_model(0), "portable", {"opset": 9}, "opset 11"),
    ],
)
def test_lower_model_errors(make, sampler, kwargs, match):
    with pytest.raises(StnDeployError, match=match):
        lower_model(make(), sampler, **kwargs)


def test_sampler_inside_a_local_function_is_a_clear_error():
    model = _affine_model(0)
    gs = next(n for n in model.graph.node if n.op_type == "GridSample")
    body = helper.make_node("GridSample", ["X", "G"], ["Y"], mode="linear")
    model.functions.append(
        helper.make_function(
            "mine", "Sample", ["X", "G"], ["Y"], [body], [helper.make_opsetid("", 20)]
        )
    )
    model.opset_import.append(helper.make_opsetid("mine", 1))
    gs.op_type, gs.domain = "Sample", "mine"
    del gs.attribute[:]
    with pytest.raises(StnDeployError, match="mine.Sample.*inline"):
        lower_model(model, "portable")


def test_unconvertible_opset_is_a_clear_error():
    model = _affine_model(0)
    model.graph.node.append(
        helper.make_node("Resize", ["y", "", "scales"], ["z"], name="resize", mode="nearest")
    )
    model.graph.initializer.append(
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    )
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    with pytest.raises(StnDeployError, match="cannot convert.*Resize.*No Adapter"):
        lower_model(model, "portable", opset=11)


def _write_src(tmp_path, kind: str):
    src = tmp_path / "in.onnx"
    if kind == "missing":
        return src
    if kind == "text":
        src.write_text("this is not an onnx model\n")
    elif kind == "truncated":
        data = _affine_model(0).SerializeToString()
        src.write_bytes(data[: len(data) // 2])
    else:
        onnx.save(_dynamic_hw_model() if kind == "dynamic" else _affine_model(0), src)
    return src


@pytest.mark.parametrize(
    "kind, args, match",
    [
        ("missing", ["--lowering", "portable"], "model file not found"),
        ("text", ["--lowering", "portable"], "not a readable ONNX model"),
        ("truncated", ["--lowering", "native"], "not a readable ONNX model"),
        ("dynamic", ["--lowering", "portable"], "dyn_gs"),
        ("ok", ["--lowering", "native", "--opset", "12"], "opset 16"),
    ],
)
def test_cli_errors_one_line_no_file(tmp_path, kind, args, match):
    src = _write_src(tmp_path, kind)
    dst = tmp_path / "out.onnx"
    result = CliRunner().invoke(main, ["lower", str(src), str(dst), *args])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert match in lines[0]
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(StnDeployError, match=match):
        lower_file(src, dst, args[1], opset=int(args[3]) if len(args) > 2 else None)


def test_cli_unknown_sampler(tmp_path):
    src = _write_src(tmp_path, "ok")
    dst = tmp_path / "out.onnx"
    result = CliRunner().invoke(main, ["lower", str(src), str(dst), "--lowering", "bogus"])
    assert result.exit_code != 0 and not dst.exists()
    assert "bogus" in result.output
    with pytest.raises(StnDeployError, match="unknown lowering"):
        lower_file(src, dst, "bogus")


def test_contrib_and_opset20_inputs_lower_to_portable(torch_model):
    """com.microsoft GridSample and opset-20 names (linear / cubic) are read as well."""
    model, feeds, ref = torch_model
    for source in (lower_model(model, "ort-contrib"), lower_model(model, "native", opset=20)):
        lowered = lower_model(source, "portable")
        assert not any(n.op_type == "GridSample" for n in lowered.graph.node)
        assert not any(o.domain == "com.microsoft" for o in lowered.opset_import)
        for (mode, _, _), o, r in zip(SAMPLERS_IN_MODEL, _run(lowered, feeds), ref, strict=True):
            np.testing.assert_allclose(o, r, rtol=0, atol=TORCH_TOL[mode], err_msg=mode)


def test_custom_shares_one_function_per_configuration():
    model = _affine_model(0)
    gs = next(n for n in model.graph.node if n.op_type == "GridSample")
    twin = copy.deepcopy(gs)
    twin.name, twin.output[0] = "gs_twin", "g2"
    model.graph.node.append(twin)
    model.graph.output.append(
        helper.make_tensor_value_info("g2", TensorProto.FLOAT, ["N", C, HO, WO])
    )
    lowered = lower_model(model, "custom")
    assert [f.name for f in lowered.functions] == ["GridSample"]
    custom = [n for n in lowered.graph.node if n.domain == "stn_deploy"]
    assert [n.op_type for n in custom] == ["GridSample", "GridSample"]
    assert [n.name for n in custom] == ["gs", "gs_twin"]
    feeds, _ = _affine_feeds_and_ref(0)
    y, g2 = _run(lowered, feeds)
    np.testing.assert_allclose(np.maximum(g2, 0), y, rtol=0, atol=0)


@pytest.mark.parametrize("h, w", [(1, 1), (3, 5), (28, 28), (42, 60), (225, 31)])
@pytest.mark.parametrize("align", [False, True])
def test_affine_base_grid_is_torchs_bit_for_bit(h, w, align):
    from stn_deploy.export.lower import _affine_base_grid

    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = F.affine_grid(identity, (1, 1, h, w), align_corners=align)
    base = _affine_base_grid(h, w, align)
    assert base.dtype == np.float32 and base.shape == (h * w, 3)
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        np.testing.assert_array_equal(base[:, :2], ref[0].reshape(-1, 2).numpy())
    else:
        # The grid follows torch's SIMD linspace (AVX2, AVX-512), one fused multiply-add per
        # entry, so an exported file is the same on every machine. torch's non-SIMD DEFAULT
        # kernel (ATEN_CPU_CAPABILITY=default, CI's second run) rounds twice: up to one ulp of
        # the grid's range [-1, 1] away.
        err = np.abs(base[:, :2] - ref[0].reshape(-1, 2).numpy())
        assert err.max(initial=0.0) <= np.spacing(np.float32(1.0))
    assert (base[:, 2] == 1).all()


class _TinySTN(torch.nn.Module):
    """An STN as users write it: θ from the image, F.affine_grid(θ, x.size()), F.grid_sample."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.loc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12 * 10, 6))
        with torch.no_grad():
            self.loc[1].weight.mul_(0.05)
            self.loc[1].bias.copy_(torch.tensor([0.9, 0.2, 0.1, -0.2, 1.1, 0.0]))

    def forward(self, x):
        theta = self.loc(x).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.size(), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)


@pytest.mark.parametrize("sampler", ["portable", "custom", "native"])
def test_stock_opset20_stn_export_with_dynamic_batch(tmp_path, sampler):
    model = _TinySTN().eval()
    src = tmp_path / "stock.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            torch.rand(2, 1, 12, 10),
            str(src),
            opset_version=20,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
        )
    stock = onnx.load(src)
    assert {"AffineGrid", "GridSample"} <= {n.op_type for n in stock.graph.node}
    dst = tmp_path / f"{sampler}.onnx"
    summary = lower_file(src, dst, sampler, opset=16 if sampler == "native" else None)
    assert summary.rewritten == {"AffineGrid": 1, "GridSample": 1}
    lowered = onnx.load(dst)
    ops = Counter((n.domain, n.op_type) for n in lowered.graph.node)
    assert ("", "AffineGrid") not in ops
    assert (sampler == "native") == (("", "GridSample") in ops)
    assert (sampler == "custom") == (("stn_deploy", "GridSample") in ops)
    used = {i for n in lowered.graph.node for i in n.input} | {o.name for o in lowered.graph.output}
    dead = [n.op_type for n in lowered.graph.node if not any(o in used for o in n.output)]
    assert dead == [], f"the rewrite left dead nodes: {dead}"
    for n in (1, 5):  # dynamic batch
        x = torch.rand(n, 1, 12, 10)
        with torch.inference_mode():
            ref = model(x).numpy()
        (got,) = _run(lowered, {"x": x.numpy()})
        assert_close(got, ref, atol_scale=SAMPLED)
