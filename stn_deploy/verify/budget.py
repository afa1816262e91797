"""verify in seconds: a time budget per runtime, subsets that fit it, progress lines.

Every runtime verified gets :attr:`TimeBudget.seconds` of wall time for its input sets (the
load and the placement probe are not counted). Before a runtime's first call, a session that can
estimate its own cost (the onnx reference evaluator:
:meth:`~stn_deploy.runtimes.reference.ReferenceSession.estimate_seconds_per_image`) is asked;
then the first input set starts with one batch (one image, or the file's fixed batch), timed,
and every later call runs as many images as the measured rate says still fit, shared equally
between the input sets left. A set cut short is compared on the rows that ran, with a note; a set
that no row of fits is not run, with a note. A budget of ``None`` means no limit (a runtime named
in ``--runtimes`` runs in full unless ``--timeout`` is given).

The budget is checked between calls, not enforced inside one: a call runs to its end. So a
runtime whose one image is slower than its estimate (or than the first image measured) can
overrun its budget by up to one call; the reference evaluator's estimate carries a safety
factor for that reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: seconds per runtime when it was not named explicitly and no --timeout was given
DEFAULT_SECONDS = 20.0


@dataclass
class TimeBudget:
    """Seconds per runtime (None: unlimited) and where progress lines go (None: nowhere)."""

    seconds: float | None = None
    progress: Callable[[str], None] | None = None
    #: runtimes that run in full whatever :attr:`seconds` says (named explicitly, no --timeout)
    unlimited: frozenset[str] = frozenset()

    def limit_for(self, runtime: str) -> float | None:
        return None if runtime in self.unlimited else self.seconds

    def say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)


@dataclass
class SetRun:
    """One runtime on one input set within its budget."""

    outputs: dict[str, np.ndarray] | None = None
    rows: int = 0
    seconds: float = 0.0
    note: str = ""


@dataclass
class RuntimeClock:
    """What one runtime has spent, and its rate (seconds per image) once measured."""

    limit: float | None
    spent: float = 0.0
    images: int = 0
    estimate: float | None = None  # seconds per image, before the first call

    @property
    def rate(self) -> float | None:
        if self.images:
            return self.spent / self.images
        return self.estimate

    def affordable(self, sets_left: int) -> int | None:
        """Images the rest of the budget pays for, per input set left (None: no limit)."""
        if self.limit is None:
            return None
        left = self.limit - self.spent
        if self.rate is None:
            return None if left > 0 else 0
        if self.rate <= 0:
            return None
        return max(0, int(left / self.rate / max(1, sets_left)))


def run_within(
    clock: RuntimeClock,
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    feeds: dict[str, np.ndarray],
    count: int,
    batch: int | None,
    sets_left: int,
) -> SetRun:
    """Run ``feeds`` (``count`` rows) through ``run`` as far as ``clock`` allows: first one
    batch when the rate is unknown, then what fits."""
    step = batch or 1
    parts: list[dict[str, np.ndarray]] = []
    done, t_set = 0, 0.0
    for _ in range(2):  # at most a timed first batch, then what fits
        if done >= count:
            break
        if clock.limit is None:
            n = count - done
        elif clock.rate is None:
            n = step  # nothing known yet: one batch, timed
        else:
            fits = clock.affordable(sets_left)
            left = count - done if fits is None else max(0, fits - done) // step * step
            n = min(count - done, left)
        if n <= 0:
            break
        t0 = time.perf_counter()
        parts.append(run({k: v[done : done + n] for k, v in feeds.items()}))
        dt = time.perf_counter() - t0
        clock.spent, clock.images, t_set = clock.spent + dt, clock.images + n, t_set + dt
        done += n
    res = SetRun(rows=done, seconds=t_set)
    if parts:
        res.outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if done < count:
        rate = clock.rate
        per = f"~{rate:.2g} s per image" if rate else "no time left"
        what = f"{done} of {count} images run" if done else "not run"
        res.note = (
            f"{what} within the {clock.limit:g} s budget ({per}); --timeout SECONDS, or name "
            "the runtime in --runtimes, to run all"
        )
    return res


def rows_of(arrays: dict[str, Any], rows: int) -> dict[str, Any]:
    """The first ``rows`` of every array."""
    return {k: np.asarray(v)[:rows] for k, v in arrays.items()}


def total_images(sets: Sequence[Any]) -> int:
    return sum(s.count for s in sets)
