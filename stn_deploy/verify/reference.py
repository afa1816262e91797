"""What each input set is compared with: the reference outputs of verify.

- a torch reference (:class:`~stn_deploy.torch_side.TorchSide`, from the caller): its eager
  session's outputs on every input set; the golden bundle's outputs are checked against it;
- else the golden bundle beside the file: only the golden inputs have reference outputs; the
  other sets are compared with ``reference_model`` (``--reference-onnx``) on ORT CPU, or else
  with a *secondary* reference, ORT CPU (or the onnx reference evaluator when ORT is missing),
  which is itself checked against the golden outputs.

An fp16/int8 file against an fp32 reference (torch, ``reference_model``) is held to its
tolerance on in-distribution inputs (golden, mnist); its error on the random and stress inputs is
reported, not gated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stn_deploy.errors import StnDeployError
from stn_deploy.runtimes import load_onnx
from stn_deploy.torch_side import TorchSide
from stn_deploy.verify import sessions
from stn_deploy.verify.compare import compare_arrays
from stn_deploy.verify.inherent import inherent_outputs
from stn_deploy.verify.inputs import InputSet
from stn_deploy.verify.options import VerifyOptions
from stn_deploy.verify.sessions import SECONDARY, PhaseError, align_feeds, guarded, run_batched
from stn_deploy.verify.subject import Subject
from stn_deploy.verify.tolerances import Tolerance

Outputs = dict[str, np.ndarray]


@dataclass
class References:
    kind: str  # torch | golden | reference-model
    description: str
    #: the runtime standing in for torch on the non-golden sets, or the reference_model label
    secondary: str | None = None
    note: str = ""
    #: the input sets that have a reference, in order
    sets: list[InputSet] = field(default_factory=list)
    #: input set -> reference outputs; input set -> what they came from
    outputs: dict[str, Outputs] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    #: input sets whose failure fails a runtime (the others are reported only)
    gated: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    #: input set -> output -> float32's own error per element (:mod:`.inherent`), where the
    #: reference knows it (torch in float64, or a golden bundle holding float64 outputs)
    inherent: dict[str, Outputs] = field(default_factory=dict)

    def extras(self, input_set: str) -> Outputs:
        """The inherent error of ``input_set``'s reference outputs (``{}``: not known)."""
        return self.inherent.get(input_set, {})

    def skip_for(self, runtime: str) -> set[str]:
        """Input sets ``runtime`` is not verified on: those it is the reference of."""
        if runtime != self.secondary:
            return set()
        return {s.name for s in self.sets if s.name != "golden"}

    def input_set_dict(self, s: InputSet) -> dict[str, Any]:
        """The report's entry of input set ``s``."""
        return {
            "name": s.name,
            "description": s.description,
            "count": s.count,
            "reference": self.labels[s.name],
            "inherent": sorted(self.inherent.get(s.name, {})),
        }

    def to_dict(self) -> dict[str, Any]:
        """The report's ``reference`` section."""
        return {
            "kind": self.kind,
            "description": self.description,
            "secondary": self.secondary,
            "note": self.note,
        }


def resolve_references(
    subject: Subject,
    sets: list[InputSet],
    skipped: dict[str, str],
    opts: VerifyOptions,
    tol: Tolerance,
) -> References:
    """The reference of every input set that can have one (the others are added to
    ``skipped``); raises when none is left or a reference output is not finite."""
    if opts.torch_side is not None:
        try:
            refs = _torch_references(subject, sets, opts.torch_side, tol, opts.threads)
        except PhaseError as exc:
            raise StnDeployError(f"the torch reference: {exc}") from exc
    else:
        refs = _golden_references(subject, sets, skipped, opts)
    if not refs.sets:
        raise StnDeployError(
            "no input set to verify with: " + "; ".join(f"{k}: {w}" for k, w in skipped.items())
        )
    for s in refs.sets:
        check_finite(refs.outputs[s.name], refs.labels[s.name], s.name)
    fp32_reference = opts.torch_side is not None or opts.reference_model is not None
    _gate(refs, subject, fp32_reference=fp32_reference)
    return refs


def _torch_references(
    subject, sets, side: TorchSide, tol: Tolerance, threads: int | None
) -> References:
    names = {"input_names": [t.name for t in subject.in_specs]}
    session = guarded(
        "torch",
        "load",
        side.open_session,
        output_names=list(subject.out_names),
        threads=threads,
        **(names if _takes(side.open_session, "input_names") else {}),
    )
    name = session.info.name
    source = side.source or (session.info.extra or {}).get("source")
    refs = References(name, f"{name} eager ({source})" if source else f"{name} eager")
    refs.sets = list(sets)
    run64 = getattr(session, "run_float64", None)
    for s in sets:
        phase = f"run on the {s.name} inputs"
        refs.outputs[s.name] = guarded(name, phase, run_batched, session, s.feeds)
        refs.labels[s.name] = name
        ref64 = guarded(name, f"float64 {phase}", run64, s.feeds) if run64 else None
        if ref64:
            refs.inherent[s.name] = inherent_outputs(refs.outputs[s.name], ref64)
    if run64 and not refs.inherent:
        refs.warnings.append(
            "the torch model cannot run in float64: no inherent-error estimate, outputs are "
            "held to atol/rtol alone"
        )
    if subject.bundle is not None and "golden" in refs.outputs:
        for name in subject.out_names:
            c = compare_arrays(
                subject.bundle.outputs[name],
                refs.outputs["golden"][name],
                atol=tol.atol,
                rtol=tol.rtol,
                inherent=refs.extras("golden").get(name),
            )
            if not c:
                refs.warnings.append(
                    f"the golden bundle's {name} differs from torch's (max abs "
                    f"{c.stats.max_abs if c.stats else float('nan'):.3g}): is the checkpoint "
                    "the one this file was exported from?"
                )
    return refs


def _takes(fn, keyword: str) -> bool:
    """Whether ``fn`` accepts ``keyword`` (a TorchSide written before ``input_names`` may not)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in params)


def _golden_references(subject: Subject, sets, skipped, opts: VerifyOptions) -> References:
    refs = References(
        "golden", f"golden bundle {subject.bundle_path.name} (torch's outputs at export)"
    )
    refs.sets = [s for s in sets if s.name == "golden"]
    for s in refs.sets:
        refs.outputs[s.name] = {n: subject.bundle.outputs[n] for n in subject.out_names}
        refs.labels[s.name] = "golden bundle"
        out64 = getattr(subject.bundle, "outputs64", None) or {}
        if out64:
            refs.inherent[s.name] = inherent_outputs(refs.outputs[s.name], out64)
        else:
            refs.warnings.append(
                f"{subject.bundle_path.name} holds no float64 reference (written before "
                "stn-deploy stored one): the golden inputs are held to atol/rtol alone; "
                "export again, or give --reference, for the inherent-error gate"
            )
    others = [s for s in sets if s.name != "golden"]
    if not others:
        return refs
    secondary = sessions.first_available(SECONDARY)
    if secondary is None:
        for s in others:
            skipped[s.name] = "no torch reference and no ORT CPU or reference evaluator"
        return refs
    refs.sets = list(sets)
    which = ", ".join(s.name for s in others)
    if opts.reference_model is not None:
        label = f"{Path(opts.reference_model).name} on {secondary}"
        refs.outputs.update(
            reference_model_outputs(
                opts.reference_model, secondary, subject, others, opts.threads, refs.warnings
            )
        )
        refs.labels.update({s.name: label for s in others})
        if subject.bundle is None:  # no golden set: the reference model is the reference
            refs.kind, refs.description = "reference-model", label
        refs.note = (
            f"no torch here: the {which} inputs are compared with {label} (--reference-onnx)"
        )
        refs.secondary = label  # not one of the runtimes verified: none is skipped
        return refs
    try:
        sec = guarded(
            secondary, "load", sessions.open_runtime, secondary, subject.proto, threads=opts.threads
        )
        for s in others:
            phase = f"run on the {s.name} inputs"
            refs.outputs[s.name] = guarded(secondary, phase, run_batched, sec, s.feeds)
            refs.labels[s.name] = f"{secondary} (secondary)"
    except StnDeployError as exc:
        raise StnDeployError(f"the secondary reference ({secondary}): {exc}") from exc
    refs.secondary = secondary
    refs.note = (
        f"no torch here: the {which} inputs are compared with {secondary} (secondary reference), "
        "which is itself checked against the golden outputs"
    )
    if subject.precision != "fp32":
        refs.note += (
            f"; for this {subject.precision} file that is runtime parity, not the fp32 accuracy "
            "delta: give --reference-onnx FP32.onnx or --reference"
        )
    return refs


def reference_model_outputs(
    reference_model: str | Path,
    runtime: str,
    subject: Subject,
    sets: list[InputSet],
    threads: int | None,
    note_to: list[str] | None = None,
) -> dict[str, Outputs]:
    """The outputs of ``reference_model`` (``--reference-onnx``) on ``runtime`` for each of
    ``sets``: the reference of those sets without torch."""
    ref_path = Path(reference_model)
    what = f"the reference model {ref_path.name}"
    try:
        sec = guarded(
            runtime, "load", sessions.open_runtime, runtime, load_onnx(ref_path), threads=threads
        )
    except PhaseError as exc:
        raise StnDeployError(f"{what} on {runtime}: {exc}") from exc
    theirs = [t.name for t in sec.inputs]
    references, notes = {}, []
    for s in sets:
        feeds, note = align_feeds(s.feeds, theirs, what)
        notes += [note] if note and note not in notes else []
        try:
            out = guarded(runtime, f"run on the {s.name} inputs", run_batched, sec, feeds)
        except PhaseError as exc:
            raise StnDeployError(f"{what} on {runtime}: {exc}") from exc
        mine = [n for n in subject.out_names if n in out]
        if len(mine) < len(subject.out_names):
            if len(out) != len(subject.out_names):
                missing = sorted(set(subject.out_names) - set(out))
                raise StnDeployError(f"{what} has no outputs {missing} (it has {sorted(out)})")
            out = dict(zip(subject.out_names, out.values(), strict=True))  # by position
        references[s.name] = {n: out[n] for n in subject.out_names}
    if note_to is not None:
        note_to.extend(notes)
    return references


def check_finite(outputs: Outputs, what: str, input_set: str) -> None:
    """Raise when a reference output holds NaN or Inf: nothing can be verified against it."""
    for name, arr in outputs.items():
        a = np.asarray(arr)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
            raise StnDeployError(
                f"the reference ({what}) output {name!r} holds {nan} NaN and {inf} Inf on the "
                f"{input_set} inputs: cannot verify against it"
            )


def _gate(refs: References, subject: Subject, *, fp32_reference: bool) -> None:
    reduced = subject.precision != "fp32"
    refs.gated = {
        s.name
        for s in refs.sets
        if not (reduced and fp32_reference and s.name in ("random", "stress"))
    }
    ungated = [s.name for s in refs.sets if s.name not in refs.gated]
    if ungated:
        refs.note = (refs.note + "; " if refs.note else "") + (
            f"{', '.join(ungated)} inputs of this {subject.precision} file are reported against "
            "fp32, not gated"
        )
