"""The STN's float region: nodes from θ onward to the sampler output (onnx only, no torch).

Quantising θ or the sampling grid moves every pixel of the rectified image, and fp16 grid
coordinates are off by up to ``2**-11 * W`` pixels; so by default the int8 and fp16 steps keep
these nodes in fp32:

* the θ producer: the last Conv/Gemm (or MatMul with a constant operand) before a sampler,
* everything downstream of it up to the next Conv/Gemm: the grid MatMul/Reshape/Transpose of
  the affine (projective, TPS) grid generator, and the sampler itself (native or ORT-contrib
  ``GridSample``, or the portable/inlined-custom decomposition with its index arithmetic).

A sampler here is a ``GridSample`` node of any domain or a ``GatherElements`` (the portable
decomposition's gather). Models with local functions must be inlined first
(:func:`inline_functions`).

Example:
    >>> import onnx                                                   # doctest: +SKIP
    >>> m = onnx.load("exported/mnist-affine-native.onnx")            # doctest: +SKIP
    >>> [m.graph.node[i].op_type for i in sorted(float_region(m))]    # doctest: +SKIP
    ['Gemm', 'Constant', 'Reshape', 'Transpose', 'Constant', 'MatMul', 'Constant', 'Reshape', 'GridSample']
"""

from __future__ import annotations

from collections import defaultdict

import onnx

from stn_deploy.runtimes.base import load_inlined

#: ops that end the forward walk from θ: the classifier's (or the next STN's) weighted layers
WEIGHTED = ("Conv", "Gemm", "ConvTranspose")
#: ops that only move or view a tensor
SHAPE_OPS = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity")
#: ops that mark a sampler (the portable decomposition gathers with GatherElements)
SAMPLER_OPS = ("GridSample", "GatherElements")


def inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its model-local functions written in place (a no-op without any)."""
    return load_inlined(model)


def constant_names(model: onnx.ModelProto) -> set[str]:
    """Names of the model's constant tensors: initializers and Constant node outputs."""
    names = {i.name for i in model.graph.initializer}
    names |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return names


def is_weighted(node: onnx.NodeProto, constants: set[str]) -> bool:
    """A node int8 quantisation is about: Conv/Gemm, or a MatMul with a constant operand."""
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in WEIGHTED:
        return True
    return node.op_type == "MatMul" and any(i in constants for i in node.input)


def float_region(model: onnx.ModelProto) -> set[int]:
    """Indices (into ``model.graph.node``) of the nodes from each θ producer to its sampler.

    For every weighted node (Conv/Gemm) the walk follows its consumers until the next Conv or
    Gemm; when that walk reaches a sampler op, the node is a θ producer and the walk (with the
    node itself) is the float region. Constant nodes feeding the region belong to it.
    """
    nodes = list(model.graph.node)
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(nodes):
        for name in n.input:
            if name:
                consumers[name].append(i)

    def walk(i: int, through: set[int]) -> set[int]:
        """The nodes after ``i`` up to the next weighted node (not one of ``through``)."""
        seen: set[int] = set()
        stack = [o for out in nodes[i].output for o in consumers[out]]
        while stack:
            j = stack.pop()
            if j in seen or (nodes[j].op_type in WEIGHTED and j not in through):
                continue
            seen.add(j)
            stack.extend(o for out in nodes[j].output for o in consumers[out])
        return seen

    starts = [
        i for i, n in enumerate(nodes) if n.domain in ("", "ai.onnx") and n.op_type in WEIGHTED
    ]
    walks = {i: walk(i, set()) for i in starts}
    # a grid generator written as one Gemm (stn-deploy optimize's affine-grid-gemm: θ x M):
    # weighted, but it reads θ straight from its producer (through shape ops only) and feeds a
    # sampler, so the walk from θ goes through it
    constants = constant_names(model)
    producers = {out: i for i, n in enumerate(nodes) for out in n.output}

    def from_weighted(name: str) -> bool:
        k = producers.get(name)
        while k is not None and nodes[k].op_type in SHAPE_OPS:
            k = producers.get(nodes[k].input[0])
        return k is not None and nodes[k].op_type in WEIGHTED

    grid_gemms = {
        i
        for i in starts
        if nodes[i].op_type == "Gemm"
        and any(x in constants for x in nodes[i].input[1:2])
        and from_weighted(nodes[i].input[0])
        and any(nodes[j].op_type in SAMPLER_OPS for j in walks[i])
    }
    region: set[int] = set()
    for i in starts:
        seen = walk(i, grid_gemms) if grid_gemms else walks[i]
        if any(nodes[j].op_type in SAMPLER_OPS for j in seen):
            region |= seen | {i}
    # the sampler's other inputs: what it reads the image through (the portable form's Pad,
    # Shape, Reshape of the image) up to a graph input, a weighted node or the region
    thetas = {i for i in region if nodes[i].op_type in WEIGHTED}
    stack = [j for j in region if j not in thetas]
    while stack:
        j = stack.pop()
        for name in nodes[j].input:
            k = producers.get(name)
            if k is None or k in region or nodes[k].op_type in WEIGHTED:
                continue
            region.add(k)
            stack.append(k)
    return region


def localization_nodes(model: onnx.ModelProto) -> set[int]:
    """Indices of the weighted nodes (Conv/Gemm/MatMul with a constant) that compute θ: the
    θ producers' ancestors up to the graph inputs or an earlier sampler's region."""
    nodes = list(model.graph.node)
    region = float_region(model)
    producers = {out: i for i, n in enumerate(nodes) for out in n.output}
    constants = constant_names(model)
    thetas = [i for i in region if nodes[i].op_type in WEIGHTED]
    seen: set[int] = set()
    stack = list(thetas)
    while stack:
        j = stack.pop()
        for name in nodes[j].input:
            k = producers.get(name)
            if k is None or k in seen or k in region:
                continue
            seen.add(k)
            stack.append(k)
    return {i for i in seen if is_weighted(nodes[i], constants)}
