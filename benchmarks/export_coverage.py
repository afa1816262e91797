"""Export coverage (issue 13): the third-party-style corpus (tests/corpus/models.py) through
every export route, each file compared with torch on ONNX Runtime CPU.

Columns, per corpus model:

- ``stock``: stock ``torch.onnx.export(dynamo=True)``, dynamic batch;
- ``dyn/<lowering>``: ours, torch.export (``exporter="dynamo"``, the default), lowerings
  native/portable/custom;
- ``ts/<lowering>``: ours, ``exporter="torchscript"`` (the deprecated fallback);
- ``lower/<lowering>``: the stock file rewritten by ``stn-deploy lower`` (``lower_file``).

A cell is ``ok`` (the file agrees with torch at batch 1 and 3, ``atol = 1e-4 * max(1, max|ref|)``),
``refused`` (the route raised and, for ours, left no file: the reason is kept) or ``WRONG`` (a
file was written that disagrees with torch, or does not run: max error / the failure), with the
export's seconds. Our exports run with the self-check on (the default), as users run them.

Goal: every model the stock exporter handles, ours handles in every lowering at parity; zero
files written that disagree with torch.

Also: ``mnist-affine`` export time, ours TorchScript vs dynamo (native lowering): the first
export of the process (torchlib's registry is built then) and the best of the later ones.
Every timed export starts without the exporter's in-process trace cache, so each is a full
torch trace.

Run:  .venv/bin/python benchmarks/export_coverage.py  (writes benchmarks/results/export_coverage.*)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.corpus

import torch  # noqa: E402

from stn_deploy.bench.machine import format_machine, machine_description  # noqa: E402
from stn_deploy.errors import StnDeployError, one_line  # noqa: E402
from stn_deploy.export.lower import lower_file  # noqa: E402
from stn_deploy.pytorch import tracing  # noqa: E402
from stn_deploy.pytorch.baselines import stock_export  # noqa: E402
from stn_deploy.pytorch.exporter import export_model  # noqa: E402
from stn_deploy.pytorch.models.loading import load_model  # noqa: E402
from tests.corpus.harness import LOWERINGS, compare, onnx_files, timed  # noqa: E402
from tests.corpus.models import CORPUS, available  # noqa: E402

GOAL = (
    "every model the stock exporter handles, ours handles in every lowering at parity; "
    "zero files written that disagree with torch"
)
COLUMNS = (
    ["stock"]
    + [f"dyn/{lw}" for lw in LOWERINGS]
    + [f"ts/{lw}" for lw in LOWERINGS]
    + [f"lower/{lw}" for lw in LOWERINGS]
)


def isa_flags() -> dict:
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = [
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
    ]
    return {
        "flags": [f for f in wanted if f in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _cell(result, seconds: float, path_of, model, shape, our: bool, out_dir: Path) -> dict:
    if isinstance(result, StnDeployError):
        cell = {"status": "refused", "reason": one_line(result)[:300], "seconds": seconds}
        if our:
            left = onnx_files(out_dir)
            if left:  # a refusal must leave nothing
                cell = {**cell, "status": "WRONG", "reason": f"refused but left {left}"}
        return cell
    agrees, err, note = compare(path_of(result), model, shape)
    cell = {"status": "ok" if agrees else "WRONG", "max_error": err, "seconds": seconds}
    if note:
        cell["note"] = note
    return cell


def run_model(entry, work: Path) -> dict:
    reason = available(entry)
    if reason:
        return {"name": entry.name, "unavailable": reason, "cells": {}}
    loaded = load_model(entry.ref, input_shape=entry.input_shape)
    model, shape = loaded.model, entry.input_shape
    cells: dict[str, dict] = {}
    d = work / entry.name
    d.mkdir()
    stock_path = d / "stock.onnx"
    res, sec = timed(stock_export, model, shape, stock_path)
    cells["stock"] = _cell(res, sec, str, model, shape, False, d)
    for exporter, tag in (("dynamo", "dyn"), ("torchscript", "ts")):
        for lw in LOWERINGS:
            out = d / f"{tag}-{lw}"
            out.mkdir()
            tracing._TRACES.clear()  # time a whole export, not a re-lowering
            res, sec = timed(export_model, loaded, out, lowering=lw, exporter=exporter)
            cells[f"{tag}/{lw}"] = _cell(res, sec, lambda r: r.path, model, shape, True, out)
    for lw in LOWERINGS:
        if cells["stock"]["status"] == "refused":
            cells[f"lower/{lw}"] = {
                "status": "n/a",
                "reason": "stock export refused",
                "seconds": 0.0,
            }
            continue
        dst = d / f"lower-{lw}.onnx"
        res, sec = timed(lower_file, stock_path, dst, lowering=lw)
        cells[f"lower/{lw}"] = _cell(res, sec, lambda r, dst=dst: str(dst), model, shape, False, d)
    return {
        "name": entry.name,
        "family": entry.family,
        "what": entry.what,
        "input_shape": list(shape),
        "cells": cells,
    }


def mnist_export_times(work: Path, repeats: int = 3) -> dict:
    """Seconds per mnist-affine export (native), per exporter: ``first`` (the first of the
    process: imports done, torchlib's registry built by it) and ``best`` of the later ones."""
    loaded = load_model("mnist-affine")
    times: dict[str, list[float]] = {}
    for exporter in ("dynamo", "torchscript"):
        for i in range(repeats):
            out = work / f"mnist-{exporter}-{i}"
            out.mkdir()
            tracing._TRACES.clear()
            t = time.perf_counter()
            export_model(loaded, out, lowering="native", exporter=exporter)
            times.setdefault(exporter, []).append(time.perf_counter() - t)
    return {k: {"seconds": v, "first": v[0], "best": min(v[1:])} for k, v in times.items()}


def summarize(rows: list[dict]) -> dict:
    counts = {c: {"ok": 0, "refused": 0, "WRONG": 0, "n/a": 0} for c in COLUMNS}
    for r in rows:
        for c, cell in r["cells"].items():
            counts[c][cell["status"]] += 1
    wrong = [
        {"model": r["name"], "column": c, **cell}
        for r in rows
        for c, cell in r["cells"].items()
        if cell["status"] == "WRONG"
    ]
    stock_ok = [r["name"] for r in rows if r["cells"].get("stock", {}).get("status") == "ok"]
    parity_gaps = [
        {
            "model": r["name"],
            "lowering": lw,
            "ts": r["cells"][f"ts/{lw}"]["status"],
            "dyn": r["cells"][f"dyn/{lw}"]["status"],
        }
        for r in rows
        if r["name"] in stock_ok
        for lw in LOWERINGS
        if "ok" not in (r["cells"][f"ts/{lw}"]["status"], r["cells"][f"dyn/{lw}"]["status"])
    ]
    ours_wrong = [w for w in wrong if not w["column"].startswith(("stock", "lower"))]
    return {
        "counts": counts,
        "wrong": wrong,
        "parity_gaps": parity_gaps,
        "goal": GOAL,
        "goal_met": not parity_gaps and not ours_wrong,
    }


def _fmt(cell: dict) -> str:
    s = cell["status"]
    t = f" {cell['seconds']:.1f}s" if cell.get("seconds") else ""
    if s == "ok":
        return f"ok{t}"
    if s == "WRONG":
        err = cell.get("max_error")
        what = cell.get("note") or cell.get("reason") or (f"{err:.2g}" if err is not None else "")
        return f"**WRONG** ({what}){t}"
    if s == "refused":
        return f"refused{t}"
    return s


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Export coverage: third-party-style corpus (issue 13)",
        "",
        f"Machine: {format_machine(m)}; ISA {', '.join(m['isa']['flags'])}; torch kernels "
        f"{m['isa']['torch_cpu_capability']}; kornia {result['kornia']}.",
        "",
        f"Goal: {GOAL}. **{'met' if result['summary']['goal_met'] else 'not met'}**.",
        "",
        "Each cell: the route's file compared with torch eager on ONNX Runtime CPU at batch 1 and "
        "3 (atol = 1e-4 · max(1, max|ref|)) and the export's seconds (2 shared cores: noisy). "
        "`stock` = `torch.onnx.export(dynamo=True)`; `dyn/*` ours through torch.export (the "
        'default), `ts/*` ours with `exporter="torchscript"`, both self-checked; `lower/*` = the '
        "stock file through `stn-deploy lower`.",
        "",
        "| model | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for r in result["rows"]:
        if "unavailable" in r:
            lines.append(f"| {r['name']} | unavailable: {r['unavailable']} |")
            continue
        lines.append(f"| {r['name']} | " + " | ".join(_fmt(r["cells"][c]) for c in COLUMNS) + " |")
    counts = result["summary"]["counts"]
    lines += [
        "",
        "## Summary",
        "",
        "| column | ok | refused | WRONG | n/a |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in COLUMNS:
        k = counts[c]
        lines.append(f"| {c} | {k['ok']} | {k['refused']} | {k['WRONG']} | {k['n/a']} |")
    lines += ["", "## Refusals", ""]
    seen = set()
    for r in result["rows"]:
        for c, cell in r["cells"].items():
            if cell["status"] == "refused":
                key = (r["name"], c.split("/")[0], cell["reason"][:120])
                if key in seen:
                    continue
                seen.add(key)
                lines.append(f"- {r['name']} `{c}`: {cell['reason']}")
    lines += ["", "## WRONG cells", ""]
    lines += [
        f"- {w['model']} `{w['column']}`: {w.get('note') or w.get('reason') or w.get('max_error')}"
        for w in result["summary"]["wrong"]
    ] or ["none"]
    lines += ["", "## Parity gaps (stock ok, ours neither exporter ok)", ""]
    lines += [
        f"- {g['model']} {g['lowering']}: ts {g['ts']}, dyn {g['dyn']}"
        for g in result["summary"]["parity_gaps"]
    ] or ["none"]
    mt = result["mnist_affine_export_seconds"]
    lines += [
        "",
        "## mnist-affine export time (native lowering, self-check on)",
        "",
        "`first`: the process's first export of that exporter (torchlib's registry is built by "
        f"it); `best`: the best of the {len(mt['dynamo']['seconds']) - 1} after it. Each is a "
        "whole export (no trace reused).",
        "",
        "| exporter | first (s) | best (s) |",
        "|---|---:|---:|",
        *(f"| {k} | {v['first']:.2f} | {v['best']:.2f} |" for k, v in mt.items()),
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results" / "export_coverage"))
    ap.add_argument("--only", default="", help="comma-separated corpus names (default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import kornia

    only = {n for n in args.only.split(",") if n}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for entry in CORPUS:
            if only and entry.name not in only:
                continue
            t = time.perf_counter()
            rows.append(run_model(entry, work))
            print(
                f"{entry.name}: {time.perf_counter() - t:.0f}s "
                + " ".join(f"{c}={v['status']}" for c, v in rows[-1]["cells"].items()),
                flush=True,
            )
        mnist = mnist_export_times(work)
    machine = machine_description()
    machine["isa"] = isa_flags()
    result = {
        "schema": "stn-deploy/export-coverage-v1",
        "machine": machine,
        "kornia": kornia.__version__,
        "columns": COLUMNS,
        "rows": rows,
        "summary": summarize(rows),
        "mnist_affine_export_seconds": mnist,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
