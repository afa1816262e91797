"""Run every runtime over the input sets, then compare (after Polygraphy's
``Comparator.run(runners, data_loader)`` and ``Comparator.compare_accuracy(results,
compare_func)``).

- :meth:`Comparator.run`: each :class:`~stn_deploy.verify.sessions.Runner` over the input sets
  (:func:`~stn_deploy.verify.inputs.load_input_sets`) -> one :class:`RunResult` per runtime (its
  raw outputs per set, or why it could not run);
- :class:`CompareFunc`: how one runtime's outputs on one input set are judged against the
  reference's -> a :class:`~stn_deploy.verify.report.SetResult` (per output an
  :class:`~stn_deploy.verify.compare.OutputComparison` with named statistics; both are true when
  they passed). :meth:`CompareFunc.simple` takes a tolerance and per-output tolerances;
- :meth:`Comparator.compare_accuracy`: the run results through a compare function -> one
  :class:`~stn_deploy.verify.report.RuntimeResult` per runtime, with its verdict.

Example:
    >>> import numpy as np
    >>> from stn_deploy.verify.inputs import InputSet
    >>> from stn_deploy.verify.tolerances import Tolerance
    >>> compare = CompareFunc.simple(Tolerance(1e-4, 1e-3), per_output={"theta": Tolerance(1e-2, 0)})
    >>> ref = {"log_probs": np.zeros((2, 3)), "theta": np.zeros((2, 6))}
    >>> res = compare(ref, {"log_probs": ref["log_probs"], "theta": ref["theta"] + 5e-3},
    ...               InputSet("random", {"image": np.zeros((2, 1))}, ""), "torch")
    >>> bool(res), [o.stats.max_abs for o in res.outputs]
    (True, [0.0, 0.005])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stn_deploy.errors import StnDeployError
from stn_deploy.runtimes import RuntimeUnavailable
from stn_deploy.verify.budget import RuntimeClock, TimeBudget, rows_of, run_within
from stn_deploy.verify.compare import OutputComparison, is_classifier_output
from stn_deploy.verify.inherent import K as INHERENT_K
from stn_deploy.verify.inputs import InputSet
from stn_deploy.verify.report import RuntimeResult, SetResult
from stn_deploy.verify.sessions import (
    PhaseError,
    Runner,
    first_batch,
    guarded,
    placement,
    run_batched,
)
from stn_deploy.verify.tolerances import Tolerance

if TYPE_CHECKING:
    from stn_deploy.verify.reference import References

#: labelled images below which the accuracy delta is reported but not gated (one image of 64
#: is already 1.6 points)
MIN_ACCURACY_IMAGES = 100

Outputs = dict[str, np.ndarray]
#: ``compare(reference outputs, runtime outputs, input set, reference label) -> SetResult``
CompareFn = Callable[[Outputs, Outputs, InputSet, str], SetResult]


# ---------------------------------------------------------------------------- compare functions
@dataclass(frozen=True)
class SimpleCompare:
    """Every output against its tolerance (:meth:`tolerance_for`); classifier outputs also by
    argmax agreement and, on labelled inputs, by accuracy (see :mod:`.tolerances`)."""

    tolerance: Tolerance
    per_output: Mapping[str, Tolerance] = field(default_factory=dict)
    num_classes: int | None = None
    min_accuracy_images: int = MIN_ACCURACY_IMAGES
    #: output name -> kind (:mod:`.outputs`: class-scores, image, theta, tensor); an output
    #: not listed is class scores when its shape says so (:func:`is_classifier_output`)
    kinds: Mapping[str, str] = field(default_factory=dict)
    #: an element also passes within ``k`` times its inherent float32 error (when the
    #: reference knows it, :mod:`.inherent`); None: the tolerance alone (fp16/int8 files)
    k: float | None = INHERENT_K

    def tolerance_for(self, output: str) -> Tolerance:
        return self.per_output.get(output, self.tolerance)

    def is_classifier(self, name: str, shape: tuple[int, ...]) -> bool:
        if name in self.kinds:
            return self.kinds[name] == "class-scores" and len(shape) == 2
        return is_classifier_output(name, shape, self.num_classes)

    def __call__(
        self,
        ref: Outputs,
        out: Outputs,
        s: InputSet,
        ref_label: str,
        inherent: Outputs | None = None,
    ) -> SetResult:
        """``out`` against ``ref`` on input set ``s``; ``inherent``: float32's own error per
        output and element (:mod:`.inherent`), when the reference knows it."""
        res = SetResult(s.name, ref_label, True)
        reasons = []
        for name, r in ref.items():
            if name not in out:
                res.passed = False
                reasons.append(f"no output {name!r}")
                continue
            comp = self.compare_output(name, r, out[name], s, res, (inherent or {}).get(name))
            res.outputs.append(comp)
            if not comp:
                res.passed = False
                reasons.append(f"{name}: {comp.reason}")
        res.reason = "; ".join(reasons)
        return res

    def compare_output(
        self, name, r, o, s: InputSet, res: SetResult, inh: np.ndarray | None = None
    ) -> OutputComparison:
        """One output; the first classifier output of a labelled set also sets ``res.accuracy``."""
        tol = self.tolerance_for(name)
        classifier = self.is_classifier(name, tuple(np.shape(r)))
        if self.k is None or np.shape(inh) != np.shape(r):
            inh = None
        extra = {"inherent": inh, "k": self.k} if inh is not None else {}
        comp = tol.compare(r, o, name=name, classifier=classifier, **extra)
        _gate_argmax(comp, tol, int(np.shape(r)[0]))
        if classifier and s.labels is not None and res.accuracy is None:
            res.accuracy = self._accuracy(r, o, s.labels, tol)
            drop = res.accuracy["reference"] - res.accuracy["candidate"]
            if res.accuracy["gated"] and drop > tol.max_accuracy_drop:
                comp.passed = False
                comp.reason = (comp.reason + "; " if comp.reason else "") + (
                    f"accuracy {res.accuracy['candidate']:.1f}% is {drop:.1f} pt below the "
                    "reference's"
                )
        return comp

    def _accuracy(self, r, o, labels: np.ndarray, tol: Tolerance) -> dict[str, Any]:
        acc_r = 100 * float(np.mean(np.asarray(r).argmax(1) == labels))
        acc_c = 100 * float(np.mean(np.asarray(o).argmax(1) == labels))
        return {
            "reference": acc_r,
            "candidate": acc_c,
            "delta": acc_c - acc_r,
            "images": len(labels),
            "gated": tol.max_accuracy_drop is not None and len(labels) >= self.min_accuracy_images,
        }


def _gate_argmax(comp: OutputComparison, tol: Tolerance, rows: int) -> None:
    """Fail a passing classifier output whose argmax flips exceed the tolerance's (one flip
    is always noise)."""
    if comp.argmax_agreement is None or tol.min_argmax_agreement is None or not comp:
        return
    flips = round((1 - comp.argmax_agreement) * rows)
    allowed = max(1, int((1 - tol.min_argmax_agreement) * rows))
    if flips > allowed:
        comp.passed = False
        comp.reason = (
            f"argmax agreement {comp.argmax_agreement:.1%} < {tol.min_argmax_agreement:.0%}"
        )


class CompareFunc:
    """Factories of compare functions (:data:`CompareFn`)."""

    @staticmethod
    def simple(
        tolerance: Tolerance,
        *,
        per_output: Mapping[str, Tolerance] | None = None,
        num_classes: int | None = None,
        kinds: Mapping[str, str] | None = None,
        k: float | None = INHERENT_K,
    ) -> SimpleCompare:
        """Hold each output to ``per_output[name]``, else ``tolerance``, or within ``k``
        times its inherent error (None: not)."""
        return SimpleCompare(
            tolerance, dict(per_output or {}), num_classes, kinds=dict(kinds or {}), k=k
        )


# ---------------------------------------------------------------------------- run, then compare
@dataclass
class RunResult:
    """One runtime over the input sets: its raw outputs per set, or why it did not run."""

    name: str
    status: str = "ran"  # ran | unavailable | error | skipped (the time budget ran out)
    reason: str = ""
    info: dict[str, Any] | None = None
    outputs: dict[str, Outputs] = field(default_factory=dict)
    #: input sets it could not run: why
    errors: dict[str, str] = field(default_factory=dict)
    placement: dict[str, Any] | None = None
    #: input sets run on their first rows only (the time budget): how many
    rows: dict[str, int] = field(default_factory=dict)
    #: what the time budget cut, and seconds per input set
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


class Comparator:
    @staticmethod
    def run(
        runners: Sequence[Runner],
        input_sets: Sequence[InputSet],
        *,
        skip: Mapping[str, set[str]] | None = None,
        strict_placement: bool = False,
        budget: TimeBudget | None = None,
    ) -> list[RunResult]:
        """Each runner over every input set but ``skip[runner name]`` (those it is the
        reference of), within ``budget`` (:mod:`.budget`); placement is asked on the first
        set. A runtime that fails to load, run or answer the placement probe is an ``error``
        whose reason names the phase."""
        budget = budget or TimeBudget()
        return [
            _run_one(r, input_sets, (skip or {}).get(r.name, set()), strict_placement, budget)
            for r in runners
        ]

    @staticmethod
    def compare_accuracy(
        run_results: Sequence[RunResult],
        input_sets: Sequence[InputSet],
        references: References,
        compare_func: CompareFn,
        *,
        strict_placement: bool = False,
    ) -> list[RuntimeResult]:
        """Every run result against ``references`` through ``compare_func``: a runtime fails
        on a gated input set that failed, or (``strict_placement``) a node that fell back."""
        return [
            _judge(run, input_sets, references, compare_func, strict_placement)
            for run in run_results
        ]


def _run_one(runner: Runner, sets, skip: set[str], strict_placement: bool, budget) -> RunResult:
    if runner.unavailable:
        return RunResult(runner.name, "unavailable", runner.unavailable)
    try:
        session = guarded(runner.name, "load", runner.activate)
    except RuntimeUnavailable as exc:
        return RunResult(runner.name, "unavailable", str(exc))
    except PhaseError as exc:
        return RunResult(runner.name, "error", str(exc))
    except StnDeployError as exc:
        return RunResult(runner.name, "error", f"load failed: {exc}")
    run = RunResult(runner.name, info=session.info.to_dict())
    clock = RuntimeClock(budget.limit_for(runner.name))
    estimate = getattr(session, "estimate_seconds_per_image", None)
    if clock.limit is not None and callable(estimate):
        clock.estimate = estimate() or None  # 0: nothing slow known, the first call tells
    todo = [s for s in sets if s.name not in skip]
    batch = session.inputs[0].fixed_batch() if session.inputs else None
    for i, s in enumerate(todo):
        phase = f"run on the {s.name} inputs"
        try:
            got = run_within(
                clock,
                lambda f, phase=phase: guarded(runner.name, phase, run_batched, session, f),
                s.feeds,
                s.count,
                batch,
                len(todo) - i,
            )
        except StnDeployError as exc:
            run.errors[s.name] = str(exc) if isinstance(exc, PhaseError) else f"{phase}: {exc}"
            continue
        run.seconds[s.name] = got.seconds
        if got.outputs is not None:
            run.outputs[s.name] = got.outputs
        if got.rows < s.count:
            run.rows[s.name] = got.rows
            run.notes.append(f"{s.name} inputs: {got.note}")
        budget.say(
            f"verify: {runner.name:<10} {s.name:<7} {got.rows}/{s.count} images "
            f"{got.seconds:6.2f} s"
        )
    if run.errors:
        run.status, run.reason = "error", next(iter(run.errors.values()))
        return run
    if not run.outputs and todo:  # the budget did not pay for one image
        run.status, run.reason = "skipped", run.notes[0].split(": ", 1)[-1] if run.notes else ""
        return run
    try:
        run.placement = placement(session, first_batch(session, sets[0].feeds), strict_placement)
    except PhaseError as exc:
        run.status, run.reason = "error", str(exc)
    return run


def _judge(run: RunResult, sets, references: References, compare, strict_placement: bool):
    if run.status in ("unavailable", "skipped") or (run.status == "error" and not run.outputs):
        return RuntimeResult(run.name, run.status, run.reason, info=run.info)
    r = RuntimeResult(run.name, "passed", info=run.info, placement=run.placement)
    r.notes = list(run.notes)
    for s in sets:
        label = references.labels[s.name]
        if s.name in run.errors:
            r.sets.append(SetResult(s.name, label, False, run.errors[s.name]))
        elif s.name in run.outputs:
            rows = run.rows.get(s.name)
            ref = references.outputs[s.name]
            sub = s if rows is None else s.first(rows)
            extra = references.extras(s.name) if hasattr(references, "extras") else {}
            if rows is not None:
                ref, extra = rows_of(ref, rows), rows_of(extra, rows) if extra else extra
            res = compare(
                ref, run.outputs[s.name], sub, label, **({"inherent": extra} if extra else {})
            )
            res.gated = s.name in references.gated
            res.rows = rows
            r.sets.append(res)
    if run.status == "error":
        r.status, r.reason = "error", run.reason
        return r
    reasons = [f"{s.input_set} inputs: {s.reason}" for s in r.sets if not s.passed and s.gated]
    fallbacks = (r.placement or {}).get("fallbacks")
    if fallbacks and strict_placement:
        reasons.append(
            f"--strict-placement: {len(fallbacks)} nodes not on {r.placement['primary']}"
        )
    if reasons:
        r.status, r.reason = "failed", "; ".join(reasons)
    return r
