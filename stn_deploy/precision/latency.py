"""Latency ratios on a shared, noisy machine: candidates timed in interleaved rounds (no torch).

Timing fp32 first and int8 a minute later lets any other load on the machine land on one of
them only. :func:`interleaved_median_us` times every candidate a little in each round, round
after round, and keeps the median of the per-round medians, so a burst of load lands on all of
them alike.

Example:
    >>> import time
    >>> t = interleaved_median_us({"a": lambda: None, "b": lambda: time.sleep(0.001)},
    ...                           rounds=2, iters=3, warmup=1)
    >>> t["b"]["median_us"] > t["a"]["median_us"]
    True
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from stn_deploy.timing import median_us


def interleaved_median_us(
    calls: dict[str, Callable[[], object]], *, rounds: int = 5, iters: int = 60, warmup: int = 10
) -> dict[str, dict[str, float]]:
    """For each name: ``median_us`` (median over rounds of the round's median), and the
    fastest and slowest round medians (``min_round_us``, ``max_round_us``)."""
    per: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for name, fn in calls.items():
            per[name].append(median_us(fn, warmup=1, iters=iters))
    return {
        name: {
            "median_us": round(statistics.median(v), 1),
            "min_round_us": round(min(v), 1),
            "max_round_us": round(max(v), 1),
        }
        for name, v in per.items()
    }
