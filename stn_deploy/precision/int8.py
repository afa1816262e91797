"""int8: ONNX Runtime static quantisation, QDQ format, per-channel weights (onnx + ORT, no torch).

:func:`quantize_int8` quantises the weighted layers (Conv, Gemm, MatMul) and the activations
between them with ranges calibrated on the images given, and by default leaves the STN's float
region (:mod:`stn_deploy.precision.region`: θ's Gemm, the grid generator, the sampler) in fp32.
ORT's quantiser still feeds a shared input (the image goes to the localisation Conv *and* the
sampler) through one Q/DQ pair; the region's inputs are rewired to the float tensors afterwards,
so no QuantizeLinear lies between the image or θ and the sampler, and ORT can fuse the Conv's
DequantizeLinear (it fuses only a DQ with a single consumer).

Per-channel weights need opset 13: a model below (the portable and ort-contrib exports at 11)
is raised to 13 with the lowering's opset retargeting first. Activations are unsigned
int8 (U8S8, the x86 form: OpenVINO runs it 1.4x faster than fp32 here and S8S8 1.4x slower;
ORT CPU runs both at the same speed), weights signed int8 per output channel, biases int32. Models with model-local functions (the ``custom`` lowering) are inlined first. The
logits are left unquantised in front of (Log)Softmax.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.precision.qdq import float_outputs, float_scores, rewire_region_inputs
from stn_deploy.precision.region import (
    constant_names,
    float_region,
    inline_functions,
    is_weighted,
    localization_nodes,
)
from stn_deploy.runtimes.base import default_opset, graph_inputs

_QDQ = ("QuantizeLinear", "DequantizeLinear")
#: per-channel weights need DequantizeLinear's ``axis`` (opset 13): older models are raised
PER_CHANNEL_OPSET = 13
_ACTIVATIONS = {"int8": lambda qz: qz.QuantType.QInt8, "uint8": lambda qz: qz.QuantType.QUInt8}
_METHOD_NAMES = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def _quantization():
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise StnDeployError(
            "int8 quantisation needs onnxruntime (pip install 'stn-deploy[cpu]')"
        ) from exc
    return quantization


def _raise_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` at opset 13 (per-channel DequantizeLinear has an ``axis`` from 13 on), through
    the lowering's opset retargeting; its samplers are left in the form they have."""
    from stn_deploy.export.lower import lower_model

    contrib = any(
        n.op_type == "GridSample" and n.domain == "com.microsoft" for n in model.graph.node
    )
    return lower_model(model, "ort-contrib" if contrib else "portable", opset=PER_CHANNEL_OPSET)


def quantisable_nodes(model: onnx.ModelProto, region: set[int]) -> list[str]:
    """Names (or op types) of the weighted nodes outside ``region``: what int8 is about."""
    constants = constant_names(model)
    return [
        n.name or n.op_type
        for i, n in enumerate(model.graph.node)
        if i not in region and is_weighted(n, constants)
    ]


def quantize_int8(
    model: onnx.ModelProto,
    calibration: np.ndarray,
    *,
    method: str = "minmax",
    quantize_sampler: bool = False,
    keep_fp32: Sequence[str] = (),
    localization_fp32: bool = False,
    activations: str = "uint8",
    batch: int = 64,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """A QDQ int8 copy of ``model`` calibrated on ``calibration`` ``(N, C, H, W)`` (normalised
    model inputs), and a summary: nodes kept in fp32, quantised layers, Q/DQ counts.

    ``quantize_sampler`` quantises θ's Gemm and the grid generator too (the sampler op itself
    has no int8 kernel and reads dequantised inputs); ``keep_fp32`` names more nodes to leave
    in fp32 (e.g. single-channel first convolutions, slow in int8 on ORT CPU);
    ``localization_fp32`` keeps the localisation net's layers fp32 too (an int8 localisation
    net moves θ a little, and with it every pixel: most of int8's argmax disagreements).
    ``activations``: ``uint8`` (default) or ``int8``.

    Example:
        >>> q, info = quantize_int8(onnx.load("m.onnx"), x)  # doctest: +SKIP
        >>> info["excluded_ops"]                               # doctest: +SKIP
        {'Constant': 3, 'Gemm': 1, 'GridSample': 1, 'MatMul': 1, 'Reshape': 2, 'Transpose': 1}
    """
    qz = _quantization()
    if activations not in _ACTIVATIONS:
        raise StnDeployError(f"activations must be uint8 or int8, got {activations!r}")
    if method not in _METHOD_NAMES:
        raise StnDeployError(
            f"unknown calibration method {method!r}: choose from {', '.join(_METHOD_NAMES)}"
        )
    model = inline_functions(copy.deepcopy(model))
    opset_from = default_opset(model)
    if opset_from < PER_CHANNEL_OPSET:
        model = _raise_opset(model)
    region, targets = _plan_region(model, quantize_sampler, keep_fp32, localization_fp32)
    nodes = model.graph.node
    for i, n in enumerate(nodes):
        if not n.name:  # ORT's exclusion list is by node name
            n.name = f"stn_deploy_node_{i}"
    excluded = [nodes[i].name for i in sorted(region)]
    excluded_ops = Counter(nodes[i].op_type for i in region)
    reader = _reader(qz, model, calibration, batch)
    quantised = _quantize_static(qz, model, reader, excluded, method, activations)
    float_logits = float_scores(quantised)
    rewired = rewire_region_inputs(quantised, set(excluded))
    kept_outputs = float_outputs(quantised, set(excluded))
    counts = Counter(n.op_type for n in quantised.graph.node)
    return quantised, {
        "opset": max(opset_from, PER_CHANNEL_OPSET),
        "opset_from": opset_from,
        "method": method,
        "format": "QDQ",
        "activations": activations,
        "weights": "int8 per channel",
        "quantize_sampler": quantize_sampler,
        "localization_fp32": localization_fp32,
        "excluded_nodes": excluded,
        "excluded_ops": dict(sorted(excluded_ops.items())),
        "quantised_layers": targets,
        "quantize_linear": counts["QuantizeLinear"],
        "dequantize_linear": counts["DequantizeLinear"],
        "region_inputs_rewired": rewired,
        "float_scores": float_logits,
        "float_outputs": kept_outputs,
    }


def _plan_region(
    model: onnx.ModelProto,
    quantize_sampler: bool,
    keep_fp32: Sequence[str],
    localization_fp32: bool,
) -> tuple[set[int], list[str]]:
    """The node indices kept fp32 and the names of the layers to quantise, or a one-line
    error (not one image input, an unknown ``keep_fp32`` name, nothing to quantise)."""
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise StnDeployError(
            f"int8 calibration feeds one image input; the model has {len(inputs)} inputs"
        )
    nodes = model.graph.node
    region = set() if quantize_sampler else float_region(model)
    known = {n.name for n in nodes}
    unknown = sorted(set(keep_fp32) - known)
    if unknown:
        raise StnDeployError(
            f"{{keep_fp32}}: the model has no node named {', '.join(unknown)}", param="keep_fp32"
        )
    region |= {i for i, n in enumerate(nodes) if n.name in set(keep_fp32)}
    if localization_fp32:
        region |= localization_nodes(model)
    targets = quantisable_nodes(model, region)
    if not targets:
        raise StnDeployError(
            "nothing to quantise: the model has no Conv, Gemm or MatMul with weights"
            + ("" if quantize_sampler else " outside the STN's grid generator and sampler")
        )
    return region, targets


def _reader(qz, model: onnx.ModelProto, calibration: np.ndarray, batch: int):
    """ORT's calibration reader over ``calibration``, in batches of ``batch`` (of the model's
    own batch when it is static)."""
    inputs = graph_inputs(model)
    name = inputs[0].name
    x = np.ascontiguousarray(calibration, dtype=np.float32)
    dims = inputs[0].type.tensor_type.shape.dim
    fixed = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0
    if fixed > 0:  # a static-batch model takes exactly that many images per call
        batch = fixed
        x = x[: len(x) - len(x) % fixed]
        if not len(x):
            raise StnDeployError(
                f"the model's batch is fixed at {fixed}: calibrate on at least {fixed} images"
            )

    class _Reader(qz.CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):
            if self.i >= len(x):
                return None
            feed = {name: x[self.i : self.i + batch]}
            self.i += batch
            return feed

    return _Reader()


def _quantize_static(
    qz, model: onnx.ModelProto, reader, excluded: list[str], method: str, activations: str
) -> onnx.ModelProto:
    """ORT's ``quantize_static`` (QDQ, per-channel int8 weights) through temporary files,
    quietly; its failures are one line."""
    with tempfile.TemporaryDirectory(prefix="stn-deploy-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)  # ORT logs "consider pre-processing" on every call
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # and entropy/percentile print
                qz.quantize_static(
                    str(src),
                    str(dst),
                    reader,
                    quant_format=qz.QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=_ACTIVATIONS[activations](qz),
                    weight_type=qz.QuantType.QInt8,
                    nodes_to_exclude=excluded or None,
                    calibrate_method=getattr(qz.CalibrationMethod, _METHOD_NAMES[method]),
                    # (entropy: quantize_static passes no bin count, and ORT's default of 128
                    # histogram bins for 128 quantised bins leaves only the full range: here
                    # it gives minmax's ranges)
                    extra_options={"CalibTensorRangeSymmetric": False},
                )
        except StnDeployError:
            raise
        except Exception as exc:
            raise StnDeployError(f"onnxruntime quantisation failed: {one_line(exc)}") from exc
        finally:
            logging.disable(previous)
        return onnx.load(str(dst))


def is_quantised(model: onnx.ModelProto) -> str | None:
    """Why ``model`` is already reduced-precision (a line), or None for a float32 model."""
    from stn_deploy.export.metadata import stn_metadata

    precision = stn_metadata(model).get("precision")
    if precision and precision != "fp32":
        return f"its metadata says precision {precision}"
    ops = Counter(n.op_type for n in model.graph.node)
    q = [
        op for op in ops if op in _QDQ or op.startswith(("QLinear", "ConvInteger", "MatMulInteger"))
    ]
    if q:
        return f"it holds {', '.join(sorted(q))} nodes"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "it holds fp16 weights"
    return None
