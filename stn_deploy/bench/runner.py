"""Running the routes (a model on a runtime, called one way) at each batch size."""

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
from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.runtimes import RuntimeSession, RuntimeUnavailable, TensorSpec, open_session
from stn_deploy.timing import TURN_SECONDS, CallTimer


@dataclass
class RunSettings:
    """How every route is timed and opened."""

    warmup: int = 5
    iters: int | None = None
    duration: float | None = None
    threads: int | None = None
    opt_level: str | None = None
    #: ``torch_session(threads=..., **options)``: the torch baseline's eager session, from the
    #: caller (:attr:`stn_deploy.torch_side.TorchSide.open_session`)
    torch_session: Callable[..., RuntimeSession] | None = None
    shape: tuple[int, ...] = ()
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    seed: int = 0
    #: the model file's input names, in order (empty: one input, under any name)
    input_names: tuple[str, ...] = ()
    #: the per-sample shape of each input after the first (a model with several inputs; the
    #: first input's is ``shape``)
    more_shapes: tuple[tuple[int, ...], ...] = ()
    _inputs: dict[tuple, np.ndarray] = field(default_factory=dict)

    def inputs(self, batch: int, dtype: np.dtype | None = None, index: int = 0) -> np.ndarray:
        """Seeded standard-normal inputs of ``batch`` samples for input ``index`` (0: the
        first, of ``shape``; i: the i-th of :attr:`more_shapes`), cached: every route gets the
        same."""
        dtype = np.dtype(dtype or self.dtype)
        key = (batch, dtype.name, index)
        if key not in self._inputs:
            shape = self.shape if index == 0 else self.more_shapes[index - 1]
            seed = [self.seed, batch] if index == 0 else [self.seed, batch, index]
            rng = np.random.default_rng(seed)
            self._inputs[key] = rng.standard_normal((batch, *shape), np.float32).astype(dtype)
        return self._inputs[key]

    def feeds(self, specs: list[TensorSpec], batch: int) -> dict[str, np.ndarray]:
        """Inputs of ``batch`` samples for a session's inputs ``specs``: each matched to the
        model file's inputs by name, else by position (a converted or stock file may rename
        them), in its own dtype."""
        count = 1 + len(self.more_shapes)
        if len(specs) != count:
            raise StnDeployError(f"the session takes {len(specs)} input(s), the model {count}")
        names = list(self.input_names)
        by_name = len(names) == count and sorted(names) == sorted(s.name for s in specs)
        feeds = {}
        for pos, spec in enumerate(specs):
            index = names.index(spec.name) if by_name else pos
            dtype = np.dtype(_dtype(spec.dtype))
            # one input: the call a single-input bench has always made
            feeds[spec.name] = (
                self.inputs(batch, dtype, index) if index else self.inputs(batch, dtype)
            )
        return feeds


def open_route(route: Route, s: RunSettings, **options: Any) -> RuntimeSession:
    """A session for ``route`` (RuntimeUnavailable / StnDeployError when it cannot be had)."""
    if route.kind == "torch":
        if s.torch_session is None:
            raise StnDeployError(
                "the torch baseline needs the torch model ({torch_side})", param="torch_side"
            )
        return s.torch_session(threads=s.threads, **options)
    runtime, extra = BENCH_ALIASES.get(route.runtime, (route.runtime, {}))
    return open_session(
        runtime,
        route.model,
        threads=s.threads,
        opt_level=s.opt_level,  # open_session gives it to ONNX Runtime only
        **extra,
        **options,
    )


def plain_call(session: RuntimeSession, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    """The lowest-level call of ``session`` on ``feeds`` (checked once, not per call):
    ``InferenceSession.run`` for ORT, ``InferRequest.infer(share_inputs=True)`` for OpenVINO,
    else ``run``."""
    session.check_feeds(feeds)
    sess = getattr(session, "sess", None)
    if sess is not None and hasattr(sess, "run_with_iobinding"):
        return lambda: sess.run(None, feeds)
    request = getattr(session, "request", None)
    if request is not None and hasattr(request, "infer"):
        contiguous = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        # like ORT and torch, read the numpy input in place (no copy per call)
        return lambda: request.infer(contiguous, share_inputs=True)
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


@dataclass
class _Job:
    """One route at one batch size being timed."""

    route: Route
    batch: int
    timer: CallTimer
    keep: list[Any]
    error: str | None = None


def _open_all(
    routes: list[Route], sizes: list[int], s: RunSettings, tick: Callable[[str], None]
) -> tuple[dict[str, RuntimeSession], dict[str, list[BenchRow]], dict[str, list[int]], list[str]]:
    """Open every route's session; routes that cannot run get their rows now."""
    sessions: dict[str, RuntimeSession] = {}
    rows: dict[str, list[BenchRow]] = {r.key: [] for r in routes}
    plans: dict[str, list[int]] = {}
    notes: list[str] = []
    for route in routes:
        status, reason = None, ""
        if route.skip:
            status, reason = route.skip_status, route.skip
        else:
            try:
                session = open_route(route, s)
            except RuntimeUnavailable as exc:
                status, reason = "skipped", one_line(exc)
            except StnDeployError as exc:
                status, reason = "failed", one_line(exc)
            except MemoryError:
                status, reason = "failed", "out of memory opening the session"
        if status is not None:
            for b in sizes:
                tick(route.label)
                rows[route.key].append(BenchRow(route, b, status, reason))
            continue
        route.runtime_info = session.info.to_dict()
        note = _confirm_compute(route, session)
        if note and note not in notes:
            notes.append(note)
        sessions[route.key] = session
        fixed = fixed_batch(session.inputs)
        plan = list(sizes)
        if fixed is not None and any(b != fixed for b in sizes):
            others = [b for b in sizes if b != fixed]
            if fixed not in plan:
                plan.append(fixed)
            notes.append(
                f"{route.label} on {route.runtime}: the model's batch dimension is fixed at "
                f"{fixed}, so batch {', '.join(map(str, others))} cannot run; benched batch "
                f"{fixed} only (export with a dynamic batch to bench other sizes)"
            )
        plans[route.key] = plan
    return sessions, rows, plans, notes


def _confirm_compute(route: Route, session: RuntimeSession) -> str | None:
    """Label ``route`` with the precision ``session`` actually computes in.

    A route asked to compute in another precision (``openvino-bf16``) is planned as
    "bf16 compute"; OpenVINO falls back to f32 silently on CPUs without bf16, so the label
    is checked against what the compiled model reports and, if it differs, replaced by what
    the runtime does (returned: a note saying so).
    """
    if not route.compute:
        return None
    actual = getattr(session, "compute_precision", None)
    if actual is None or actual == route.compute:
        return None
    file_precision = route.file_precision or "fp32"
    route.precision = file_precision if actual == "fp32" else f"{actual} compute"
    return (
        f"{route.runtime}: asked to compute in {route.compute}, but {session.info.library} "
        f"computes in {actual} on this machine (no {route.compute} support); its rows are "
        f"labelled {route.precision}"
    )


def run_routes(
    routes: list[Route],
    sizes: list[int],
    s: RunSettings,
    tick: Callable[[str], None],
    *,
    interleave: bool = True,
) -> tuple[list[BenchRow], list[str]]:
    """Rows of every route at each size (skipped/failed rows say why) and notes.

    Batch size by batch size, every route that runs it is warmed up, then timed; with
    ``interleave`` the routes take turns of about :data:`TURN_SECONDS` until each has its
    budget, so that load from other processes falls on all of them alike. ``tick(text)`` is
    called once per row (the progress bar).
    """
    sessions, rows, plans, notes = _open_all(routes, sizes, s, tick)
    batches = list(dict.fromkeys(b for key in plans for b in plans[key]))
    try:
        for b in batches:
            jobs: list[_Job] = []
            for route in routes:
                session = sessions.get(route.key)
                if session is None or b not in plans[route.key]:
                    continue
                fixed = fixed_batch(session.inputs)
                if fixed is not None and b != fixed:
                    tick(route.label)
                    rows[route.key].append(
                        BenchRow(route, b, "skipped", f"the model's batch is fixed at {fixed}")
                    )
                    continue
                try:
                    feeds = s.feeds(list(session.inputs), b)
                    call, keep = _mode_call(route, session, feeds, s)
                    timer = CallTimer(call, iters=s.iters, duration=s.duration)
                    # ORT runs once normally, then captures the CUDA graph: warm up past it
                    timer.warm(max(s.warmup, 3) if route.mode == "cuda-graph" else s.warmup)
                except Exception as exc:  # noqa: BLE001 - any runtime's error is a row
                    tick(route.label)
                    rows[route.key].append(BenchRow(route, b, "failed", _reason(exc, b)))
                    continue
                jobs.append(_Job(route, b, timer, keep))
            active = list(jobs)
            while active:
                for job in list(active):
                    try:
                        job.timer.turn(TURN_SECONDS if interleave else None)
                    except Exception as exc:  # noqa: BLE001
                        job.error = _reason(exc, b)
                    if job.error or job.timer.done:
                        active.remove(job)
                        job.keep.clear()
                        tick(f"{job.route.label} {job.route.runtime} b{b}")
            for job in jobs:
                if job.error:
                    rows[job.route.key].append(BenchRow(job.route, b, "failed", job.error))
                else:
                    stats = latency_stats(job.timer.times, b)
                    rows[job.route.key].append(BenchRow(job.route, b, "ok", stats=stats))
    finally:
        sessions.clear()
    ordered = [row for route in routes for row in rows[route.key]]
    return ordered, notes


def fixed_batch(specs: list[TensorSpec]) -> int | None:
    """The batch every input of a model is fixed at (the first input's fixed batch; None when
    no input fixes it)."""
    return next((f for f in (s.fixed_batch() for s in specs) if f is not None), None)


def _reason(exc: BaseException, batch: int) -> str:
    if isinstance(exc, MemoryError):
        return f"out of memory at batch {batch}"
    if isinstance(exc, StnDeployError):
        return one_line(exc)
    return f"{type(exc).__name__}: {one_line(exc)}"


def _dtype(name: str) -> str:
    try:
        return np.dtype(name).name
    except TypeError:
        return "float32"
