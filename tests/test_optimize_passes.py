"""The rewrite passes: each matches graphs we did not write (built with onnx.helper, or by stock
torch.onnx.export), and the rewritten graph computes the same outputs on ONNX Runtime CPU at
several batch sizes (float32 reordering tolerance, or bit-identical where the pass says so);
near-misses of each pattern are left alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tolerances import assert_close

from stn_deploy.optimize import all_passes, get_pass
from stn_deploy.optimize.passes.affine_gemm import gemm_matrix
from stn_deploy.optimize.passes.chunk_conv import chunk_for
from stn_deploy.optimize.passes.phase_pool import phase_kernel

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(0)
BATCHES = (1, 2, 3, 8)


def _w(*shape):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32) * 0.3)


def _model(nodes, inits, inputs, out="y", opset=17, rank=2):
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, [None] * rank)
    graph = helper.make_graph(nodes, "foreign", inputs, [y])
    for name, t in inits.items():
        t.name = name
        graph.initializer.append(t)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def image(name="x", c=1, h=20, w=20):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", c, h, w])


def conv_net(act="Relu", pool_after_act=False, bn=True):
    """Conv(1->8,k5) MaxPool Act, Conv(8->12,k3,pad1) [BN] Act MaxPool, Flatten, Gemm."""
    a1 = {"op_type": act} if act != "LeakyRelu" else {"op_type": act, "alpha": 0.1}
    first = (
        [helper.make_node(a1.pop("op_type"), ["c1"], ["a1"], **a1),
         helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2])]
        if pool_after_act else
        [helper.make_node("MaxPool", ["c1"], ["m1"], kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node(a1.pop("op_type"), ["m1"], ["p1"], **a1)]
    )  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]),
        *first,
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        *([helper.make_node("BatchNormalization", ["c2", "g", "be", "mu", "var"], ["n2"])]
          if bn else []),
        helper.make_node("Relu", ["n2" if bn else "c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]  # fmt: skip
    var = numpy_helper.from_array(RNG.random(12).astype(np.float32) + 0.5)
    inits = {"w1": _w(8, 1, 5, 5), "b1": _w(8), "w2": _w(12, 8, 3, 3), "b2": _w(12),
             "g": _w(12), "be": _w(12), "mu": _w(12), "var": var,
             "wf": _w(5, 12 * 4 * 4), "bf": _w(5)}  # fmt: skip
    return _model(nodes, inits, [image()])


def affine_net(opset=17, affine_grid_op=False):
    """theta[N,6] -> affine grid (base-grid MatMul, or AffineGrid) -> GridSample of x."""
    theta = helper.make_tensor_value_info("theta", TensorProto.FLOAT, ["N", 6])
    shape = numpy_helper.from_array(np.asarray([-1, 2, 3], np.int64))
    if affine_grid_op:
        grid = [  # size = [N, 1, 12, 10], N from theta's shape (dynamic batch)
            helper.make_node("Reshape", ["theta", "s23"], ["t"]),
            helper.make_node("Shape", ["theta"], ["n"], end=1),
            helper.make_node("Concat", ["n", "chw"], ["size"], axis=0),
            helper.make_node("AffineGrid", ["t", "size"], ["grid"], align_corners=0),
        ]
        inits = {"s23": shape, "chw": numpy_helper.from_array(np.asarray([1, 12, 10]))}
    else:
        ys, xs = np.meshgrid(np.linspace(-1, 1, 12), np.linspace(-1, 1, 10), indexing="ij")
        base = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3).astype(np.float32)
        grid = [
            helper.make_node("Reshape", ["theta", "s23"], ["t"]),
            helper.make_node("Transpose", ["t"], ["tt"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["base", "tt"], ["flat"]),
            helper.make_node("Reshape", ["flat", "s_out"], ["grid"]),
        ]
        inits = {"s23": shape, "base": numpy_helper.from_array(base),
                 "s_out": numpy_helper.from_array(np.asarray([-1, 12, 10, 2]))}  # fmt: skip
    nodes = [*grid, helper.make_node("GridSample", ["x", "grid"], ["y"], align_corners=0)]
    return _model(nodes, inits, [image(c=2, h=16, w=16), theta], opset=opset, rank=4)


def run(model, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def feeds_for(model, batch):
    out = {}
    for i in model.graph.input:
        dims = [d.dim_value or batch for d in i.type.tensor_type.shape.dim]
        x = RNG.random(dims).astype(np.float32)
        if i.name == "theta":  # near the identity, so the grid covers the image
            x = (x - 0.5) * 0.6 + np.float32([1, 0, 0, 0, 1, 0])
        out[i.name] = x
    return out


def check_same(before, after, *, exact_bits=False):
    onnx.checker.check_model(after)
    for b in BATCHES:
        feeds = feeds_for(before, b)
        expected, got = run(before, feeds), run(after, feeds)
        if exact_bits:
            np.testing.assert_array_equal(got, expected)
        else:
            assert_close(got, expected, what=f"batch {b}")


def ops(model):
    return [n.op_type for n in model.graph.node]


# --------------------------------------------------------------------------- the registry
def test_every_pass_is_named_marked_and_bounded():
    names = [p.name for p in all_passes()]
    assert len(set(names)) == len(names) >= 6
    for p in all_passes():
        assert p.exact and p.bound and p.summary
        assert get_pass(p.name) is p


def test_unknown_pass_is_one_line():
    from stn_deploy.errors import StnDeployError

    with pytest.raises(StnDeployError, match="unknown pass 'nope'.*known: constant-folding"):
        get_pass("nope")


# --------------------------------------------------------------------- relu-before-maxpool
@pytest.mark.parametrize("act", ["Relu", "LeakyRelu", "Clip"])
def test_relu_before_maxpool_is_bit_identical(act):
    model = conv_net(act=act, bn=False)
    out, n = get_pass("relu-before-maxpool").apply(model)
    assert n == 1
    assert ops(out)[:3] == ["Conv", act, "MaxPool"]
    check_same(model, out, exact_bits=True)


def test_relu_before_maxpool_leaves_non_monotone_and_shared_alone():
    model = conv_net(act="LeakyRelu", bn=False)
    for n in model.graph.node:
        for a in n.attribute:
            if a.name == "alpha":
                a.f = -0.5  # not monotone: max and f no longer commute
    assert get_pass("relu-before-maxpool").apply(model)[1] == 0
    shared = conv_net(bn=False)
    shared.graph.output.append(helper.make_tensor_value_info("m1", TensorProto.FLOAT, [None] * 4))
    assert get_pass("relu-before-maxpool").apply(shared)[1] == 0  # pool output is wanted


# ------------------------------------------------------------------------ affine-grid-gemm
def test_gemm_matrix_layout():
    base = RNG.standard_normal((5, 3)).astype(np.float32)
    theta = RNG.standard_normal((4, 2, 3)).astype(np.float32)
    want = np.einsum("pc,njc->npj", base, theta)
    got = (theta.reshape(4, 6) @ gemm_matrix(base, 2)).reshape(4, 5, 2)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("affine_grid_op", [False, True])
def test_affine_grid_gemm(affine_grid_op):
    model = affine_net(opset=20 if affine_grid_op else 17, affine_grid_op=affine_grid_op)
    out, n = get_pass("affine-grid-gemm").apply(model)
    assert n == 1 and "Gemm" in ops(out)
    assert "MatMul" not in ops(out) and "AffineGrid" not in ops(out)
    check_same(model, out)


# ---------------------------------------------------------------------- phase-conv-maxpool
def test_phase_kernel_shifts():
    w = RNG.standard_normal((3, 2, 4, 5)).astype(np.float32)
    k = phase_kernel(w).reshape(4, 3, 2, 5, 6)
    np.testing.assert_array_equal(k[3, :, :, 1:, 1:], w)
    assert not k[3, :, :, 0, :].any() and not k[0, :, :, 4, :].any()


@pytest.mark.parametrize("pool_after_act", [False, True])
def test_phase_conv_maxpool(pool_after_act):
    model = conv_net(pool_after_act=pool_after_act, bn=False)
    out, n = get_pass("phase-conv-maxpool").apply(model)
    assert n == 2 and "MaxPool" not in ops(out) and ops(out).count("Max") == 2
    check_same(model, out)


def test_phase_leaves_strided_and_padded_pools_alone():
    model = conv_net(bn=False)
    for node in model.graph.node:
        if node.op_type == "MaxPool":
            node.attribute.append(helper.make_attribute("pads", [1, 1, 1, 1]))
    assert get_pass("phase-conv-maxpool").apply(model)[1] == 0


# ---------------------------------------------------------------------- batch-chunked-conv
def test_chunk_sizes():
    assert [chunk_for(c) for c in (8, 10, 16, 3)] == [2, 8, 1, 16]


def test_batch_chunked_conv_with_fallback():
    model = conv_net(bn=False)
    out, n = get_pass("batch-chunked-conv").apply(model)
    assert n == 1 and "If" in ops(out)
    branches = [a.g for n in out.graph.node if n.op_type == "If" for a in n.attribute]
    assert all(len(b.initializer) >= 2 for b in branches)  # each branch owns its weights
    check_same(model, out)  # batches 1, 3 take the fallback; 2, 8 the chunked branch


# ---------------------------------------------------------------------------- conv-bn-fold
def test_conv_bn_fold():
    model = conv_net()
    out, n = get_pass("conv-bn-fold").apply(model)
    assert n == 1 and "BatchNormalization" not in ops(out)
    check_same(model, out)


# ----------------------------------------------------------------------- constant-folding
def test_constant_folding_folds_a_computed_grid_constant():
    nodes = [
        helper.make_node("Range", ["zero", "n", "one"], ["r"]),
        helper.make_node("Mul", ["r", "scale"], ["rs"]),
        helper.make_node("Add", ["x", "rs"], ["y"]),
    ]
    f = lambda v: numpy_helper.from_array(np.asarray(v, np.float32))  # noqa: E731
    inits = {"zero": f(0), "n": f(6), "one": f(1), "scale": f(0.25)}
    model = _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])])
    out, n = get_pass("constant-folding").apply(model)
    assert n == 2 and ops(out) == ["Constant", "Add"]
    x = RNG.random((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x}), run(model, {"x": x}))


# ------------------------------------------------------------ all passes, foreign and ours
def test_all_passes_in_sequence_on_a_foreign_net():
    model = out = conv_net()
    counts = {}
    for p in all_passes():
        out, counts[p.name] = p.apply(out)
    assert counts["conv-bn-fold"] == 1 and counts["phase-conv-maxpool"] == 2
    check_same(model, out)


def test_passes_apply_to_a_stock_torch_export(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from stn_deploy.pytorch.baselines import stock_export

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 5), torch.nn.BatchNorm2d(8), torch.nn.MaxPool2d(2),
        torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    ).eval()  # fmt: skip
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    model = onnx.load(str(stock_export(net, (1, 20, 20), tmp_path / "stock.onnx")))
    out, total = model, 0
    for p in all_passes():
        out, n = p.apply(out)
        total += n
    assert total >= 3
    check_same(model, out)


def test_our_plain_export_gets_every_conv_rewrite(plain_native):
    model = onnx.load(plain_native)
    expect = {"relu-before-maxpool": 4, "affine-grid-gemm": 1, "phase-conv-maxpool": 4}
    out = model
    for name, count in expect.items():
        out, n = get_pass(name).apply(out)
        assert n == count, name
    golden = np.load(plain_native.with_suffix(".io.npz"))
    got = run(out, {"image": golden["input/image"]})
    assert_close(got, golden["output/log_probs"])
    assert_close(got, run(model, {"image": golden["input/image"]}))
