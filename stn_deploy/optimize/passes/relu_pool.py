"""``relu-before-maxpool``: Conv -> MaxPool -> Relu becomes Conv -> Relu -> MaxPool.

A monotone non-decreasing elementwise ``f`` commutes with a max (``f(max(a, b)) = max(f(a),
f(b))``, and MaxPool's padding is never selected by either side), so the rewrite is
**bit-identical**; it lets ONNX Runtime fuse the activation into the Conv (one pass over the
conv output instead of a separate Relu over the pooled one). ``f`` is Relu, LeakyRelu with
alpha >= 0 or Clip: piecewise linear, so monotone in float32 too (Sigmoid and Tanh kernels are
approximations and are left alone). Matches any graph where a Conv output feeds only a MaxPool
whose only output feeds only such an activation.
"""

from __future__ import annotations

import onnx

from stn_deploy.optimize.base import register
from stn_deploy.optimize.graph import Graph, attr, rewrite_sites

NAME = "relu-before-maxpool"


def _monotone(node: onnx.NodeProto) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "LeakyRelu":
        return attr(node, "alpha", 0.01) >= 0
    return node.op_type in ("Relu", "Clip")


def _matches(g: Graph) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    found = []
    for pool in g.g.node:
        if pool.op_type != "MaxPool" or pool.domain not in ("", "ai.onnx"):
            continue
        if len([o for o in pool.output if o]) != 1:  # Indices wanted: positions matter
            continue
        conv = g.producer.get(pool.input[0])
        act = g.only_consumer(pool.output[0])
        if conv is None or conv.op_type != "Conv" or act is None or not _monotone(act):
            continue
        if act.input[0] != pool.output[0] or g.only_consumer(conv.output[0]) is not pool:
            continue
        found.append((pool, act))
    return found


def find(model: onnx.ModelProto) -> list[str]:
    """Sites: the activation's output names."""
    return [act.output[0] for _, act in _matches(Graph(model))]


@register(
    NAME,
    exact=True,
    bound="bit-identical (a monotone activation commutes with max)",
    summary="Conv -> MaxPool -> Relu as Conv -> Relu -> MaxPool, so the Relu fuses into the Conv",
)
def rewrite(model: onnx.ModelProto, sites: set[str] | None = None) -> tuple[onnx.ModelProto, int]:
    return rewrite_sites(model, _matches, lambda m: m[1].output[0], _edit, sites)


def _edit(g: Graph, match: tuple[onnx.NodeProto, onnx.NodeProto]) -> None:
    pool, act = match
    mid = g.fresh(act.output[0] + "_pre_pool")
    new_act = onnx.NodeProto()
    new_act.CopyFrom(act)
    new_act.input[0] = pool.input[0]
    new_act.output[0] = mid
    new_pool = onnx.NodeProto()
    new_pool.CopyFrom(pool)
    new_pool.input[0] = mid
    new_pool.output[0] = act.output[0]
    g.replace([pool, act], [new_act, new_pool])
