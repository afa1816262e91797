"""ONNX Runtime, one session per execution provider (``cpu``, ``cuda``, any EP ORT offers).

Node placement comes from ORT's own profiler: a separate profiling session runs the feeds once
and every ``Node`` event names the execution provider that ran it. Those are the nodes of the
optimised graph (fused nodes keep their names, layout reorders appear as extra nodes).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.runtimes.base import (
    NodePlacement,
    RuntimeInfo,
    RuntimeSession,
    RuntimeUnavailable,
    TensorSpec,
)

#: short names for the execution providers people type; any other EP is its name without
#: "ExecutionProvider", lower-cased (e.g. DmlExecutionProvider -> dml). ORT's own OpenVINO EP
#: is "ort-openvino" so that "openvino" stays the OpenVINO runtime itself.
SHORT = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "tensorrt",
    "OpenVINOExecutionProvider": "ort-openvino",
    "ROCMExecutionProvider": "rocm",
    "MIGraphXExecutionProvider": "migraphx",
    "DnnlExecutionProvider": "dnnl",
    "CoreMLExecutionProvider": "coreml",
    "XnnpackExecutionProvider": "xnnpack",
    "QNNExecutionProvider": "qnn",
    "DmlExecutionProvider": "dml",
    "NnapiExecutionProvider": "nnapi",
    "WebGpuExecutionProvider": "webgpu",
}
#: providers that are not compute devices: never picked by "all available"
NOT_COMPUTE = {"AzureExecutionProvider"}

OPT_LEVELS = ("disable", "basic", "extended", "all")


def short_name(ep: str) -> str:
    if ep in SHORT:
        return SHORT[ep]
    base = ep[: -len("ExecutionProvider")] if ep.endswith("ExecutionProvider") else ep
    return base.lower()


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeUnavailable(
            "onnxruntime is not installed (pip install 'stn-deploy[cpu]', or [gpu] for CUDA)"
        ) from exc
    return onnxruntime


def known_eps() -> list[str]:
    """Every EP this ORT build knows of (available or not); [] without ORT."""
    try:
        return list(_ort().get_all_providers())
    except RuntimeUnavailable:
        return list(SHORT)


def ep_for(name: str) -> str | None:
    """The EP for a runtime name ('cuda', 'CUDAExecutionProvider'), or None if it is not one."""
    for ep in set(known_eps()) | set(SHORT):
        if name == ep or name == short_name(ep):
            return ep
    return None


def available_eps() -> list[str]:
    """Compute EPs the installed ORT offers (empty when ORT is missing)."""
    try:
        return [e for e in _ort().get_available_providers() if e not in NOT_COMPUTE]
    except RuntimeUnavailable:
        return []


def check_available(ep: str) -> None:
    """Raise RuntimeUnavailable with the reason when ``ep`` cannot run here."""
    ort = _ort()
    if ep not in ort.get_available_providers():
        hint = (
            " (this is the CPU build of onnxruntime: install onnxruntime-gpu instead, "
            "pip install 'stn-deploy[gpu]')"
            if ep in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
            else ""
        )
        raise RuntimeUnavailable(f"{ep} is not in this onnxruntime {ort.__version__} build{hint}")


def _session_options(
    threads: int | None, opt_level: str | None, profile_dir: str | None = None
) -> Any:
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only: fallbacks are reported by placement(), not logs
    if threads:
        so.intra_op_num_threads = threads
    if opt_level:
        if opt_level not in OPT_LEVELS:
            raise StnDeployError(
                f"unknown graph optimisation level {opt_level!r}: choose from {', '.join(OPT_LEVELS)}"
            )
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[opt_level]
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "ort_profile")
    return so


class OrtSession(RuntimeSession):
    """An ``onnxruntime.InferenceSession`` on one EP (plus the CPU EP for what it cannot take,
    as ORT always does; placement() shows which nodes that was)."""

    def __init__(
        self,
        model: str | Path | bytes,
        ep: str = "CPUExecutionProvider",
        *,
        name: str | None = None,
        threads: int | None = None,
        opt_level: str | None = None,
        provider_options: dict[str, Any] | None = None,
    ) -> None:
        ort = _ort()
        check_available(ep)
        self.ep = ep
        self.primary = ep
        self._model = str(model) if isinstance(model, Path) else model
        self._threads, self._opt = threads, opt_level
        self._providers = [(ep, provider_options or {})]
        if ep != "CPUExecutionProvider":
            self._providers.append(("CPUExecutionProvider", {}))
        self.sess = self._make(None)
        used = self.sess.get_providers()
        if ep not in used:
            raise RuntimeUnavailable(
                f"{ep} did not initialise (no device or driver?): ORT fell back to {used}"
            )
        self.inputs = [_spec(i) for i in self.sess.get_inputs()]
        self.outputs = [_spec(o) for o in self.sess.get_outputs()]
        device = ort.get_device()
        self.info = RuntimeInfo(
            name=name or short_name(ep),
            library="onnxruntime",
            version=ort.__version__,
            device="CPU" if ep == "CPUExecutionProvider" else f"{short_name(ep)} ({device})",
            providers=tuple(used),
            extra={"threads": threads or 0, "graph_optimization": opt_level or "all"},
        )
        self._placement: list[NodePlacement] | None = None

    def _make(self, profile_dir: str | None):
        ort = _ort()
        so = _session_options(self._threads, self._opt, profile_dir)
        try:
            return ort.InferenceSession(self._model, so, providers=self._providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
            raise StnDeployError(
                f"onnxruntime ({short_name(self.ep)}) cannot load the model: {one_line(exc)}"
            ) from exc

    def run(self, feeds, output_names=None):
        self.check_feeds(feeds)
        names = output_names or [o.name for o in self.outputs]
        try:
            outs = self.sess.run(names, feeds)
        except Exception as exc:
            raise StnDeployError(
                f"onnxruntime ({self.info.name}) failed to run the model: {one_line(exc)}"
            ) from exc
        return dict(zip(names, outs, strict=True))

    def placement(self, feeds):
        if self._placement is None:
            self.check_feeds(feeds)
            with tempfile.TemporaryDirectory(prefix="stn-deploy-prof-") as tmp:
                sess = self._make(tmp)
                sess.run(None, feeds)
                self._placement = parse_profile(sess.end_profiling())
        return self._placement


def parse_profile(path: str | Path) -> list[NodePlacement]:
    """Node placements from an ORT profile JSON (one entry per node, in first-run order)."""
    try:
        events = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StnDeployError(f"cannot read the ORT profile {path}: {exc}") from exc
    seen: dict[str, NodePlacement] = {}
    for ev in events:
        if ev.get("cat") != "Node":
            continue
        args = ev.get("args") or {}
        if "provider" not in args:
            continue
        node = ev.get("name", "")
        for suffix in ("_kernel_time", "_fence_before", "_fence_after"):
            if node.endswith(suffix):
                node = node[: -len(suffix)]
        if node not in seen:
            seen[node] = NodePlacement(node, args.get("op_name", "?"), args["provider"])
    return list(seen.values())


def _spec(arg) -> TensorSpec:
    t = arg.type  # e.g. "tensor(float)"
    dtype = {
        "tensor(float)": "float32",
        "tensor(float16)": "float16",
        "tensor(double)": "float64",
        "tensor(int64)": "int64",
        "tensor(int32)": "int32",
        "tensor(int8)": "int8",
        "tensor(uint8)": "uint8",
        "tensor(bool)": "bool",
    }.get(t, t)
    shape = None if arg.shape is None else tuple(d if d is not None else None for d in arg.shape)
    return TensorSpec(arg.name, dtype, shape)
