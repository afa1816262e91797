"""|error| histogram per runtime from a verify report, log-x (matplotlib, the ``plots`` extra).

Drawn from the report's decade buckets (``runtimes[].sets[].outputs[].histogram``), so the
picture can be redrawn from ``verify --json`` output alone. Exact zeros are drawn in the
leftmost bin, labelled "0".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stn_deploy.errors import StnDeployError
from stn_deploy.report.mpl import png_figure
from stn_deploy.verify.compare import HIST_DECADES


def error_counts(report: dict[str, Any]) -> dict[str, list[int]]:
    """Per runtime, bucket counts summed over input sets and outputs (order of the buckets of
    :func:`stn_deploy.verify.compare.text_histogram`)."""
    out: dict[str, list[int]] = {}
    for r in report.get("runtimes", []):
        for s in r.get("sets", []):
            for o in s.get("outputs", []):
                h = [int(n) for _, n in o.get("histogram", [])]
                if not h:
                    continue
                acc = out.setdefault(r["name"], [0] * len(h))
                for i, n in enumerate(h):
                    acc[i] += n
    return out


def save_error_histogram(report: dict[str, Any], path: str | Path) -> Path:
    """Write a PNG of the |error| histogram of every runtime of ``report`` (a
    ``VerifyReport.to_dict()``): x is |error| on a log scale (one bin per decade), y the number
    of output elements. Raises StnDeployError without matplotlib or without any compared output.
    """
    counts = error_counts(report)
    if not counts:
        raise StnDeployError("nothing to plot: no runtime produced outputs to compare")
    # bin edges: [zeros], [< 1e-9], one per decade, [>= 1e2]; drawn on a log x axis
    lo = 10.0 ** (HIST_DECADES[0] - 2)
    edges = [lo, 10.0 ** (HIST_DECADES[0] - 1)] + [10.0**e for e in HIST_DECADES]
    edges.append(10.0 ** (HIST_DECADES[-1] + 1))
    with png_figure(path, figsize=(7.5, 4.5), dpi=110) as (_, ax):
        for name, h in counts.items():
            n = min(len(h), len(edges) - 1)
            ax.stairs(h[:n], edges[: n + 1], label=name, linewidth=1.6)
        ax.set_xscale("log")
        ax.set_xlabel("|candidate - reference| (leftmost bin: exactly 0)")
        ax.set_ylabel("output elements")
        tol = report.get("tolerance", {})
        if tol.get("atol"):
            ax.axvline(
                tol["atol"], color="k", linestyle="--", linewidth=0.8, label=f"atol {tol['atol']:g}"
            )
        model = report.get("model", {})
        ax.set_title(f"verify: {Path(str(model.get('path', 'model'))).name}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    return Path(path)
