"""OpenVINO (the ``openvino`` extra), CPU by default, computing in f32 by default.

OpenVINO's ONNX frontend does not expand model-local functions, so they are inlined with
``onnx.inliner`` first; the model is then read from memory, never written anywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stn_deploy.errors import StnDeployError
from stn_deploy.runtimes.base import (
    RuntimeInfo,
    RuntimeSession,
    RuntimeUnavailable,
    graph_inputs,
    load_inlined,
    onnx_specs,
)


def _ov():
    try:
        import openvino
    except ImportError as exc:
        raise RuntimeUnavailable(
            "openvino is not installed (pip install 'stn-deploy[openvino]')"
        ) from exc
    return openvino


def check_available(device: str = "CPU") -> None:
    ov = _ov()
    devices = ov.Core().available_devices
    if device not in devices:
        raise RuntimeUnavailable(f"OpenVINO has no {device} device here (it sees {devices})")


class OpenVinoSession(RuntimeSession):
    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "CPU",
        name: str = "openvino",
        threads: int | None = None,
        performance_hint: str | None = None,
        precision: str = "f32",
    ) -> None:
        ov = _ov()
        check_available(device)
        proto = load_inlined(model)  # the ONNX frontend does not expand model-local functions
        self.inputs = onnx_specs(graph_inputs(proto))
        self.outputs = onnx_specs(proto.graph.output)
        core = ov.Core()
        # OpenVINO's CPU plugin computes in bf16 by default on CPUs with AMX/AVX512-BF16
        # (0.02 off after the first Conv here): f32 unless asked otherwise.
        config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if performance_hint:
            config["PERFORMANCE_HINT"] = performance_hint
        try:
            ov_model = core.read_model(proto.SerializeToString(), b"")
            self.compiled = core.compile_model(ov_model, device, config)
        except Exception as exc:
            raise StnDeployError(f"OpenVINO cannot load the model: {ov_message(exc)}") from exc
        self.request = self.compiled.create_infer_request()
        self._out_ports = {}
        for port in self.compiled.outputs:
            for n in port.get_names():
                self._out_ports[n] = port
        self.primary = device
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        #: the precision the compiled model actually computes in ("fp32", "bf16", "fp16"): a
        #: bf16 hint falls back to f32 on CPUs without bf16 support, silently
        self.compute_precision = compute_precision_name(hint)
        self.info = RuntimeInfo(
            name=name,
            library="openvino",
            version=ov.__version__ if hasattr(ov, "__version__") else ov.get_version(),
            device=device,
            providers=(device,),
            extra={
                "threads": threads or 0,
                "inference_precision": str(hint),
                "compute_precision": self.compute_precision,
            },
        )

    def run(self, feeds, output_names=None):
        self.check_feeds(feeds)
        names = output_names or [o.name for o in self.outputs]
        try:
            res = self.request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        except Exception as exc:
            raise StnDeployError(f"OpenVINO failed to run the model: {ov_message(exc)}") from exc
        out = {}
        for n in names:
            port = self._out_ports.get(n)
            if port is None:
                raise StnDeployError(f"OpenVINO model has no output {n!r}")
            out[n] = np.array(res[port], copy=True)
        return out


def compute_precision_name(hint: object) -> str:
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` (an ``ov.Type`` or a string such as ``bf16``,
    ``f32``, ``<Type: 'bfloat16'>``) as stn-deploy names precisions: fp32, bf16, fp16, ..."""
    get_name = getattr(hint, "get_type_name", None)
    name = str(get_name() if callable(get_name) else hint).lower()
    # most specific first: "bfloat16" contains "float16", "bf16" contains "f16"
    for key, label in _PRECISION_NAMES:
        if key in name:
            return label
    return name


_PRECISION_NAMES = (
    ("bfloat16", "bf16"),
    ("bf16", "bf16"),
    ("float16", "fp16"),
    ("f16", "fp16"),
    ("float32", "fp32"),
    ("f32", "fp32"),
)


def ov_message(exc: Exception) -> str:
    """The informative line of an OpenVINO exception (they start with source locations)."""
    lines = [m.strip() for m in str(exc).splitlines() if m.strip()]
    for key in ("No conversion rule found", "Conversion is failed"):
        hit = [m.lstrip("- ") for m in lines if key in m]
        if hit:
            return "; ".join(hit)[:300]
    lines = [m for m in lines if not m.startswith(("Exception from", "Check '"))]
    return (lines[0] if lines else type(exc).__name__)[:300]
