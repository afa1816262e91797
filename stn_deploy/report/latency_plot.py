"""Latency vs batch size, one line per route, log-log axes (matplotlib, the ``plots`` extra).

Example:
    >>> save_latency_plot(result.to_dict(), "latency.png")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stn_deploy.errors import StnDeployError
from stn_deploy.report.mpl import png_figure

#: line style per row kind: ours solid, baselines dashed/dotted
STYLES = {"model": "-", "lowering": "-.", "stock-export": "--", "torch": ":"}


def _series(result: dict[str, Any], per_image: bool) -> dict[str, tuple[str, list]]:
    series: dict[str, tuple[str, list[tuple[int, float]]]] = {}
    for row in result.get("rows", []):
        if row.get("status") != "ok" or not row.get("stats"):
            continue
        mode = "" if row["mode"] == "run" else f" [{row['mode']}]"
        name = f"{row['label']}{mode} · {row['runtime']}"
        value = row["stats"]["p50_us"] / (row["batch"] if per_image else 1)
        series.setdefault(name, (row["kind"], []))[1].append((row["batch"], value))
    return series


def _draw(ax, result: dict[str, Any], series: dict, per_image: bool, title: str | None) -> None:
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
    ax.set_title(
        title or f"{model.get('name', 'model')} {model.get('input_shape', '')}", fontsize=10
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def save_latency_plot(
    result: dict[str, Any] | list[dict[str, Any]],
    path: str | Path,
    *,
    per_image: bool = False,
    titles: list[str] | None = None,
) -> Path:
    """Draw median latency (µs per call, or per image with ``per_image``) against batch size
    for every route with measured rows of a bench result dict (``BenchResult.to_dict()``),
    both axes logarithmic; write the PNG atomically to ``path``. A list of results is drawn as
    panels side by side (``titles`` names them).

    Raises:
        StnDeployError: matplotlib missing, or no measured row to draw.
    """
    results = result if isinstance(result, list) else [result]
    all_series = [_series(r, per_image) for r in results]
    if not any(all_series):
        raise StnDeployError("nothing to plot: the result has no measured rows")
    n = len(results)
    with png_figure(path, 1, n, figsize=(7.5 * n, 4.8), dpi=110, squeeze=False) as (_, axes):
        for i, (r, series) in enumerate(zip(results, all_series, strict=True)):
            _draw(axes[0][i], r, series, per_image, titles[i] if titles else None)
    return Path(path)
