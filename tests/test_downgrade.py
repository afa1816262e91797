"""stn_deploy.export.downgrade: opset-18 graphs (the dynamo exporter's) at opset 17 and 16 give
the same numbers on ONNX Runtime as the original, for each op that changed in between; an op
with no older form is one line naming it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from stn_deploy.errors import StnDeployError
from stn_deploy.export.downgrade import downgrade

ort = pytest.importorskip("onnxruntime")


def _model(nodes, inits=(), out_shape=None, extra_outputs=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 5])
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)]
    outs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in extra_outputs]
    g = helper.make_graph(nodes, "g", [x], outs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _i64(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _run(model):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 5)).astype(np.float32)
    return sess.run(None, {"x": x})


CASES = {
    "reduce-mean-axes-input": (
        [helper.make_node("ReduceMean", ["x", "ax"], ["y"], keepdims=1)],
        [_i64("ax", [2, 3])],
        (),
    ),
    "reduce-max-no-axes": ([helper.make_node("ReduceMax", ["x"], ["y"], keepdims=0)], [], ()),
    "pad-all-axes": (
        [helper.make_node("Pad", ["x", "p", "", "ax"], ["y"], mode="reflect")],
        [_i64("p", [0, 0, 1, 2, 0, 0, 1, 2]), _i64("ax", [0, 1, 2, 3])],
        (),
    ),
    "pad-no-axes": (
        [helper.make_node("Pad", ["x", "p"], ["y"])],
        [_i64("p", [0, 0, 1, 1, 0, 0, 2, 2])],
        (),
    ),
    "split-even": (
        [helper.make_node("Split", ["x"], ["y", "z"], axis=2, num_outputs=2)],
        [],
        ("z",),
    ),
    "split-uneven": (
        [helper.make_node("Split", ["x"], ["y", "z"], axis=3, num_outputs=2)],
        [],
        ("z",),
    ),
}


@pytest.mark.parametrize("opset", [16, 17])
@pytest.mark.parametrize("case", sorted(CASES))
def test_downgraded_graph_gives_the_same_numbers(case, opset):
    nodes, inits, extra = CASES[case]
    model = _model(nodes, inits, extra_outputs=extra)
    low = downgrade(model, opset)
    assert low.opset_import[0].version == opset
    onnx.shape_inference.infer_shapes(low, check_type=True, strict_mode=True)  # schemas at opset
    for a, b in zip(_run(model), _run(low), strict=True):
        np.testing.assert_array_equal(a, b)  # the same kernels: exact


def test_the_source_is_not_modified():
    nodes, inits, _ = CASES["reduce-mean-axes-input"]
    model = _model(nodes, inits)
    before = model.SerializeToString()
    downgrade(model, 17)
    assert model.SerializeToString() == before


@pytest.mark.parametrize(
    "node,inits,match",
    [
        (
            helper.make_node("Pad", ["x", "p", "", "ax"], ["y"]),
            [_i64("p", [1, 1]), _i64("ax", [2])],
            "Pad over a subset of axes",
        ),
        (
            helper.make_node("ReduceMean", ["x"], ["y"], noop_with_empty_axes=1),
            [],
            "noop_with_empty_axes=1",
        ),
        (
            helper.make_node("Resize", ["x", "", "s"], ["y"], antialias=1),
            [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")],
            "antialias=1",
        ),
        (
            helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3),
            [
                numpy_helper.from_array(np.ones(3, np.float32), "s"),
                numpy_helper.from_array(np.zeros(3, np.float32), "b"),
            ],
            "GroupNormalization changed after",
        ),
    ],
)
def test_ops_without_an_older_form_are_one_line(node, inits, match):
    with pytest.raises(StnDeployError, match=match) as info:
        downgrade(_model([node], inits), 17)
    assert "\n" not in str(info.value) and "opset" in str(info.value)
