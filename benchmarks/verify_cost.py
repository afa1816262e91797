"""What default ``stn-deploy verify`` costs and whether its verdicts are right (issue 14).

Two models:

- ``mnist-affine``: ``exported/mnist-affine-native.onnx`` (its golden bundle beside it; torch
  reference ``exported/mnist-affine-rts.pt``);
- ``stn224``: the 3x224x224 image-output STN of ``benchmarks/stn224.py`` (seeded weights),
  exported here with ``stn-deploy export`` (native lowering) and with stock
  ``torch.onnx.export(dynamo=True)``.

For each, the correct file(s) and five deliberately broken copies of the native file:

- ``tampered-weight``: the first Conv's first output channel scaled by 1.5;
- ``wrong-mode``: GridSample ``mode`` nearest instead of bilinear;
- ``wrong-padding``: GridSample ``padding_mode`` border instead of zeros;
- ``transposed-grid``: the grid's H and W axes swapped (a Transpose before GridSample);
- ``fp16-sampler``: the sampler's image and grid rounded to float16 (Cast to float16 and back).

Each file is verified by the CLI as a user would, in a fresh process, with the default
runtimes, input sets, count and time budget (``--json`` only to read the verdict; no progress
lines): against the torch model (``--reference``) and, for mnist-affine, also without torch (the
golden bundle; the broken copies get a bundle re-keyed to them). Goal: every broken file fails,
every correct file passes, default verify of the 224x224 model under 60 s on 2 cores.

    .venv/bin/python benchmarks/verify_cost.py            # ~10 min on 2 cores
    -> benchmarks/results/verify_cost.md, benchmarks/results/verify_cost.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stn_deploy.bench.machine import format_machine, machine_description  # noqa: E402
from stn_deploy.export.golden import bundle_path, read_bundle, write_bundle  # noqa: E402
from stn_deploy.io.hashing import file_sha256  # noqa: E402

CLI = [sys.executable, "-m", "stn_deploy"]
STN224 = f"{ROOT / 'benchmarks' / 'stn224.py'}:stn224"
MNIST = ROOT / "exported" / "mnist-affine-native.onnx"
CKPT = ROOT / "exported" / "mnist-affine-rts.pt"
BROKEN = ("tampered-weight", "wrong-mode", "wrong-padding", "transposed-grid", "fp16-sampler")


# ---------------------------------------------------------------------------- broken files
def _sampler(m: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in m.graph.node if n.op_type == "GridSample")


def _set_attr(node: onnx.NodeProto, name: str, value: bytes) -> None:
    for a in node.attribute:
        if a.name == name:
            a.s = value
            return
    node.attribute.append(helper.make_attribute(name, value.decode()))


def _insert_before(m: onnx.ModelProto, node: onnx.NodeProto, index: int, new: list) -> None:
    """Route input ``index`` of ``node`` through the nodes ``new`` (last output feeds it)."""
    pos = list(m.graph.node).index(node)
    for i, n in enumerate(new):
        m.graph.node.insert(pos + i, n)
    node.input[index] = new[-1].output[0]


def broken(model: onnx.ModelProto, how: str) -> onnx.ModelProto:
    """A copy of ``model`` broken in one way (see the module doc)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    gs = _sampler(m)
    if how == "tampered-weight":
        conv = next(n for n in m.graph.node if n.op_type == "Conv")
        init = next(i for i in m.graph.initializer if i.name == conv.input[1])
        w = numpy_helper.to_array(init).copy()
        w[0] *= 1.5
        init.CopyFrom(numpy_helper.from_array(w, init.name))
    elif how == "wrong-mode":
        _set_attr(gs, "mode", b"nearest")
    elif how == "wrong-padding":
        _set_attr(gs, "padding_mode", b"border")
    elif how == "transposed-grid":
        t = helper.make_node("Transpose", [gs.input[1]], ["broken_grid_t"], perm=[0, 2, 1, 3])
        _insert_before(m, gs, 1, [t])
    elif how == "fp16-sampler":
        for i, tag in ((0, "x"), (1, "grid")):
            half = helper.make_node("Cast", [gs.input[i]], [f"broken_{tag}16"], to=10)
            back = helper.make_node("Cast", [f"broken_{tag}16"], [f"broken_{tag}32"], to=1)
            _insert_before(m, gs, i, [half, back])
    else:
        raise ValueError(how)
    onnx.checker.check_model(m)
    return m


def save_with_bundle(m: onnx.ModelProto, path: Path, bundle_from: Path | None) -> Path:
    onnx.save(m, str(path))
    if bundle_from is not None:  # the golden bundle of the correct file, re-keyed to this one
        b = read_bundle(bundle_path(bundle_from))
        meta = {**b.meta, "model_sha256": file_sha256(path), "model": path.name}
        write_bundle(bundle_path(path), b.inputs, b.outputs, meta, outputs64=b.outputs64)
    return path


# ---------------------------------------------------------------------------- one verify run
def verify(path: Path, reference: list[str]) -> dict:
    """``stn-deploy verify PATH [reference...] --json`` in a fresh process: wall seconds, exit
    code, and per runtime its status, reason and largest error and inherent error."""
    cmd = [*CLI, "verify", str(path), *reference, "--json"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    row = {
        "file": path.name,
        "reference": " ".join(reference).replace(f"{ROOT}/", "") or "golden bundle",
        "exit": p.returncode,
    }
    row["seconds"] = round(wall, 1)
    try:
        d = json.loads(p.stdout)
    except json.JSONDecodeError:
        row["verdict"] = "ERROR"
        row["error"] = (p.stderr.strip().splitlines() or ["?"])[-1]
        return row
    row["verdict"] = "PASSED" if d["passed"] else "FAILED"
    row["runtimes"] = {}
    for r in d["runtimes"]:
        outs = [o for s in r["sets"] for o in s["outputs"] if o.get("stats")]
        worst = max((o["stats"]["max_abs"] for o in outs), default=None)
        inh = [o["stats"].get("inherent_max") for o in outs if o["stats"].get("inherent_max")]
        row["runtimes"][r["name"]] = {
            "status": r["status"],
            "reason": r["reason"][:160],
            "max_abs": worst,
            "inherent_max": max(inh) if inh else None,
            "notes": r.get("notes", []),
        }
    return row


# ---------------------------------------------------------------------------- the runs
def stn224_files(tmp: Path) -> tuple[Path, Path]:
    ours = tmp / "stn224-native.onnx"
    subprocess.run(
        [*CLI, "export", STN224, "--input-shape", "3,224,224", "--out", str(ours)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    stock = tmp / "stn224-stock.onnx"
    code = (
        "import sys; sys.path.insert(0, '.');"
        "from stn_deploy.pytorch.models.loading import load_model;"
        "from stn_deploy.pytorch.baselines import stock_export_loaded;"
        f"stock_export_loaded(load_model({STN224!r}, input_shape='3,224,224'), {str(stock)!r})"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    return ours, stock


def run_all(tmp: Path) -> dict:
    rows: dict[str, list[dict]] = {"mnist-affine": [], "stn224": []}
    ref_mnist = ["--reference", str(CKPT)]
    ref_224 = ["--reference", STN224, "--input-shape", "3,224,224"]
    mnist_copy = tmp / "mnist-affine-native.onnx"
    shutil.copy(MNIST, mnist_copy)
    shutil.copy(bundle_path(MNIST), bundle_path(mnist_copy))
    for ref in ([], ref_mnist):
        rows["mnist-affine"].append({**verify(mnist_copy, ref), "kind": "correct"})
        print(json.dumps(rows["mnist-affine"][-1])[:200], flush=True)
    base = onnx.load(str(MNIST))
    for how in BROKEN:
        path = save_with_bundle(broken(base, how), tmp / f"mnist-{how}.onnx", mnist_copy)
        for ref in ([], ref_mnist):
            rows["mnist-affine"].append({**verify(path, ref), "kind": how})
            print(json.dumps(rows["mnist-affine"][-1])[:200], flush=True)
    ours, stock = stn224_files(tmp)
    for path in (ours, stock):
        rows["stn224"].append({**verify(path, ref_224), "kind": "correct"})
        print(json.dumps(rows["stn224"][-1])[:200], flush=True)
    base = onnx.load(str(ours))
    for how in BROKEN:
        path = save_with_bundle(broken(base, how), tmp / f"stn224-{how}.onnx", ours)
        rows["stn224"].append({**verify(path, ref_224), "kind": how})
        print(json.dumps(rows["stn224"][-1])[:200], flush=True)
    return rows


def _cell(row: dict) -> str:
    rts = row.get("runtimes") or {}
    parts = []
    for name, r in rts.items():
        err = f" {r['max_abs']:.2g}" if r.get("max_abs") is not None else ""
        inh = f" (inh {r['inherent_max']:.2g})" if r.get("inherent_max") else ""
        parts.append(f"{name} {r['status']}{err}{inh}")
    return "; ".join(parts) or row.get("error", "")


def markdown(rows: dict, machine: dict, command: str) -> str:
    lines = [
        "# verify: cost and verdicts (issue 14)",
        "",
        f"Machine: {format_machine(machine)}.",
        "",
        f"Command: `{command}` (each verify a fresh `stn-deploy verify FILE ... --json` process,"
        " default runtimes, input sets, count and time budget).",
        "",
    ]
    right = wrong = 0
    for model, rs in rows.items():
        lines += [
            f"## {model}",
            "",
            "| file | kind | reference | verdict | right? | wall s |"
            " per runtime: status, max abs error (inherent) |",
            "|---|---|---|---|---|---:|---|",
        ]
        for r in rs:
            expect = "PASSED" if r["kind"] == "correct" else "FAILED"
            ok = r["verdict"] == expect
            right, wrong = right + ok, wrong + (not ok)
            lines.append(
                f"| {r['file']} | {r['kind']} | {r['reference']} | {r['verdict']} | "
                f"{'yes' if ok else '**NO**'} | {r['seconds']} | {_cell(r)} |"
            )
        lines.append("")
    t224 = [r["seconds"] for r in rows["stn224"] if r["kind"] == "correct"]
    tm = [r["seconds"] for r in rows["mnist-affine"] if r["kind"] == "correct"]
    lines += [
        "## Goals",
        "",
        f"- verdicts: {right} right, {wrong} wrong "
        f"({'met' if not wrong else 'missed'}: every broken file fails, every correct passes)",
        f"- default verify of the 224x224 model: {', '.join(f'{t:g} s' for t in t224)} "
        f"({'met' if t224 and max(t224) < 60 else 'missed'}: under 60 s on 2 cores)",
        f"- default verify of mnist-affine: {', '.join(f'{t:g} s' for t in tm)} (golden bundle;"
        " torch reference)",
        "",
        "Notes:",
        "",
        "- A verdict is the file's: FAILED when any runtime fails. On the fp16-sampler files"
        " OpenVINO's error is the correct file's (it does not round the sampler's inputs to"
        " float16: its CPU plugin apparently folds the float32 -> float16 -> float32 Cast pair),"
        " so OpenVINO passes them; ORT CPU and the reference evaluator fail them.",
        "- `reference skipped`: the onnx reference evaluator's estimate for one 224x224 RGB image"
        " (its GridSample loops in Python) exceeds its default 20 s budget; on the wrong-mode"
        " file (nearest: cheaper per point) it ran the subset that fit.",
        "- `inh`: the largest inherent float32 error (torch float32 vs float64) over the input"
        " sets; the stress set's noise image gives the 224x224 model's 0.00098, which every"
        " correct runtime also reaches (its largest error 0.0012-0.0015).",
        "- Wall times are of fresh processes (imports, torch model load, export-free), on 2 cores"
        " shared with other work (load average above).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    machine = machine_description()
    with tempfile.TemporaryDirectory(prefix="verify-cost-") as tmp:
        rows = run_all(Path(tmp))
    machine["load_average_end"] = machine_description()["load_average"]
    command = "python benchmarks/verify_cost.py"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "verify_cost.json").write_text(
        json.dumps({"machine": machine, "command": command, "rows": rows}, indent=2) + "\n"
    )
    (args.out / "verify_cost.md").write_text(markdown(rows, machine, command))
    print((args.out / "verify_cost.md").read_text())


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
