"""Expose intermediate tensors of an ONNX graph as extra graph outputs (onnx only).

Types come from shape inference where it knows them; the rest are added untyped (ONNX Runtime,
OpenVINO and the reference evaluator all accept that). Constant nodes are left out: every
runtime agrees on a constant.
"""

from __future__ import annotations

import onnx
from onnx import helper


def node_outputs(model: onnx.ModelProto) -> list[tuple[int, onnx.NodeProto, str]]:
    """``(index, node, output name)`` for every output of every top-level non-Constant node,
    in the graph's (topological) order."""
    return [
        (i, node, out)
        for i, node in enumerate(model.graph.node)
        if node.op_type != "Constant"
        for out in node.output
        if out
    ]


def with_outputs(model: onnx.ModelProto, names: list[str] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs ``names`` (default: every node output)."""
    if names is None:
        names = [out for _, _, out in node_outputs(model)]
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        known = {v.name: v for v in inferred.graph.value_info}
    except Exception:  # shape inference is a convenience here, not a requirement
        known = {}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output} | {i.name for i in exposed.graph.input}
    for name in names:
        if name in present:
            continue
        present.add(name)
        if name in known and known[name].type.tensor_type.elem_type:
            exposed.graph.output.append(known[name])
        else:
            exposed.graph.output.append(helper.make_empty_tensor_value_info(name))
    return exposed
