"""How extreme the STN's transforms were on each input set (numpy + one runtime).

Read from the sampling grid, the second input of every GridSample node (native, contrib or
custom lowering), in normalised coordinates: a point with ``|x| > 1`` or ``|y| > 1`` samples
outside the input image (padding). For files exported with ``--expose-stn`` the ``theta``
output is summarised too. Portable lowerings have no GridSample node; there only ``theta``
(when exposed) is available.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from stn_deploy.verify import sessions
from stn_deploy.verify.expose import with_outputs
from stn_deploy.verify.inputs import InputSet


def sampler_grids(model: onnx.ModelProto) -> list[str]:
    """Names of the grid tensors fed to top-level GridSample nodes (any domain)."""
    return [n.input[1] for n in model.graph.node if n.op_type == "GridSample" and len(n.input) > 1]


def grid_summary(grid: np.ndarray, kinds: list[str] | None = None) -> dict[str, Any]:
    """Statistics of a ``(N, H, W, 2)`` normalised sampling grid."""
    g = grid.reshape(grid.shape[0], -1, grid.shape[-1]).astype(np.float64)
    outside = (np.abs(g) > 1).any(-1)  # (N, points)
    per_row = outside.mean(1)
    d: dict[str, Any] = {
        "source": "sampler grid",
        "points": int(outside.size),
        "outside_fraction": float(outside.mean()),
        "max_row_outside_fraction": float(per_row.max()),
        "abs_max": float(np.abs(g).max()) if g.size else 0.0,
    }
    if kinds and len(kinds) == len(per_row):
        d["outside_fraction_by_kind"] = {
            k: float(np.mean([p for p, kk in zip(per_row, kinds, strict=True) if kk == k]))
            for k in dict.fromkeys(kinds)
        }
    d["summary"] = (
        f"{d['outside_fraction']:.1%} of sample points outside the image "
        f"(worst image {d['max_row_outside_fraction']:.0%}, max |coord| {d['abs_max']:.2f})"
    )
    if "outside_fraction_by_kind" in d:
        d["summary"] += "; by kind: " + ", ".join(
            f"{k} {v:.0%}" for k, v in d["outside_fraction_by_kind"].items()
        )
    return d


def theta_summary(theta: np.ndarray) -> dict[str, Any]:
    """Statistics of STN parameters ``(N, ...)``; for affine ``(N, 2, 3)`` or ``(N, 6)`` also
    the determinant of the linear part (< 1: zoom in, > 1: zoom out) and the translation."""
    t = theta.reshape(theta.shape[0], -1).astype(np.float64)
    d: dict[str, Any] = {"theta_abs_max": float(np.abs(t).max()) if t.size else 0.0}
    if t.shape[1] == 6:  # affine, (N, 2, 3) or flattened (N, 6)
        a = t.reshape(-1, 2, 3)
        det = np.linalg.det(a[:, :, :2])
        d["theta_det_min"], d["theta_det_max"] = float(det.min()), float(det.max())
        d["theta_translation_abs_max"] = float(np.abs(a[:, :, 2]).max())
    return d


def stn_statistics(
    model: onnx.ModelProto,
    sets: list[InputSet],
    open_fn: Callable[..., Any],
    runtime: str,
    theta: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per input set: grid statistics from ``runtime`` (when the model has a GridSample) and
    ``theta`` statistics (from the given reference outputs, per set name)."""
    grids = sampler_grids(model)
    out: dict[str, dict[str, Any]] = {}
    session = open_fn(runtime, with_outputs(model, grids)) if grids else None
    for s in sets:
        d: dict[str, Any] = {}
        if session is not None:
            res = session.run(s.feeds, grids[:1])
            d.update(grid_summary(np.asarray(res[grids[0]]), s.kinds or None))
        if theta and s.name in theta:
            d.update(theta_summary(np.asarray(theta[s.name])))
            t = f"theta |max| {d['theta_abs_max']:.2f}"
            if "theta_det_min" in d:
                t += f", det {d['theta_det_min']:.2f}..{d['theta_det_max']:.2f}"
            d["summary"] = f"{d['summary']}; {t}" if "summary" in d else t
        if d:
            out[s.name] = d
    return out


def stn_report(
    model: onnx.ModelProto,
    sets: list[InputSet],
    references: dict[str, dict[str, np.ndarray]],
    threads: int | None = None,
) -> dict[str, dict[str, Any]]:
    """The report's ``stn`` section: :func:`stn_statistics` with the grid from ORT CPU (when
    available) and ``theta`` from the reference outputs (when the file exposes it); ``{}``
    when neither is there or the statistics cannot be had."""
    out_names = [o.name for o in model.graph.output]
    theta = (
        {k: v["theta"] for k, v in references.items() if "theta" in v}
        if "theta" in out_names
        else None
    )
    runtime = "cpu" if sessions.availability("cpu").available else None
    if not (runtime or theta):
        return {}
    try:
        return stn_statistics(
            model,
            sets,
            lambda n, m: sessions.open_runtime(n, m, threads=threads),
            runtime,
            theta,
        )
    except Exception:  # statistics only: a runtime that fails here has its own verdict
        return {}
