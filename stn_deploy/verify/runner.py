"""``verify_model``: run one ONNX file on several runtimes and compare each with a reference.

No torch at import, and no reference to the torch side: the reference is the torch model when
the caller passes one (``torch_side=``, a :class:`~stn_deploy.torch_side.TorchSide`), else
the golden bundle beside the file (see :mod:`.reference`). The steps, after Polygraphy's
comparator: the input sets (:func:`~stn_deploy.verify.inputs.load_input_sets`), the reference
outputs (:func:`~stn_deploy.verify.reference.resolve_references`), every runtime over the sets
(:meth:`~stn_deploy.verify.comparator.Comparator.run`), then the comparison
(:meth:`~stn_deploy.verify.comparator.Comparator.compare_accuracy` with
:meth:`~stn_deploy.verify.comparator.CompareFunc.simple`). The report says which reference every
input set was compared with.

Example:
    >>> from stn_deploy.verify import verify_model, format_table
    >>> report = verify_model("exported/mnist-affine-native.onnx", runtimes=["cpu"])  # doctest: +SKIP
    >>> report.passed, print(format_table(report))                                      # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stn_deploy.errors import StnDeployError
from stn_deploy.runtimes import default_names, parse_names
from stn_deploy.verify import sessions
from stn_deploy.verify.bisect import bisect_failure
from stn_deploy.verify.budget import DEFAULT_SECONDS, TimeBudget
from stn_deploy.verify.comparator import Comparator, CompareFunc, RunResult
from stn_deploy.verify.inherent import K as INHERENT_K
from stn_deploy.verify.inputs import INPUT_KINDS, InputSet, load_input_sets, parse_kinds
from stn_deploy.verify.options import VerifyOptions
from stn_deploy.verify.reference import resolve_references
from stn_deploy.verify.report import VerifyReport
from stn_deploy.verify.sessions import Runner, run_batched  # noqa: F401  (run_batched: API)
from stn_deploy.verify.stn_stats import stn_report
from stn_deploy.verify.subject import Subject


def verify_model(
    model_path: str | Path, options: VerifyOptions | None = None, **kw: Any
) -> VerifyReport:
    """Run ``model_path`` on the runtimes asked for (default: all that may be available) over
    the input sets and compare every output with the reference.

    ``options`` (a :class:`~stn_deploy.verify.options.VerifyOptions`) and/or its fields as
    keywords (``runtimes``, ``inputs``, ``count``, ``atol``, ``bisect``, ``torch_side``, ...; see
    there). Named runtimes that cannot run here are skipped with the reason, or raise under
    ``strict``.
    """
    opts = VerifyOptions.of(options, **kw)
    subject = Subject.load(model_path)
    opts.check()
    tol = opts.tolerance(subject.meta.get("precision"))
    runners = choose_runners(opts, subject)
    subject.load_bundle(required=opts.torch_side is None and opts.reference_model is None)
    sets, skipped = input_sets(opts, subject)
    refs = resolve_references(subject, sets, skipped, opts, tol)
    compare = CompareFunc.simple(
        tol,
        per_output=opts.per_output(subject.precision),
        num_classes=subject.num_classes,
        kinds=subject.kinds,
        k=INHERENT_K if subject.precision == "fp32" else None,
    )
    skip = {r.name: refs.skip_for(r.name) for r in runners}
    runs = Comparator.run(
        runners,
        refs.sets,
        skip=skip,
        strict_placement=opts.strict_placement,
        budget=time_budget(opts, runners),
    )
    results = Comparator.compare_accuracy(
        runs, refs.sets, refs, compare, strict_placement=opts.strict_placement
    )
    report = VerifyReport(
        model=subject.to_dict(),
        reference=refs.to_dict(),
        tolerance=_tolerance_dict(tol, compare),
        input_sets=[refs.input_set_dict(s) for s in refs.sets],
        runtimes=results,
        skipped_input_sets=skipped,
        warnings=refs.warnings,
        strict=opts.strict,
    )
    if opts.stn_stats:
        report.stn = stn_report(subject.proto, refs.sets, refs.outputs, opts.threads)
    if opts.bisect:
        _bisect_failures(report, runs, subject, refs, compare, opts)
    return report


def choose_runners(opts: VerifyOptions, subject: Subject) -> list[Runner]:
    """The runtimes to verify as runners (unavailable ones with the reason); under ``strict``
    a runtime named explicitly that cannot run here is an error."""
    spec = ",".join(opts.runtimes) if isinstance(opts.runtimes, list) else opts.runtimes
    names = parse_names(spec) if opts.runtimes is not None else None
    names = names or default_names()
    if "torch" in names:
        raise StnDeployError(
            "torch is the reference ({torch_side}), not one of the {runtimes} to verify",
            param=("runtimes", "torch_side"),
        )
    avail = {n: sessions.availability(n) for n in names}
    missing = [a for a in avail.values() if not a.available]
    if opts.strict and opts.runtimes is not None and missing:
        raise StnDeployError(
            "{strict}: " + "; ".join(f"{a.name} is not available: {a.reason}" for a in missing),
            param="strict",
        )
    return [
        Runner(n, subject.proto, opts.threads, "" if avail[n].available else avail[n].reason)
        for n in names
    ]


def input_sets(opts: VerifyOptions, subject: Subject) -> tuple[list[InputSet], dict[str, str]]:
    """The input sets asked for that can be made, and why the others cannot (an error under
    ``strict`` for sets named explicitly, and when none is left)."""
    kinds = parse_kinds(",".join(opts.inputs) if isinstance(opts.inputs, list) else opts.inputs)
    sets, skipped = load_input_sets(
        kinds or list(INPUT_KINDS),
        bundle=subject.bundle,
        bundle_name=subject.bundle_path.name,
        in_specs=subject.in_specs,
        meta=subject.meta,
        count=opts.count,
        seed=opts.seed,
        distortion=opts.torch_side.distortion if opts.torch_side is not None else None,
        torch_shapes=getattr(opts.torch_side, "shapes", None),
    )
    if opts.strict and kinds is not None and skipped:
        raise StnDeployError(
            "{strict}: " + "; ".join(f"no {k} inputs: {why}" for k, why in skipped.items()),
            param="strict",
        )
    if not sets:
        raise StnDeployError(
            "no input set to verify with: " + "; ".join(f"{k}: {w}" for k, w in skipped.items())
        )
    return sets, skipped


def _tolerance_dict(tol, compare) -> dict[str, Any]:
    d = tol.to_dict()
    d["inherent_k"] = compare.k
    if compare.per_output:
        d["per_output"] = {name: t.to_dict() for name, t in compare.per_output.items()}
    return d


def time_budget(opts: VerifyOptions, runners: list[Runner]) -> TimeBudget:
    """Each runtime's seconds (:mod:`.budget`): ``timeout`` when given; else the default for
    runtimes verified by default, none for runtimes named in ``runtimes``."""
    if opts.timeout is not None:
        return TimeBudget(opts.timeout, opts.progress)
    named = frozenset(r.name for r in runners) if opts.runtimes is not None else frozenset()
    return TimeBudget(DEFAULT_SECONDS, opts.progress, unlimited=named)


def _bisect_failures(report: VerifyReport, runs: list[RunResult], subject, refs, compare, opts):
    raw = {run.name: run.outputs for run in runs}
    for r in report.runtimes:
        if r.status == "failed" and raw.get(r.name):
            r.bisect = bisect_failure(
                r,
                subject,
                refs.sets,
                refs.outputs,
                raw[r.name],
                compare,
                reexport=opts.torch_side.reexport if opts.torch_side is not None else None,
                threads=opts.threads,
            )
