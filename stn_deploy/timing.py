"""Latency measurement shared by ``export --sampler auto`` and the benchmarks (no torch)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_us(
    fn: Callable[[], object],
    warmup: int = 5,
    iters: int = 30,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median wall time of ``fn()`` in microseconds over ``iters`` calls after ``warmup`` calls,
    read from ``clock`` (seconds; the tests give a fake one)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times) * 1e6
