"""Regenerate exported/: mnist-affine trained on RTS MNIST, exported with each lowering, and its card.

    .venv/bin/python exported/build.py        (needs `stn-deploy data fetch` for the test set)

For every lowering: export (with its golden bundle), then on ONNX Runtime CPU run the 10,000
RTS test images (the training seed's fixed distortion) and compare with torch: test error,
argmax agreement, max |Δ log-prob|. Then the int8 (static QDQ, calibrated on 512 RTS-distorted
training images, seed 0) and fp16 files: the same accuracy figures, and their batch-64 latency
as a ratio to the fp32 file of the same lowering (ORT CPU, and OpenVINO for int8; 2 threads,
interleaved rounds, measured in this run). Writes exported/README.md; the model files and
bundles come out byte-identical on every run, the latency ratios in the card do not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from stn_deploy.data import load_mnist, make_split
from stn_deploy.inspect_onnx import inspect_model
from stn_deploy.precision.latency import interleaved_median_us
from stn_deploy.pytorch.exporter import export_model
from stn_deploy.pytorch.models import load_checkpoint
from stn_deploy.pytorch.train import Normalizer
from stn_deploy.runtimes import open_session

HERE = Path(__file__).resolve().parent


def _machine_line() -> str:
    from stn_deploy.bench.machine import machine_description

    m = machine_description()
    isa = [f for f in ("avx512_vnni", "avx512f", "avx2") if f in _cpu_flags()]
    v = m["versions"]
    return (
        f"{m['cpu']} ({isa[0] if isa else 'no AVX2'}), {m['cores']} cores, torch {v.get('torch')}, "
        f"onnxruntime {v.get('onnxruntime')}, openvino {v.get('openvino')}"
    )


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


LOWERINGS = [  # (file suffix, target, sampler, opset, inline)
    ("native", "ort-cpu", "native", 17, False),
    ("portable", "generic", "portable", 11, False),
    ("custom", "ort-cpu", "custom", 17, False),
    ("custom-inline", "openvino", "custom", 16, True),
    ("ort-contrib", "ort-cpu", "ort-contrib", 11, False),
]
PRECISIONS = [  # (file suffix, fp32 file suffix, precision)
    ("native-int8", "native", "int8"),
    ("native-fp16", "native", "fp16"),
    ("portable-int8", "portable", "int8"),
]


def batch64_ratios(pairs: list[tuple[str, Path, Path]], runtime: str, x: np.ndarray) -> dict:
    """{name: file time / its fp32 file's time} at batch 64 on ``runtime``: 200 calls per file
    in 10 interleaved rounds (load from elsewhere lands on all files alike)."""
    paths = {str(p) for _, p, base in pairs} | {str(base) for _, p, base in pairs}
    calls = {}
    for path in sorted(paths):
        sess = open_session(runtime, path, threads=2)
        calls[path] = lambda sess=sess: sess.run({"image": x})
    t = interleaved_median_us(calls, rounds=10, iters=20)
    return {n: t[str(p)]["median_us"] / t[str(base)]["median_us"] for n, p, base in pairs}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", type=Path, default=HERE / "mnist-affine-rts.pt")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()

    loaded = load_checkpoint(args.checkpoint)
    trained = loaded.config.extra["trained_on"]
    data = load_mnist()
    x, y = make_split(
        data.test_images, data.test_labels, trained["distortion"], trained["seed"], split="test"
    )
    xn = Normalizer.from_config(loaded.config.normalization)(x)
    with torch.inference_mode():
        ref = torch.cat([loaded.model(xn[i : i + 1000]) for i in range(0, len(xn), 1000)]).numpy()
    torch_err = 100 * float((ref.argmax(1) != y).mean())
    rows = []
    for suffix, target, sampler, opset, inline in LOWERINGS:
        s = export_model(
            loaded,
            args.out / f"mnist-affine-{suffix}.onnx",
            target=target,
            lowering=sampler,
            opset=opset,
            inline=inline,
        )
        sess = ort.InferenceSession(s.path, providers=["CPUExecutionProvider"])
        out = np.concatenate(
            [
                sess.run(None, {"image": xn[i : i + 1000].numpy()})[0]
                for i in range(0, len(xn), 1000)
            ]
        )
        info = inspect_model(s.path)
        rows.append(
            {
                "file": Path(s.path).name,
                "lowering": s.lowering,
                "opset": opset,
                "kb": s.bytes / 1024,
                "nodes": s.nodes,
                "error": 100 * float((out.argmax(1) != y).mean()),
                "agree": 100 * float((out.argmax(1) == ref.argmax(1)).mean()),
                "maxdiff": float(np.abs(out - ref).max()),
                "runtimes": ", ".join(t for t, v in info["targets"].items() if v["ok"]),
            }
        )
        print(rows[-1], flush=True)
    prows = []
    x64 = xn[:64].numpy()
    for suffix, base, precision in PRECISIONS:
        fp32_row = next(r for r in rows if r["file"] == f"mnist-affine-{base}.onnx")
        low = next(lw for lw in LOWERINGS if lw[0] == base)
        s = export_model(
            loaded,
            args.out / f"mnist-affine-{suffix}.onnx",
            target=low[1],
            lowering=low[2],
            opset=low[3],
            inline=low[4],
            precision=precision,
        )
        sess = ort.InferenceSession(s.path, providers=["CPUExecutionProvider"])
        out = np.concatenate(
            [
                sess.run(None, {"image": xn[i : i + 1000].numpy()})[0]
                for i in range(0, len(xn), 1000)
            ]
        )
        row = {
            "file": Path(s.path).name,
            "precision": precision,
            "lowering": s.lowering,
            "kb": s.bytes / 1024,
            "fp32_kb": fp32_row["kb"],
            "error": 100 * float((out.argmax(1) != y).mean()),
            "agree": 100 * float((out.argmax(1) == ref.argmax(1)).mean()),
        }
        row["fp32_path"] = args.out / fp32_row["file"]
        row["path"] = Path(s.path)
        prows.append(row)
        print(prows[-1], flush=True)
    for rt in ("cpu", "openvino"):
        pairs = [
            (r["file"], r["path"], r["fp32_path"])
            for r in prows
            if rt == "cpu" or r["precision"] == "int8"  # fp16 is for GPUs: ORT CPU only
        ]
        for name, ratio in batch64_ratios(pairs, rt, x64).items():
            next(r for r in prows if r["file"] == name)[rt] = ratio
    lines = [
        "# exported/",
        "",
        "`mnist-affine` (the PyTorch tutorial's STN) trained on RTS MNIST by `benchmarks/accuracy.py`",
        f"(checkpoint `mnist-affine-rts.pt`, 42×42 input, torch test error {torch_err:.2f} %), exported",
        "with each grid-sample lowering. Each `NAME.onnx` has its golden bundle `NAME.io.npz` (8 real",
        "RTS test images and torch's outputs) and its metadata (normalisation mean 0.1307 / std 0.3081",
        "on 0..1 pixels, class labels, lowering, opset; `stn-deploy inspect NAME.onnx` shows it).",
        "",
        "Regenerate: `.venv/bin/python exported/build.py` (after `make setup` and `stn-deploy data fetch`).",
        "Figures: ONNX Runtime CPU on all 10,000 RTS test images (seed-fixed distortion), against torch.",
        f"Measured on: {_machine_line()} (torch's and ORT's kernels differ by CPU: the golden bundles'",
        "torch outputs and the figures below move by float32 ulps, int8 by more, from one CPU to another).",
        "",
        "| file | lowering | opset | KB | nodes | test error % (ORT) | argmax = torch | max abs Δ log-prob | runs on (per `inspect`) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['file']}` | {r['lowering']} | {r['opset']} | {r['kb']:.0f} | {r['nodes']} | {r['error']:.2f} "
            f"| {r['agree']:.2f} % | {r['maxdiff']:.1e} | {r['runtimes']} |"
        )
    lines += [
        "",
        "`custom` keeps one `stn_deploy.GridSample` node whose body is a model-local function (runtimes",
        "that read local functions, or that register their own kernel for the op); `custom-inline` is the",
        "same body written in place, for OpenVINO. `ort-contrib` is ONNX Runtime's `com.microsoft`",
        "GridSample, for ORT builds at opsets below 16.",
        "",
        "## int8 and fp16",
        "",
        "Made by `stn-deploy export --precision int8|fp16` (the same as `stn-deploy quantize` on the fp32",
        "file): int8 is ONNX Runtime static quantisation in QDQ format, per-channel int8 weights, uint8",
        "activations calibrated (minmax) on 512 RTS-distorted MNIST *training* images (seed 0); fp16 is",
        "ONNX Runtime's float16 converter with float32 inputs and outputs. In both, θ's Gemm, the grid",
        "generator (MatMul/Reshape/Transpose) and the sampler stay fp32 (`stn_deploy.calibration` /",
        "`stn_deploy.fp16` metadata list the nodes), and the logits stay float into LogSoftmax. The",
        "golden bundles hold torch's fp32 outputs, so `stn-deploy verify` measures the precision's",
        "real cost. Portable int8 is at opset 13 (per-channel DequantizeLinear needs it).",
        "",
        "Accuracy: ONNX Runtime CPU on all 10,000 RTS test images against torch (fp32). Latency: batch",
        "64, 2 threads, 200 calls per file in 10 interleaved rounds, median of the round medians, as a",
        "ratio to the fp32 file of the same lowering timed in the same rounds (< 1 is faster);",
        "`benchmarks/results/precision.md` has more variants and explains the int8 figures.",
        "",
        "| file | precision | lowering | KB (fp32 KB) | test error % (ORT) | argmax = torch fp32 | b64 latency / fp32, ORT CPU | b64 latency / fp32, OpenVINO |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in prows:
        ov = f"{r['openvino']:.2f}" if "openvino" in r else "–"
        lines.append(
            f"| `{r['file']}` | {r['precision']} | {r['lowering']} | {r['kb']:.0f} ({r['fp32_kb']:.0f}) "
            f"| {r['error']:.2f} | {r['agree']:.2f} % | {r['cpu']:.2f} | {ov} |"
        )
    lines.append("")
    (args.out / "README.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
