"""``batch-chunked-conv``: a 1-input-channel Conv over chunks of the batch packed as channels.

ORT's NCHWc convolutions work on blocks of 8 (AVX2) or 16 (AVX-512) channels; a Conv with one
input channel and, say, 8 or 10 output channels fills them poorly. Reshaping ``x[N, 1, H, W]``
to ``[N/c, c, H, W]`` and convolving with ``group=c`` (the kernel tiled c times) computes the
same outputs as ``[N/c, c*Co, Ho, Wo]``, reshaped back to ``[N, Co, Ho, Wo]``: every output is
the same Ci*kh*kw-term sum over the same inputs, so **exact up to the order of that sum**. The
chunk ``c`` is the least with ``c*Co`` a multiple of 16 (2 for 8 channels, 8 for 10). A batch
that ``c`` does not divide takes the original Conv: the rewrite is an ``If`` on ``N % c == 0``
whose two branches own their initializers (ORT's NCHWc pass skips a branch that reads its
weights from the outer graph).

Matches any 2-D Conv with a constant float32 weight ``[Co, 1, kh, kw]``, ``group=1``.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stn_deploy.optimize.base import register
from stn_deploy.optimize.graph import Graph, attr, rewrite_sites

NAME = "batch-chunked-conv"
BLOCK = 16


def chunk_for(co: int, block: int = BLOCK) -> int:
    """The least ``c`` with ``c * co`` a multiple of ``block`` (1: nothing to gain)."""
    return block // math.gcd(co, block)


def _matches(g: Graph) -> list:
    if g.opset < 11:
        return []
    found = []
    for conv in g.g.node:
        if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
            continue
        w = g.const(conv.input[1])
        if w is None or w.ndim != 4 or w.shape[1] != 1 or w.dtype != np.float32:
            continue
        bias = conv.input[2] if len(conv.input) > 2 else ""
        if attr(conv, "group", 1) != 1 or (bias and g.const(bias) is None):
            continue
        if attr(conv, "auto_pad", "NOTSET") != "NOTSET" or chunk_for(w.shape[0]) == 1:
            continue
        found.append(conv)
    return found


def find(model: onnx.ModelProto) -> list[str]:
    """Sites: the Conv output names."""
    return [c.output[0] for c in _matches(Graph(model))]


def _branch(name: str, nodes: list, inits: dict[str, np.ndarray], out: str) -> onnx.GraphProto:
    return helper.make_graph(
        nodes,
        name,
        [],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None] * 4)],
        [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in inits.items()],
    )


def _edit(g: Graph, conv: onnx.NodeProto) -> None:
    x, out = conv.input[0], conv.output[0]
    w = g.const(conv.input[1])
    b = g.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
    c = chunk_for(w.shape[0])
    keep = {a.name: helper.get_attribute_value(a) for a in conv.attribute if a.name != "group"}
    names = {k: g.fresh(f"{out}_{k}") for k in ("w", "b", "s_in", "s_out", "xc", "yc", "y", "y2")}
    chunked = {names["w"]: np.tile(w, (c, 1, 1, 1)), names["s_in"]: np.asarray([-1, c, 0, 0])}
    chunked[names["s_out"]] = np.asarray([-1, w.shape[0], 0, 0])
    plain = {names["w"]: w}
    if b is not None:
        chunked[names["b"]], plain[names["b"]] = np.tile(b, c), b
    wb = [names["w"]] + ([names["b"]] if b is not None else [])
    then = _branch(
        g.fresh(out + "_chunked"),
        [
            helper.make_node("Reshape", [x, names["s_in"]], [names["xc"]]),
            helper.make_node("Conv", [names["xc"], *wb], [names["yc"]], group=c, **keep),
            helper.make_node("Reshape", [names["yc"], names["s_out"]], [names["y"]]),
        ],
        chunked,
        names["y"],
    )
    other = _branch(
        g.fresh(out + "_plain"),
        [helper.make_node("Conv", [x, *wb], [names["y2"]], **keep)],
        plain,
        names["y2"],
    )
    shape, n, rem, cond = (g.fresh(out + s) for s in ("_shape", "_n", "_rem", "_even"))
    zero = g.add_const(out + "_zero", np.asarray(0, np.int64))
    new = [
        g.node("Shape", [x], [shape]),
        g.node("Gather", [shape, zero], [n], axis=0),
        g.node("Mod", [n, g.add_const(out + "_chunk", np.asarray(c, np.int64))], [rem]),
        g.node("Equal", [rem, zero], [cond]),
        g.node("If", [cond], [out], then_branch=then, else_branch=other),
    ]
    g.replace([conv], new)


@register(
    NAME,
    exact=True,
    bound="the order of each Ci*kh*kw-term convolution sum",
    summary="a 1-input-channel Conv over batch chunks packed as channels (If N % c != 0: as is)",
)
def rewrite(model: onnx.ModelProto, sites: set[str] | None = None) -> tuple[onnx.ModelProto, int]:
    return rewrite_sites(model, _matches, lambda m: m.output[0], _edit, sites)
