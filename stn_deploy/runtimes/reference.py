"""The onnx reference evaluator (``onnx.reference``): a slow, independent oracle in numpy.

Two corrections are loaded with it:

- ``GatherElements``: onnx's goes through ``np.choose``, which takes at most 64 choices, so it
  is wrong once the gathered axis is longer than 64 (any portable sampler on an image above
  about 62 pixels a side). Ours uses ``np.take_along_axis``.
- ``GridSample``: onnx 1.23's only knows opset 20's mode names (linear, cubic); opset 16-19
  files say bilinear and bicubic. ORT's contrib ``com.microsoft.GridSample`` (the
  ``ort-contrib`` lowering) has the same attributes and is evaluated the same way.
- ``LogSoftmax``: onnx's computes ``log(softmax(x))``, which is ``-inf`` wherever the softmax
  underflows (a logit gap above about 17 in float16, 104 in float32: any confident fp16
  classifier). Ours is ``x - max - log(sum(exp(x - max)))``, in float32 for float16 inputs.
- ``DequantizeLinear`` in files below opset 19 (our int8 exports): onnx 1.23 implements only
  opset 19 and later, which compute the same thing for per-tensor and per-axis scales.

Model-local functions are inlined first so the corrections apply inside them too.

onnx's GridSample loops over the output pixels in Python (about 0.4 ms per bilinear point on a
2-core EPYC: minutes for one 224x224 RGB image), so verify asks
:meth:`ReferenceSession.estimate_seconds_per_image` before the first call and runs what fits its
time budget (:mod:`stn_deploy.verify.budget`). The estimate times onnx's GridSample here on a
small 2x16x16 input in the file's mode and scales by the sampled points of every GridSample,
times a safety factor of 2 (the per-point cost grows with the image: 3x32x32 costs about 1.1x
the probe's per point, and the machine's load changes between the probe and the run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.runtimes.base import (
    RuntimeInfo,
    RuntimeSession,
    default_opset,
    graph_inputs,
    load_inlined,
    onnx_specs,
)


def _dequantize_before_19() -> list:
    from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_19

    class DequantizeLinear(DequantizeLinear_19):
        """Opsets 10-18: per-tensor / per-axis, as opset 19 without its float8 types."""

        def _run(self, x, x_scale, x_zero_point=None, axis=None, **_later_attributes):
            # the schema the evaluator reads is the newest (block_size, output_dtype): unused
            return super()._run(x, x_scale, x_zero_point, 1 if axis is None else axis)

    return [DequantizeLinear]


def _new_ops() -> list:
    from onnx.reference.op_run import OpRun
    from onnx.reference.ops.op_grid_sample import GridSample as _RefGridSample
    from onnx.reference.ops.op_log_softmax import LogSoftmax as _RefLogSoftmax

    class GatherElements(OpRun):
        def _run(self, data, indices, axis=None):
            axis = 0 if axis is None else axis
            idx = indices.astype(np.int64)
            idx = np.where(idx < 0, idx + data.shape[axis], idx)
            return (np.take_along_axis(data, idx, axis=axis),)

    class GridSample(_RefGridSample):
        """Opset 16-19 mode names (bilinear, bicubic) as well as opset 20's."""

        def _run(self, X, grid, mode=None, padding_mode=None, align_corners=None):
            mode = mode or self.mode
            mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
            return super()._run(
                X,
                grid,
                mode=mode,
                padding_mode=padding_mode or self.padding_mode,
                align_corners=self.align_corners if align_corners is None else align_corners,
            )

    class ContribGridSample(GridSample):
        op_domain = "com.microsoft"

    ContribGridSample.__name__ = "GridSample"

    class LogSoftmax(_RefLogSoftmax):
        def _run(self, X, axis=None):
            if X.size == 0:
                return (X,)
            axis = self.axis if axis is None else axis
            x = X.astype(np.float32) if X.dtype == np.float16 else X
            shifted = x - x.max(axis=axis, keepdims=True)
            out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
            return (out.astype(X.dtype),)

    return [GatherElements, GridSample, ContribGridSample, LogSoftmax]


class ReferenceSession(RuntimeSession):
    def __init__(self, model: str | Path, *, name: str = "reference") -> None:
        import onnx
        from onnx.reference import ReferenceEvaluator

        proto = load_inlined(model)  # so that the corrected ops above apply inside functions too
        self.inputs = onnx_specs(graph_inputs(proto))
        self.outputs = onnx_specs(proto.graph.output)
        try:
            extra = _dequantize_before_19() if default_opset(proto) < 19 else []
            self.evaluator = ReferenceEvaluator(proto, new_ops=_new_ops() + extra)
        except Exception as exc:
            raise StnDeployError(
                f"the onnx reference evaluator cannot load the model: {one_line(exc)}"
            ) from exc
        self.primary = "numpy"
        self._samplers = _sampler_points(proto)
        self.info = RuntimeInfo(
            name=name,
            library="onnx.reference",
            version=onnx.__version__,
            device="CPU (numpy)",
            providers=("numpy",),
        )

    def estimate_seconds_per_image(self) -> float:
        """Seconds the GridSample nodes of the file take per image on this evaluator: the
        points each samples (C x H_out x W_out, from shape inference; the first input's size
        when unknown) times onnx's measured cost per point in that mode here."""
        cost = sum(points * _seconds_per_point(attrs) for points, attrs in self._samplers)
        return ESTIMATE_SAFETY * cost

    def run(self, feeds, output_names=None):
        self.check_feeds(feeds)
        names = output_names or [o.name for o in self.outputs]
        try:
            outs = self.evaluator.run(names, feeds)
        except Exception as exc:
            raise StnDeployError(f"the onnx reference evaluator failed: {one_line(exc)}") from exc
        return {n: np.asarray(o) for n, o in zip(names, outs, strict=True)}


def _sampler_points(proto) -> list[tuple[int, tuple[str, str, int]]]:
    """``(points per image, (mode, padding_mode, align_corners))`` of every GridSample node."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
        shapes = {
            v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
        }
    except Exception:  # shape inference is a convenience here: fall back to the input's size
        shapes = {}
    first = onnx_specs(graph_inputs(proto))
    fallback = 1
    for d in (first[0].shape or ())[1:] if first else ():
        fallback *= d if isinstance(d, int) and d > 0 else 1
    out = []
    for node in proto.graph.node:
        if node.op_type != "GridSample":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        key = (
            _text(attrs.get("mode", "bilinear")),
            _text(attrs.get("padding_mode", "zeros")),
            int(attrs.get("align_corners", 0)),
        )
        dims = shapes.get(node.output[0]) or []
        points = 1
        for d in dims[1:]:
            points *= d
        out.append((points if len(dims) >= 3 and all(dims[1:]) else fallback, key))
    return out


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


_COST: dict[tuple[str, str, int], float] = {}
#: the estimate's margin over the probe's measured cost
ESTIMATE_SAFETY = 2.0
_PROBE = 16


def _seconds_per_point(key: tuple[str, str, int]) -> float:
    """onnx's GridSample time per output point in ``(mode, padding, align_corners)``, timed
    here once per process on a 1x2x16x16 input, the grid inside the image (0 when it cannot be
    timed)."""
    if key not in _COST:
        import time

        from onnx import TensorProto, helper

        mode, padding, align = key
        node = helper.make_node(
            "GridSample", ["x", "g"], ["y"], mode=mode, padding_mode=padding, align_corners=align
        )
        graph = helper.make_graph(
            [node],
            "probe",
            [
                helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, _PROBE, _PROBE]),
                helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, _PROBE, _PROBE, 2]),
            ],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        )
        opset = 20 if mode in ("linear", "cubic") else 16
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        rng = np.random.default_rng(0)
        feeds = {
            "x": rng.random((1, 2, _PROBE, _PROBE), dtype=np.float32),
            "g": rng.random((1, _PROBE, _PROBE, 2), dtype=np.float32) * 1.8 - 0.9,
        }
        try:
            sess = ReferenceSession(model)
            t0 = time.perf_counter()
            sess.run(feeds)
            _COST[key] = (time.perf_counter() - t0) / (2 * _PROBE * _PROBE)
        except StnDeployError:
            _COST[key] = 0.0
    return _COST[key]
