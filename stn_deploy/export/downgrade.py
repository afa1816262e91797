"""Bringing an opset-18 graph (what torch.export writes) down to opset 16 or 17 (no torch).

onnx's own version converter has no down-adapter for several ops the dynamo exporter emits
(``Pad`` 18 -> 13, ``Relu`` 14 -> 13, ...) and its reduction adapter keeps an attribute opset
17 does not know. What changed between opsets 16 and 18 is small and listed in the ONNX
changelog, so it is rewritten here, op by op, and anything else that changed is refused in one
line naming the op:

- ``Reduce{Max,Min,Mean,Prod,L1,L2,LogSum,LogSumExp,SumSquare}`` (18): ``axes`` is an input;
  before 18 an attribute (a constant input is moved; ``noop_with_empty_axes`` must be 0);
- ``Pad`` (18): an optional ``axes`` input; dropped when absent or all axes in order;
- ``Split`` (18): a ``num_outputs`` attribute; before 18 ``len(outputs)`` equal parts, or the
  sizes as a ``split`` input when the axis does not divide evenly (needs its static size);
- ``Resize`` (18): ``antialias``, ``keep_aspect_ratio_policy`` and ``axes`` attributes,
  dropped at their defaults;
- ``ScatterElements`` / ``ScatterND`` (18): ``reduction`` ``max`` / ``min`` have no older form.

Every other op must have the same version at the target as at 18 (or is refused).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from stn_deploy.errors import StnDeployError

SOURCE_OPSET = 18
LOWEST = 16
REDUCE_AXES_INPUT = {
    "ReduceMax",
    "ReduceMin",
    "ReduceMean",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
}
_RESIZE_DEFAULTS = {"antialias": 0, "keep_aspect_ratio_policy": b"stretch"}


def _refuse(op: str, why: str, opset: int) -> StnDeployError:
    return StnDeployError(
        f"{op} {why}: it has no form at opset {opset}; use {{opset}}={SOURCE_OPSET} or "
        "{exporter}='torchscript'",
        param=("opset", "exporter"),
    )


class _Constants:
    """The graph's constant tensors by name (initializers and Constant nodes)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for n in graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def get(self, name: str) -> np.ndarray | None:
        return self.values.get(name)


def _reduce(node: onnx.NodeProto, consts: _Constants, opset: int) -> None:
    noop = next((a.i for a in node.attribute if a.name == "noop_with_empty_axes"), 0)
    axes_name = node.input[1] if len(node.input) > 1 else ""
    if noop and not axes_name:
        raise _refuse(node.op_type, "with noop_with_empty_axes=1", opset)
    keep = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
    if axes_name:
        axes = consts.get(axes_name)
        if axes is None:
            raise _refuse(node.op_type, "with axes computed at run time", opset)
        keep.append(helper.make_attribute("axes", [int(v) for v in axes.reshape(-1)]))
    del node.attribute[:]
    node.attribute.extend(keep)
    del node.input[1:]


def _pad(node: onnx.NodeProto, consts: _Constants, rank: int | None, opset: int) -> None:
    if len(node.input) > 3 and node.input[3]:
        axes = consts.get(node.input[3])
        full = rank is not None and axes is not None
        if not full or [int(a) % rank for a in axes.reshape(-1)] != list(range(rank)):
            raise _refuse("Pad", "over a subset of axes", opset)
    del node.input[3:]
    while node.input and not node.input[-1]:
        del node.input[-1]


def _split(node, graph, dims: dict, opset: int) -> None:
    n_out = next((a.i for a in node.attribute if a.name == "num_outputs"), None)
    if n_out is None:
        return
    keep = [a for a in node.attribute if a.name != "num_outputs"]
    del node.attribute[:]
    node.attribute.extend(keep)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    shape = dims.get(node.input[0])
    size = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
    if isinstance(size, int) and size > 0 and size % n_out:
        chunk = -(-size // n_out)
        sizes = [chunk] * (n_out - 1) + [size - chunk * (n_out - 1)]
        name = f"{node.output[0]}__split_sizes"
        graph.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), name))
        node.input.append(name)
    elif not isinstance(size, int):
        raise _refuse("Split", "by num_outputs over an axis of unknown size", opset)


def _resize(node: onnx.NodeProto, opset: int) -> None:
    keep = []
    for a in node.attribute:
        if a.name == "axes":
            raise _refuse("Resize", "over a subset of axes", opset)
        if a.name in _RESIZE_DEFAULTS:
            value = a.s if a.type == onnx.AttributeProto.STRING else a.i
            if value != _RESIZE_DEFAULTS[a.name]:
                raise _refuse("Resize", f"with {a.name}={value!r}", opset)
            continue
        keep.append(a)
    del node.attribute[:]
    node.attribute.extend(keep)


def _static_dims(model: onnx.ModelProto) -> tuple[dict[str, list], dict[str, int]]:
    """Value name -> dims (ints where static), and -> rank, from shape inference (best effort)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    dims: dict[str, list] = {}
    for vi in (*g.input, *g.value_info, *g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return dims, {k: len(v) for k, v in dims.items()}


def _version(op: str, opset: int) -> int | None:
    try:
        return onnx.defs.get_schema(op, opset, "").since_version
    except Exception:
        return None


def downgrade(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """A copy of the opset-18 ``model`` at ``opset`` (16 or 17), or a one-line error naming the
    first op that has no form there."""
    if not LOWEST <= opset < SOURCE_OPSET:
        raise ValueError(f"downgrade goes from {SOURCE_OPSET} to {LOWEST}..{SOURCE_OPSET - 1}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    dims, ranks = _static_dims(out)
    consts = _Constants(out.graph)
    for node in out.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in REDUCE_AXES_INPUT:
            _reduce(node, consts, opset)
        elif node.op_type == "Pad":
            _pad(node, consts, ranks.get(node.input[0]), opset)
        elif node.op_type == "Split":
            _split(node, out.graph, dims, opset)
        elif node.op_type == "Resize":
            _resize(node, opset)
        elif node.op_type in ("ScatterElements", "ScatterND"):
            reduction = next((a.s for a in node.attribute if a.name == "reduction"), b"none")
            if reduction in (b"max", b"min"):
                raise _refuse(node.op_type, f"with reduction={reduction.decode()}", opset)
        elif _version(node.op_type, opset) != _version(node.op_type, SOURCE_OPSET):
            raise _refuse(node.op_type, "changed after this opset", opset)
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            raise _refuse(node.op_type, "with a subgraph", opset)
    for imp in out.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = opset
    return out
