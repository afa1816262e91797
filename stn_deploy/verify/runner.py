"""``verify_model``: run one ONNX file on several runtimes and compare each with a reference.

No torch at import. The reference is the torch model when ``loaded`` is given (a
:class:`~stn_deploy.pytorch.models.loading.LoadedModel`), else the golden bundle beside the file: then
only the golden inputs have reference outputs, and the other input sets are compared with a
*secondary* reference, ONNX Runtime CPU (or the onnx reference evaluator when ORT is missing),
which is itself checked against the golden outputs. The report says which reference every input
set was compared with.

Example:
    >>> from stn_deploy.verify import verify_model, format_table
    >>> report = verify_model("exported/mnist-affine-native.onnx", runtimes=["cpu"])  # doctest: +SKIP
    >>> report.passed, print(format_table(report))                                      # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stn_deploy.errors import StnDeployError
from stn_deploy.export.golden import bundle_path, check_bundle, read_bundle
from stn_deploy.export.metadata import stn_metadata
from stn_deploy.io.hashing import file_sha256
from stn_deploy.runtimes import (
    RuntimeSession,
    RuntimeUnavailable,
    TensorSpec,
    availability,
    default_names,
    load_onnx,
    open_session,
    parse_names,
)
from stn_deploy.runtimes.base import graph_inputs, onnx_specs
from stn_deploy.verify import bisect as bisect_mod
from stn_deploy.verify.compare import compare_arrays, is_classifier_output
from stn_deploy.verify.inputs import (
    INPUT_KINDS,
    InputSet,
    mnist_set,
    normalization,
    parse_kinds,
    random_set,
    stress_set,
)
from stn_deploy.verify.report import RuntimeResult, SetResult, VerifyReport
from stn_deploy.verify.stn_stats import stn_statistics
from stn_deploy.verify.tolerances import Tolerance, tolerance_for

#: runtimes that can stand in for torch on the non-golden inputs, in order of preference
SECONDARY = ("cpu", "reference")
#: labelled images below which the accuracy delta is reported but not gated (one image of 64
#: is already 1.6 points)
MIN_ACCURACY_IMAGES = 100
#: rows of the failing input set that --bisect runs (the reference evaluator is slow)
BISECT_ROWS = 2


def open_runtime(name: str, model: Any, **kw: Any) -> RuntimeSession:
    """Open a session (module-level so tests can substitute a fake runtime)."""
    return open_session(name, model, **kw)


def run_batched(session: RuntimeSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``feeds`` ``(N, ...)``; a model with a fixed batch size is run in chunks of it."""
    dtypes = {t.name: t.dtype for t in session.inputs}
    feeds = {  # an fp16 file with half-precision inputs gets them cast from float32
        k: v.astype(dtypes[k])
        if dtypes.get(k) in ("float16", "float32", "float64") and v.dtype != dtypes[k]
        else v
        for k, v in feeds.items()
    }
    batch = session.inputs[0].fixed_batch() if session.inputs else None
    n = next(iter(feeds.values())).shape[0]
    if not batch or batch == n:
        return session.run(feeds)
    if n % batch:
        raise StnDeployError(f"the model takes a fixed batch of {batch}; {n} inputs do not divide")
    parts = [
        session.run({k: v[i : i + batch] for k, v in feeds.items()}) for i in range(0, n, batch)
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _check_reference(outputs: dict[str, np.ndarray], what: str, input_set: str) -> None:
    for name, arr in outputs.items():
        a = np.asarray(arr)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
            raise StnDeployError(
                f"the reference ({what}) output {name!r} holds {nan} NaN and {inf} Inf on the "
                f"{input_set} inputs: cannot verify against it"
            )


def _image_input(inputs: list[TensorSpec]) -> tuple[str, tuple[int, int, int]] | str:
    if len(inputs) != 1:
        return f"the model has {len(inputs)} inputs (only golden inputs can feed it)"
    spec = inputs[0]
    dims = spec.shape or ()
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        return f"input {spec.name!r} is not (N, C, H, W) with fixed C, H, W: {list(dims)}"
    return spec.name, (int(dims[1]), int(dims[2]), int(dims[3]))


def _compare_set(
    ref: dict[str, np.ndarray],
    out: dict[str, np.ndarray],
    s: InputSet,
    ref_label: str,
    tol: Tolerance,
    num_classes: int | None,
) -> SetResult:
    res = SetResult(s.name, ref_label, True)
    reasons = []
    for name, r in ref.items():
        if name not in out:
            res.passed = False
            reasons.append(f"no output {name!r}")
            continue
        classifier = is_classifier_output(name, tuple(np.shape(r)), num_classes)
        comp = tol.compare(r, out[name], name=name, classifier=classifier)
        if comp.argmax_agreement is not None and tol.min_argmax_agreement is not None:
            rows = int(np.shape(r)[0])
            flips = round((1 - comp.argmax_agreement) * rows)
            allowed = max(1, int((1 - tol.min_argmax_agreement) * rows))  # one flip is noise
            if flips > allowed and comp.passed:
                comp.passed = False
                comp.reason = (
                    f"argmax agreement {comp.argmax_agreement:.1%} < {tol.min_argmax_agreement:.0%}"
                )
        if classifier and s.labels is not None and res.accuracy is None and name in out:
            acc_r = 100 * float(np.mean(np.asarray(r).argmax(1) == s.labels))
            acc_c = 100 * float(np.mean(np.asarray(out[name]).argmax(1) == s.labels))
            gate = tol.max_accuracy_drop is not None and len(s.labels) >= MIN_ACCURACY_IMAGES
            res.accuracy = {
                "reference": acc_r,
                "candidate": acc_c,
                "delta": acc_c - acc_r,
                "images": len(s.labels),
                "gated": gate,
            }
            if gate and acc_r - acc_c > tol.max_accuracy_drop:
                comp.passed = False
                comp.reason = (comp.reason + "; " if comp.reason else "") + (
                    f"accuracy {acc_c:.1f}% is {acc_r - acc_c:.1f} pt below the reference's"
                )
        res.outputs.append(comp)
        if not comp.passed:
            res.passed = False
            reasons.append(f"{name}: {comp.reason}")
    res.reason = "; ".join(reasons)
    return res


def _input_sets(
    kinds: list[str],
    bundle,
    bpath: Path,
    in_specs: list[TensorSpec],
    meta: dict[str, str],
    count: int,
    seed: int,
    distortion: str | None,
) -> tuple[list[InputSet], dict[str, str]]:
    """The input sets named in ``kinds`` that can be made, and why the others cannot."""
    sets: list[InputSet] = []
    skipped: dict[str, str] = {}
    image = _image_input(in_specs)
    if not isinstance(image, str):
        mean, std = normalization(meta, image[1][0])
    for kind in kinds:
        if kind == "golden":
            if bundle is None:
                skipped[kind] = f"no golden bundle ({bpath.name})"
            else:
                n = next(iter(bundle.inputs.values())).shape[0]
                source = f" ({bundle.meta['source']})" if bundle.meta.get("source") else ""
                sets.append(
                    InputSet("golden", dict(bundle.inputs), f"{n} inputs of {bpath.name}{source}")
                )
            continue
        if isinstance(image, str):
            skipped[kind] = image
            continue
        name, chw = image
        if kind == "random":
            sets.append(random_set(name, chw, count, seed, mean, std))
        elif kind == "mnist":
            got = mnist_set(name, chw, count, seed, mean, std, distortion)
            if isinstance(got, str):
                skipped[kind] = got
            else:
                sets.append(got)
        else:
            sets.append(stress_set(name, chw, count, seed, mean, std))
    return sets, skipped


def _verify_runtime(
    name: str,
    avail,
    proto,
    sets: list[InputSet],
    references: dict[str, dict[str, np.ndarray]],
    ref_labels: dict[str, str],
    gated_sets: set[str],
    *,
    skip_sets: set[str],
    tol: Tolerance,
    num_classes: int | None,
    strict_placement: bool,
    threads: int | None,
) -> tuple[RuntimeResult, dict[str, dict[str, np.ndarray]]]:
    """One runtime over every input set (but ``skip_sets``, those it is the reference of):
    its result and its raw outputs per set."""
    raw: dict[str, dict[str, np.ndarray]] = {}
    if not avail.available:
        return RuntimeResult(name, "unavailable", avail.reason), raw
    try:
        session = open_runtime(name, proto, threads=threads)
    except RuntimeUnavailable as exc:
        return RuntimeResult(name, "unavailable", str(exc)), raw
    except StnDeployError as exc:
        return RuntimeResult(name, "error", str(exc)), raw
    r = RuntimeResult(name, "passed", info=session.info.to_dict())
    for s in sets:
        if s.name in skip_sets:
            continue
        try:
            out = run_batched(session, s.feeds)
        except StnDeployError as exc:
            r.sets.append(SetResult(s.name, ref_labels[s.name], False, str(exc)))
            continue
        raw[s.name] = out
        res = _compare_set(references[s.name], out, s, ref_labels[s.name], tol, num_classes)
        res.gated = s.name in gated_sets
        r.sets.append(res)
    batch = session.inputs[0].fixed_batch() if session.inputs else None
    first = {k: v[:batch] for k, v in sets[0].feeds.items()} if batch else sets[0].feeds
    r.placement = _placement(session, first, strict_placement)
    failed = [s for s in r.sets if not s.passed and s.gated]
    reasons = [f"{s.input_set} inputs: {s.reason}" for s in failed]
    if r.placement and r.placement.get("fallbacks") and strict_placement:
        reasons.append(
            f"--strict-placement: {len(r.placement['fallbacks'])} nodes not on "
            f"{r.placement['primary']}"
        )
    if reasons:
        r.status, r.reason = "failed", "; ".join(reasons)
    return r, raw


def verify_model(
    model_path: str | Path,
    *,
    loaded: Any = None,
    runtimes: list[str] | str | None = None,
    strict: bool = False,
    atol: float | None = None,
    rtol: float | None = None,
    check_error_stat: str | None = None,
    quantile: float | None = None,
    strict_placement: bool = False,
    bisect: bool = False,
    inputs: list[str] | str | None = None,
    count: int = 8,
    seed: int = 0,
    threads: int | None = None,
    stn_stats: bool = True,
    reference_model: str | Path | None = None,
) -> VerifyReport:
    """Run ``model_path`` on ``runtimes`` (default: all that may be available) over the input
    sets and compare every output with the reference.

    Args:
        loaded: the torch model (``LoadedModel``) to use as reference; else the golden bundle.
        runtimes: names (``cpu``, ``cuda``, ``openvino``, ``reference``, any ORT EP) or a
            comma-separated string. Named runtimes that cannot run here are skipped with the
            reason, or raise under ``strict``.
        atol, rtol, check_error_stat, quantile: override the precision's defaults
            (:data:`stn_deploy.verify.tolerances.DEFAULTS`; Polygraphy's meaning).
        strict_placement: a node an ORT execution provider did not take fails the runtime.
        bisect: for each failing runtime, name the first diverging node (:mod:`.bisect`).
        inputs: input sets among golden, random, mnist, stress (default: all that apply).
        count: images per generated input set (the golden set is the bundle's).
        seed: seeds the random, MNIST-distortion and stress inputs.
        stn_stats: report how far the sampler's grid reached outside the image.
        reference_model: without torch, an ONNX file (e.g. the fp32 source of an int8 file)
            run on ORT CPU as the reference of the non-golden input sets; with it no golden
            bundle is needed (without one, the golden set is skipped).
    """
    model_path = Path(model_path)
    proto = load_onnx(model_path)
    meta = stn_metadata(proto)
    if count < 1:
        raise StnDeployError(f"--count must be at least 1, got {count}")
    tol = tolerance_for(
        meta.get("precision"),
        atol=atol,
        rtol=rtol,
        check_error_stat=check_error_stat,
        quantile=quantile,
    )
    if reference_model is not None and loaded is not None:
        raise StnDeployError(
            "give a torch reference (--checkpoint/--factory) or --reference-model, not both"
        )
    explicit = runtimes is not None
    names = (
        parse_names(runtimes)
        if isinstance(runtimes, str)
        else (parse_names(",".join(runtimes)) if runtimes is not None else None)
    )
    if names is None:
        names = default_names()
    if "torch" in names:
        raise StnDeployError(
            "torch is the reference (--checkpoint/--factory), not a runtime to verify"
        )
    avail = {n: availability(n) for n in names}
    if strict and explicit:
        missing = [a for a in avail.values() if not a.available]
        if missing:
            raise StnDeployError(
                "--strict: " + "; ".join(f"{a.name} is not available: {a.reason}" for a in missing)
            )

    in_specs = onnx_specs(graph_inputs(proto))
    out_names = [o.name for o in proto.graph.output]
    try:
        num_classes = len(json.loads(meta["class_labels"]))
    except (KeyError, ValueError, TypeError):
        num_classes = None

    # ---------------------------------------------------------------- reference and inputs
    bpath = bundle_path(model_path)
    bundle = None
    if bpath.is_file():
        bundle = read_bundle(bpath)
        check_bundle(bundle, bpath, model_path, in_specs, out_names)
    elif loaded is None and reference_model is None:
        raise StnDeployError(
            f"no reference: {bpath.name} (the golden bundle) is not beside the model; give "
            "--checkpoint or --factory to compare against torch, or --reference-model"
        )
    kinds = parse_kinds(",".join(inputs) if isinstance(inputs, list) else inputs)
    explicit_kinds = kinds is not None
    kinds = kinds or list(INPUT_KINDS)
    distortion = None
    if loaded is not None:
        extra = getattr(loaded.config, "extra", {}) or {}
        distortion = extra.get("trained_on", {}).get("distortion")
    sets, skipped = _input_sets(kinds, bundle, bpath, in_specs, meta, count, seed, distortion)
    if strict and explicit_kinds and skipped:
        raise StnDeployError(
            "--strict: " + "; ".join(f"no {k} inputs: {why}" for k, why in skipped.items())
        )
    if not sets:
        raise StnDeployError(
            "no input set to verify with: " + "; ".join(f"{k}: {w}" for k, w in skipped.items())
        )

    references: dict[str, dict[str, np.ndarray]] = {}
    ref_labels: dict[str, str] = {}
    warnings: list[str] = []
    secondary = None
    if loaded is not None:
        torch_session = open_runtime(
            "torch", proto, loaded=loaded, output_names=out_names, threads=threads
        )
        ref_kind, ref_desc = "torch", f"torch eager ({loaded.source})"
        note = ""
        for s in sets:
            references[s.name] = run_batched(torch_session, s.feeds)
            ref_labels[s.name] = "torch"
        if bundle is not None and "golden" in references:
            for name in out_names:
                c = compare_arrays(
                    bundle.outputs[name], references["golden"][name], atol=tol.atol, rtol=tol.rtol
                )
                if not c.passed:
                    warnings.append(
                        f"the golden bundle's {name} differs from torch's (max abs "
                        f"{c.stats.max_abs if c.stats else float('nan'):.3g}): is the checkpoint "
                        "the one this file was exported from?"
                    )
    else:
        ref_kind, ref_desc = "golden", f"golden bundle {bpath.name} (torch's outputs at export)"
        note = ""
        for s in sets:
            if s.name == "golden":
                references[s.name] = {n: bundle.outputs[n] for n in out_names}
                ref_labels[s.name] = "golden bundle"
        others = [s for s in sets if s.name != "golden"]
        if others:
            secondary = next((n for n in SECONDARY if availability(n).available), None)
            if secondary is None:
                for s in others:
                    skipped[s.name] = "no torch reference and no ORT CPU or reference evaluator"
                sets = [s for s in sets if s.name == "golden"]
            elif reference_model is not None:
                label = f"{Path(reference_model).name} on {secondary}"
                references.update(
                    _reference_model_outputs(
                        reference_model, secondary, model_path, in_specs, out_names, others, threads
                    )
                )
                ref_labels.update({s.name: label for s in others})
                if bundle is None:  # no golden set: the reference model is the reference
                    ref_kind, ref_desc = "reference-model", label
                note = (
                    f"no torch here: the {', '.join(s.name for s in others)} inputs are compared "
                    f"with {label} (--reference-model)"
                )
                secondary = label  # not one of the runtimes verified: none is skipped
            else:
                sec = open_runtime(secondary, proto, threads=threads)
                for s in others:
                    references[s.name] = run_batched(sec, s.feeds)
                    ref_labels[s.name] = f"{secondary} (secondary)"
                note = (
                    f"no torch here: the {', '.join(s.name for s in others)} inputs are compared "
                    f"with {secondary} (secondary reference), which is itself checked against "
                    "the golden outputs"
                    + (
                        f"; for this {meta.get('precision')} file that is runtime parity, not "
                        "the fp32 accuracy delta: give --reference-model FP32.onnx or --checkpoint"
                        if meta.get("precision", "fp32") != "fp32"
                        else ""
                    )
                )
    if not sets:
        raise StnDeployError(
            "no input set to verify with: " + "; ".join(f"{k}: {w}" for k, w in skipped.items())
        )
    for s in sets:
        _check_reference(references[s.name], ref_labels[s.name], s.name)
    # an fp16/int8 file against an fp32 reference is held to its tolerance on in-distribution
    # inputs (golden, mnist); on random and stress inputs its error is reported, not gated
    fp32_reference = loaded is not None or reference_model is not None
    reduced = meta.get("precision", "fp32") != "fp32"
    gated_sets = {
        s.name for s in sets if not (reduced and fp32_reference and s.name in ("random", "stress"))
    }
    if len(gated_sets) < len(sets):
        note = (note + "; " if note else "") + (
            f"{', '.join(s.name for s in sets if s.name not in gated_sets)} inputs of this "
            f"{meta.get('precision')} file are reported against fp32, not gated"
        )

    # ---------------------------------------------------------------- runtimes
    results: list[RuntimeResult] = []
    raw: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for name in names:
        r, raw[name] = _verify_runtime(
            name,
            avail[name],
            proto,
            sets,
            references,
            ref_labels,
            gated_sets,
            skip_sets=set() if name != secondary else {x.name for x in sets if x.name != "golden"},
            tol=tol,
            num_classes=num_classes,
            strict_placement=strict_placement,
            threads=threads,
        )
        results.append(r)

    report = VerifyReport(
        model={
            "path": str(model_path),
            "sha256": file_sha256(model_path),
            "precision": meta.get("precision", "fp32"),
            "lowering": meta.get("lowering"),
            "opset": meta.get("opset"),
            "inputs": [
                {"name": t.name, "dtype": t.dtype, "shape": list(t.shape or [])} for t in in_specs
            ],
            "outputs": out_names,
        },
        reference={"kind": ref_kind, "description": ref_desc, "secondary": secondary, "note": note},
        tolerance=tol.to_dict(),
        input_sets=[
            {
                "name": s.name,
                "description": s.description,
                "count": s.count,
                "reference": ref_labels[s.name],
            }
            for s in sets
        ],
        runtimes=results,
        skipped_input_sets=skipped,
        warnings=warnings,
        strict=strict,
    )
    if stn_stats:
        report.stn = _stn(proto, sets, references, out_names, threads)
    if bisect:
        for r in results:
            if r.status == "failed" and raw.get(r.name):
                r.bisect = _bisect(
                    r, proto, meta, sets, references, raw[r.name], tol, loaded, threads
                )
    return report


def _reference_model_outputs(
    reference_model: str | Path,
    runtime: str,
    model_path: Path,
    in_specs: list[TensorSpec],
    out_names: list[str],
    sets: list[InputSet],
    threads: int | None,
) -> dict[str, dict[str, np.ndarray]]:
    """The outputs of ``reference_model`` (``--reference-model``) on ``runtime`` for each of
    ``sets``: the reference of those sets without torch."""
    ref_path = Path(reference_model)
    sec = open_runtime(runtime, load_onnx(ref_path), threads=threads)
    if sorted(t.name for t in sec.inputs) != sorted(t.name for t in in_specs):
        raise StnDeployError(
            f"the reference model {ref_path.name} takes inputs "
            f"{sorted(t.name for t in sec.inputs)}, {model_path.name} takes "
            f"{sorted(t.name for t in in_specs)}"
        )
    references = {}
    for s in sets:
        out = run_batched(sec, s.feeds)
        missing = sorted(set(out_names) - set(out))
        if missing:
            raise StnDeployError(f"the reference model {ref_path.name} has no outputs {missing}")
        references[s.name] = {n: out[n] for n in out_names}
    return references


def _placement(session: RuntimeSession, feeds, strict: bool) -> dict[str, Any] | None:
    try:
        placed = session.placement(feeds)
    except StnDeployError as exc:
        return {"reported": False, "error": str(exc)}
    if placed is None:
        return {"reported": False, "primary": session.primary}
    fallbacks = [p for p in placed if p.provider != session.primary]
    return {
        "reported": True,
        "primary": session.primary,
        "nodes": len(placed),
        "fallbacks": [
            {"node": p.node, "op_type": p.op_type, "provider": p.provider} for p in fallbacks
        ],
        "strict": strict,
    }


def _stn(proto, sets, references, out_names, threads) -> dict[str, Any]:
    theta = (
        {k: v["theta"] for k, v in references.items() if "theta" in v}
        if "theta" in out_names
        else None
    )
    runtime = "cpu" if availability("cpu").available else None
    try:
        return (
            stn_statistics(
                proto,
                sets,
                lambda n, m: open_runtime(n, m, threads=threads),
                runtime,
                theta,
            )
            if runtime or theta
            else {}
        )
    except StnDeployError:
        return {}


def _worst_rows(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], k: int) -> list[int]:
    name = next(iter(ref))
    r, o = np.asarray(ref[name], np.float64), np.asarray(out[name], np.float64)
    err = np.abs(o - r).reshape(len(r), -1)
    err = np.where(np.isfinite(err), err, np.inf).max(1)
    return sorted(int(i) for i in np.argsort(-err, kind="stable")[:k])


def _bisect(r, proto, meta, sets, references, raw, tol, loaded, threads) -> dict[str, Any]:
    s = next(x for x in r.sets if not x.passed and x.gated and x.input_set in raw)
    fixed = _fixed_batch(proto)
    rows = _worst_rows(references[s.input_set], raw[s.input_set], fixed or BISECT_ROWS)
    feeds = {k: v[rows] for k, v in next(x for x in sets if x.name == s.input_set).feeds.items()}
    ref_rows = {k: np.asarray(v)[rows] for k, v in references[s.input_set].items()}

    def open_fn(name, model):
        return open_runtime(name, model, threads=threads)

    def agrees(out: dict[str, np.ndarray]) -> bool:
        return all(tol.compare(v, out[k]).passed for k, v in ref_rows.items())

    try:
        if loaded is not None:
            re = bisect_mod.reexport(loaded, meta, proto)
            if agrees(open_fn(r.name, re).run(feeds)):
                res = bisect_mod.bisect_model(
                    proto, re, r.name, feeds, tol, open_fn=open_fn, input_set=s.input_set, rows=rows
                )
                return {**res.to_dict(), "summary": res.summary()}
        oracle = _oracle(r.name)
        if oracle is None:
            return {
                "summary": "no oracle runtime (ORT CPU or the reference evaluator) to bisect against"
            }
        if not agrees(open_fn(oracle, proto).run(feeds)) and loaded is None:
            res = bisect_mod.BisectResult("undecided", r.name, oracle, s.input_set, rows)
            res.note = (
                f"{oracle} disagrees with the reference too: the file itself differs from its "
                "reference; give --checkpoint to bisect it against a re-export from torch"
            )
            return {**res.to_dict(), "summary": res.note}
        res = bisect_mod.bisect_runtime(
            proto, r.name, oracle, feeds, tol, open_fn=open_fn, input_set=s.input_set, rows=rows
        )
        return {**res.to_dict(), "summary": res.summary()}
    except StnDeployError as exc:
        return {"summary": f"bisect failed: {exc}"}


def _oracle(candidate: str) -> str | None:
    """The first available :data:`SECONDARY` runtime other than ``candidate``."""
    return next((n for n in SECONDARY if n != candidate and availability(n).available), None)


def _fixed_batch(proto) -> int | None:
    specs = onnx_specs(graph_inputs(proto))
    return specs[0].fixed_batch() if specs else None
