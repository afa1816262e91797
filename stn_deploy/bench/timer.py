"""The timing loop: warm-up calls, then a fixed number of calls or calls for a duration."""

from __future__ import annotations

import time
from collections.abc import Callable

from stn_deploy.errors import StnDeployError

#: when neither iters nor duration is given: time calls for this long (seconds) ...
DEFAULT_DURATION = 1.0
#: ... but never fewer or more calls than these
MIN_ITERS = 5
MAX_ITERS = 1000


def check_budget(warmup: int, iters: int | None, duration: float | None) -> None:
    """Raise a one-line error for a negative warm-up, a non-positive count or duration, or both."""
    if warmup < 0:
        raise StnDeployError(f"--warmup must be 0 or more, got {warmup}")
    if iters is not None and duration is not None:
        raise StnDeployError("give --iters or --duration, not both")
    if iters is not None and iters < 1:
        raise StnDeployError(f"--iters must be at least 1, got {iters}")
    if duration is not None and not duration > 0:
        raise StnDeployError(f"--duration must be positive seconds, got {duration}")


def time_calls(
    fn: Callable[[], object],
    *,
    warmup: int = 5,
    iters: int | None = None,
    duration: float | None = None,
) -> list[float]:
    """Wall time in seconds of each timed call of ``fn()``.

    ``warmup`` untimed calls first; then ``iters`` calls, or calls until ``duration`` seconds
    of timed calls have passed (at least :data:`MIN_ITERS`, at most :data:`MAX_ITERS` when no
    count is given). Neither given: ``duration`` = :data:`DEFAULT_DURATION`.
    """
    check_budget(warmup, iters, duration)
    for _ in range(warmup):
        fn()
    if iters is None and duration is None:
        duration = DEFAULT_DURATION
    times: list[float] = []
    spent = 0.0
    while True:
        if iters is not None:
            if len(times) >= iters:
                break
        elif len(times) >= MAX_ITERS or (spent >= duration and len(times) >= MIN_ITERS):
            break
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return times
