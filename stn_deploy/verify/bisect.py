"""``verify --bisect``: name the first node whose output diverges beyond tolerance.

Two cases, told apart by which side agrees with the reference:

- **runtime divergence** (a runtime computes the same file differently): the candidate runtime
  and an oracle runtime (ONNX Runtime CPU, or the onnx reference evaluator when the candidate is
  ORT CPU) run the same graph with every intermediate tensor exposed as an output
  (:mod:`.expose`); the first node, in topological order, whose output differs beyond the
  tolerance is named.
- **model divergence** (the file itself is wrong, e.g. a tampered weight or attribute: runtimes
  agree with each other but not with torch): the torch reference is exported again with the
  file's ``export_args`` metadata (:func:`export_args_from`) by the caller's re-export callable
  (:data:`~stn_deploy.verify.options.Reexport`; verify never imports torch); our exports are
  deterministic, so tensor names match, and the intermediate tensors of the re-export and of the
  file are compared by name on one runtime. Initializers and node attributes that differ are
  listed too.

Without torch a model divergence cannot be bisected (there is nothing to re-export); the
result says so. :func:`bisect_failure` picks the case for one failing runtime.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx

from stn_deploy.errors import StnDeployError
from stn_deploy.verify import sessions
from stn_deploy.verify.compare import OutputComparison
from stn_deploy.verify.expose import node_outputs, with_outputs
from stn_deploy.verify.tolerances import Tolerance

OpenFn = Callable[..., Any]
#: rows of the failing input set that --bisect runs (the reference evaluator is slow)
BISECT_ROWS = 2


@dataclass
class Divergence:
    """The first node whose output is beyond tolerance."""

    node: str
    op_type: str
    index: int
    inputs: list[str]
    output: str
    comparison: OutputComparison
    #: tensors compared before this one that agreed
    agreed_before: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["comparison"] = self.comparison.to_dict()
        return d


@dataclass
class BisectResult:
    kind: str  # "runtime", "model" or "undecided"
    candidate: str
    oracle: str
    input_set: str
    rows: list[int]
    compared: int = 0
    first: Divergence | None = None
    #: model divergence: initializers whose values differ from the re-export
    initializers: list[str] = field(default_factory=list)
    #: model divergence: nodes whose op type or attributes differ from the re-export
    nodes: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["first"] = self.first.to_dict() if self.first else None
        return d

    def summary(self) -> str:
        if self.first is None:
            return self.note or "no intermediate tensor diverges"
        f, s = self.first, self.first.comparison.stats
        what = f"max abs {s.max_abs:.3g}" if s else self.first.comparison.reason
        return (
            f"{self.kind} divergence at node {f.node!r} ({f.op_type}, #{f.index}, inputs "
            f"{', '.join(f.inputs)}): output {f.output!r} {what} vs {self.oracle}"
        )


def first_divergence(
    model: onnx.ModelProto,
    candidate: dict[str, np.ndarray],
    oracle: dict[str, np.ndarray],
    tol: Tolerance,
) -> tuple[Divergence | None, int]:
    """Walk ``model``'s nodes in order; the first output present in both dicts and beyond
    ``tol``, and how many tensors were compared."""
    compared = 0
    for index, node, out in node_outputs(model):
        if out not in candidate or out not in oracle:
            continue
        a, b = np.asarray(oracle[out]), np.asarray(candidate[out])
        comp = tol.compare(a, b, name=out)
        if not comp.passed:
            return (
                Divergence(node.name, node.op_type, index, list(node.input), out, comp, compared),
                compared + 1,
            )
        compared += 1
    return None, compared


def _run_exposed(open_fn: OpenFn, runtime: str, model: onnx.ModelProto, feeds) -> dict:
    session = open_fn(runtime, with_outputs(model))
    return session.run(feeds)


def bisect_runtime(
    model: onnx.ModelProto,
    candidate: str,
    oracle: str,
    feeds: dict[str, np.ndarray],
    tol: Tolerance,
    *,
    open_fn: OpenFn,
    input_set: str = "",
    rows: list[int] | None = None,
) -> BisectResult:
    """Candidate runtime vs oracle runtime on the same graph, all intermediates exposed."""
    res = BisectResult("runtime", candidate, oracle, input_set, rows or [])
    cand = _run_exposed(open_fn, candidate, model, feeds)
    orac = _run_exposed(open_fn, oracle, model, feeds)
    res.first, res.compared = first_divergence(model, cand, orac, tol)
    if res.first is None:
        res.note = (
            f"{candidate} and {oracle} agree on all {res.compared} intermediate tensors: the "
            "divergence is in a graph output"
        )
    return res


def export_args_from(meta: dict[str, str], model: onnx.ModelProto) -> dict[str, Any]:
    """``export_model`` keyword arguments that make ``model`` again: the ``export_args``
    metadata, or (files written before it was recorded) lowering, target, opset and outputs.
    A file that does not record its exporter was written by the TorchScript exporter, the
    default until the dynamo exporter became it (tensor names differ between the two)."""
    if "export_args" in meta:
        try:
            args = dict(json.loads(meta["export_args"]))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise StnDeployError("the model's export_args metadata is not a JSON object") from exc
        return {"exporter": "torchscript", **args}
    lowering = meta.get("lowering")
    if not lowering:
        raise StnDeployError(
            "cannot re-export for {bisect}: the file has no stn-deploy export metadata "
            "(stn_deploy.export_args or stn_deploy.lowering)",
            param="bisect",
        )
    outputs = [o.name for o in model.graph.output]
    dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    dynamic = not (dims and dims[0].HasField("dim_value"))
    return {
        "target": meta.get("target", "ort-cpu"),
        # a separable file was exported with the target's sampler for any other STN
        "sampler": None
        if lowering == "separable"
        else ("custom" if lowering == "custom-inline" else lowering),
        "opset": int(meta["opset"]) if meta.get("opset") else None,
        "inline": lowering == "custom-inline",
        "expose_stn": "theta" in outputs,
        "dynamic_batch": dynamic,
        "separable": True,
        "exporter": "torchscript",
    }


def differing_initializers(a: onnx.ModelProto, b: onnx.ModelProto) -> list[str]:
    """Names of initializers whose values (or presence) differ between ``a`` and ``b``."""
    from onnx import numpy_helper

    ia = {i.name: i for i in a.graph.initializer}
    ib = {i.name: i for i in b.graph.initializer}
    out = []
    for name in sorted(set(ia) | set(ib)):
        if name not in ia or name not in ib:
            out.append(name)
            continue
        x, y = numpy_helper.to_array(ia[name]), numpy_helper.to_array(ib[name])
        if x.shape != y.shape or not np.array_equal(x, y):
            out.append(name)
    return out


def differing_nodes(a: onnx.ModelProto, b: onnx.ModelProto) -> list[str]:
    """``"name (op): what differs"`` for same-named nodes whose op type or attributes differ."""
    nb = {n.name: n for n in b.graph.node if n.name}
    out = []
    for n in a.graph.node:
        m = nb.get(n.name)
        if m is None or n.op_type == "Constant":
            continue
        if n.op_type != m.op_type or n.domain != m.domain:
            out.append(
                f"{n.name} ({n.op_type}): op {n.domain or 'ai.onnx'}.{n.op_type} vs {m.op_type}"
            )
            continue
        attrs_a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        attrs_b = {x.name: onnx.helper.get_attribute_value(x) for x in m.attribute}
        diffs = [
            f"{k}={_show(attrs_a.get(k))} (re-export: {_show(attrs_b.get(k))})"
            for k in sorted(set(attrs_a) | set(attrs_b))
            if _show(attrs_a.get(k)) != _show(attrs_b.get(k))
        ]
        if diffs:
            out.append(f"{n.name} ({n.op_type}): {', '.join(diffs)}")
    return out


def _show(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, onnx.TensorProto):
        return repr(onnx.numpy_helper.to_array(v).tolist())
    return repr(v)


def bisect_model(
    model: onnx.ModelProto,
    reexported: onnx.ModelProto,
    runtime: str,
    feeds: dict[str, np.ndarray],
    tol: Tolerance,
    *,
    open_fn: OpenFn,
    candidate: str = "",
    input_set: str = "",
    rows: list[int] | None = None,
) -> BisectResult:
    """The file vs a fresh re-export of the torch reference, both on ``runtime``, by tensor name."""
    res = BisectResult(
        "model", candidate or runtime, f"re-export from torch (on {runtime})", input_set, rows or []
    )
    res.initializers = differing_initializers(model, reexported)
    res.nodes = differing_nodes(model, reexported)
    mine = _run_exposed(open_fn, runtime, model, feeds)
    theirs = _run_exposed(open_fn, runtime, reexported, feeds)
    res.first, res.compared = first_divergence(model, mine, theirs, tol)
    if res.first is None:
        res.note = "the file and its re-export agree on every intermediate tensor"
    return res


# ---------------------------------------------------------------------------- one failing runtime
def inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its model-local functions written in place (``onnx.inliner``), so that
    bisect walks the nodes inside them (a custom lowering's sampler is a function call);
    ``model`` itself when it has none. Inlining is deterministic: a file and its re-export get
    the same tensor names."""
    if not model.functions:
        return model
    from stn_deploy.runtimes.base import load_inlined

    try:
        return load_inlined(model)
    except Exception as exc:  # onnx.inliner on a malformed function
        raise StnDeployError(f"cannot inline the model's functions: {exc}") from exc


def worst_rows(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], k: int) -> list[int]:
    """The ``k`` rows (sorted) whose first output is furthest from the reference's."""
    name = next(iter(ref))
    r, o = np.asarray(ref[name], np.float64), np.asarray(out[name], np.float64)
    err = np.abs(o - r).reshape(len(r), -1)
    err = np.where(np.isfinite(err), err, np.inf).max(1)
    return sorted(int(i) for i in np.argsort(-err, kind="stable")[:k])


def bisect_failure(
    result: Any,
    subject: Any,
    sets: list[Any],
    references: dict[str, dict[str, np.ndarray]],
    outputs: dict[str, dict[str, np.ndarray]],
    compare: Any,
    *,
    reexport: Callable[[dict[str, Any]], onnx.ModelProto] | None = None,
    threads: int | None = None,
) -> dict[str, Any] | None:
    """The report's ``bisect`` of failing runtime ``result`` (a ``RuntimeResult``): on the
    worst rows of its first failing gated input set, against a re-export (``reexport``, when
    the runtime computes it right: the file is wrong) or else an oracle runtime. ``outputs``:
    the runtime's raw outputs per set; ``compare``: the compare function (its tolerances).
    None when no failing input set has outputs to bisect."""
    s = next((x for x in result.sets if not x and x.gated and x.input_set in outputs), None)
    if s is None:
        return None
    rows = worst_rows(
        references[s.input_set], outputs[s.input_set], subject.fixed_batch or BISECT_ROWS
    )
    feeds = {k: v[rows] for k, v in next(x for x in sets if x.name == s.input_set).feeds.items()}
    ref_rows = {k: np.asarray(v)[rows] for k, v in references[s.input_set].items()}

    def open_fn(name, model):
        return sessions.open_runtime(name, model, threads=threads)

    def agrees(out: dict[str, np.ndarray]) -> bool:
        return all(compare.tolerance_for(k).compare(v, out[k]) for k, v in ref_rows.items())

    where = {"open_fn": open_fn, "input_set": s.input_set, "rows": rows}
    tol, proto = compare.tolerance, inline_functions(subject.proto)
    try:
        if reexport is not None:
            re = inline_functions(reexport(export_args_from(subject.meta, subject.proto)))
            if agrees(open_fn(result.name, re).run(feeds)):
                res = bisect_model(proto, re, result.name, feeds, tol, **where)
                return {**res.to_dict(), "summary": res.summary()}
        oracle = sessions.first_available(besides=result.name)
        if oracle is None:
            return {
                "summary": "no oracle runtime (ORT CPU or the reference evaluator) to bisect against"
            }
        if not agrees(open_fn(oracle, proto).run(feeds)) and reexport is None:
            res = BisectResult("undecided", result.name, oracle, s.input_set, rows)
            res.note = (
                f"{oracle} disagrees with the reference too: the file itself differs from its "
                "reference; give --reference to bisect it against a re-export from torch"
            )
            return {**res.to_dict(), "summary": res.note}
        res = bisect_runtime(proto, result.name, oracle, feeds, tol, **where)
        return {**res.to_dict(), "summary": res.summary()}
    except StnDeployError as exc:
        return {"summary": f"bisect failed: {exc}"}
