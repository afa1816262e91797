"""``constant-folding``: nodes whose inputs are all constants replaced by their values.

Each foldable node (standard domain, no subgraph, not random, inputs all initializers or
``Constant`` outputs) is evaluated once with ``onnx.reference`` (numpy) and becomes an
initializer; chains fold in graph order. This is what makes a grid path that was written with
constant shapes or a constant base grid built by ops (Range, Mul, Concat...) a constant.
**Exact up to the rounding of the folded float ops** (numpy's float32 kernels instead of the
runtime's: at most an ulp or two per folded value); integer and shape arithmetic is identical.
Outputs larger than :data:`MAX_BYTES` are left unfolded (they would bloat the file).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from stn_deploy.optimize.base import register
from stn_deploy.optimize.graph import Graph, rewrite_sites

NAME = "constant-folding"
MAX_BYTES = 16 << 20
_NEVER = {
    "Constant", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
    "Multinomial", "Bernoulli", "If", "Loop", "Scan", "SequenceConstruct",
}  # fmt: skip


def _matches(g: Graph) -> list:
    found = []
    for node in g.g.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER:
            continue
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            continue
        inputs = [i for i in node.input if i]
        if inputs and all(g.const(i) is not None for i in inputs):
            found.append(node)
    return found


def find(model: onnx.ModelProto) -> list[str]:
    """Sites: each foldable node's first output name."""
    return [n.output[0] for n in _matches(Graph(model))]


def _evaluate(g: Graph, node: onnx.NodeProto) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator

    feeds = {i: g.const(i) for i in node.input if i}
    graph = helper.make_graph(
        [node], "fold",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", g.opset)])
    try:
        return ReferenceEvaluator(model).run(None, feeds)
    except Exception:  # noqa: BLE001 - an op the reference cannot run stays a node
        return None


def _edit(g: Graph, node: onnx.NodeProto) -> bool:
    values = _evaluate(g, node)
    outs = [o for o in node.output if o]
    if values is None or sum(np.asarray(v).nbytes for v in values) > MAX_BYTES:
        return False  # left as it is (its site counts as tried, so matching moves on)
    new = [
        helper.make_node("Constant", [], [o], value=numpy_helper.from_array(np.asarray(v), o))
        for o, v in zip(outs, values, strict=True)
    ]
    g.replace([node], new)
    return True


@register(
    NAME,
    exact=True,
    bound="float ops folded by numpy: an ulp or two per folded value; integer ops identical",
    summary="nodes with only constant inputs replaced by their values",
)
def rewrite(model: onnx.ModelProto, sites: set[str] | None = None) -> tuple[onnx.ModelProto, int]:
    return rewrite_sites(model, _matches, lambda m: m.output[0], _edit, sites)
