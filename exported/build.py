"""Regenerate exported/: mnist-affine trained on RTS MNIST, exported with each lowering, and its card.

    .venv/bin/python exported/build.py        (needs `stn-deploy data fetch` for the test set)

For every lowering: export (with its golden bundle), then on ONNX Runtime CPU run the 10,000
RTS test images (the training seed's fixed distortion) and compare with torch: test error,
argmax agreement, max |Δ log-prob|. Writes exported/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from stn_deploy.data import load_mnist, make_split
from stn_deploy.export.exporter import export_model
from stn_deploy.inspect_onnx import inspect_model
from stn_deploy.models import load_checkpoint
from stn_deploy.train import Normalizer

HERE = Path(__file__).resolve().parent
LOWERINGS = [  # (file suffix, target, sampler, opset, inline)
    ("native", "ort-cpu", "native", 17, False),
    ("portable", "generic", "portable", 11, False),
    ("custom", "ort-cpu", "custom", 17, False),
    ("custom-inline", "openvino", "custom", 16, True),
    ("ort-contrib", "ort-cpu", "ort-contrib", 11, False),
]


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
            sampler=sampler,
            opset=opset,
            inline=inline,
        )
        sess = ort.InferenceSession(s["path"], providers=["CPUExecutionProvider"])
        out = np.concatenate(
            [
                sess.run(None, {"image": xn[i : i + 1000].numpy()})[0]
                for i in range(0, len(xn), 1000)
            ]
        )
        info = inspect_model(s["path"])
        rows.append(
            {
                "file": Path(s["path"]).name,
                "lowering": s["sampler"],
                "opset": opset,
                "kb": s["bytes"] / 1024,
                "nodes": s["nodes"],
                "error": 100 * float((out.argmax(1) != y).mean()),
                "agree": 100 * float((out.argmax(1) == ref.argmax(1)).mean()),
                "maxdiff": float(np.abs(out - ref).max()),
                "runtimes": ", ".join(t for t, v in info["targets"].items() if v["ok"]),
            }
        )
        print(rows[-1], flush=True)
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
    ]
    (args.out / "README.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
