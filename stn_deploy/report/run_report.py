"""``report.md`` of ``stn-deploy run``, from its ``report.json`` dict (no torch, no plots)."""

from __future__ import annotations

from typing import Any


def bench_headline(bench: dict[str, Any]) -> list[str]:
    """Our export on ORT CPU vs the baselines, the figures the project's goals are about."""
    lines = []
    model_rows = {
        (r["runtime"], r["batch"]): r
        for r in bench["rows"]
        if r["kind"] == "model" and r["status"] == "ok" and r.get("mode", "run") == "run"
    }
    for runtime, batch, base in (("cpu", 1, "torch"), ("cpu", 64, "stock-export")):
        row = model_rows.get((runtime, batch))
        ratio = (row or {}).get("speedup", {}) or {}
        if row and ratio.get(base):
            lines.append(
                f"- ORT CPU at batch {batch}: {row['stats']['p50_us']:.0f} µs p50, "
                f"**{ratio[base]:.1f}×** faster than {base} (same run)"
            )
    for runtime in sorted({rt for rt, _ in model_rows} - {"cpu"}):
        for batch in (1, 64):
            row = model_rows.get((runtime, batch))
            if row:
                lines.append(
                    f"- {runtime} at batch {batch}: {row['stats']['p50_us']:.0f} µs p50"
                    + (
                        f", {row['speedup']['torch']:.1f}× torch"
                        if (row.get("speedup") or {}).get("torch")
                        else ""
                    )
                )
    return lines


def format_run_report(report: dict[str, Any]) -> str:
    from stn_deploy.bench.tables import format_markdown
    from stn_deploy.verify.report import format_table

    steps = report["steps"]
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines = [
        f"# stn-deploy run: {report['model']['arch']}",
        "",
        f"**Verification {verdict}** on every runtime asked for; the whole run took "
        f"{report['seconds']:.0f} s.",
        "",
        "| step | seconds | result |",
        "|---|---:|---|",
    ]
    if "train" in steps:
        t = steps["train"]
        lines.append(
            f"| train | {t['seconds']:.0f} | {t['epochs']} epochs on {t['distortion'].upper()} "
            f"({t['data']}): test error **{t['test_error']:.2f}%**; `{t['checkpoint']}` |"
        )
    if "load" in steps:
        lines.append(f"| load | {steps['load']['seconds']:.1f} | {steps['load']['source']} |")
    e = steps["export"]
    lines.append(
        f"| export | {e['seconds']:.1f} | `{e['file']}` for {e['target']}: {e['lowering']} "
        f"lowering, {e.get('precision', 'fp32')}, opset {e['opset']}, {e['nodes']} nodes, "
        f"{e['bytes']:,} bytes |"
    )
    v = report["verify"]
    per_rt = ", ".join(f"{r['name']} {r['status']}" for r in v["runtimes"])
    lines.append(f"| verify | {steps['verify']['seconds']:.1f} | {per_rt} |")
    lines.append(f"| bench | {steps['bench']['seconds']:.1f} | see below |")
    if report.get("rectification_png"):
        lines += [
            "",
            "## What the STN does",
            "",
            "Inputs (left) and the STN's rectified outputs (right):",
            "",
            f"![rectification]({report['rectification_png']})",
        ]
    lines += ["", "## Verify", ""]
    if report.get("errors_png"):
        lines += [f"![|error| histogram]({report['errors_png']})", ""]
    lines += ["```text", format_table(v, histograms=False).rstrip(), "```", ""]
    bench = report["bench"]
    lines += ["## Bench", ""]
    lines += bench_headline(bench) or ["- (no ORT CPU rows with baselines in this run)"]
    lines += [""]
    if report.get("latency_png"):
        lines += [f"![latency vs batch size]({report['latency_png']})", ""]
    md = format_markdown(bench, title="Latency")
    lines += ["#" + md.lstrip()]  # one heading level down
    if report["notes"]:
        lines += ["## Notes", "", *(f"- {n}" for n in report["notes"]), ""]
    lines += ["Full results: `verify.json`, `bench.json`, `report.json`.", ""]
    return "\n".join(lines)
