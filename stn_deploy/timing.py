"""Latency measurement shared by ``export --sampler auto`` and the benchmarks (no torch)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_us(fn: Callable[[], object], warmup: int = 5, iters: int = 30) -> float:
    """Median wall time of ``fn()`` in microseconds over ``iters`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6
