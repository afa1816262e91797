"""Running one route (a model on a runtime, called one way) at each batch size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stn_deploy.bench.ort_calls import (
    CUDA_GRAPH_OPTION,
    DEVICE_OF_EP,
    cuda_graph_call,
    iobinding_call,
)
from stn_deploy.bench.plan import BENCH_ALIASES
from stn_deploy.bench.result import BenchRow, Route
from stn_deploy.bench.stats import latency_stats
from stn_deploy.bench.timer import time_calls
from stn_deploy.errors import StnDeployError
from stn_deploy.runtimes import RuntimeSession, RuntimeUnavailable, open_session


@dataclass
class RunSettings:
    """How every route is timed and opened."""

    warmup: int = 5
    iters: int | None = None
    duration: float | None = None
    threads: int | None = None
    opt_level: str | None = None
    loaded: Any = None
    shape: tuple[int, ...] = ()
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    seed: int = 0
    _inputs: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)

    def inputs(self, batch: int, dtype: np.dtype | None = None) -> np.ndarray:
        """Seeded standard-normal inputs of ``batch`` images (cached: every route gets the same)."""
        dtype = np.dtype(dtype or self.dtype)
        key = (batch, dtype.name)
        if key not in self._inputs:
            rng = np.random.default_rng([self.seed, batch])
            self._inputs[key] = rng.standard_normal((batch, *self.shape), np.float32).astype(dtype)
        return self._inputs[key]


def one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return (msg[0] if msg else type(exc).__name__)[:300]


def open_route(route: Route, s: RunSettings, **options: Any) -> RuntimeSession:
    """A session for ``route`` (RuntimeUnavailable / StnDeployError when it cannot be had)."""
    runtime, extra = BENCH_ALIASES.get(route.runtime, (route.runtime, {}))
    return open_session(
        runtime,
        route.model,
        loaded=s.loaded if route.kind == "torch" else None,
        threads=s.threads,
        opt_level=s.opt_level if runtime not in ("openvino", "torch", "reference") else None,
        **extra,
        **options,
    )


def plain_call(session: RuntimeSession, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    """The lowest-level call of ``session`` on ``feeds`` (checked once, not per call):
    ``InferenceSession.run`` for ORT, ``InferRequest.infer`` for OpenVINO, else ``run``."""
    session.check_feeds(feeds)
    sess = getattr(session, "sess", None)
    if sess is not None and hasattr(sess, "run_with_iobinding"):
        return lambda: sess.run(None, feeds)
    request = getattr(session, "request", None)
    if request is not None and hasattr(request, "infer"):
        contiguous = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        return lambda: request.infer(contiguous)
    return lambda: session.run(feeds)


def _mode_call(
    route: Route, session: RuntimeSession, feeds: dict[str, np.ndarray], s: RunSettings
) -> tuple[Callable[[], object], list[Any]]:
    """The call for ``route.mode`` and the extra sessions to keep alive while it is timed."""
    if route.mode == "run":
        return plain_call(session, feeds), []
    ep = getattr(session, "ep", "")
    device = DEVICE_OF_EP.get(ep)
    if device is None:  # routes are planned so that this does not happen; say so if it does
        raise StnDeployError(f"{route.mode} needs a GPU execution provider, not {ep or 'this'}")
    session.check_feeds(feeds)
    outputs = [o.name for o in session.outputs]
    if route.mode == "io-binding":
        return iobinding_call(session.sess, device, feeds, outputs), []
    shapes = {
        name: (arr.shape, arr.dtype)
        for name, arr in zip(outputs, session.sess.run(outputs, feeds), strict=True)
    }
    graph_session = open_route(route, s, provider_options=CUDA_GRAPH_OPTION[ep])
    return cuda_graph_call(graph_session.sess, device, feeds, shapes), [graph_session]


def run_route(
    route: Route, sizes: list[int], s: RunSettings, tick: Callable[[str], None]
) -> tuple[list[BenchRow], list[str]]:
    """Rows of ``route`` at each size (skipped/failed rows say why) and notes for the result.

    ``tick(description)`` is called once per row (the progress bar).
    """
    notes: list[str] = []
    if route.skip:
        for _ in sizes:
            tick(route.label)
        return [BenchRow(route, b, route.skip_status, route.skip) for b in sizes], notes
    try:
        session = open_route(route, s)
    except RuntimeUnavailable as exc:
        for _ in sizes:
            tick(route.label)
        return [BenchRow(route, b, "skipped", one_line(exc)) for b in sizes], notes
    except StnDeployError as exc:
        for _ in sizes:
            tick(route.label)
        return [BenchRow(route, b, "failed", one_line(exc)) for b in sizes], notes
    route.runtime_info = session.info.to_dict()
    (spec,) = session.inputs[:1] or [None]
    fixed = spec.fixed_batch() if spec is not None else None
    plan = list(sizes)
    if fixed is not None and any(b != fixed for b in sizes):
        others = [b for b in sizes if b != fixed]
        if fixed not in plan:
            plan.append(fixed)
        notes.append(
            f"{route.label} on {route.runtime}: the model's batch dimension is fixed at {fixed}, "
            f"so batch {', '.join(map(str, others))} cannot run; benched batch {fixed} only "
            "(export with a dynamic batch to bench other sizes)"
        )
    rows = []
    for b in plan:
        tick(f"{route.label} {route.runtime} b{b}")
        if fixed is not None and b != fixed:
            rows.append(BenchRow(route, b, "skipped", f"the model's batch is fixed at {fixed}"))
            continue
        feeds = {spec.name: s.inputs(b, np.dtype(_dtype(spec.dtype)))}
        keep: list[Any] = []
        try:
            call, keep = _mode_call(route, session, feeds, s)
            # ORT runs once normally, then captures the CUDA graph: warm up past the capture
            warmup = max(s.warmup, 3) if route.mode == "cuda-graph" else s.warmup
            times = time_calls(call, warmup=warmup, iters=s.iters, duration=s.duration)
        except (StnDeployError, RuntimeUnavailable) as exc:
            rows.append(BenchRow(route, b, "failed", one_line(exc)))
            continue
        except MemoryError:
            rows.append(BenchRow(route, b, "failed", f"out of memory at batch {b}"))
            continue
        except Exception as exc:  # a runtime's own error type: one line, the run goes on
            rows.append(BenchRow(route, b, "failed", f"{type(exc).__name__}: {one_line(exc)}"))
            continue
        finally:
            del keep
        rows.append(BenchRow(route, b, "ok", stats=latency_stats(times, b)))
    return rows, notes


def _dtype(name: str) -> str:
    try:
        return np.dtype(name).name
    except TypeError:
        return "float32"
