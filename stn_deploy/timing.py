"""The one timing module (no torch): the benchmark's timing loop and a median for quick checks.

- :func:`check_budget` bounds a benchmark's ``warmup``/``iters``/``duration``;
- :class:`CallTimer` times warm-up calls, then a fixed number of calls or calls for a duration,
  optionally in turns, so that several routes take turns on the CPU
  (``bench_model(interleave=True)``; see there for why that is not the default);
- :func:`time_calls` is one CallTimer run; :func:`median_us` its median in microseconds
  (``export --lowering auto``, the precision latencies, the benchmarks).

Everything reads the time from ``clock=`` (seconds, monotonic): the tests give a fake one.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from stn_deploy.errors import StnDeployError

#: when neither iters nor duration is given: time calls for this long (seconds) ...
DEFAULT_DURATION = 1.0
#: ... and never more calls than this (fast routes would otherwise make thousands)
MAX_ITERS = 1000
#: at least this many timed calls when timing for a duration
MIN_ITERS = 5
#: seconds one route runs per turn when routes are interleaved
TURN_SECONDS = 0.02
#: most warm-up or timed calls per row (warmup, iters): more is an endless benchmark
MAX_TIMED_CALLS = 100_000
#: most seconds of timed calls per row (duration)
MAX_DURATION = 600.0


def check_budget(warmup: int, iters: int | None, duration: float | None) -> None:
    """Raise a one-line error for a warm-up or count outside 0/1..:data:`MAX_TIMED_CALLS`, a
    duration that is not a finite number of seconds in (0, :data:`MAX_DURATION`], or both."""
    if warmup < 0:
        raise StnDeployError(f"{{warmup}} must be 0 or more, got {warmup}", param="warmup")
    if iters is not None and duration is not None:
        raise StnDeployError("give {iters} or {duration}, not both", param=("iters", "duration"))
    if iters is not None and iters < 1:
        raise StnDeployError(f"{{iters}} must be at least 1, got {iters}", param="iters")
    if duration is not None and not duration > 0:
        raise StnDeployError(
            f"{{duration}} must be positive seconds, got {duration}", param="duration"
        )
    for name, calls in (("warmup", warmup), ("iters", iters)):
        if calls is not None and calls > MAX_TIMED_CALLS:
            raise StnDeployError(
                f"{{{name}}} must be at most {MAX_TIMED_CALLS:,} calls (no endless benchmark), "
                f"got {calls}",
                param=name,
            )
    if duration is not None and duration > MAX_DURATION:  # inf too (nan is not > 0)
        raise StnDeployError(
            f"{{duration}} must be at most {MAX_DURATION:g} seconds (no endless benchmark), "
            f"got {duration}",
            param="duration",
        )


class CallTimer:
    """Times calls of ``fn`` until ``iters`` calls, or ``duration`` seconds of timed calls (at
    least :data:`MIN_ITERS`); neither given: :data:`DEFAULT_DURATION`, at most
    :data:`MAX_ITERS` calls. ``clock`` (seconds, monotonic) reads the time: the tests give a
    fake one that only ``fn`` advances."""

    def __init__(
        self,
        fn: Callable[[], object],
        *,
        iters: int | None = None,
        duration: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        check_budget(0, iters, duration)
        self.fn = fn
        self.clock = clock
        self.iters = iters
        self.cap = MAX_ITERS if iters is None and duration is None else None
        self.duration = DEFAULT_DURATION if iters is None and duration is None else duration
        self.times: list[float] = []
        self.spent = 0.0

    def warm(self, calls: int) -> None:
        """``calls`` untimed calls."""
        for _ in range(calls):
            self.fn()

    @property
    def done(self) -> bool:
        n = len(self.times)
        if self.iters is not None:
            return n >= self.iters
        if self.cap is not None and n >= self.cap:
            return True
        return self.spent >= self.duration and n >= MIN_ITERS

    def turn(self, seconds: float | None = None) -> None:
        """Timed calls until done, or (with ``seconds``) until this turn has taken that long
        (always at least one call)."""
        start = self.clock()
        while not self.done:
            t0 = self.clock()
            self.fn()
            t1 = self.clock()
            self.times.append(t1 - t0)
            self.spent += t1 - t0
            if seconds is not None and t1 - start >= seconds:
                break


def time_calls(
    fn: Callable[[], object],
    *,
    warmup: int = 5,
    iters: int | None = None,
    duration: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Wall time in seconds of each timed call of ``fn()``, after ``warmup`` untimed calls
    (budget and ``clock`` as in :class:`CallTimer`)."""
    check_budget(warmup, iters, duration)
    timer = CallTimer(fn, iters=iters, duration=duration, clock=clock)
    timer.warm(warmup)
    timer.turn()
    return timer.times


def median_us(
    fn: Callable[[], object],
    warmup: int = 5,
    iters: int = 30,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median wall time of ``fn()`` in microseconds over ``iters`` calls after ``warmup`` calls,
    read from ``clock`` (seconds; the tests give a fake one)."""
    return statistics.median(time_calls(fn, warmup=warmup, iters=iters, clock=clock)) * 1e6
