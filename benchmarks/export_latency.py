"""Export latency on ONNX Runtime CPU: our lowerings vs stock torch.onnx.export and torch eager.

All routes are measured in one run (this machine is shared and noisy: compare the ratios).

1. mnist-affine trained on RTS (exported/mnist-affine-rts.pt, 1x42x42) at batch 1 and 64:
   torch eager (inference_mode), stock ``torch.onnx.export(dynamo=True)`` on ORT, and
   stn-deploy's native / portable / custom / ort-contrib exports on ORT.
2. The sampler alone (bilinear, zeros, align_corners=False, grid uniform in [-1.1, 1.1]) at the
   three shapes of ../shared/BASELINES.md: torch ``F.grid_sample``, ORT's GridSample, and our
   portable lowering on ORT.

Goals (issue 3): >= 4x faster than the stock export at batch 64, >= 5x faster than torch eager at
batch 1, our sampler within 2x of torch's kernel. Needs onnxscript for the dynamo export
(``pip install onnxscript``).

Run:  .venv/bin/python benchmarks/export_latency.py   (writes benchmarks/results/export_latency.*)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from stn_deploy.export.portable import grid_sample_model
from stn_deploy.pytorch.baselines import stock_export
from stn_deploy.pytorch.exporter import export_model
from stn_deploy.pytorch.models import build_model, load_checkpoint, save_checkpoint, zoo_config
from stn_deploy.pytorch.train import machine_info
from stn_deploy.timing import median_us

HERE = Path(__file__).resolve().parent
SAMPLER_SHAPES = [(64, 1, 28, 28), (8, 16, 64, 64), (1, 3, 224, 224)]


def ort_call(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]):
    """A no-argument call of ``sess`` on ``feeds`` for :func:`median_us`."""
    return lambda: sess.run(None, feeds)


def ort_session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def native_gridsample_model(n, c, h, w) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, h, w])
    g = helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["N", h, w, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, h, w])
    node = helper.make_node(
        "GridSample", ["x", "grid"], ["y"], mode="bilinear", padding_mode="zeros", align_corners=0
    )
    return helper.make_model(
        helper.make_graph([node], "gs", [x, g], [y]), opset_imports=[helper.make_opsetid("", 16)]
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--checkpoint", type=Path, default=HERE.parent / "exported" / "mnist-affine-rts.pt"
    )
    ap.add_argument(
        "--iters", type=int, default=300, help="timed calls at batch 1 (fewer at larger sizes)"
    )
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    loaded = load_checkpoint(args.checkpoint)
    model = loaded.model.eval()
    shape = tuple(loaded.config.input_shape)
    tmp = Path(tempfile.mkdtemp())

    routes: dict[str, ort.InferenceSession] = {}
    stock_export(model, shape, tmp / "stock.onnx")
    routes["stock torch.onnx.export(dynamo=True)"] = ort_session(str(tmp / "stock.onnx"))
    for sampler, opset in [("native", 17), ("portable", 11), ("custom", 17), ("ort-contrib", 11)]:
        s = export_model(
            loaded, tmp / f"{sampler}.onnx", lowering=sampler, opset=opset, target="generic"
        )
        routes[f"stn-deploy {sampler} (opset {opset})"] = ort_session(s.path)

    rows = []
    rng = np.random.default_rng(0)
    for batch in (1, 64):
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        xt = torch.from_numpy(x)
        iters = args.iters if batch == 1 else max(30, args.iters // 6)

        def eager(xt=xt):
            with torch.inference_mode():
                model(xt)

        row = {"batch": batch, "torch eager": median_us(eager, 20, iters)}
        for name, sess in routes.items():
            inp = sess.get_inputs()[0].name
            row[name] = median_us(ort_call(sess, {inp: x}), 20, iters)
        rows.append(row)
        print(json.dumps(row), flush=True)

    # attention STN: the exact separable form vs the sampler op (same weights, seeded)
    torch.manual_seed(0)
    att_cfg = zoo_config(
        "mnist-attention", in_size=shape[1], normalization=loaded.config.normalization
    )
    att = build_model("mnist-attention", **att_cfg.args)
    with torch.no_grad():
        for p in att.parameters():
            p.add_(0.02 * torch.randn_like(p))
    save_checkpoint(tmp / "attention.pt", att, att_cfg)
    att_loaded = load_checkpoint(tmp / "attention.pt")
    attention = {}
    for label, kw in [
        ("separable (MatMuls)", {"sampler": "portable", "opset": 11}),
        ("native GridSample", {"sampler": "native", "opset": 17, "separable": False}),
        ("portable gather", {"sampler": "portable", "opset": 11, "separable": False}),
    ]:
        s = export_model(
            att_loaded,
            tmp / f"att-{kw['sampler']}-{kw.get('separable', True)}.onnx",
            target="generic",
            **kw,
        )
        sess = ort_session(s.path)
        xs = {b: rng.standard_normal((b, *shape)).astype(np.float32) for b in (1, 64)}
        attention[label] = {
            f"batch {b}": median_us(
                ort_call(sess, {"image": x}), 20, args.iters if b == 1 else max(30, args.iters // 6)
            )
            for b, x in xs.items()
        }
        print(json.dumps({label: attention[label]}), flush=True)

    samplers = []
    for n, c, h, w in SAMPLER_SHAPES:
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        g = rng.uniform(-1.1, 1.1, (n, h, w, 2)).astype(np.float32)
        xt, gt = torch.from_numpy(x), torch.from_numpy(g)
        iters = max(50, args.iters // 2)

        def tgs(xt=xt, gt=gt):
            with torch.inference_mode():
                F.grid_sample(xt, gt, mode="bilinear", padding_mode="zeros", align_corners=False)

        native = ort_session(native_gridsample_model(n, c, h, w))
        portable = ort_session(grid_sample_model(n, c, h, w, h, w, "bilinear", "zeros", False))
        row = {
            "shape": f"{n}x{c}x{h}x{w}",
            "torch F.grid_sample": median_us(tgs, 20, iters),
            "ORT GridSample": median_us(ort_call(native, {"x": x, "grid": g}), 20, iters),
            "stn-deploy portable": median_us(ort_call(portable, {"x": x, "grid": g}), 20, iters),
        }
        samplers.append(row)
        print(json.dumps(row), flush=True)

    result = {
        "benchmark": "ORT CPU latency: stn-deploy exports vs stock export and torch eager; sampler alone",
        "command": "python benchmarks/export_latency.py " + " ".join(sys.argv[1:]),
        "model": f"{loaded.config.arch} from {args.checkpoint.name}, input {list(shape)}",
        "machine": {**machine_info(), "onnxruntime": ort.__version__, "onnx": onnx.__version__},
        "unit": "microseconds, median",
        "model_rows": rows,
        "sampler_rows": samplers,
        "attention_rows": attention,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export_latency.json").write_text(json.dumps(result, indent=2) + "\n")

    names = list(rows[0].keys())[1:]
    lines = [
        "# Export latency on ONNX Runtime CPU",
        "",
        f"Generated by `{result['command'].strip()}` — all routes in one run, median µs per call.",
        f"Model: {result['model']}. Ratios are what to compare across machines.",
        "",
        "| route | batch 1 µs | batch 64 µs | speed-up vs stock export, b64 | speed-up vs torch eager, b1 |",
        "|---|---:|---:|---:|---:|",
    ]
    stock = "stock torch.onnx.export(dynamo=True)"
    for name in names:
        b1, b64 = rows[0][name], rows[1][name]
        lines.append(
            f"| {name} | {b1:.0f} | {b64:.0f} | {rows[1][stock] / b64:.2f}× | {rows[0]['torch eager'] / b1:.2f}× |"
        )
    lines += [
        "",
        "`mnist-attention` (same input, seeded weights): the exact separable form vs a sampler op:",
        "",
        "| form | batch 1 µs | batch 64 µs |",
        "|---|---:|---:|",
    ]
    for label, r in attention.items():
        lines.append(f"| {label} | {r['batch 1']:.0f} | {r['batch 64']:.0f} |")
    lines += [
        "",
        "Sampler alone (bilinear, zeros, align_corners=False, grid uniform in [-1.1, 1.1]):",
        "",
        "| N×C×H×W | torch F.grid_sample µs | ORT GridSample µs | stn-deploy portable µs | portable / torch |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in samplers:
        lines.append(
            f"| {r['shape']} | {r['torch F.grid_sample']:.0f} | {r['ORT GridSample']:.0f} | {r['stn-deploy portable']:.0f} "
            f"| {r['stn-deploy portable'] / r['torch F.grid_sample']:.1f}× |"
        )
    m = result["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"onnxruntime {m['onnxruntime']} (default threads), Python {m['python']}.",
        "",
    ]
    (args.out / "export_latency.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
