"""Latency vs batch size, one line per route, log-log axes (matplotlib, the ``plots`` extra).

Example:
    >>> save_latency_plot(result.to_dict(), "latency.png")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stn_deploy.errors import StnDeployError
from stn_deploy.io.atomic import atomic_path

#: line style per row kind: ours solid, baselines dashed/dotted
STYLES = {"model": "-", "lowering": "-.", "stock-export": "--", "torch": ":"}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise StnDeployError("plots need matplotlib: pip install 'stn-deploy[plots]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_latency_plot(result: dict[str, Any], path: str | Path, *, per_image: bool = False) -> Path:
    """Draw median latency (µs per call, or per image with ``per_image``) against batch size
    for every route with measured rows of a bench result dict (``BenchResult.to_dict()``),
    both axes logarithmic; write the PNG atomically to ``path``.

    Raises:
        StnDeployError: matplotlib missing, or no measured row to draw.
    """
    series: dict[str, tuple[str, list[tuple[int, float]]]] = {}
    for row in result.get("rows", []):
        if row.get("status") != "ok" or not row.get("stats"):
            continue
        mode = "" if row["mode"] == "run" else f" [{row['mode']}]"
        name = f"{row['label']}{mode} · {row['runtime']}"
        value = row["stats"]["p50_us"] / (row["batch"] if per_image else 1)
        series.setdefault(name, (row["kind"], []))[1].append((row["batch"], value))
    if not series:
        raise StnDeployError("nothing to plot: the result has no measured rows")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    try:
        for name, (kind, points) in series.items():
            points.sort()
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, STYLES.get(kind, "-"), marker="o", markersize=4, label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        batches = sorted({b for _, pts in series.values() for b, _ in pts})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel("median µs per image" if per_image else "median latency per call (µs)")
        model = result.get("model", {})
        ax.set_title(f"{model.get('name', 'model')} {model.get('input_shape', '')}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)
