"""``stn-deploy inspect``: what an ONNX file holds and where it can run (onnx only, no torch).

Reads any ONNX model, whoever produced it: opsets, inputs and outputs with shapes, metadata, an
op histogram, the grid-sample lowering it carries, and per target runtime whether the file is
expected to run there, with the reason (the runtime facts are those of
``../shared/BASELINES.md``: opset-20 GridSample on TensorRT, OpenVINO and local functions, ...).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from stn_deploy.export.graph import subgraphs
from stn_deploy.export.metadata import read_metadata, stn_metadata

CUSTOM_DOMAIN = "stn_deploy"
MS_DOMAIN = "com.microsoft"
SAMPLER_OPS = ("GridSample", "AffineGrid")
TARGETS = (
    "ort-cpu",
    "ort-cuda",
    "tensorrt",
    "openvino",
    "tflite",
    "ncnn",
    "mnn",
    "iree",
    "generic",
)


def _shape(vi: onnx.ValueInfoProto) -> tuple[str, list[Any]]:
    t = vi.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
    if not t.HasField("shape"):
        return dtype, None
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return dtype, dims


def _all_nodes(model: onnx.ModelProto):
    """Nodes of the main graph, its subgraphs and the model-local functions."""

    def walk(nodes):
        for node in nodes:
            yield node
            for sub in subgraphs(node):
                yield from walk(sub.node)

    yield from walk(model.graph.node)
    for f in model.functions:
        yield from walk(f.node)


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def detect_lowering(model: onnx.ModelProto) -> tuple[str, str]:
    """``(lowering, reason)`` of the grid sampler found in ``model``'s main graph."""
    declared = stn_metadata(model).get("lowering")
    if declared:
        return declared, "declared in the file's stn_deploy.lowering metadata"
    local = {(f.domain, f.name) for f in model.functions}
    kinds = []
    for node in model.graph.node:
        if node.op_type == "GridSample" and node.domain in ("", "ai.onnx"):
            kinds.append("native")
        elif node.op_type == "GridSample" and node.domain == MS_DOMAIN:
            kinds.append("ort-contrib")
        elif node.domain == CUSTOM_DOMAIN:
            kinds.append("custom" if (node.domain, node.op_type) in local else "custom-no-body")
    if not kinds:
        return (
            "none",
            "no GridSample or stn_deploy node: no sampler, or a portable (decomposed) one",
        )
    found = sorted(set(kinds))
    return (
        found[0] if len(found) == 1 else "mixed"
    ), f"{len(kinds)} sampler node(s): {', '.join(found)}"


def _gridsample_modes(model: onnx.ModelProto) -> set[str]:
    modes = set()
    for node in _all_nodes(model):
        if node.op_type == "GridSample":
            for a in node.attribute:
                if a.name == "mode":
                    modes.add(a.s.decode())
            if not any(a.name == "mode" for a in node.attribute):
                modes.add("bilinear" if _opset(model) < 20 else "linear")
    return modes


def _opset(model: onnx.ModelProto, domain: str = "") -> int:
    for imp in model.opset_import:
        if imp.domain == domain or (domain == "" and imp.domain == "ai.onnx"):
            return imp.version
    return 0


@dataclass
class _Facts:
    """What the targets' verdicts depend on."""

    opset: int
    functions: bool  # model-local functions
    foreign: list[str]  # domains other than ONNX's and ours
    has_gs: bool  # ONNX GridSample
    has_ag: bool  # ONNX AffineGrid
    ms_gs: bool  # com.microsoft GridSample
    modes: set[str]  # GridSample modes
    common: list[str]  # problems on every target (custom ops without a function body)
    custom_gs: bool = False  # stn_deploy GridSample: every converter reads it as GridSample
    graph_ops: frozenset = frozenset()  # op types of the main graph (not function bodies)
    lowering: str = ""  # as detect_lowering says
    pad_value: bool = False  # a main-graph Pad with a constant_value input


def _facts(model: onnx.ModelProto) -> _Facts:
    ops = {(n.domain if n.domain != "ai.onnx" else "", n.op_type) for n in model.graph.node}
    bodies = {(f.domain, f.name) for f in model.functions}
    custom_no_body = {op for dom, op in ops if dom == CUSTOM_DOMAIN and (dom, op) not in bodies}
    return _Facts(
        opset=_opset(model),
        functions=bool(model.functions),
        foreign=sorted({dom for dom, _ in ops if dom not in ("", CUSTOM_DOMAIN)}),
        has_gs=("", "GridSample") in ops,
        has_ag=("", "AffineGrid") in ops,
        ms_gs=(MS_DOMAIN, "GridSample") in ops,
        modes=_gridsample_modes(model),
        common=[f"{CUSTOM_DOMAIN}::{op} has no function body" for op in sorted(custom_no_body)],
        custom_gs=(CUSTOM_DOMAIN, "GridSample") in ops,
        graph_ops=frozenset(op for _, op in ops),
        lowering=detect_lowering(model)[0],
        pad_value=any(
            n.op_type == "Pad" and len(n.input) > 2 and n.input[2] for n in model.graph.node
        ),
    )


def target_support(model: onnx.ModelProto) -> dict[str, dict[str, Any]]:
    """Per target: ``{"ok": bool, "why": str}`` from the ops, opset and functions in the file."""
    f = _facts(model)
    verdicts = {
        **_ort_verdicts(f),
        "tensorrt": _tensorrt_verdict(f),
        "openvino": _openvino_verdict(f),
        **{t: _edge_verdict(f, t) for t in ("tflite", "ncnn", "mnn", "iree")},
        "generic": _no_gridsample_verdict(f, "generic"),
    }
    return {
        target: {"ok": not problems, "why": "; ".join(problems or notes or ["standard ops only"])}
        for target, (problems, notes) in verdicts.items()
    }


def _ort_verdicts(f: _Facts) -> dict[str, tuple[list[str], list[str]]]:
    # ONNX Runtime reads local functions, the contrib domain, GridSample 16+ and AffineGrid 20.
    problems = list(f.common) + [
        f"domain {d} is not ONNX Runtime's" for d in f.foreign if d != MS_DOMAIN
    ]
    cpu_notes = ["GridSample runs on one thread for 1-channel images"] if f.has_gs else []
    cuda_notes = []
    if f.has_ag:
        cuda_notes.append("AffineGrid has a CPU kernel only: it falls back to the CPU EP")
    if f.has_gs:
        cuda_notes.append(
            "GridSample has been seen falling back to CPU: check with verify --strict-placement"
        )
    return {"ort-cpu": (problems, cpu_notes), "ort-cuda": (problems, cuda_notes)}


def _tensorrt_verdict(f: _Facts) -> tuple[list[str], list[str]]:
    trt = list(f.common)
    if f.ms_gs or MS_DOMAIN in f.foreign:
        trt.append("com.microsoft ops are ONNX Runtime only")
    if f.has_gs and f.opset >= 20 and ("linear" in f.modes or "cubic" in f.modes):
        trt.append(
            f"opset-{f.opset} GridSample '{'/'.join(sorted(f.modes))}' is imported as nearest without an error (TensorRT#4646): export at opset 16-19"
        )
    return trt, ["local functions need TensorRT 9+"] if f.functions else []


def _openvino_verdict(f: _Facts) -> tuple[list[str], list[str]]:
    ov = list(f.common)
    if f.functions:
        ov.append(
            "OpenVINO's ONNX frontend does not expand model-local functions: inline them first"
        )
    if f.ms_gs or MS_DOMAIN in f.foreign:
        ov.append("com.microsoft ops are ONNX Runtime only")
    notes = (
        ["opset-20 GridSample import needs OpenVINO from May 2026 on"]
        if f.has_gs and f.opset >= 20
        else []
    )
    return ov, notes


#: measured with benchmarks/runtime_matrix.py (results/runtime_matrix.md): onnx2tf 1.29 ->
#: LiteRT 2.3, pnnx -> ncnn 1.0.2026, MNN 3.6.1, IREE 3.13 llvm-cpu
_EDGE_NAMES = {
    "tflite": "onnx2tf/LiteRT",
    "ncnn": "pnnx/ncnn",
    "mnn": "MNN",
    "iree": "IREE",
}


def _edge_verdict(f: _Facts, target: str) -> tuple[list[str], list[str]]:
    """The edge runtimes, from what their converters were measured to do with each form."""
    who = _EDGE_NAMES[target]
    probs = list(f.common)
    if f.ms_gs or MS_DOMAIN in f.foreign:
        probs.append("com.microsoft ops are ONNX Runtime only")
    if f.has_ag:
        probs.append(f"AffineGrid was not measured on {who}: lower it (stn-deploy lower)")
    sampler = f.has_gs or f.custom_gs  # every converter reads stn_deploy.GridSample as GridSample
    if sampler:
        probs += _edge_sampler_problems(f, target)
    else:
        probs += _edge_decomposed_problems(f, target)
    notes = {
        "tflite": ["input becomes NHWC; measured 4e-5 off torch"]
        if sampler
        else ["converts with a static input shape: batch 1 only"],
        "ncnn": ["one image per call (no batch dimension); fp16 storage off for fp32"],
        "mnn": ["Winograd off (runtime hint) for fp32"],
        "iree": ["imported at opset 17"],
    }[target]
    return probs, notes


def _edge_sampler_problems(f: _Facts, target: str) -> list[str]:
    if target == "iree":
        return [
            "IREE 3.13 miscompiles GridSample where the grid leaves [-1, 1] (silently wrong): "
            "use the portable lowering"
        ]
    probs = []
    if target == "tflite" and f.opset >= 20:
        probs.append("onnx2tf rejects the opset-20 GridSample spelling: export at opset 16-19")
    if target == "tflite" and f.modes - {"bilinear"}:
        probs.append("onnx2tf decomposes bilinear GridSample only")
    if target == "ncnn" and f.custom_gs:
        probs.append("pnnx expands the local function into ops ncnn has no layer for (torch.lt)")
    return probs


def _edge_decomposed_problems(f: _Facts, target: str) -> list[str]:
    probs = []
    if target == "ncnn" and "GatherElements" in f.graph_ops:
        probs.append(
            "the portable sampler's ops have no ncnn layer after pnnx (torch.lt, GatherElements)"
        )
    if target == "mnn" and "IsNaN" in f.graph_ops:
        probs.append("MNN has no IsNaN (the portable sampler's NaN guard)")
    if target == "tflite" and f.pad_value:
        probs.append(
            "onnx2tf leaves Flex ops LiteRT cannot run for a Pad with a constant_value input "
            "(older portable files): lower the file again (stn-deploy lower)"
        )
    if target == "tflite" and f.lowering == "custom-inline":
        probs.append("onnx2tf fails on the inlined custom sampler (shape errors): use portable")
    return probs


def _no_gridsample_verdict(f: _Facts, target: str) -> tuple[list[str], list[str]]:
    """A generic runtime: no GridSample/AffineGrid, no functions."""
    probs = list(f.common)
    if f.has_gs or f.has_ag or f.ms_gs:
        probs.append(
            f"{target if target != 'generic' else 'a runtime without GridSample'} cannot run GridSample/AffineGrid: use the portable lowering"
        )
    if f.functions:
        probs.append("model-local functions: inline them")
    if f.foreign:
        probs.append(f"non-standard domains {', '.join(f.foreign)}")
    return probs, []


def inspect_model(path: str | Path) -> dict[str, Any]:
    """Everything ``stn-deploy inspect`` reports about the ONNX file at ``path``, as a dict."""
    from stn_deploy.export.onnx_file import load_onnx

    path = Path(path)
    model = load_onnx(path, load_external_data=False)
    init_names = {i.name for i in model.graph.initializer}
    lowering, reason = detect_lowering(model)
    hist = Counter(_op_key(n) for n in _all_nodes(model))
    return {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opsets": {(imp.domain or "ai.onnx"): imp.version for imp in model.opset_import},
        "inputs": [
            dict(zip(("name", "dtype", "shape"), (vi.name, *_shape(vi)), strict=True))
            for vi in model.graph.input
            if vi.name not in init_names
        ],
        "outputs": [
            dict(zip(("name", "dtype", "shape"), (vi.name, *_shape(vi)), strict=True))
            for vi in model.graph.output
        ],
        "metadata": read_metadata(model),
        "functions": [f"{f.domain}::{f.name}" for f in model.functions],
        "nodes": sum(hist.values()),
        "op_histogram": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "lowering": lowering,
        "lowering_reason": reason,
        "gridsample_modes": sorted(_gridsample_modes(model)),
        "targets": target_support(model),
    }


def format_report(info: dict[str, Any]) -> str:
    """The human-readable form of :func:`inspect_model`'s dict."""

    def shape(s):
        return "?" if s is None else "[" + ", ".join("?" if d is None else str(d) for d in s) + "]"

    lines = [
        f"{info['path']}  ({info['size_bytes']:,} bytes, IR {info['ir_version']}, {info['producer'] or 'unknown producer'})",
        "opsets:   " + ", ".join(f"{d} {v}" for d, v in info["opsets"].items()),
        "inputs:   "
        + "; ".join(f"{i['name']} {i['dtype']} {shape(i['shape'])}" for i in info["inputs"]),
        "outputs:  "
        + "; ".join(f"{o['name']} {o['dtype']} {shape(o['shape'])}" for o in info["outputs"]),
        f"lowering: {info['lowering']} ({info['lowering_reason']})",
    ]
    if info["functions"]:
        lines.append("functions: " + ", ".join(info["functions"]))
    if info["metadata"]:
        lines.append("metadata:")
        lines += [f"  {k} = {v}" for k, v in info["metadata"].items()]
    lines.append(f"ops ({info['nodes']} nodes):")
    lines += [f"  {count:>5}  {op}" for op, count in info["op_histogram"].items()]
    lines.append("targets:")
    lines += [
        f"  {'yes' if t['ok'] else 'NO ':<4} {name:<9} {t['why']}"
        for name, t in info["targets"].items()
    ]
    return "\n".join(lines)
