"""Every lowering x every runtime: converts?, parity with torch, argmax agreement, latency vs ORT.

For each committed export ``exported/mnist-affine-{native,portable,custom-inline,custom}.onnx``
and each runtime (ORT CPU, OpenVINO f32, the onnx reference evaluator, LiteRT via onnx2tf, ncnn
via pnnx, MNN, IREE llvm-cpu; TVM only where it is already installed) the script opens the file
on the runtime (the edge runtimes convert it into a fresh cache first), runs the golden images
of the bundle beside it (torch's outputs), and reports max |delta log-prob| against torch,
argmax agreement, and p50 latency per call at batch 1 and 64 as a ratio to ORT CPU on the same
file, timed in the same run (short runs: ``--iters``). A cell that does not run or is not at
parity says why (the runtime's one-line error). ``portable-now`` is the native file lowered to
portable (opset 17) by this tree's ``stn-deploy lower``, compared with the native file's golden
outputs: the lowering as it is now, when the committed portable file predates a change.

    flock /tmp/stn-bench.lock .venv/bin/python benchmarks/runtime_matrix.py
    # LiteRT needs onnx2tf: make onnx2tf; STN_DEPLOY_ONNX2TF=.venv-onnx2tf/bin/onnx2tf

Writes benchmarks/results/runtime_matrix.{md,json}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOWERINGS = ("native", "portable", "custom-inline", "custom", "portable-now")
RUNTIMES = ("cpu", "openvino", "reference", "litert", "ncnn", "mnn", "iree")
BATCHES = (1, 64)
#: parity: max |delta| <= PARITY * max(1, max|torch|) and every argmax equal
PARITY = 1e-4


def p50_us(call, iters: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e6)


def one_cell(
    runtime: str, path: Path, x: np.ndarray, ref: np.ndarray, iters: int, threads: int
) -> dict:
    from stn_deploy.errors import one_line
    from stn_deploy.runtimes import availability, open_session

    a = availability(runtime)
    if not a.available:
        return {"ok": False, "stage": "unavailable", "why": a.reason}
    t0 = time.perf_counter()
    try:
        session = open_session(runtime, str(path), threads=threads)
    except Exception as exc:
        return {"ok": False, "stage": "convert/load", "why": one_line(exc)}
    opened = time.perf_counter() - t0
    try:
        out = session.run({"image": x})["log_probs"]
    except Exception as exc:
        return {"ok": False, "stage": "run", "why": one_line(exc)}
    delta = float(np.nanmax(np.abs(out - ref))) if np.isfinite(out).all() else float("inf")
    agree = float(np.mean(out.argmax(1) == ref.argmax(1)))
    cell = {
        "ok": True,
        "open_s": round(opened, 2),
        "max_delta": delta,
        "argmax": agree,
        "parity": delta <= PARITY * max(1.0, float(np.abs(ref).max())) and agree == 1.0,
        "extra": {
            k: str(v) for k, v in session.info.extra.items() if k in ("converter", "batch_per_call")
        },
    }
    if runtime == "reference":
        return cell  # far too slow to time
    for b in BATCHES:
        feeds = {"image": np.ascontiguousarray(np.resize(x, (b, *x.shape[1:])))}
        try:
            cell[f"p50_b{b}_us"] = p50_us(
                lambda f=feeds: session.run(f), iters if b == 1 else max(3, iters // 4)
            )
        except Exception as exc:
            cell[f"p50_b{b}_us"] = None
            cell.setdefault("why", f"batch {b}: {one_line(exc)}")
    return cell


def lowered_now(tmp: Path) -> Path:
    """The native export lowered to portable at opset 17 by this tree's lowering."""
    from stn_deploy.export.lower import lower_file

    path = tmp / "mnist-affine-portable-now.onnx"
    lower_file(ROOT / "exported" / "mnist-affine-native.onnx", path, "portable", opset=17)
    return path


def tvm_note() -> str:
    return (
        "installed (not wired as a runtime)" if importlib.util.find_spec("tvm") else "not installed"
    )


def cell_text(c: dict, base: dict) -> str:
    if not c.get("ok"):
        return f"✗ {c['stage']}"
    mark = "✓" if c["parity"] else "✗ parity"
    ratios = []
    for b in BATCHES:
        t, t0 = c.get(f"p50_b{b}_us"), base.get(f"p50_b{b}_us") if base.get("ok") else None
        ratios.append(f"{t / t0:.1f}×" if t and t0 else "–")
    return f"{mark} {c['max_delta']:.0e}, argmax {c['argmax']:.0%}, b1 {ratios[0]}, b64 {ratios[1]}"


NOTES = [
    "- portable-now is the native file lowered by this tree (`stn-deploy lower --lowering portable"
    " --opset 17`): its sampler Pad has no constant_value input and its opset is 17; the"
    " committed portable file (opset 11) has the input, and onnx2tf leaves Flex ops in it that"
    " LiteRT cannot run. The lead regenerates exported/ with the new lowering.",
    "- IREE refuses files with a GridSample node (native, and custom, which its importer reads as"
    " GridSample): `benchmarks/repros/iree_gridsample_oob.py` shows the miscompile.",
    "- ncnn: pnnx expands the custom file's local function and the portable sampler into ops"
    " without an ncnn layer (the load error names the first).",
]


def markdown(results: dict, machine: str, command: str) -> str:
    lines = [
        "# Runtime matrix: every lowering on every runtime",
        "",
        f"Machine: {machine}",
        f"Edge libraries: {results['edge_versions']}; TVM: {results['tvm']}",
        "",
        f"Command: `{command}`",
        "",
        "Cells: parity vs torch's golden outputs (8 golden images of the bundle): ✓ when max |Δ log-prob|",
        f"≤ {PARITY:g}·max(1, max|torch|) and every argmax agrees; then max |Δ|, argmax agreement,",
        "and p50 per call at batch 1 and 64 as a ratio to ORT CPU on the same file in the same run",
        f"({results['threads']} thread(s) per runtime, short runs: on a shared 2-core machine the ratios",
        "are rough, and thread pools that spin (ncnn's OpenMP, MNN) suffer most when it is busy).",
        "",
        "| runtime | " + " | ".join(LOWERINGS) + " |",
        "|---|" + "---|" * len(LOWERINGS),
    ]
    for rt in RUNTIMES:
        row = [
            cell_text(results["cells"][low][rt], results["cells"][low]["cpu"]) for low in LOWERINGS
        ]
        lines.append(f"| {rt} | " + " | ".join(row) + " |")
    lines += ["", "## Why each cell that is not at parity is not", ""]
    for low in LOWERINGS:
        for rt in RUNTIMES:
            c = results["cells"][low][rt]
            if not c.get("ok") or not c.get("parity") or c.get("why"):
                why = (
                    c.get("why")
                    or f"max |Δ| {c.get('max_delta'):.2e}, argmax {c.get('argmax'):.0%}"
                )
                lines.append(f"- **{low} on {rt}** ({c.get('stage', 'parity')}): {why}")
    lines += ["", "## Notes", ""]
    for low in LOWERINGS:
        for rt in RUNTIMES:
            c = results["cells"][low][rt]
            per_call = str(c.get("extra", {}).get("batch_per_call", ""))
            if c.get("ok") and per_call.startswith("1"):
                lines.append(f"- {low} on {rt}: one image per call ({per_call}); batch 64 loops")
    lines += NOTES
    lines += ["", "Latency p50 µs (batch 1 / batch 64):", ""]
    lines += ["| runtime | " + " | ".join(LOWERINGS) + " |", "|---|" + "---|" * len(LOWERINGS)]
    for rt in RUNTIMES:
        row = []
        for low in LOWERINGS:
            c = results["cells"][low][rt]
            ts = [c.get(f"p50_b{b}_us") for b in BATCHES]
            row.append(" / ".join(f"{t:,.0f}" if t else "–" for t in ts))
        lines.append(f"| {rt} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def edge_versions() -> str:
    from stn_deploy.convert.base import package_version

    names = ("ai-edge-litert", "ncnn", "pnnx", "mnn", "iree-base-compiler", "iree-base-runtime")
    found = [f"{n} {package_version(n)}" for n in names if package_version(n)]
    exe = os.environ.get("STN_DEPLOY_ONNX2TF")
    if exe:
        from stn_deploy.convert.tflite import _version

        found.append(f"onnx2tf {_version(Path(exe))}")
    return ", ".join(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20, help="timed calls at batch 1")
    parser.add_argument("--lowerings", default=",".join(LOWERINGS))
    parser.add_argument("--threads", type=int, default=1, help="threads per runtime")
    parser.add_argument("--cache", type=Path, default=None, help="conversion cache to reuse")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "runtime_matrix")
    args = parser.parse_args()
    from stn_deploy.bench.machine import format_machine, machine_description
    from stn_deploy.export.golden import bundle_path, read_bundle
    from stn_deploy.io.atomic import write_text_atomic

    cache = args.cache or Path(tempfile.mkdtemp(prefix="stn-matrix-cache-"))
    os.environ["STN_DEPLOY_CACHE"] = str(cache)
    results = {
        "cells": {},
        "tvm": tvm_note(),
        "edge_versions": edge_versions(),
        "threads": args.threads,
    }
    for low in args.lowerings.split(","):
        path = ROOT / "exported" / f"mnist-affine-{low}.onnx"
        if low == "portable-now":
            path = lowered_now(Path(os.environ["STN_DEPLOY_CACHE"]))
        bundle = read_bundle(bundle_path(ROOT / "exported" / "mnist-affine-native.onnx"))
        if low != "portable-now":
            bundle = read_bundle(bundle_path(path))
        x, ref = bundle.inputs["image"], bundle.outputs["log_probs"]
        results["cells"][low] = {}
        for rt in RUNTIMES:
            cell = one_cell(rt, path, x, ref, args.iters, args.threads)
            results["cells"][low][rt] = cell
            print(low, rt, json.dumps(cell), flush=True)
    machine = format_machine(machine_description())
    command = "python benchmarks/runtime_matrix.py " + " ".join(sys.argv[1:])
    results["machine"] = machine
    write_text_atomic(args.out.with_suffix(".json"), json.dumps(results, indent=2) + "\n")
    write_text_atomic(args.out.with_suffix(".md"), markdown(results, machine, command.strip()))
    print(f"wrote {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
