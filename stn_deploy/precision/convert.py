"""Precision as a step on an fp32 ONNX model: ``apply_precision`` (in memory) and
``quantize_file`` (``stn-deploy quantize``: file in, file + golden bundle out). No torch.

The output keeps the input's metadata and records ``stn_deploy.precision`` (``int8``/``fp16``)
and the details: ``stn_deploy.calibration`` for int8 (count, method, seed, distortion, source,
excluded nodes, ...), ``stn_deploy.fp16`` for fp16 (the nodes kept fp32, keep_io_types).
The golden bundle beside the output holds the *fp32 reference's* outputs (torch's, copied from
the input's own bundle when it has one), so ``verify`` measures the precision's real cost.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import stn_deploy
from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.export.golden import (
    bundle_path,
    check_bundle,
    read_bundle,
    write_model_with_bundle,
)
from stn_deploy.export.metadata import stn_metadata, write_metadata
from stn_deploy.io.paths import check_not_source
from stn_deploy.precision.calibration import CalibrationSpec, calibration_set
from stn_deploy.precision.int8 import is_quantised
from stn_deploy.runtimes.base import graph_inputs, onnx_specs

PRECISIONS = ("fp32", "fp16", "int8")
#: metadata keys written next to ``precision``
CALIBRATION_KEY = "calibration"
FP16_KEY = "fp16"


def check_precision(precision: str, allowed: tuple[str, ...] = PRECISIONS) -> str:
    """``precision`` lower-cased, or a one-line error listing ``allowed``."""
    p = str(precision).strip().lower()
    if p in PRECISIONS and p not in allowed:
        raise StnDeployError(f"precision {p} is not offered here: choose from {', '.join(allowed)}")
    if p not in allowed:
        raise StnDeployError(f"unknown precision {precision!r}: choose from {', '.join(allowed)}")
    return p


def _image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise StnDeployError(f"expected one image input, the model has {len(inputs)}")
    return inputs[0]


def _chw(model: onnx.ModelProto) -> tuple[int, ...]:
    vi = _image_input(model)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    if len(dims) != 4 or any(d is None for d in dims[1:]):
        raise StnDeployError(
            f"int8 calibration needs an (N, C, H, W) input with static C, H, W; "
            f"{vi.name!r} is {dims}"
        )
    return tuple(dims[1:])


def _normalisation(meta: dict[str, str]) -> tuple[list[float], list[float], str]:
    try:
        mean = json.loads(meta["normalization_mean"])
        std = json.loads(meta["normalization_std"])
        return list(mean), list(std), "the model's metadata"
    except (KeyError, ValueError, TypeError):
        from stn_deploy.data import MNIST_MEAN, MNIST_STD

        return [MNIST_MEAN], [MNIST_STD], "MNIST's (the model carries no normalisation metadata)"


def apply_precision(
    model: onnx.ModelProto,
    precision: str,
    *,
    calibration: CalibrationSpec | None = None,
    calibration_data: Any = None,
    cache_dir: str | Path | None = None,
    quantize_sampler: bool = False,
    keep_fp32: tuple[str, ...] = (),
    localization_fp32: bool = False,
    activations: str = "uint8",
    keep_io_types: bool = True,
    fp16_sampler: bool = False,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Convert an fp32 ``model`` to ``precision`` (fp32: returned as is) with its metadata.

    int8 calibrates on MNIST training images (``calibration``; ``calibration_data``: MNIST
    arrays to draw from instead of the cache). Returns the model and the metadata written.
    """
    precision = check_precision(precision)
    if precision == "fp32":
        return model, {"precision": "fp32"}
    why = is_quantised(model)
    if why:
        raise StnDeployError(
            f"the model is already quantised ({why}): convert the fp32 file instead"
        )
    meta = stn_metadata(model)
    extra: dict[str, Any] = {"precision": precision}
    if precision == "int8":
        from stn_deploy.precision.int8 import quantize_int8

        spec = calibration or CalibrationSpec()
        spec.check()
        shape = _chw(model)
        mean, std, norm_from = _normalisation(meta)
        x, source = calibration_set(
            spec, shape, mean, std, data=calibration_data, cache_dir=cache_dir
        )
        out, info = quantize_int8(
            model,
            x,
            method=spec.method,
            quantize_sampler=quantize_sampler,
            keep_fp32=keep_fp32,
            localization_fp32=localization_fp32,
            activations=activations,
        )
        from stn_deploy.precision.calibration import distortion_for

        if info["opset"] != info["opset_from"]:
            extra["opset"] = str(info["opset"])
        extra[CALIBRATION_KEY] = {
            "count": spec.count,
            "method": spec.method,
            "seed": spec.seed,
            "distortion": distortion_for(shape, spec.distortion),
            "source": source,
            "normalization_from": norm_from,
            **info,
        }
    else:
        from stn_deploy.precision.fp16 import convert_fp16

        out, info = convert_fp16(model, keep_io_types=keep_io_types, sampler_fp16=fp16_sampler)
        extra[FP16_KEY] = info
    if model.functions and meta.get("lowering") == "custom":
        extra["lowering"] = "custom-inline"  # the local functions were written in place
    del out.metadata_props[:]
    for p in model.metadata_props:
        entry = out.metadata_props.add()
        entry.key, entry.value = p.key, p.value
    write_metadata(out, extra)
    out.producer_name, out.producer_version = "stn-deploy", stn_deploy.__version__
    out.doc_string = ""
    try:
        onnx.checker.check_model(out)
    except Exception as exc:
        raise StnDeployError(f"the {precision} model fails onnx.checker: {one_line(exc)}") from exc
    return out, extra


def _reference_bundle(src: Path, model: onnx.ModelProto, x_fallback: np.ndarray | None):
    """Inputs and fp32 reference outputs for the output's bundle, and what they are."""
    golden = bundle_path(src)
    if golden.is_file():
        bundle = read_bundle(golden)
        # as verify checks it: a pair left mismatched, NaN, or inputs the model does not take
        outputs = [o.name for o in model.graph.output]
        check_bundle(bundle, golden, src, onnx_specs(graph_inputs(model)), outputs)
        source = bundle.meta.get("source", "")
        return bundle.inputs, bundle.outputs, f"{source}; reference outputs from {golden.name}"
    from stn_deploy.runtimes import open_session

    name = _image_input(model).name
    if x_fallback is None:
        shape = [d.dim_value or 1 for d in _image_input(model).type.tensor_type.shape.dim]
        shape[0] = 8
        x_fallback = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        what = "seeded normal noise (seed 0)"
    else:
        what = "calibration images"
    sess = open_session("cpu", model)
    outs = sess.run({name: x_fallback})
    return (
        {name: x_fallback},
        outs,
        f"{what}; reference outputs from the fp32 ONNX model on ORT CPU",
    )


@dataclass
class QuantizeResult:
    """What ``quantize_file`` wrote."""

    src: str  #: the fp32 input file
    path: str  #: the written model
    golden_path: str  #: its golden bundle (fp32 reference outputs)
    precision: str  #: int8 or fp16
    bytes: int  #: size of the written model
    src_bytes: int  #: size of the input
    nodes: int
    metadata: dict[str, Any] = field(default_factory=dict)  #: what apply_precision wrote

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize_file(
    src: str | Path,
    dst: str | Path,
    precision: str,
    **options: Any,
) -> QuantizeResult:
    """``stn-deploy quantize``: convert the fp32 ONNX file ``src`` to ``precision`` (int8 or
    fp16), write ``dst`` and ``dst``'s golden bundle atomically; returns a
    :class:`QuantizeResult`.

    ``options`` go to :func:`apply_precision`.
    """
    from stn_deploy.runtimes.base import load_onnx

    precision = check_precision(precision, ("fp16", "int8"))
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".onnx":
        raise StnDeployError(f"{{dst}} must name an .onnx file, got {dst}", param="dst")
    if not dst.parent.is_dir():
        raise StnDeployError(f"output directory {dst.parent} does not exist")
    check_not_source(src, dst, "dst")
    model = load_onnx(src)
    inputs, outputs, source = _reference_bundle(src, model, None)  # a bad bundle fails first
    out, extra = apply_precision(model, precision, **options)
    data = out.SerializeToString(deterministic=True)
    write_model_with_bundle(
        dst,
        data,
        inputs,
        outputs,
        {
            "model": dst.name,
            "source": source,
            "reference": f"fp32: {src.name}",
            "precision": precision,
        },
    )
    return QuantizeResult(
        src=str(src),
        path=str(dst),
        golden_path=str(bundle_path(dst)),
        precision=precision,
        bytes=len(data),
        src_bytes=src.stat().st_size,
        nodes=len(out.graph.node),
        metadata=extra,
    )
