"""Latency statistics of one runtime at one batch size (numpy only).

Example:
    >>> s = latency_stats([0.001, 0.002, 0.003], batch=4)
    >>> round(s.p50_us), round(s.mean_us), round(s.images_per_s)
    (2000, 2000, 2000)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from stn_deploy.errors import StnDeployError

#: the statistics every result row carries, in table order
FIELDS = ("mean_us", "p50_us", "p90_us", "p99_us", "min_us", "max_us", "std_us", "images_per_s")


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in microseconds over ``iters`` timed calls of ``batch`` images.

    Percentiles interpolate linearly between calls (numpy's default); ``std_us`` is the sample
    standard deviation (0 for one call); ``images_per_s`` is ``batch / mean latency``.
    """

    iters: int
    batch: int
    mean_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    min_us: float
    max_us: float
    std_us: float
    images_per_s: float

    def to_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def latency_stats(seconds: Sequence[float], batch: int) -> LatencyStats:
    """Statistics of per-call wall times ``seconds`` (each call ran ``batch`` images)."""
    if len(seconds) == 0:
        raise StnDeployError("no timed calls to compute latency statistics from")
    if batch < 1:
        raise StnDeployError(f"batch size must be at least 1, got {batch}")
    us = np.asarray(seconds, dtype=np.float64) * 1e6
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    mean = float(us.mean())
    return LatencyStats(
        iters=int(us.size),
        batch=int(batch),
        mean_us=mean,
        p50_us=float(p50),
        p90_us=float(p90),
        p99_us=float(p99),
        min_us=float(us.min()),
        max_us=float(us.max()),
        std_us=float(us.std(ddof=1)) if us.size > 1 else 0.0,
        images_per_s=float(batch / (mean * 1e-6)) if mean > 0 else float("inf"),
    )
