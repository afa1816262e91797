"""A mutable view of one ONNX graph for the rewrite passes (onnx + numpy, no torch).

:class:`Graph` copies a model, indexes producers and consumers, reads constants (initializers
and ``Constant`` nodes alike), hands out fresh names, replaces a run of nodes by new ones at the
position of the last (so the node list stays topologically sorted) and drops dead nodes. Passes
keep the names of the tensors they do not remove, so a site found on one model names the same
place in the model after another pass (see :mod:`stn_deploy.optimize.passes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of ``node``'s attribute ``name`` (bytes decoded), or ``default``."""
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def opset(model: onnx.ModelProto) -> int:
    """The model's default-domain (``ai.onnx``) opset."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return 1


class Graph:
    """A copy of ``model`` with its main graph indexed for rewriting."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.g = self.model.graph
        self.opset = opset(self.model)
        self._names: set[str] = set()
        self._count = 0
        self.reindex()

    # ----------------------------------------------------------------- indexes
    def reindex(self) -> None:
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.inits = {t.name: t for t in self.g.initializer}
        self.outputs = {o.name for o in self.g.output}
        names = set(self.inits) | {i.name for i in self.g.input}
        for node in self.g.node:
            names.update(node.output)
            names.add(node.name)
            for out in node.output:
                self.producer[out] = node
            for name in _used_names(node):
                self.consumers.setdefault(name, []).append(node)
        self._names |= names

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        """The one node reading ``name`` when exactly one does and it is no graph output."""
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is an initializer or a ``Constant`` node's output
        (and not overridable as a graph input), else None."""
        if name in self.inits:
            if any(i.name == name for i in self.g.input):
                return None
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            a = node.attribute[0] if len(node.attribute) == 1 else None
            if a is not None and a.name == "value":
                return numpy_helper.to_array(a.t)
        return None

    # ------------------------------------------------------------------- edits
    def fresh(self, base: str) -> str:
        """A name not used in the graph yet."""
        while True:
            self._count += 1
            name = f"{base}__opt{self._count}"
            if name not in self._names:
                self._names.add(name)
                return name

    def add_const(self, base: str, value: np.ndarray) -> str:
        """A new initializer holding ``value``; its name."""
        name = self.fresh(base)
        self.g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        self.inits[name] = self.g.initializer[-1]
        return name

    def node(
        self, op: str, inputs: Sequence[str], outputs: Sequence[str], **attrs
    ) -> onnx.NodeProto:
        """A new node (not inserted: pass it to :meth:`replace`)."""
        return helper.make_node(op, list(inputs), list(outputs), name=self.fresh(op), **attrs)

    def replace(self, old: Iterable[onnx.NodeProto], new: Sequence[onnx.NodeProto]) -> None:
        """Remove the nodes ``old`` and insert ``new`` where the last of them stood."""
        old_ids = {id(n) for n in old}
        kept: list[onnx.NodeProto] = []
        at = 0
        for node in self.g.node:
            if id(node) in old_ids:
                at = len(kept)
            else:
                kept.append(node)
        kept[at:at] = list(new)
        copies = [_copy(n) for n in kept]
        del self.g.node[:]
        self.g.node.extend(copies)
        # a reused name may now hold another shape: let the runtime infer it again
        written = {o for n in new for o in n.output}
        stale = [v for v in self.g.value_info if v.name in written]
        for v in stale:
            self.g.value_info.remove(v)
        self.reindex()

    def prune(self) -> None:
        """Drop nodes whose outputs nothing reads, and initializers nothing reads."""
        while True:
            dead = [
                n
                for n in self.g.node
                if not any(o in self.outputs or self.consumers.get(o) for o in n.output if o)
            ]
            if not dead:
                break
            self.replace(dead, [])
        inputs = {i.name for i in self.g.input}
        used = {n for n in self.consumers} | self.outputs
        keep = [t for t in self.g.initializer if t.name in used or t.name in inputs]
        if len(keep) != len(self.g.initializer):
            del self.g.initializer[:]
            self.g.initializer.extend(keep)
            self.reindex()

    def finish(self) -> onnx.ModelProto:
        """The edited model, dead nodes dropped and stale intermediate shapes removed."""
        self.prune()
        known = {o for n in self.g.node for o in n.output}
        keep = [v for v in self.g.value_info if v.name in known]
        del self.g.value_info[:]
        self.g.value_info.extend(keep)
        return self.model


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out


def _used_names(node: onnx.NodeProto) -> set[str]:
    """The tensors ``node`` reads: its inputs and what its subgraphs take from outer scopes."""
    used = {i for i in node.input if i}
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for sub in graphs:
            inner = {t.name for t in sub.initializer} | {i.name for i in sub.input}
            for n in sub.node:
                inner.update(n.output)
            for n in sub.node:
                used |= _used_names(n) - inner
            used |= {o.name for o in sub.output} - inner
    return used


def static_shape(model: onnx.ModelProto, name: str) -> list[int | None] | None:
    """``name``'s shape from ONNX shape inference (None per unknown dim), or None."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - a model shape inference cannot read: shape unknown
        return None
    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if v.name == name and v.type.tensor_type.HasField("shape"):
            dims = v.type.tensor_type.shape.dim
            return [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return None


def rewrite_sites(
    model: onnx.ModelProto,
    matches: Callable[[Graph], list[Any]],
    site: Callable[[Any], str],
    edit: Callable[[Graph, Any], None],
    sites: set[str] | None,
) -> tuple[onnx.ModelProto, int]:
    """Rewrite ``model``'s matches one at a time (matching again after each edit, as an edit
    renews the node objects): ``matches(g)`` lists them, ``site(m)`` names one, ``edit(g, m)``
    rewrites it. Only the named ``sites`` (all when None). Returns the copy and the count."""
    g = Graph(model)
    done: set[str] = set()
    while True:
        todo = [
            m for m in matches(g) if site(m) not in done and (sites is None or site(m) in sites)
        ]
        if not todo:
            return g.finish(), len(done)
        done.add(site(todo[0]))
        edit(g, todo[0])
