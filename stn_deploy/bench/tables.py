"""A benchmark result as a terminal table and as a Markdown report (from its JSON form)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stn_deploy.bench.machine import format_machine
from stn_deploy.io.atomic import write_text_atomic

#: (header, stats key, format) of the latency columns
COLUMNS = (
    ("p50 µs", "p50_us", "{:.0f}"),
    ("mean µs", "mean_us", "{:.0f}"),
    ("p90 µs", "p90_us", "{:.0f}"),
    ("p99 µs", "p99_us", "{:.0f}"),
    ("min µs", "min_us", "{:.0f}"),
    ("max µs", "max_us", "{:.0f}"),
    ("std µs", "std_us", "{:.0f}"),
    ("img/s", "images_per_s", "{:.0f}"),
)


def _as_dict(result: Any) -> dict[str, Any]:
    return result if isinstance(result, dict) else result.to_dict()


def _ratio(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}×"


def _cells(row: dict[str, Any], compare: list[str]) -> list[str]:
    mode = "" if row["mode"] == "run" else f" [{row['mode']}]"
    head = [
        row["label"] + mode,
        row["runtime"],
        row["lowering"] or "",
        row["precision"] or "",
        str(row["batch"]),
    ]
    if row["status"] != "ok":
        return head + [f"{row['status']}: {row['reason']}"]
    s = row["stats"]
    return (
        head
        + [fmt.format(s[key]) for _, key, fmt in COLUMNS]
        + [_ratio(row["speedup"].get(b)) for b in compare]
    )


def _headers(compare: list[str]) -> list[str]:
    return [
        "route",
        "runtime",
        "lowering",
        "precision",
        "batch",
        *(h for h, _, _ in COLUMNS),
        *(f"× {b}" for b in compare),
    ]


def format_table(result: Any) -> str:
    """A plain-text table: one line per route × batch size, skipped rows with their reason,
    speed-ups over the baselines (× torch, × stock-export) where they were measured."""
    d = _as_dict(result)
    compare = list(d["settings"].get("compare") or [])
    headers = _headers(compare)
    rows = [_cells(r, compare) for r in d["rows"]]
    widths = [
        max([len(h)] + [len(r[i]) for r in rows if i < len(r) - (len(r) < len(headers))])
        for i, h in enumerate(headers)
    ]
    numeric = set(range(4, len(headers)))

    def line(cells: list[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            if i == len(cells) - 1 and len(cells) < len(headers):
                out.append(c)  # a skip reason runs to the end of the line
            else:
                out.append(c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]))
        return "  ".join(out).rstrip()

    m = d["model"]
    lines = [
        f"{m['name']}: {_inputs_text(m, sources=True)}, lowering {m['lowering'] or '?'}, "
        f"precision {m['precision'] or '?'}",
        line(headers),
        line(["-" * w for w in widths]),
    ]
    lines += [line(r) for r in rows]
    lines += [f"note: {n}" for n in d["notes"]]
    lines.append("machine: " + format_machine(d["machine"]))
    return "\n".join(lines)


def _inputs_text(m: dict[str, Any], *, sources: bool, quote: str = "") -> str:
    """``input NAME [shape] dtype (source)``; ``inputs A [..] dtype (..), B [..] ...`` for a
    model with several."""
    inputs = m.get("inputs") or [
        {
            "name": m["input_name"],
            "shape": m["input_shape"],
            "dtype": m["input_dtype"],
            "shape_source": m["shape_source"],
        }
    ]
    parts = [
        f"{quote}{i['name']}{quote} {i['shape']} {i['dtype']}"
        + (f" ({i['shape_source']})" if sources else "")
        for i in inputs
    ]
    return ("input " if len(parts) == 1 else "inputs ") + ", ".join(parts)


def format_markdown(result: Any, title: str | None = None) -> str:
    """The result as a Markdown report: settings, the table, notes and the machine."""
    d = _as_dict(result)
    compare = list(d["settings"].get("compare") or [])
    headers = _headers(compare)
    m, st = d["model"], d["settings"]
    budget = (
        f"{st['iters']} calls"
        if st["iters"]
        else (f"{st['duration_s']} s of calls" if st["duration_s"] else "about 1 s of calls")
    )
    lines = [
        f"# {title or 'Latency: ' + m['name']}",
        "",
        f"Model `{m['name']}` (lowering {m['lowering'] or '?'}, precision {m['precision'] or '?'}), "
        f"{_inputs_text(m, sources=False, quote='`')}. "
        f"Per route and batch size: {st['warmup']} warm-up calls, then {budget}; latency per call "
        "in µs, throughput in images/s. Speed-ups are the baseline's p50 over the route's p50 at "
        "the same batch size (the stock export on the same runtime).",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i < 4 else "---:" for i in range(len(headers))) + "|",
    ]
    for r in d["rows"]:
        cells = _cells(r, compare)
        cells[0] = cells[0].replace("|", "\\|")
        if len(cells) < len(headers):
            cells = (
                cells[:-1] + [cells[-1].replace("|", "\\|")] + [""] * (len(headers) - len(cells))
            )
        lines.append("| " + " | ".join(cells) + " |")
    if d["notes"]:
        lines += ["", *(f"- {n}" for n in d["notes"])]
    opts = [
        f"threads {st['threads'] or 'default'}",
        f"graph optimisation {st['opt_level'] or 'all'}",
    ]
    if st["io_binding"]:
        opts.append("IO binding")
    if st["cuda_graph"]:
        opts.append("CUDA graph")
    lines += [
        "",
        f"Settings: {', '.join(opts)}. Machine: {format_machine(d['machine'])}.",
        "",
    ]
    return "\n".join(lines)


def write_markdown(result: Any, path: str | Path, title: str | None = None) -> Path:
    """Write :func:`format_markdown` of ``result`` to ``path`` atomically."""
    write_text_atomic(path, format_markdown(result, title))
    return Path(path)
