"""fp16: ONNX Runtime's float16 converter with the STN's sampler kept in fp32 (onnx only, no torch).

The converter (``onnxruntime.transformers.float16``, the same code as onnxconverter-common's)
turns every float tensor, initializer and op into fp16 except the nodes in a block list, with
Casts at the borders. By default the block list is the STN's float region
(:func:`stn_deploy.precision.region.float_region`): the θ-producing Gemm, the grid generator's
MatMul/Reshape/Transpose and the sampler, because

* the portable sampler computes flat pixel indices as floats: integers above 2048 are not
  exact in fp16 (a 46x46 padded plane already has 2116 cells) and ``Floor``/weights from fp16
  coordinates pick the wrong neighbour;
* fp16 grid coordinates in [-1, 1] carry 11 bits: up to ``W / 2**11`` pixels of error.

Measured (benchmarks/precision.py, RTS-trained mnist-affine): converting the region too
(``sampler_fp16``) raises the rectified image's error vs fp32 1.5-2x (max 0.018 -> 0.027 native,
0.031 portable, normalised units) for no speed on ORT CPU.

Softmax/LogSoftmax stay fp32 as well: in fp16 the exp underflows for confident predictions
(the onnx reference evaluator then returns -inf log-probabilities).

The converter puts a Cast pair (fp32 -> fp16 -> fp32) between two blocked nodes too, which
rounds the region's tensors to fp16 anyway (with it, the portable sampler's GatherElements read
out of range on the 42x42 model); :func:`fold_cast_round_trips` removes those pairs.
Inputs and outputs stay fp32 by default (``keep_io_types``).
"""

from __future__ import annotations

import collections
import copy
from typing import Any

import onnx
from onnx import TensorProto

from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.precision.region import float_region, inline_functions

#: ops kept fp32 whatever the options: the scores' normalisation
SCORE_OPS = ("Softmax", "LogSoftmax")


def _converter():
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise StnDeployError(
            "fp16 conversion needs onnxruntime (pip install 'stn-deploy[cpu]')"
        ) from exc
    return convert_float_to_float16


def fold_cast_round_trips(model: onnx.ModelProto) -> int:
    """Rewire ``x (fp32) -> Cast(fp16) -> Cast(fp32) -> y`` to read ``x`` directly, drop the
    Casts left without consumers; returns how many round trips were removed (in place)."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}

    def cast_to(node: onnx.NodeProto) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    rename: dict[str, str] = {}
    for n in graph.node:
        if cast_to(n) != TensorProto.FLOAT:
            continue
        inner = producer.get(n.input[0])
        if inner is not None and cast_to(inner) == TensorProto.FLOAT16:
            src = inner.input[0]
            src_node = producer.get(src)
            if src_node is not None and cast_to(src_node) == TensorProto.FLOAT16:
                continue  # src is itself fp16: the pair is a real conversion
            rename[n.output[0]] = src
    if not rename:
        return 0
    outputs = {o.name for o in graph.output}
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    for o in list(rename):
        if o in outputs:  # a graph output keeps its name: leave that Cast in place
            del rename[o]
    # remove dead Casts (repeat: removing the fp32 Cast can leave its fp16 Cast unused)
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and not set(n.output) & used]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    return len(rename)


def topological_sort(graph: onnx.GraphProto) -> None:
    """Order ``graph.node`` so every node follows its inputs' producers (in place; stable).

    The converter appends its Casts at the end of the graph; ORT sorts on load, but
    ``onnx.checker`` and other runtimes want a sorted graph.
    """
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all(i in available for i in n.input):
                ordered.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            names = ", ".join(n.name or n.op_type for n in rest[:3])
            raise StnDeployError(f"the fp16 graph has a cycle or a missing input at {names}")
        pending = rest
    copies = [copy.deepcopy(n) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)


def convert_fp16(
    model: onnx.ModelProto, *, keep_io_types: bool = True, sampler_fp16: bool = False
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """An fp16 copy of ``model`` and a summary (nodes kept fp32, Casts folded).

    ``sampler_fp16`` converts the float region too (θ, grid, sampler): measurably worse, and
    the portable sampler's index arithmetic breaks (see the module docstring).

    Example:
        >>> half, info = convert_fp16(onnx.load("m.onnx"))  # doctest: +SKIP
        >>> info["fp32_ops"]                                 # doctest: +SKIP
        {'Constant': 3, 'Gemm': 1, 'GridSample': 1, 'MatMul': 1, 'Reshape': 2, 'Transpose': 1}
    """
    convert = _converter()
    model = inline_functions(copy.deepcopy(model))
    del model.graph.value_info[:]  # the converter types the blocked region's edges from these
    nodes = model.graph.node
    keep = set() if sampler_fp16 else float_region(model)
    keep = sorted(keep | {i for i, n in enumerate(nodes) if n.op_type in SCORE_OPS})
    for i in keep:
        if not nodes[i].name:  # the converter's block list is by name
            nodes[i].name = f"stn_deploy_fp32_{i}"
    names = [nodes[i].name for i in keep]
    ops = collections.Counter(nodes[i].op_type for i in keep)
    try:
        half = convert(model, keep_io_types=keep_io_types, node_block_list=names)
    except Exception as exc:  # the converter's own asserts and ValueErrors
        raise StnDeployError(f"fp16 conversion failed: {one_line(exc)}") from exc
    folded = fold_cast_round_trips(half)
    topological_sort(half.graph)
    return half, {
        "fp32_nodes": names,
        "fp32_ops": dict(sorted(ops.items())),
        "keep_io_types": keep_io_types,
        "sampler_fp16": sampler_fp16,
        "casts_folded": folded,
    }
