"""The result of ``verify``: per runtime, per input set, per output; JSON and a text table.

JSON schema ``stn-deploy/verify-v1`` (:meth:`VerifyReport.to_dict`)::

    schema        "stn-deploy/verify-v1"
    passed        true only when every requested runtime passed (and at least one ran)
    model         {path, sha256, precision, lowering, opset, inputs: [{name, dtype, shape}],
                   outputs: [...], output_kinds: {output: class-scores | image | theta |
                   tensor}}
    reference     {kind: "torch" | "golden" | "reference-model", description, secondary: runtime name | null,
                   note}
    tolerance     {atol, rtol, check_error_stat, quantile, min_argmax_agreement,
                   max_accuracy_drop, inherent_k: k | null,
                   per_output: {output: {atol, ...}} (only when given)}
    input_sets    [{name, description, count, reference, inherent: [output, ...]}]
                  reference: what it is compared with; inherent: outputs whose float32 error
                  on these inputs is known (the reference in float64)
    skipped_input_sets  {name: why}
    runtimes      [{name, status: passed | failed | error | unavailable | skipped, reason,
                    info: {name, library, version, device, providers, extra} | null,
                    sets: [{input_set, reference, passed, gated, rows (null: all), reason,
                            accuracy: {reference, candidate, delta, images, gated} | null  (percent)
                            outputs: [{output, shape, passed, reason, argmax_agreement,
                                       nonfinite: {candidate_nan, ...},
                                       histogram: [[label, count], ...],
                                       stats: {max_abs, mean_abs, median_abs, p99_abs,
                                               max_rel, mean_rel, median_rel, p99_rel,
                                               quantile_abs, quantile_rel, mismatches,
                                               elements, inherent_max,
                                               passed_by_inherent}}]}],
                    notes: [str]   (what the time budget cut),
                    placement: {reported, primary, nodes, fallbacks: [{node, op_type,
                                provider}], strict} | null,
                    bisect: {kind, candidate, oracle, input_set, rows, compared, first:
                             {node, op_type, index, inputs, output, comparison,
                              agreed_before} | null, initializers, nodes, note} | null}]
    stn           {input_set: {source, points, outside_fraction, abs_max, ...}}  (sampler grid)
    warnings      [str]

Floats are plain JSON numbers; an infinite relative error is written as the string "inf".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from stn_deploy.verify.compare import OutputComparison, format_histogram

SCHEMA = "stn-deploy/verify-v1"


@dataclass
class SetResult:
    """One runtime on one input set."""

    input_set: str
    reference: str
    passed: bool
    reason: str = ""
    outputs: list[OutputComparison] = field(default_factory=list)
    accuracy: dict[str, float] | None = None
    #: False: reported only (out-of-distribution inputs of an fp16/int8 file vs fp32)
    gated: bool = True
    #: compared on the first ``rows`` only (the time budget cut the set short); None: all
    rows: int | None = None

    def __bool__(self) -> bool:
        """True when every output passed on this input set."""
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_set": self.input_set,
            "reference": self.reference,
            "passed": self.passed,
            "gated": self.gated,
            "rows": self.rows,
            "reason": self.reason,
            "accuracy": self.accuracy,
            "outputs": [o.to_dict() for o in self.outputs],
        }


@dataclass
class RuntimeResult:
    name: str
    status: str  # passed | failed | error | unavailable | skipped (its time budget ran out)
    reason: str = ""
    info: dict[str, Any] | None = None
    sets: list[SetResult] = field(default_factory=list)
    placement: dict[str, Any] | None = None
    bisect: dict[str, Any] | None = None
    #: what its time budget cut (input sets run on a subset, or not at all)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def short_reason(self) -> str:
        """The reason in a few words: which input sets failed (details are in the table)."""
        if self.status != "failed":
            return self.reason
        bad = [s.input_set for s in self.sets if not s.passed and s.gated]
        parts = [f"differs from the reference on the {', '.join(bad)} inputs"] if bad else []
        if self.placement and self.placement.get("strict") and self.placement.get("fallbacks"):
            parts.append(f"{len(self.placement['fallbacks'])} nodes fell back (--strict-placement)")
        if any(
            o.nonfinite.get("candidate_nan") or o.nonfinite.get("candidate_inf")
            for s in self.sets
            for o in s.outputs
        ):
            parts.append("NaN/Inf in its outputs")
        return "; ".join(parts) or self.reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "info": self.info,
            "sets": [s.to_dict() for s in self.sets],
            "placement": self.placement,
            "bisect": self.bisect,
            "notes": self.notes,
        }


@dataclass
class VerifyReport:
    model: dict[str, Any]
    reference: dict[str, Any]
    tolerance: dict[str, Any]
    input_sets: list[dict[str, Any]]
    runtimes: list[RuntimeResult]
    skipped_input_sets: dict[str, str] = field(default_factory=dict)
    stn: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: runtimes asked for by name: an unavailable one fails the report only under --strict,
    #: which verify_model turns into an error before running anything
    strict: bool = False

    @property
    def passed(self) -> bool:
        ran = [r for r in self.runtimes if r.status not in ("unavailable", "skipped")]
        return bool(ran) and all(r.passed for r in ran)

    def failures(self) -> list[str]:
        """One phrase per runtime that did not pass (or why nothing ran)."""
        out = [
            f"{r.name}: {r.short_reason()}"
            for r in self.runtimes
            if r.status in ("failed", "error")
        ]
        if not any(r.status not in ("unavailable", "skipped") for r in self.runtimes):
            out.append("no runtime could run here (or within its time budget)")
        return out

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(
            {
                "schema": SCHEMA,
                "passed": self.passed,
                "model": self.model,
                "reference": self.reference,
                "tolerance": self.tolerance,
                "input_sets": self.input_sets,
                "skipped_input_sets": self.skipped_input_sets,
                "runtimes": [r.to_dict() for r in self.runtimes],
                "stn": self.stn,
                "warnings": self.warnings,
            }
        )


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _g(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:.2e}" if v else "0"


def format_table(report: VerifyReport | dict[str, Any], *, histograms: bool = True) -> str:
    """A readable text report of :meth:`VerifyReport.to_dict` (or the report itself)."""
    d = report.to_dict() if isinstance(report, VerifyReport) else report
    lines = _header_lines(d)
    notes: list[str] = []
    for r in d["runtimes"]:
        lines += _runtime_rows(r, notes)
        notes += _runtime_notes(r)
    if (d["model"].get("precision") or "fp32") != "fp32":
        lines.append("")
        lines += [line for r in d["runtimes"] if (line := _headline(r))]
    if d.get("stn"):
        lines.append("")
        lines += [f"stn {name:<7} {st['summary']}" for name, st in d["stn"].items()]
    if histograms:
        for r in d["runtimes"]:
            lines += _histogram_lines(r)
    if notes:
        lines += [""] + notes
    lines += ["", "PASSED" if d["passed"] else "FAILED"]
    return "\n".join(lines)


def _header_lines(d: dict[str, Any]) -> list[str]:
    """Model, reference, tolerance, input sets, then the table's head."""
    m, ref, tol = d["model"], d["reference"], d["tolerance"]
    lines = [
        f"model:     {m['path']} ({m.get('lowering') or '?'} lowering, opset "
        f"{m.get('opset') or '?'}, {m.get('precision') or 'fp32'})",
        f"reference: {ref['description']}",
    ]
    kinds = m.get("output_kinds") or {}
    if kinds:
        lines.insert(1, "outputs:   " + ", ".join(f"{n} ({k})" for n, k in kinds.items()))
    if ref.get("note"):
        lines.append(f"           {ref['note']}")
    gates = [f"atol {tol['atol']:g}", f"rtol {tol['rtol']:g}", tol["check_error_stat"]]
    if tol["check_error_stat"] == "quantile":
        gates[-1] += f" {tol['quantile']:g}"
    if tol.get("min_argmax_agreement") is not None:
        gates.append(f"argmax agreement >= {tol['min_argmax_agreement']:.0%}")
    if tol.get("max_accuracy_drop") is not None:
        gates.append(f"accuracy drop <= {tol['max_accuracy_drop']:g} pt")
    if tol.get("inherent_k") is not None:
        gates.append(f"or <= {tol['inherent_k']:g} x the inherent float32 error (where known)")
    lines.append(f"tolerance: {', '.join(gates)}")
    for name, t in (tol.get("per_output") or {}).items():
        lines.append(
            f"           {name}: atol {t['atol']:g}, rtol {t['rtol']:g}, {t['check_error_stat']}"
        )
    for s in d["input_sets"]:
        lines.append(f"inputs:    {s['name']:<7} {s['description']} (vs {s['reference']})")
    for name, why in d["skipped_input_sets"].items():
        lines.append(f"inputs:    {name:<7} skipped: {why}")
    lines.append("")
    head = (
        f"{'runtime':<10}{'inputs':<8}{'output':<10}{'max abs':>9}{'mean abs':>10}"
        f"{'median':>10}{'p99 abs':>10}{'max rel':>10}{'inherent':>10}{'argmax':>8}"
        f"{'acc %':>13}  result"
    )
    return lines + [head, "-" * len(head)]


def _runtime_rows(r: dict[str, Any], notes: list[str]) -> list[str]:
    """The table's rows of one runtime (why a set failed goes to ``notes``)."""
    if r["status"] in ("unavailable", "error", "skipped") and not r["sets"]:
        word = {"unavailable": "not available", "skipped": "skipped"}.get(r["status"], "ERROR")
        return [f"{r['name']:<10}{'':<8}{'':<10}  {word}: {r['reason']}"]
    lines = []
    for s in r["sets"]:
        if not s["outputs"]:
            lines.append(f"{r['name']:<10}{s['input_set']:<8}{'':<10}  FAIL: {s['reason']}")
        for o in s["outputs"]:
            st = o.get("stats") or {}
            agree = o.get("argmax_agreement")
            acc = s.get("accuracy") if o is s["outputs"][0] else None
            acc_s = f"{acc['candidate']:.1f} ({acc['delta']:+.1f})" if acc else "-"
            ok = "ok" if o["passed"] else ("FAIL" if s.get("gated", True) else "beyond (info)")
            lines.append(
                f"{r['name']:<10}{s['input_set']:<8}{o['output'][:9]:<10}"
                f"{_g(st.get('max_abs')):>9}{_g(st.get('mean_abs')):>10}"
                f"{_g(st.get('median_abs')):>10}{_g(st.get('p99_abs')):>10}"
                f"{_g(st.get('max_rel')):>10}{_g(st.get('inherent_max')):>10}"
                f"{(f'{agree:.1%}' if agree is not None else '-'):>8}{acc_s:>13}  {ok}"
                + (
                    f" ({st['passed_by_inherent']} within k x inherent)"
                    if st.get("passed_by_inherent")
                    else ""
                )
                + (f" [first {s['rows']}]" if s.get("rows") is not None else "")
            )
        if s["outputs"] and not s["passed"] and s["reason"]:
            info = "" if s.get("gated", True) else " (reported, not gated)"
            notes.append(f"{r['name']} on {s['input_set']}{info}: {s['reason']}")
    return lines


def _runtime_notes(r: dict[str, Any]) -> list[str]:
    """Placement, bisect and the verdict of one runtime (that ran)."""
    if r["status"] in ("unavailable", "error", "skipped") and not r["sets"]:
        return []
    notes = [f"{r['name']}: {n}" for n in r.get("notes") or []]
    if r["status"] == "error":
        notes.append(f"{r['name']}: ERROR: {r['reason']}")
    pl = r.get("placement")
    if pl and pl.get("reported"):
        if pl["fallbacks"]:
            shown = ", ".join(
                f"{f['node']} ({f['op_type']}) on {f['provider']}" for f in pl["fallbacks"][:8]
            )
            more = f" and {len(pl['fallbacks']) - 8} more" if len(pl["fallbacks"]) > 8 else ""
            notes.append(
                f"{r['name']}: {len(pl['fallbacks'])} of {pl['nodes']} nodes not on "
                f"{pl['primary']}: {shown}{more}"
                + (" (--strict-placement: failure)" if pl.get("strict") else "")
            )
        else:
            notes.append(f"{r['name']}: all {pl['nodes']} nodes ran on {pl['primary']}")
    elif pl and pl.get("error"):
        notes.append(f"{r['name']}: placement not known: {pl['error']}")
    if r.get("bisect"):
        notes.append(f"{r['name']} bisect: {r['bisect']['summary']}")
        for extra in ("initializers", "nodes"):
            if r["bisect"].get(extra):
                notes.append(
                    f"  differs from the re-export ({extra}): {'; '.join(r['bisect'][extra][:6])}"
                )
    verdict = {"passed": "PASSED", "failed": "FAILED", "error": "FAILED"}.get(r["status"])
    if verdict and r["sets"]:
        notes.append(f"{r['name']}: {verdict}")
    return notes


def _agreement(sets: list[dict[str, Any]]) -> float | None:
    """Argmax agreement over the classifier outputs of ``sets``, weighted by rows."""
    agree = [
        (o["argmax_agreement"], o["shape"][0])
        for s in sets
        for o in s["outputs"]
        if o.get("argmax_agreement") is not None
    ]
    n = sum(k for _, k in agree)
    return sum(a * k for a, k in agree) / n if n else None


def _headline(r: dict[str, Any]) -> str | None:
    """A reduced-precision file's headline figures on one runtime (None: no classifier)."""
    if _agreement(r["sets"]) is None:
        return None
    gated = [s for s in r["sets"] if s.get("gated", True)]
    ungated = [s for s in r["sets"] if not s.get("gated", True)]
    text = f"argmax agreement {_agreement(gated):.1%} on {', '.join(s['input_set'] for s in gated)}"
    if ungated:
        text += f" ({_agreement(r['sets']):.1%} with {', '.join(s['input_set'] for s in ungated)})"
    accs = [s["accuracy"] for s in r["sets"] if s.get("accuracy")]
    if accs:
        text += (
            f"; accuracy {accs[0]['candidate']:.1f}% ({accs[0]['delta']:+.1f} pt vs the reference)"
        )
    return f"headline {r['name']}: {text}"


def _histogram_lines(r: dict[str, Any]) -> list[str]:
    """One |error| histogram per output of one runtime, over all its input sets."""
    by_output: dict[str, list[list]] = {}
    for s in r["sets"]:
        for o in s["outputs"]:
            h = by_output.setdefault(o["output"], [[lab, 0] for lab, _ in o["histogram"]])
            for b, (_, n) in zip(h, o["histogram"], strict=False):
                b[1] += n
    lines = []
    for out, h in by_output.items():
        lines += ["", f"|error| histogram, {r['name']} {out} (all input sets):"]
        lines.append(format_histogram([tuple(b) for b in h], width=30))
    return lines
