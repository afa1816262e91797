"""Compare one output of a runtime with its reference: error statistics and a pass flag (numpy).

Kept apart from runtimes and input sets, after Polygraphy's ``comparator/compare.py``: a result
object with named statistics and a pass flag, and Polygraphy's meaning of the tolerances.

With ``abs = |out - ref|`` and ``rel = abs / |ref|`` (``0`` where both are 0, ``inf`` where only
``ref`` is 0), an output fails when

- ``elemwise``: any element has ``abs > atol`` *and* ``rel > rtol`` (each element may pass by
  either tolerance, like ``np.isclose``);
- ``max`` / ``mean`` / ``median`` / ``quantile``: that statistic of ``abs`` exceeds ``atol``
  *and* the same statistic of ``rel`` exceeds ``rtol`` (``quantile`` at ``quantile``, 0.99).

With ``inherent`` (float32's own error on this input per element, :mod:`.inherent`), an element
also passes when ``abs <= k * inherent``; for the statistics other than ``elemwise`` the
statistic is taken over the error left beyond ``k * inherent``. The largest inherent error is
reported beside the runtime's (``inherent_max``).

NaN or Inf in the candidate (or the reference) is reported as such and never passes.

Example:
    >>> import numpy as np
    >>> ref = np.array([[0.0, -1.0, -20.0]], np.float32)
    >>> c = compare_arrays(ref, ref + np.float32(1e-5), atol=1e-4, rtol=1e-3)
    >>> c.passed, c.stats.max_abs < 2e-5
    (True, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

ERROR_STATS = ("elemwise", "max", "mean", "median", "quantile")

#: bucket edges of the text histogram of absolute error (decades; the first bucket is "== 0")
HIST_DECADES = tuple(range(-9, 3))


@dataclass(frozen=True)
class ErrorStats:
    """Statistics of absolute and relative error over the finite elements of one output."""

    max_abs: float
    mean_abs: float
    median_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    p99_rel: float
    quantile_abs: float
    quantile_rel: float
    #: elements beyond tolerance under the element-wise rule (reported for every check)
    mismatches: int
    elements: int
    #: float32's own error on this input (largest per-element estimate; None: not known)
    inherent_max: float | None = None
    #: elements within atol/rtol only thanks to k * their inherent error
    passed_by_inherent: int = 0


@dataclass
class OutputComparison:
    """One output of one runtime on one input set, compared with the reference."""

    output: str
    shape: list[int]
    passed: bool
    reason: str = ""
    stats: ErrorStats | None = None
    #: (label, count) buckets of |error|: "0", "<1e-9", "1e-9..1e-8", ..., ">=100"
    histogram: list[tuple[str, int]] = field(default_factory=list)
    #: for classifier outputs (N, K): fraction of rows whose argmax is the reference's
    argmax_agreement: float | None = None
    #: NaN / Inf counts, candidate and reference
    nonfinite: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        """True when the output passed (Polygraphy's ``OutputCompareResult``)."""
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["histogram"] = [list(b) for b in self.histogram]
        return d


def _stat(values: np.ndarray, how: str, quantile: float) -> float:
    if values.size == 0:
        return 0.0
    if how == "max":
        return float(np.max(values))
    if how == "mean":
        return float(np.mean(values))
    with np.errstate(invalid="ignore"):
        v = float(np.median(values)) if how == "median" else float(np.quantile(values, quantile))
    return math.inf if math.isnan(v) else v  # inf - inf while interpolating between infs


def abs_rel_error(ref: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise ``|out - ref|`` and ``|out - ref| / |ref|`` in float64, same shape as ``ref``.

    The relative error is 0 where both are equal and ``inf`` where only ``ref`` is 0.
    """
    r = ref.astype(np.float64, copy=False)
    o = out.astype(np.float64, copy=False)
    absdiff = np.abs(o - r)
    denom = np.abs(r)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(denom > 0, absdiff / np.where(denom > 0, denom, 1.0), np.inf)
    rel = np.where(absdiff == 0, 0.0, rel)
    return absdiff, rel


def text_histogram(absdiff: np.ndarray) -> list[tuple[str, int]]:
    """Counts of ``absdiff`` (finite, any shape) per decade: ``[("0", n), ("<1e-9", n), ...]``."""
    a = absdiff.ravel()
    edges = [10.0**e for e in HIST_DECADES]
    buckets = [("0", int(np.sum(a == 0))), (f"<1e{HIST_DECADES[0]}", 0)]
    nz = a[a > 0]
    buckets[1] = (buckets[1][0], int(np.sum(nz < edges[0])))
    for lo, hi, elo in zip(edges[:-1], edges[1:], HIST_DECADES, strict=False):
        buckets.append((f"1e{elo}..1e{elo + 1}", int(np.sum((nz >= lo) & (nz < hi)))))
    buckets.append((f">=1e{HIST_DECADES[-1]}", int(np.sum(nz >= edges[-1]))))
    return buckets


def format_histogram(buckets: list[tuple[str, int]], width: int = 40) -> str:
    """Text bars of :func:`text_histogram` buckets, empty leading/trailing buckets dropped."""
    nonzero = [i for i, (_, n) in enumerate(buckets) if n]
    if not nonzero:
        return "  (no elements)"
    rows = buckets[nonzero[0] : nonzero[-1] + 1]
    top = max(n for _, n in rows)
    lines = []
    for label, n in rows:
        bar = "#" * (math.ceil(width * n / top) if n else 0)
        lines.append(f"  {label:>14} {n:>9} {bar}")
    return "\n".join(lines)


def argmax_agreement(ref: np.ndarray, out: np.ndarray) -> float:
    """Fraction of rows of ``(N, K)`` scores whose argmax agrees (K > 1)."""
    return float(
        np.mean(ref.reshape(len(ref), -1).argmax(1) == out.reshape(len(out), -1).argmax(1))
    )


def is_classifier_output(name: str, shape: tuple[int, ...], num_classes: int | None) -> bool:
    """``(N, K)`` scores: K equals the model's class count (or K > 1 when unknown) and the
    output is not an STN parameter tensor (a guess by shape: verify itself takes the kinds
    from the model, :mod:`.outputs`)."""
    if len(shape) != 2 or shape[1] < 2 or name == "theta":
        return False
    return num_classes is None or shape[1] == num_classes


def compare_arrays(
    ref: np.ndarray,
    out: np.ndarray,
    *,
    atol: float,
    rtol: float,
    check_error_stat: str = "elemwise",
    quantile: float = 0.99,
    name: str = "output",
    classifier: bool = False,
    inherent: np.ndarray | None = None,
    k: float = 4.0,
) -> OutputComparison:
    """Compare candidate ``out`` with ``ref`` (same shape, any dtype); see the module doc."""
    if check_error_stat not in ERROR_STATS:
        from stn_deploy.errors import StnDeployError

        raise StnDeployError(
            f"unknown {{check_error_stat}} {check_error_stat!r}: choose from "
            f"{', '.join(ERROR_STATS)}",
            param="check_error_stat",
        )
    ref, out = np.asarray(ref), np.asarray(out)
    shape = [int(d) for d in out.shape]
    if ref.shape != out.shape:
        return OutputComparison(
            name, shape, False, f"shape {shape} differs from the reference's {list(ref.shape)}"
        )
    nonfinite, problems = _nonfinite(ref, out)
    absdiff, rel = abs_rel_error(ref, out)
    finite = np.isfinite(absdiff)
    within = np.zeros(absdiff.shape, bool)
    if inherent is not None:
        inh = np.broadcast_to(np.asarray(inherent, np.float64), absdiff.shape)
        within = absdiff <= k * inh
    beyond = (absdiff > atol) & (rel > rtol)
    if inherent is not None and check_error_stat != "elemwise":
        absdiff = np.where(within, 0.0, absdiff)  # the statistic of the error beyond k * inherent
        rel = np.where(within, 0.0, rel)
    a, r = absdiff[finite], rel[finite]
    stats = ErrorStats(
        max_abs=_stat(a, "max", quantile),
        mean_abs=_stat(a, "mean", quantile),
        median_abs=_stat(a, "median", quantile),
        p99_abs=_stat(a, "quantile", 0.99),
        max_rel=_stat(r, "max", quantile),
        mean_rel=_stat(r, "mean", quantile),
        median_rel=_stat(r, "median", quantile),
        p99_rel=_stat(r, "quantile", 0.99),
        quantile_abs=_stat(a, "quantile", quantile),
        quantile_rel=_stat(r, "quantile", quantile),
        mismatches=int(np.sum(beyond & ~within) + np.sum(~finite)),
        elements=int(absdiff.size),
        inherent_max=None if inherent is None or not inh.size else float(np.max(inh)),
        passed_by_inherent=int(np.sum(beyond & within & finite)),
    )
    comp = OutputComparison(name, shape, True, stats=stats, histogram=text_histogram(a))
    comp.nonfinite = nonfinite
    if classifier and out.ndim == 2 and len(out):
        comp.argmax_agreement = argmax_agreement(ref, out)
    if problems:
        comp.passed, comp.reason = False, "; ".join(problems)
        return comp
    _verdict(comp, check_error_stat, atol, rtol, quantile, inherent is not None, k)
    return comp


def _nonfinite(ref: np.ndarray, out: np.ndarray) -> tuple[dict[str, int], list[str]]:
    """NaN/Inf counts of each float array, and the problems they make."""
    nonfinite: dict[str, int] = {}
    problems = []
    for who, arr in (("candidate", out), ("reference", ref)):
        if arr.dtype.kind not in "fc":
            continue
        nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        if nan or inf:
            nonfinite[f"{who}_nan"], nonfinite[f"{who}_inf"] = nan, inf
            what = " and ".join(
                s for s in (f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else "") if s
            )
            problems.append(f"{who} has {what}")
    return nonfinite, problems


def _verdict(
    comp: OutputComparison,
    check_error_stat: str,
    atol: float,
    rtol: float,
    quantile: float,
    grounded: bool,
    k: float,
) -> None:
    """Set ``comp.passed`` / ``comp.reason`` from its statistics under the chosen rule."""
    stats = comp.stats
    if check_error_stat == "elemwise":
        if stats.mismatches:
            comp.passed = False
            comp.reason = (
                f"{stats.mismatches} of {stats.elements} elements beyond atol={atol:g} and "
                f"rtol={rtol:g}"
                + (f" and {k:g} x the inherent error" if grounded else "")
                + f" (max abs {stats.max_abs:.3g}"
                + (f", inherent {stats.inherent_max:.3g})" if grounded else ")")
            )
        return
    key = "quantile" if check_error_stat == "quantile" else check_error_stat
    sa = getattr(stats, f"{key}_abs")
    sr = getattr(stats, f"{key}_rel")
    if sa > atol and (math.isnan(sr) or sr > rtol):
        comp.passed = False
        label = f"q{quantile:g}" if key == "quantile" else key
        comp.reason = f"{label} abs error {sa:.3g} > atol={atol:g} and {label} rel error {sr:.3g} > rtol={rtol:g}"
