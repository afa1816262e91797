"""``stn-deploy export``: a torch model -> ``NAME.onnx`` with our grid-sample lowering + ``NAME.io.npz``.

How the exporter owns the lowering (torch's TorchScript exporter, ``dynamo=False``):

1. ``F.affine_grid`` is replaced, for the duration of the trace, by one MatMul of θ against a
   constant ``(H*W, 3)`` base grid (the projective and TPS transforms are MatMuls already), so
   no AffineGrid (opset 20, CPU-only in ORT) and no broadcast Mul+ReduceSum (the dynamo
   exporter's form) reach the file. A user's own module calling ``F.affine_grid`` gets the same.
2. ``aten::grid_sampler`` is exported at any opset >= 11 as a ``com.microsoft::GridSample``
   placeholder carrying mode, padding_mode and align_corners.
3. :func:`stn_deploy.export.lower.lower_model` rewrites every placeholder into the chosen form
   (native / portable / custom / ort-contrib), the same code ``stn-deploy lower`` runs.

Then metadata, ``onnx.checker`` (full) and strict shape inference, an atomic write, and the
golden bundle beside the model.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

import stn_deploy
from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.export.golden import bundle_path, write_model_with_bundle
from stn_deploy.export.lower import _lowering_arg, lower_model
from stn_deploy.export.lowerings import get_lowering, lowering_names
from stn_deploy.export.metadata import SELF_CHECK_KEY, write_metadata
from stn_deploy.export.targets import get_target
from stn_deploy.pytorch.models.loading import LoadedModel
from stn_deploy.pytorch.models.separable import separable_attention_sample
from stn_deploy.pytorch.models.stn import SpatialTransformer
from stn_deploy.pytorch.models.transforms import AttentionTransform, base_grid
from stn_deploy.pytorch.self_check import (
    check_batches,
    ort_available,
    run_self_check,
    skip_note,
)
from stn_deploy.pytorch.train import Normalizer
from stn_deploy.runtimes.base import default_opset
from stn_deploy.timing import median_us

_MODES = {0: "bilinear", 1: "nearest", 2: "bicubic"}
_PADDINGS = {0: "zeros", 1: "border", 2: "reflection"}


def _grid_sampler_symbolic(g, x, grid, mode, padding, align_corners):
    from torch.onnx import symbolic_helper as sh

    out = g.op(
        "com.microsoft::GridSample",
        x,
        grid,
        mode_s=_MODES[sh._maybe_get_const(mode, "i")],
        padding_mode_s=_PADDINGS[sh._maybe_get_const(padding, "i")],
        align_corners_i=int(sh._maybe_get_const(align_corners, "b")),
    )
    xs, gs = sh._get_tensor_sizes(x), sh._get_tensor_sizes(grid)
    if xs and gs and len(xs) == 4 and len(gs) == 4:  # (N, C, H_out, W_out): keeps shapes known
        out.setType(x.type().with_sizes([xs[0], xs[1], gs[1], gs[2]]))
    return out


def matmul_affine_grid(
    theta: torch.Tensor, size, align_corners: bool | None = None
) -> torch.Tensor:
    """``F.affine_grid`` as one MatMul against a constant base grid: ``(N, 2, 3)`` -> ``(N, H, W, 2)``."""
    if len(size) != 4:
        raise StnDeployError(f"only 2-D affine grids can be exported, got size {list(size)}")
    h, w = int(size[-2]), int(size[-1])
    base = base_grid(h, w, bool(align_corners), dtype=theta.dtype, device=theta.device)
    return torch.matmul(base, theta.transpose(1, 2)).reshape(-1, h, w, 2)


_OPSETS = range(11, 21)


def _separable_applies(stn: SpatialTransformer) -> bool:
    cfg = stn.sampler
    attention = isinstance(stn.transform, AttentionTransform)
    return attention and (cfg.mode, cfg.padding_mode) == ("bilinear", "zeros")


@contextlib.contextmanager
def _separable_attention(applied: list):
    """For one export: attention STNs with bilinear/zeros sample through two MatMuls (each
    use is appended to ``applied``)."""
    original = SpatialTransformer.sample

    def sample(self, x, theta):
        if not _separable_applies(self):
            return original(self, x, theta)
        applied.append(self)
        out_hw = self.sampler.out_hw(tuple(int(v) for v in x.shape[-2:]))
        return separable_attention_sample(x, theta, out_hw, self.sampler.align_corners)

    SpatialTransformer.sample = sample
    try:
        yield
    finally:
        SpatialTransformer.sample = original


@contextlib.contextmanager
def _matmul_affine_grid():
    """For one export only: F.affine_grid as a MatMul against a constant base grid."""
    original = F.affine_grid
    F.affine_grid = matmul_affine_grid
    try:
        yield
    finally:
        F.affine_grid = original


@contextlib.contextmanager
def _lowered_grid_generators():
    """For one export only: F.affine_grid as a MatMul, aten::grid_sampler as the placeholder.

    Both are restored afterwards, so the user's own later ``torch.onnx.export`` calls behave
    as stock.
    """
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    original = F.affine_grid
    F.affine_grid = matmul_affine_grid
    for opset in _OPSETS:
        register_custom_op_symbolic("aten::grid_sampler", _grid_sampler_symbolic, opset)
    try:
        yield
    finally:
        F.affine_grid = original
        for opset in _OPSETS:
            unregister_custom_op_symbolic("aten::grid_sampler", opset)


class _ExposeSTN(nn.Module):
    """Outputs (log_probs, theta, rectified) of a classifier with a single SpatialTransformer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        rect, theta = self.model.stn.forward_with_theta(x)
        return self.model.classify(rect), theta, rect


def golden_inputs(loaded: LoadedModel, count: int, seed: int) -> tuple[np.ndarray, str]:
    """``(count, C, H, W)`` normalised inputs: real distorted MNIST test images when the cache
    holds MNIST and the model was trained on it, else seeded uniform noise."""
    shape = tuple(loaded.config.input_shape)
    trained = loaded.config.extra.get("trained_on", {})
    norm = loaded.config.normalization
    kind = trained.get("distortion")
    pixels, source = None, f"seeded uniform noise (seed {seed})"
    if kind and shape[0] == 1:
        from stn_deploy.data import CANVAS, load_mnist, make_split

        if CANVAS.get(kind) == shape[1] == shape[2]:
            try:
                data = load_mnist()
            except StnDeployError:
                data = None
            if data is not None:
                tseed = trained.get("seed", 0)
                pixels, _ = make_split(
                    data.test_images[:count], data.test_labels[:count], kind, tseed, split="test"
                )
                source = (
                    f"the first {count} MNIST test images, {kind.upper()}-distorted (seed {tseed})"
                )
    if pixels is None:
        pixels = np.random.default_rng(seed).random((count, *shape), dtype=np.float32)
    return Normalizer.from_config(norm)(pixels).numpy(), source


EXPORTERS = ("torchscript", "dynamo")
_warned_torchscript = False


def _warn_torchscript_once() -> None:
    global _warned_torchscript
    if not _warned_torchscript:
        _warned_torchscript = True
        warnings.warn(
            "the torchscript exporter (exporter='torchscript', --exporter torchscript) uses "
            "torch's TorchScript ONNX exporter (dynamo=False), deprecated upstream since torch 2.9",
            FutureWarning,
            stacklevel=3,
        )


def _trace(
    model: nn.Module,
    shape,
    names: list[str],
    opset: int,
    dynamic_batch: bool,
    separable: bool = True,
    exporter: str = "torchscript",
) -> tuple[onnx.ModelProto, int]:
    """torch.onnx.export with our grid generators and the sampler placeholder; also returns
    how many samplers were written in the separable form."""
    applied: list = []
    separable_ctx = _separable_attention(applied) if separable else contextlib.nullcontext()
    if exporter == "dynamo":
        from stn_deploy.pytorch.dynamo_trace import dynamo_trace

        batch = 2 if dynamic_batch else 1
        with _matmul_affine_grid(), separable_ctx:
            traced = dynamo_trace(
                model, (torch.zeros(batch, *shape),), ["image"], names, opset, dynamic_batch
            )
        return traced, len(applied)
    buf = io.BytesIO()
    axes = {n: {0: "N"} for n in ["image", *names]} if dynamic_batch else None
    try:
        with (
            _lowered_grid_generators(),
            separable_ctx,
            warnings.catch_warnings(),
            torch.inference_mode(False),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.zeros(1, *shape),),
                buf,
                opset_version=opset,
                dynamo=False,
                input_names=["image"],
                output_names=names,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except StnDeployError:
        raise
    except Exception as exc:  # the exporter's own errors: one line naming the op
        raise StnDeployError(
            f"torch.onnx.export failed at opset {opset}: {one_line(exc)} "
            "(the dynamo exporter, {exporter}='dynamo', may export it)",
            param="exporter",
        ) from None
    return onnx.load_from_string(buf.getvalue()), len(applied)


AUTO_PROVIDERS = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider"}
#: ``--lowering auto``'s candidates, in the registry's order
AUTO_CANDIDATES = lowering_names(auto=True)


def _auto_provider(target: str) -> tuple[Any, str]:
    """onnxruntime and the provider ``auto`` times on for ``target``, or a one-line error."""
    if target not in AUTO_PROVIDERS:
        raise StnDeployError(
            f"--lowering auto times the candidates on the target runtime, which stn-deploy can do "
            f"for {', '.join(AUTO_PROVIDERS)}; for {target} pick --lowering"
        )
    try:
        import onnxruntime as ort
    except ImportError:
        raise StnDeployError(
            "--lowering auto needs onnxruntime: pip install 'stn-deploy[cpu]'"
        ) from None
    provider = AUTO_PROVIDERS[target]
    if provider not in ort.get_available_providers():
        raise StnDeployError(
            f"--lowering auto for {target} needs {provider}, which this onnxruntime lacks"
        )
    return ort, provider


def choose_lowering(
    traced: onnx.ModelProto,
    target: str,
    opset: int,
    x: np.ndarray,
    reference: np.ndarray,
    seed: int,
) -> tuple[str, dict[str, Any]]:
    """Lower ``traced`` to each candidate, keep those at parity with torch on ``x`` (max abs
    difference <= 1e-4 on the first output) and return the fastest (median µs at batch 1 +
    batch 64 on the target's ONNX Runtime provider) with every candidate's figures."""
    ort, provider = _auto_provider(target)
    rng = np.random.default_rng(seed)
    feeds = {b: rng.standard_normal((b, *x.shape[1:])).astype(np.float32) for b in (1, 64)}
    figures: dict[str, Any] = {}
    for cand in AUTO_CANDIDATES:
        need = get_lowering(cand).min_opset
        if opset < need:
            figures[cand] = {"skipped": f"{cand} needs opset {need}, the export uses {opset}"}
            continue
        sess = ort.InferenceSession(
            lower_model(traced, cand).SerializeToString(), providers=[provider]
        )
        diff = float(np.abs(sess.run(None, {"image": x})[0] - reference).max())
        row = {"max_abs_diff": diff, "at_parity": bool(diff <= 1e-4)}
        if row["at_parity"]:
            for b, feed in feeds.items():
                row[f"batch{b}_us"] = round(
                    median_us(lambda feed=feed, sess=sess: sess.run(None, {"image": feed})), 1
                )
        figures[cand] = row
    timed = {c: r["batch1_us"] + r["batch64_us"] for c, r in figures.items() if "batch1_us" in r}
    if not timed:
        raise StnDeployError(f"--lowering auto: no candidate is at parity with torch: {figures}")
    chosen = min(timed, key=timed.get)
    return chosen, {
        "provider": provider,
        "chosen": chosen,
        "score": "median us at batch 1 + batch 64",
        "candidates": figures,
    }


choose_sampler = choose_lowering  # the former name


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
    shape = list(loaded.config.input_shape)
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
        "input_layout": f"image: NCHW float32 {shape}, pixels in 0..1 then (x - mean) / std",
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


def flatten_outputs(outs: Any) -> tuple[list[str] | None, list[torch.Tensor]]:
    """A forward's result as (its own names: dict keys, else None) and its tensors in graph
    order; tensors, tuples/lists of tensors and dicts of tensors, else a one-line error."""
    if isinstance(outs, torch.Tensor):
        return None, [outs]
    if isinstance(outs, dict):
        keys, values = [str(k) for k in outs], list(outs.values())
    elif isinstance(outs, (tuple, list)):
        keys, values = None, list(outs)
    else:
        raise StnDeployError(
            f"the model returns {type(outs).__name__}: export needs a tensor, or a tuple, list "
            "or dict of tensors"
        )
    bad = [type(v).__name__ for v in values if not isinstance(v, torch.Tensor)]
    if bad or not values:
        raise StnDeployError(
            f"the model returns a {type(outs).__name__} holding {bad[0] if bad else 'nothing'}: "
            "export needs tensors (no nesting)"
        )
    return keys, values


def output_names_for(outs: Any, expose_stn: bool, override: list[str] | None = None) -> list[str]:
    """Graph output names: ``override``, else dict keys, ``output_0..n`` for a tuple/list,
    ``log_probs`` for one tensor (``log_probs, theta, rectified`` with ``--expose-stn``)."""
    keys, values = flatten_outputs(outs)
    if override:
        if len(override) != len(values):
            raise StnDeployError(
                f"{{output_names}} gives {len(override)} names, the model has {len(values)} "
                "outputs",
                param="output_names",
            )
        names = list(override)
    elif expose_stn:
        names = ["log_probs", "theta", "rectified"]
    elif keys is not None:
        names = keys
    elif isinstance(outs, torch.Tensor):
        names = ["log_probs"]
    else:
        names = [f"output_{i}" for i in range(len(values))]
    if len(set(names)) != len(names) or any(not n or "/" in n or n == "image" for n in names):
        what = "{output_names}" if override else "the model's output names"
        raise StnDeployError(
            f"{what} must be distinct, non-empty, without '/', not 'image': {names}",
            param="output_names",
        )
    return names


def _golden(
    loaded: LoadedModel, model: nn.Module, count: int, seed: int
) -> tuple[np.ndarray, str, Any]:
    """The golden inputs, what they are, and torch's outputs on them (as the model returns)."""
    x, source = golden_inputs(loaded, count, seed)
    with torch.inference_mode():
        outs = model(torch.from_numpy(x))
    return x, source, outs


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
    write_metadata(onnx_model, _file_metadata(loaded, s, written, export_args, extra))
    _check_exported(onnx_model)
    return onnx_model, written, samplers


def _torch_reference(model: nn.Module, x: np.ndarray, outs: list[torch.Tensor]):
    """torch's outputs for a self-check batch: the golden batch ``x`` already has them
    (``outs``); any other batch is run once and kept, so the fp32 and the fp16/int8 checks
    share it."""
    done: dict[int, list[np.ndarray]] = {id(x): [o.detach().float().numpy() for o in outs]}

    def reference(arrays: list[np.ndarray]) -> list[np.ndarray]:
        (a,) = arrays
        if id(a) not in done:
            with torch.inference_mode():
                got = flatten_outputs(model(torch.from_numpy(a)))[1]
            done[id(a)] = [o.detach().float().numpy() for o in got]
        return done[id(a)]

    return reference


def _self_check(
    onnx_model: onnx.ModelProto,
    names: list[str],
    batches: list[list[np.ndarray]],
    reference,
    precision: str,
    exporter: str = "torchscript",
) -> None:
    """The serialized ``onnx_model`` on ORT CPU against ``reference`` (torch) on ``batches``
    (batch 1 and the golden batch), or a one-line error."""
    hint = (
        "A branch on the batch size? torch.export specialises it to the traced batch (2)"
        if exporter == "dynamo"
        else "A batch-dependent branch baked by the trace (batch 1)? Try {exporter}='dynamo'"
    )
    data = onnx_model.SerializeToString()
    run_self_check(data, ["image"], names, batches, reference, precision, hint)


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

    ``exporter``: ``torchscript`` (default: torch's TorchScript exporter, ``dynamo=False``) or
    ``dynamo`` (torch.export + our translation table, opset 18+,
    :mod:`stn_deploy.pytorch.dynamo_trace`). Tuple/list outputs are named ``output_0..n``,
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
    exporter: str | None = None  #: torchscript (None: default) or dynamo
    output_names: list[str] | None = None  #: graph output names (None: from the model)


def _checked_options(o: ExportOptions) -> ExportOptions:
    """``o`` validated, with ``sampler`` merged into ``lowering`` and the exporter named."""
    from stn_deploy.precision.convert import check_precision

    lowering = _lowering_arg(o.lowering, o.sampler) if o.sampler is not None else o.lowering
    if o.golden_count < 1:
        raise StnDeployError(f"--golden-count must be at least 1, got {o.golden_count}")
    exporter = o.exporter or "torchscript"
    if exporter not in EXPORTERS:
        raise StnDeployError(
            f"unknown {{exporter}} {exporter!r}: choose from {', '.join(EXPORTERS)}",
            param="exporter",
        )
    if o.exporter == "torchscript":
        _warn_torchscript_once()
    precision = check_precision(o.precision)
    return replace(o, lowering=lowering, sampler=None, exporter=exporter, precision=precision)


def _export_args(o: ExportOptions, s: _Settings, names: list[str]) -> dict[str, Any]:
    """What it takes to export the file again (``sampler``: the metadata's key for the
    lowering, which verify --bisect reads)."""
    return {
        **{"target": o.target, "sampler": s.lowering, "opset": s.opset, "inline": s.inline},
        **{"expose_stn": o.expose_stn, "dynamic_batch": o.dynamic_batch},
        "separable": o.separable,
        **({"exporter": o.exporter} if o.exporter != "torchscript" else {}),
        **({"output_names": names} if o.output_names else {}),
    }


def _checked_forms(
    loaded: LoadedModel,
    model: nn.Module,
    onnx_model: onnx.ModelProto,
    names: list[str],
    x: np.ndarray,
    outs: list[torch.Tensor],
    real_inputs: bool,
    o: ExportOptions,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The self-checked file in ``o.precision`` and what apply_precision wrote: the fp32 form
    is always checked (the trace is what a check catches), an fp16/int8 form when its golden
    inputs are real; a skipped check is noted in the metadata."""
    note = skip_note(o.check, o.precision, real_inputs)
    batches = [[b] for b in check_batches(x, o.dynamic_batch)]  # the same arrays for both checks
    reference = _torch_reference(model, x, outs)
    if o.check and ort_available():
        _self_check(onnx_model, names, batches, reference, "fp32", o.exporter)
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
    if o.exporter == "dynamo" and o.opset is None:
        s = replace(s, opset=max(s.opset, 18))
    out = _out_dir(Path(out))
    model = _export_module(loaded, o.expose_stn)
    x, source, raw_outs = _golden(loaded, model, o.golden_count, o.seed)
    names = output_names_for(raw_outs, o.expose_stn, o.output_names)
    outs = flatten_outputs(raw_outs)[1]
    shape = tuple(loaded.config.input_shape)
    traced, n_separable = _trace(
        model, shape, names, s.opset, o.dynamic_batch, o.separable, o.exporter
    )
    auto_figures = None
    if s.auto:
        ref = outs[0].numpy()
        chosen, auto_figures = choose_lowering(traced, o.target, s.opset, x, ref, o.seed)
        s = replace(s, lowering=chosen)
    suffix = "" if o.precision == "fp32" else f"-{o.precision}"
    name = f"{default_name(loaded, s.lowering)}{suffix}.onnx"
    path = out if out.suffix == ".onnx" else out / name
    onnx_model, written, samplers = _lower_traced(
        loaded, traced, s, n_separable, auto_figures, _export_args(o, s, names)
    )
    real_inputs = not source.startswith("seeded")
    onnx_model, precision_metadata = _checked_forms(
        loaded, model, onnx_model, names, x, outs, real_inputs, o
    )
    data = onnx_model.SerializeToString()
    reference = {n: t.detach().numpy() for n, t in zip(names, outs, strict=True)}
    meta = {"model": path.name, "source": source, "seed": o.seed}
    write_model_with_bundle(path, data, {"image": x}, reference, meta)
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
