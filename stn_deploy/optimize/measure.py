"""Inputs, parity and interleaved timing for ``optimize_model`` (no torch).

Sessions come from :func:`stn_deploy.runtimes.registry.open_session`; two graphs are timed
in alternating blocks (:func:`paired_p50`) so that they share the CPU's noise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import onnx

from stn_deploy.errors import StnDeployError
from stn_deploy.timing import CallTimer

#: parity: |a - e| <= ATOL_SCALE * max(1, max|e|) + RTOL * |e| (float32 reordering noise)
ATOL_SCALE = 1e-5
RTOL = 1e-5
#: timed calls per block, and the fewest blocks, of :func:`paired_p50`
BLOCK_CALLS = 4
MIN_BLOCKS = 6


def open_model(runtime: str, model: onnx.ModelProto, threads: int | None):
    from stn_deploy.runtimes.registry import open_session

    return open_session(runtime, model, threads=threads)


def make_inputs(session, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for ``session`` at ``batch`` (first dim; uniform in [0, 1) for floats)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in session.inputs:
        dims = list(spec.shape or [])
        if not dims:
            raise StnDeployError(f"input {spec.name!r} has no known shape: cannot time it")
        fixed = spec.fixed_batch()
        shape = [fixed or batch] + [d if isinstance(d, int) and d > 0 else None for d in dims[1:]]
        if None in shape:
            raise StnDeployError(
                f"input {spec.name!r} has unknown dims beyond the batch {dims}: cannot time it"
            )
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.random(shape).astype(dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype)
    return feeds


def worst_excess(actual: dict, expected: dict) -> float:
    """The largest ``|a - e| / tolerance`` over every output (> 1: not at parity); NaN where
    one has NaN and the other not counts as infinite."""
    worst = 0.0
    for name, e in expected.items():
        a = np.asarray(actual[name], np.float64)
        e = np.asarray(e, np.float64)
        if a.shape != e.shape or (np.isnan(a) != np.isnan(e)).any():
            return float("inf")
        finite = np.abs(e[np.isfinite(e)])
        atol = ATOL_SCALE * max(1.0, float(finite.max()) if finite.size else 0.0)
        ok = np.isfinite(e) & np.isfinite(a)
        if ((a != e) & ~ok & ~np.isnan(e)).any():
            return float("inf")
        err = np.abs(a - e)[ok] / (atol + RTOL * np.abs(e[ok]))
        worst = max(worst, float(err.max()) if err.size else 0.0)
    return worst


def paired_p50(
    before, after, feeds: dict, duration: float, clock: Callable[[], float] | None = None
) -> tuple[float, float, float]:
    """Two sessions timed in alternating blocks of :data:`BLOCK_CALLS` calls (one untimed call
    first, the order swapped each block) until each has ``duration`` s of timed calls (at
    least :data:`MIN_BLOCKS` blocks), read from ``clock`` (default wall time;
    ``time.thread_time`` with 1 thread: CPU time, steadier on a loaded machine).

    Returns p50 µs of each over all its calls and the median over blocks of the ratio of
    ``after``'s block median to ``before``'s: blocks taken close in time cancel the slow drift
    of a shared machine's load, which the two p50s alone do not.
    """
    clock = clock or time.perf_counter
    times: dict[int, list[float]] = {0: [], 1: []}
    ratios: list[float] = []
    spent = [0.0, 0.0]
    while min(spent) < duration or len(ratios) < MIN_BLOCKS:
        block = {}
        for k in (0, 1) if len(ratios) % 2 else (1, 0):
            session = (before, after)[k]
            timer = CallTimer(lambda s=session: s.run(feeds), iters=BLOCK_CALLS, clock=clock)
            timer.warm(1)
            timer.turn()
            ts = timer.times
            times[k] += ts
            spent[k] += sum(ts)
            block[k] = statistics.median(ts)
        ratios.append(block[1] / block[0])
    return (
        statistics.median(times[0]) * 1e6,
        statistics.median(times[1]) * 1e6,
        statistics.median(ratios),
    )
