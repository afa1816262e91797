"""``stn-deploy export``: a torch model -> ``NAME.onnx`` with our grid-sample lowering + ``NAME.io.npz``.

How the exporter owns the lowering (torch.export through ``torch.onnx.export(dynamo=True)``
by default, :mod:`stn_deploy.pytorch.dynamo_trace`; torch's deprecated TorchScript exporter
below opset 16 or on request):

1. ``F.affine_grid`` is replaced, for the duration of the trace, by one MatMul of θ against a
   constant ``(H*W, 3)`` (or ``(D*H*W, 4)``) base grid (the projective and TPS transforms are
   MatMuls already), so no AffineGrid (opset 20, CPU-only in ORT) and no broadcast
   Mul+ReduceSum (the dynamo exporter's own form) reach the file. A user's own module calling
   ``F.affine_grid`` gets the same (:mod:`stn_deploy.pytorch.grid_generators`).
2. ``aten::grid_sampler`` (2-D and 3-D) is exported as a GridSample placeholder carrying mode,
   padding_mode and align_corners (a translation-table entry on the dynamo path, a symbolic on
   the TorchScript path).
3. :func:`stn_deploy.export.lower.lower_model` rewrites every placeholder into the chosen form
   (native / portable / custom / ort-contrib), the same code ``stn-deploy lower`` runs.

Then metadata, ``onnx.checker`` (full) and strict shape inference, an atomic write, and the
golden bundle beside the model.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

import stn_deploy
from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.export.golden import bundle_path, write_model_with_bundle
from stn_deploy.export.lower import _lowering_arg, lower_model
from stn_deploy.export.lowerings import get_lowering
from stn_deploy.export.metadata import SELF_CHECK_KEY, write_metadata
from stn_deploy.export.targets import get_target
from stn_deploy.pytorch import tracing
from stn_deploy.pytorch.auto_lowering import (  # noqa: F401  (re-exported)
    AUTO_CANDIDATES,
    AUTO_PROVIDERS,
    choose_lowering,
    choose_sampler,
)
from stn_deploy.pytorch.export_io import (  # noqa: F401  (golden_inputs etc. re-exported)
    flatten_outputs,
    golden_batch,
    golden_inputs,
    input_layout,
    input_names_for,
    is_zoo,
    model_dtype,
    output_names_for,
    torch_reference,
)
from stn_deploy.pytorch.models.loading import LoadedModel
from stn_deploy.pytorch.models.stn import SpatialTransformer
from stn_deploy.pytorch.self_check import (
    check_batches,
    ort_available,
    run_self_check,
    skip_note,
)
from stn_deploy.pytorch.tracing import (  # noqa: F401  (re-exported)
    DYNAMO_MIN_OPSET,
    EXPORTERS,
    default_exporter,
    trace,
)
from stn_deploy.runtimes.base import default_opset


class _ExposeSTN(nn.Module):
    """Outputs (log_probs, theta, rectified) of a classifier with a single SpatialTransformer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        rect, theta = self.model.stn.forward_with_theta(x)
        return self.model.classify(rect), theta, rect


def _apply_precision(
    loaded: LoadedModel, model: onnx.ModelProto, precision: str, options: dict[str, Any]
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The fp16/int8 form of the checked fp32 export and the metadata written into it; int8
    calibrates by default on the distortion the model was trained with (and the export's
    seed)."""
    from stn_deploy.precision.calibration import CalibrationSpec
    from stn_deploy.precision.convert import apply_precision

    options = dict(options)
    if precision == "int8":
        spec = options.get("calibration") or CalibrationSpec()
        trained = loaded.config.extra.get("trained_on", {}).get("distortion")
        if spec.distortion is None and trained:
            spec = replace(spec, distortion=trained)
        options["calibration"] = spec
    return apply_precision(model, precision, **options)


def default_name(loaded: LoadedModel, lowering: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", loaded.config.arch.split(":")[-1]).strip("-") or "model"
    return f"{base}-{lowering}"


@dataclass
class ExportResult:
    """What ``export_model`` wrote (``to_dict()`` for JSON)."""

    path: str  #: the .onnx file
    golden_path: str  #: its golden bundle NAME.io.npz
    target: str  #: the target profile
    #: the form in the file: native, portable, custom, custom-inline, ort-contrib, separable
    lowering: str
    opset: int  #: default-domain opset of the file
    nodes: int  #: main-graph node count
    samplers: int  #: grid samplers traced (separable ones included)
    separable: int  #: samplers written in the separable form
    bytes: int  #: file size
    golden_source: str  #: what the golden inputs are
    precision: str  #: fp32, fp16 or int8
    #: what apply_precision wrote (calibration or fp16 details), not re-read from metadata
    precision_metadata: dict[str, Any]
    outputs: list[str]  #: output names
    metadata: dict[str, str]  #: the file's metadata_props
    auto: dict[str, Any] | None = None  #: ``--lowering auto``'s figures, else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Settings:
    """The resolved export settings: the target profile with the caller's overrides."""

    target: str
    lowering: str | None  # None: auto, decided after the trace
    opset: int
    inline: bool

    @property
    def auto(self) -> bool:
        return self.lowering is None


def _resolve(target: str, lowering: str | None, opset: int | None, inline: bool) -> _Settings:
    """The target's profile with the caller's lowering, opset and inline, or a one-line error."""
    profile = get_target(target)
    auto = lowering == "auto"
    lowering = None if auto else (lowering or profile.lowering)
    lw = get_lowering(lowering, rewrites=True) if lowering else None
    opset = opset or (max(profile.opset, lw.min_opset) if lw else profile.opset)
    inline = inline or (profile.inline and lowering == "custom")
    if opset < 11:
        raise StnDeployError(f"--opset must be at least 11, got {opset}")
    if lowering == "native" and opset < 16:
        raise StnDeployError(
            f"native GridSample needs opset 16 or newer, got {opset}: use --lowering portable"
        )
    return _Settings(target, lowering, opset, inline)


def _out_dir(out: Path) -> Path:
    """``out`` once its directory is known to exist."""
    out_dir = out.parent if out.suffix == ".onnx" else out
    if not out_dir.is_dir():
        raise StnDeployError(f"output directory {out_dir} does not exist")
    return out


def _export_module(loaded: LoadedModel, expose_stn: bool) -> nn.Module:
    """The module to trace."""
    model = loaded.model.eval()
    if not expose_stn:
        return model
    if not isinstance(getattr(model, "stn", None), SpatialTransformer):
        raise StnDeployError("--expose-stn needs a model with one SpatialTransformer (model.stn)")
    return _ExposeSTN(model).eval()


def _file_metadata(
    loaded: LoadedModel, s: _Settings, lowering: str, export_args: dict[str, Any], extra
) -> dict[str, Any]:
    """The ``stn_deploy.*`` metadata of an export (``extra``: auto figures, separable count)."""
    transform = getattr(getattr(loaded.model, "stn", None), "transform", None)
    norm = loaded.config.normalization
    return {
        "version": stn_deploy.__version__,
        "torch_version": torch.__version__,
        "model": loaded.config.arch,
        "transform": transform.name
        if transform is not None
        else ("none" if hasattr(loaded.model, "stn") else "unknown"),
        "lowering": lowering,
        "target": s.target,
        "opset": str(s.opset),
        "input_layout": input_layout(loaded),
        "normalization_mean": norm["mean"],
        "normalization_std": norm["std"],
        "class_labels": loaded.config.class_labels,
        **extra,
        "precision": "fp32",
        # what it takes to export this file again (verify --bisect re-exports from torch)
        "export_args": export_args,
    }


def _check_exported(onnx_model: onnx.ModelProto) -> None:
    onnx_model.producer_name, onnx_model.producer_version = "stn-deploy", stn_deploy.__version__
    onnx_model.doc_string = ""
    try:
        onnx.checker.check_model(onnx_model, full_check=True)
        onnx.shape_inference.infer_shapes(onnx_model, strict_mode=True)
    except Exception as exc:
        raise StnDeployError(f"the exported model fails onnx.checker: {one_line(exc)}") from None


def _lower_traced(
    loaded: LoadedModel,
    traced: onnx.ModelProto,
    s: _Settings,
    n_separable: int,
    auto_figures: dict[str, Any] | None,
    export_args: dict[str, Any],
) -> tuple[onnx.ModelProto, str, int]:
    """The trace lowered, with its metadata and checked; also the lowering name written and
    how many sampler placeholders the trace held."""
    samplers = sum(n.op_type == "GridSample" for n in traced.graph.node)
    onnx_model = lower_model(traced, s.lowering, inline=s.inline)
    written = "custom-inline" if s.lowering == "custom" and s.inline else s.lowering
    if n_separable and not samplers:
        written = "separable"  # every sampler became two MatMuls: no sampler op in the file
    extra = {
        **({"auto": auto_figures} if auto_figures else {}),
        **({"separable": str(n_separable)} if n_separable else {}),
    }
    mode = export_args.get("optimize", "none")
    if mode != "none":
        from stn_deploy.optimize import optimize_model

        runtime = "openvino" if s.target == "openvino" else "cpu"
        try:
            onnx_model, record = optimize_model(onnx_model, mode, runtime=runtime)
            extra.update(record.metadata())
        except StnDeployError as exc:  # the runtime cannot run the file (a float64 Conv)
            if mode != "exact":  # asked for by name: say why it cannot
                raise
            extra["optimize"] = {"mode": mode, "skipped": one_line(exc)}
    write_metadata(onnx_model, _file_metadata(loaded, s, written, export_args, extra))
    _check_exported(onnx_model)
    return onnx_model, written, samplers


def _self_check(
    onnx_model: onnx.ModelProto,
    names: list[str],
    batches: list[list[np.ndarray]],
    reference,
    precision: str,
    exporter: str = "dynamo",
) -> None:
    """The serialized ``onnx_model`` on ORT CPU against ``reference`` (torch) on ``batches``
    (batch 1 and the golden batch), or a one-line error."""
    hint = (
        "A branch on the batch size? torch.export specialises it to the traced batch (2)"
        if exporter == "dynamo"
        else "A batch-dependent branch baked by the trace (batch 1)? Try {exporter}='dynamo'"
    )
    data = onnx_model.SerializeToString()
    initializers = {i.name for i in onnx_model.graph.initializer}
    inputs = [i.name for i in onnx_model.graph.input if i.name not in initializers]
    run_self_check(data, inputs, names, batches, reference, precision, hint)


@dataclass(frozen=True)
class ExportOptions:
    """The options of :func:`export_model`: pass one object, keywords, or both (keywords win).

    ``lowering``: a registered one (:mod:`stn_deploy.export.lowerings`) or ``auto``; default
    the target's (``sampler``: its deprecated name). ``precision`` fp16 or int8 converts the
    checked fp32 export with :func:`stn_deploy.precision.apply_precision` (``precision_options``
    go there; int8 calibrates on the distortion and seed the model was trained with unless
    ``precision_options["calibration"]`` says otherwise); the golden bundle keeps torch's fp32
    outputs as the reference.

    ``check`` (default on): before the file is kept, run the written bytes on ONNX Runtime CPU
    on the golden inputs at batch 1 and the bundle's batch and compare with torch
    (:mod:`stn_deploy.pytorch.self_check`); a mismatch raises and leaves no file. A skipped
    check is recorded in the ``stn_deploy.self_check`` metadata.

    ``exporter``: ``dynamo`` (torch.export + our translation table,
    :mod:`stn_deploy.pytorch.dynamo_trace`; the default at opset 16 and above) or
    ``torchscript`` (torch's deprecated TorchScript exporter, ``dynamo=False``; the default
    below opset 16). The graph input is ``image`` for zoo models, else named after the
    first parameter of the module's ``forward``. Tuple/list outputs are named ``output_0..n``,
    dict outputs by their keys, unless ``output_names`` says otherwise.
    """

    target: str = "ort-cpu"  #: the target profile (opset and default lowering)
    lowering: str | None = None  #: a lowering name or ``auto``; None: the target's
    opset: int | None = None  #: None: the target's (at least the lowering's minimum)
    inline: bool = False  #: with ``custom``: function bodies written in place
    expose_stn: bool = False  #: outputs log_probs, theta, rectified
    dynamic_batch: bool = True  #: False: batch fixed to 1
    golden_count: int = 8  #: inputs in the golden bundle
    seed: int = 0  #: seed of noise golden inputs (and of ``auto``'s timing inputs)
    separable: bool = True  #: attention STNs (bilinear, zeros) as two MatMuls
    precision: str = "fp32"  #: fp32, fp16 or int8
    precision_options: dict[str, Any] | None = None  #: apply_precision's options
    sampler: str | None = None  #: deprecated name of ``lowering``
    check: bool = True  #: the self-check on ONNX Runtime CPU before the file is kept
    exporter: str | None = None  #: dynamo or torchscript (None: by opset, default_exporter)
    output_names: list[str] | None = None  #: graph output names (None: from the model)
    #: graph rewrites (stn_deploy.optimize): none, exact or auto; None: the target's default
    #: (exact for fp32 ort-cpu files, where the exact passes were measured to win; else none)
    optimize: str | None = None


def default_optimize(target: str, precision: str = "fp32") -> str:
    """The ``optimize`` mode an export uses when none is named: ``exact`` for an fp32 ort-cpu
    file (its passes measured faster there, benchmarks/results/optimize.md), else ``none``
    (other targets, and fp16/int8 files, whose quantised graphs were not measured)."""
    return "exact" if target == "ort-cpu" and precision == "fp32" else "none"


def _checked_options(o: ExportOptions) -> ExportOptions:
    """``o`` validated, with ``sampler`` merged into ``lowering`` and the exporter named."""
    from stn_deploy.precision.convert import check_precision

    lowering = _lowering_arg(o.lowering, o.sampler) if o.sampler is not None else o.lowering
    if o.golden_count < 1:
        raise StnDeployError(f"--golden-count must be at least 1, got {o.golden_count}")
    if o.exporter is not None and o.exporter not in EXPORTERS:
        raise StnDeployError(
            f"unknown {{exporter}} {o.exporter!r}: choose from {', '.join(EXPORTERS)}",
            param="exporter",
        )
    if o.optimize is not None and o.optimize not in ("none", "exact", "auto"):
        raise StnDeployError(
            f"unknown {{optimize}} {o.optimize!r}: choose from none, exact, auto", param="optimize"
        )
    if o.exporter == "torchscript":
        tracing.warn_torchscript_once()
    precision = check_precision(o.precision)
    return replace(o, lowering=lowering, sampler=None, precision=precision)


def _export_args(o: ExportOptions, s: _Settings, names: list[str]) -> dict[str, Any]:
    """What it takes to export the file again (``sampler``: the metadata's key for the
    lowering, which verify --bisect reads)."""
    return {
        **{"target": o.target, "sampler": s.lowering, "opset": s.opset, "inline": s.inline},
        **{"expose_stn": o.expose_stn, "dynamic_batch": o.dynamic_batch},
        "separable": o.separable,
        "exporter": o.exporter,
        "optimize": o.optimize,
        **({"output_names": names} if o.output_names else {}),
    }


def _checked_forms(
    loaded: LoadedModel,
    model: nn.Module,
    onnx_model: onnx.ModelProto,
    names: list[str],
    xs: list[np.ndarray],
    outs: list[torch.Tensor],
    real_inputs: bool,
    o: ExportOptions,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The self-checked file in ``o.precision`` and what apply_precision wrote: the fp32 form
    is always checked (the trace is what a check catches), an fp16/int8 form when its golden
    inputs are real; a skipped check is noted in the metadata."""
    note = skip_note(o.check, o.precision, real_inputs)
    # one list of arrays per checked batch (batch 1, the golden batch): the same for both checks
    batches = [list(b) for b in zip(*(check_batches(x, o.dynamic_batch) for x in xs), strict=True)]
    reference = torch_reference(model, xs, outs)
    if o.check and ort_available():
        own = "fp16" if model_dtype(model) in (torch.float16, torch.bfloat16) else "fp32"
        _self_check(onnx_model, names, batches, reference, own, o.exporter)
    precision_metadata: dict[str, Any] = {"precision": "fp32"}
    if o.precision != "fp32":
        onnx_model, precision_metadata = _apply_precision(
            loaded, onnx_model, o.precision, o.precision_options or {}
        )
    if note:
        write_metadata(onnx_model, {SELF_CHECK_KEY: note})
    elif o.precision != "fp32":
        _self_check(onnx_model, names, batches, reference, o.precision, o.exporter)
    return onnx_model, precision_metadata


def export_model(
    loaded: LoadedModel, out: str | Path, options: ExportOptions | None = None, **kw: Any
) -> ExportResult:
    """Export ``loaded`` to ``out`` (a ``.onnx`` file, or a directory for ``NAME.onnx``).

    ``options`` and/or keywords: the fields of :class:`ExportOptions` (``target=``,
    ``lowering=``, ``opset=``, ``precision=``, ``check=``, ``exporter=``, ``output_names=``,
    ...); keywords override ``options``.
    """
    unknown = sorted(set(kw) - {f.name for f in fields(ExportOptions)})
    if unknown:
        raise TypeError(f"export_model() got unexpected keyword arguments: {', '.join(unknown)}")
    o = _checked_options(replace(options or ExportOptions(), **kw))
    s = _resolve(o.target, o.lowering, o.opset, o.inline)
    o = replace(
        o,
        exporter=o.exporter or default_exporter(s.opset),
        optimize=o.optimize or default_optimize(o.target, o.precision),
    )
    out = _out_dir(Path(out))
    model = _export_module(loaded, o.expose_stn)
    xs, source, raw_outs = golden_batch(loaded, model, o.golden_count, o.seed)
    input_names = input_names_for(loaded)
    single = "log_probs" if is_zoo(loaded) else "output"
    names = output_names_for(raw_outs, o.expose_stn, o.output_names, input_names, single)
    outs = flatten_outputs(raw_outs)[1]
    traced, n_separable = trace(
        model,
        loaded.input_shapes,
        names,
        s.opset,
        o.dynamic_batch,
        o.separable,
        o.exporter,
        tuple(input_names),
    )
    auto_figures = None
    if s.auto:
        ref = outs[0].numpy()
        chosen, auto_figures = choose_lowering(traced, o.target, s.opset, xs, ref, o.seed)
        s = replace(s, lowering=chosen)
    suffix = "" if o.precision == "fp32" else f"-{o.precision}"
    name = f"{default_name(loaded, s.lowering)}{suffix}.onnx"
    path = out if out.suffix == ".onnx" else out / name
    onnx_model, written, samplers = _lower_traced(
        loaded, traced, s, n_separable, auto_figures, _export_args(o, s, names)
    )
    real_inputs = not source.startswith("seeded")
    onnx_model, precision_metadata = _checked_forms(
        loaded, model, onnx_model, names, xs, outs, real_inputs, o
    )
    data = onnx_model.SerializeToString()
    reference = {n: t.detach().numpy() for n, t in zip(names, outs, strict=True)}
    meta = {"model": path.name, "source": source, "seed": o.seed}
    from stn_deploy.pytorch.reference64 import bundle_outputs64  # float32's own error, for verify

    out64 = bundle_outputs64(model, xs, names)
    inputs = dict(zip(input_names, xs, strict=True))
    write_model_with_bundle(path, data, inputs, reference, meta, outputs64=out64)
    return ExportResult(
        path=str(path),
        golden_path=str(bundle_path(path)),
        target=o.target,
        lowering=written,
        opset=default_opset(onnx_model),
        nodes=len(onnx_model.graph.node),
        samplers=samplers + n_separable,
        separable=n_separable,
        auto=auto_figures,
        bytes=len(data),
        golden_source=source,
        precision=o.precision,
        precision_metadata=precision_metadata,
        outputs=names,
        metadata={p.key: p.value for p in onnx_model.metadata_props},
    )
