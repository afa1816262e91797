"""A small, deterministic ONNX graph builder (numpy + onnx only).

The lowerings in :mod:`stn_deploy.export` write their subgraphs through :class:`GraphBuilder`:
it hands out unique names from counters (so two builds with the same arguments give the same
bytes), stores constants as numpy arrays (as initializers, or as ``Constant`` nodes where a graph
cannot hold initializers, e.g. a function body), deduplicates identical constants, and hides the
few operator signatures that changed between opsets (``axes`` of the reductions, ``Squeeze`` and
``Unsqueeze`` moved from an attribute to an input).

Example:
    >>> import numpy as np
    >>> g = GraphBuilder(opset=11)
    >>> y = g.node("Add", ["x", g.const(np.float32(1.0))], name="y")
    >>> model = g.make_model(
    ...     [value_info("x", np.float32, ["N"])], [value_info(y, np.float32, ["N"])]
    ... )
    >>> [n.op_type for n in model.graph.node]
    ['Add']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from stn_deploy.errors import StnDeployError

#: ops whose ``axes`` moved from an attribute to an optional input, and the opset where it did.
_AXES_AS_INPUT_SINCE = {
    "ReduceSum": 13,
    "Squeeze": 13,
    "Unsqueeze": 13,
    "ReduceMean": 18,
    "ReduceProd": 18,
    "ReduceMax": 18,
    "ReduceMin": 18,
    "ReduceL1": 18,
    "ReduceL2": 18,
    "ReduceLogSum": 18,
    "ReduceLogSumExp": 18,
    "ReduceSumSquare": 18,
}

Shape = Sequence[int | str | None]


def subgraphs(node: onnx.NodeProto) -> Iterable[onnx.GraphProto]:
    """The graphs held in ``node``'s attributes (If branches, Loop/Scan bodies)."""
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def value_info(name: str, dtype: Any, shape: Shape | None) -> onnx.ValueInfoProto:
    """A graph input/output description: ``dtype`` is a numpy dtype, a dim is an int,
    a symbolic name (str) or None (unknown)."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return helper.make_tensor_value_info(name, elem, None if shape is None else list(shape))


class GraphBuilder:
    """Collects the nodes and constants of one ONNX graph.

    Args:
        opset: the ``ai.onnx`` opset the nodes are written for.
        prefix: prepended to every generated name (to keep a subgraph apart from its host).
        constants: ``"initializer"`` (default) or ``"node"`` (``Constant`` nodes, for function
            bodies and other graphs that cannot hold initializers).
        taken: names already used in the host graph, never handed out again.
    """

    def __init__(
        self,
        opset: int = 11,
        *,
        prefix: str = "",
        constants: str = "initializer",
        taken: Iterable[str] = (),
    ) -> None:
        if not isinstance(opset, int) or opset < 1:
            raise StnDeployError(f"opset must be a positive integer, got {opset!r}")
        if constants not in ("initializer", "node"):
            raise StnDeployError(f"constants must be 'initializer' or 'node', got {constants!r}")
        self.opset = opset
        self.prefix = prefix
        self.constants = constants
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.domains: dict[str, int] = {"": opset}
        self._taken: set[str] = set(taken)
        self._const_cache: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    # ------------------------------------------------------------------ names
    def unique(self, base: str) -> str:
        """A fresh name: ``prefix + base``, or with ``_1``, ``_2``, ... appended when taken."""
        stem = f"{self.prefix}{base}"
        name, k = stem, 0
        while name in self._taken:
            k += 1
            name = f"{stem}_{k}"
        self._taken.add(name)
        return name

    # -------------------------------------------------------------- constants
    def const(self, value: Any, dtype: Any = None, *, name: str = "c") -> str:
        """A constant tensor from a numpy array (or anything ``np.asarray`` takes).

        Python floats become float32 and ints int64 unless ``dtype`` says otherwise; identical
        constants (dtype, shape and bytes) share one name.
        """
        arr = np.asarray(value, dtype=dtype)
        if dtype is None and arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        arr = np.ascontiguousarray(arr)
        key = (arr.dtype.str, tuple(arr.shape), arr.tobytes())
        cached = self._const_cache.get(key)
        if cached is not None:
            return cached
        out = self.unique(name)
        tensor = numpy_helper.from_array(arr, out)
        if self.constants == "initializer":
            self.initializers.append(tensor)
        else:
            self.nodes.append(
                helper.make_node(
                    "Constant", [], [out], name=self.unique(f"{out}_node"), value=tensor
                )
            )
        self._const_cache[key] = out
        return out

    # ------------------------------------------------------------------ nodes
    def node(
        self,
        op: str,
        inputs: Sequence[str],
        *,
        name: str | None = None,
        n_outputs: int = 1,
        domain: str = "",
        **attrs: Any,
    ) -> str | list[str]:
        """Append one node; returns its output name (a list when ``n_outputs > 1``).

        ``name`` is a hint for the output name (default: the op name in lower case); an input
        ``""`` is an omitted optional input; ``attrs`` become ONNX attributes (None is skipped).
        """
        base = name or op.lower()
        outs = [self.unique(base if n_outputs == 1 else f"{base}_{i}") for i in range(n_outputs)]
        node = helper.make_node(
            op,
            list(inputs),
            outs,
            name=self.unique(f"{outs[0]}_node"),
            domain=domain or None,
            **{k: v for k, v in attrs.items() if v is not None},
        )
        self.nodes.append(node)
        return outs[0] if n_outputs == 1 else outs

    def with_axes(
        self, op: str, x: str, axes: Sequence[int], *, name: str | None = None, **attrs: Any
    ) -> str:
        """``op`` with ``axes`` as an attribute or as an input, whichever the opset wants
        (reductions, ``Squeeze``, ``Unsqueeze``)."""
        since = _AXES_AS_INPUT_SINCE.get(op)
        if since is None:
            raise StnDeployError(f"{op} does not take axes through GraphBuilder.with_axes")
        axes = [int(a) for a in axes]
        if self.opset >= since:
            return self.node(op, [x, self.const(np.asarray(axes, np.int64))], name=name, **attrs)
        return self.node(op, [x], name=name, axes=axes, **attrs)

    def rename(self, old: str, new: str) -> None:
        """Rename a value everywhere in the collected nodes (e.g. to a graph output's name)."""
        produced = {o for node in self.nodes for o in node.output}
        produced.update(t.name for t in self.initializers)
        if new != old and new in produced:
            raise StnDeployError(f"cannot rename {old!r} to {new!r}: the name is taken")
        for node in self.nodes:
            for i, v in enumerate(node.input):
                if v == old:
                    node.input[i] = new
            for i, v in enumerate(node.output):
                if v == old:
                    node.output[i] = new
        self._taken.add(new)

    # ----------------------------------------------------------------- output
    def make_graph(
        self,
        inputs: Sequence[onnx.ValueInfoProto],
        outputs: Sequence[onnx.ValueInfoProto],
        name: str = "graph",
    ) -> onnx.GraphProto:
        return helper.make_graph(
            list(self.nodes), name, list(inputs), list(outputs), initializer=list(self.initializers)
        )

    def make_model(
        self,
        inputs: Sequence[onnx.ValueInfoProto],
        outputs: Sequence[onnx.ValueInfoProto],
        name: str = "graph",
        *,
        doc_string: str = "",
    ) -> onnx.ModelProto:
        """A standalone model with the lowest IR version its opsets allow (so older runtimes
        load it); producer is stn-deploy."""
        from stn_deploy import __version__

        opsets = [helper.make_opsetid(d, v) for d, v in sorted(self.domains.items())]
        model = helper.make_model(
            self.make_graph(inputs, outputs, name),
            opset_imports=opsets,
            ir_version=helper.find_min_ir_version_for(opsets, ignore_unknown=True),
            producer_name="stn-deploy",
            producer_version=__version__,
        )
        if doc_string:
            model.doc_string = doc_string
        return model
