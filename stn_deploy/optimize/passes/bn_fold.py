"""``conv-bn-fold``: a BatchNormalization (inference form) after a Conv folded into its weights.

``BN(Conv(x)) = s * (W*x + b - mean) + beta`` with ``s = gamma / sqrt(var + eps)`` per output
channel, i.e. one Conv with ``W' = s W`` and ``b' = s (b - mean) + beta`` (computed in float64,
rounded once to float32). **Exact up to the order of each convolution sum and one rounding of
the folded weights** (a few float32 ulps of each output's magnitude). ONNX Runtime folds this
pattern itself at session start; the pass is for runtimes and converters that do not.

Matches any Conv with constant weights (and bias, if any) whose output feeds only a
single-output BatchNormalization with constant parameters.
"""

from __future__ import annotations

import numpy as np
import onnx

from stn_deploy.optimize.base import register
from stn_deploy.optimize.graph import Graph, attr, rewrite_sites

NAME = "conv-bn-fold"


def _matches(g: Graph) -> list:
    found = []
    for bn in g.g.node:
        if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
            continue
        if len([o for o in bn.output if o]) != 1 or attr(bn, "training_mode", 0):
            continue
        conv = g.producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or g.only_consumer(conv.output[0]) is not bn:
            continue
        w = g.const(conv.input[1])
        consts = [g.const(n) for n in bn.input[1:5]]
        if w is None or w.dtype != np.float32 or any(c is None for c in consts):
            continue
        if len(conv.input) > 2 and conv.input[2] and g.const(conv.input[2]) is None:
            continue
        found.append((conv, bn))
    return found


def find(model: onnx.ModelProto) -> list[str]:
    """Sites: the BatchNormalization output names."""
    return [bn.output[0] for _, bn in _matches(Graph(model))]


def _edit(g: Graph, match) -> None:
    conv, bn = match
    w = g.const(conv.input[1]).astype(np.float64)
    has_b = len(conv.input) > 2 and conv.input[2]
    b = g.const(conv.input[2]).astype(np.float64) if has_b else np.zeros(w.shape[0])
    gamma, beta, mean, var = (g.const(n).astype(np.float64) for n in bn.input[1:5])
    s = gamma / np.sqrt(var + attr(bn, "epsilon", 1e-5))
    w2 = (w * s.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
    b2 = (s * (b - mean) + beta).astype(np.float32)
    site = bn.output[0]
    new = onnx.NodeProto()
    new.CopyFrom(conv)
    del new.input[:]
    new.input.extend([conv.input[0], g.add_const(site + "_w", w2), g.add_const(site + "_b", b2)])
    new.output[0] = site
    g.replace([conv, bn], [new])


@register(
    NAME,
    exact=True,
    bound="the order of each convolution sum and one rounding of the folded weights",
    summary="Conv -> BatchNormalization as one Conv with folded weights and bias",
)
def rewrite(model: onnx.ModelProto, sites: set[str] | None = None) -> tuple[onnx.ModelProto, int]:
    return rewrite_sites(model, _matches, lambda m: m[1].output[0], _edit, sites)
