"""``optimize_model``: rewrite passes applied by mode, checked for parity, timed in ``auto``.

- ``none``: the model as it is (a record saying so);
- ``exact``: the passes of :data:`EXACT_DEFAULT` for the runtime, each kept only when the
  rewritten graph stays at parity with the unoptimised one (a pass that would not is skipped
  with a note); no timing;
- ``auto``: every exact pass, site by site in :data:`~.passes.ORDER`, on top of the sites kept
  so far; a site is kept when the graph stays at parity and the two graphs, timed in turns on
  ``runtime`` at each of ``batch_sizes`` in alternating blocks, say it is faster (geometric
  mean of the median block ratios below ``1 - margin``, and no batch size slower by more than
  ``margin``). The final set is
  timed against the plain graph once more and dropped if that says it is not faster.

Parity: every output within ``1e-5 * max(1, max|expected|) + 1e-5 * |expected|`` of the
unoptimised graph's on the same runtime and inputs (random, uniform in [0, 1), each batch size
and an odd batch of 3 for the ``If`` fallbacks).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import onnx

from stn_deploy.errors import StnDeployError
from stn_deploy.optimize import measure
from stn_deploy.optimize.base import Pass, all_passes, get_pass

MODES = ("none", "exact", "auto")
#: mode "exact": passes that win on ORT CPU wherever they match (measured on an AMD EPYC,
#: benchmarks/results/optimize.md); phase-conv-maxpool and batch-chunked-conv depend on the
#: layer and the CPU, so only ``auto`` applies them, site by site
EXACT_DEFAULT = {
    "cpu": ("constant-folding", "conv-bn-fold", "relu-before-maxpool", "affine-grid-gemm"),
    "openvino": ("constant-folding", "conv-bn-fold", "affine-grid-gemm"),
}
#: runtimes ``auto`` can time on
TIMED_RUNTIMES = ("cpu", "openvino")


@dataclass
class Candidate:
    """One site ``auto`` tried: p50 µs per batch size before and after, and the verdict."""

    pass_name: str
    site: str
    before_us: dict[int, float] = field(default_factory=dict)
    after_us: dict[int, float] = field(default_factory=dict)
    ratio: dict[int, float] = field(default_factory=dict)
    kept: bool = False
    note: str = ""


@dataclass
class OptimizeRecord:
    """What ``optimize_model`` did: for the file's metadata (:meth:`metadata`) and the CLI."""

    mode: str
    runtime: str | None = None
    batch_sizes: list[int] = field(default_factory=list)
    applied: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    plain_us: dict[int, float] = field(default_factory=dict)
    optimized_us: dict[int, float] = field(default_factory=dict)
    ratio: dict[int, float] = field(default_factory=dict)

    @property
    def passes(self) -> list[str]:
        return [p for p, sites in self.applied.items() if sites]

    def metadata(self) -> dict[str, object]:
        """``{"optimize": ...}`` for :func:`stn_deploy.export.metadata.write_metadata`."""
        return {"optimize": asdict(self)}

    def describe(self) -> str:
        done = ", ".join(f"{p} x{len(s)}" for p, s in self.applied.items() if s) or "no pass"
        line = f"optimize {self.mode}: {done}"
        if self.plain_us and self.optimized_us:
            line += "; p50 " + ", ".join(
                f"b{b} {self.plain_us[b]:.0f} -> {self.optimized_us[b]:.0f} us"
                for b in self.batch_sizes
            )
        return line + "".join(f"\n  note: {n}" for n in self.notes)


def optimize_model(
    model: onnx.ModelProto,
    mode: str = "exact",
    *,
    runtime: str = "cpu",
    batch_sizes: tuple[int, ...] = (1, 64),
    passes: tuple[str, ...] | None = None,
    threads: int | None = 2,
    duration: float = 0.3,
    margin: float = 0.02,
    clock: Callable[[], float] | None = None,
) -> tuple[onnx.ModelProto, OptimizeRecord]:
    """Rewrite ``model`` (never changed itself) by ``mode``; return the result and its record.

    Args:
        mode: ``none``, ``exact`` or ``auto`` (see the module docstring).
        runtime: the runtime to check parity on and, for ``auto``, to time on (``cpu`` = ORT
            CPU, ``openvino``); ``exact`` falls back to the onnx reference evaluator when it
            is not installed, ``auto`` fails in one line.
        batch_sizes: the batch sizes to time (and check) at.
        passes: the pass names to consider (default: :data:`EXACT_DEFAULT` for ``exact``, every
            exact pass for ``auto``).
        threads: runtime threads (ORT ``intra_op_num_threads``).
        duration: seconds of timed calls per graph, batch size and comparison.
        margin: relative gain a site must show, and loss no batch size may show.
        clock: what ``auto`` reads the time from (seconds; default wall time). On a loaded
            machine, ``time.thread_time`` with ``threads=1`` times the CPU each call takes.
    """
    _check_args(mode, runtime, batch_sizes)
    record = OptimizeRecord(mode, runtime if mode != "none" else None, list(batch_sizes))
    if mode == "none":
        return model, record
    chosen = _chosen_passes(mode, runtime, passes)
    check_rt = runtime if mode == "auto" or _available(runtime) else "reference"
    if check_rt != runtime:
        record.notes.append(f"{runtime} is not installed: parity checked on the reference runtime")
    ctx = _Context(model, check_rt, batch_sizes, threads, duration, margin)
    ctx.clock = clock
    out = _exact(ctx, chosen, record) if mode == "exact" else _auto(ctx, chosen, record)
    _name_new_nodes(out)
    return out, record


def _name_new_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node (a pass's new ones) a unique name: tools that select nodes by
    name (quantisation exclusion lists, profiles) need one."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"/optimize/{n.op_type}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)


def _check_args(mode: str, runtime: str, batch_sizes: tuple[int, ...]) -> None:
    if mode not in MODES:
        raise StnDeployError(
            f"{{mode}} must be one of {', '.join(MODES)}, got {mode!r}", param="mode"
        )
    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise StnDeployError(
            f"{{batch_sizes}} must be positive integers, got {list(batch_sizes)}",
            param="batch_sizes",
        )
    if mode == "auto" and runtime not in TIMED_RUNTIMES:
        raise StnDeployError(
            f"{{runtime}} {runtime!r} cannot be timed by optimize auto: choose from "
            f"{', '.join(TIMED_RUNTIMES)}",
            param="runtime",
        )
    if mode == "auto" and not _available(runtime):
        from stn_deploy.runtimes.registry import availability

        why = availability(runtime).reason
        raise StnDeployError(
            f"optimize auto times on {{runtime}} {runtime}, which cannot run here: {why}",
            param="runtime",
        )


def _available(runtime: str) -> bool:
    from stn_deploy.runtimes.registry import availability

    try:
        return availability(runtime).available
    except StnDeployError:
        return False


def _chosen_passes(mode: str, runtime: str, names: tuple[str, ...] | None) -> list[Pass]:
    if names is not None:
        chosen = [get_pass(n) for n in names]
        order = {p.name: i for i, p in enumerate(all_passes())}
        return sorted(chosen, key=lambda p: order.get(p.name, len(order)))
    if mode == "exact":
        return [get_pass(n) for n in EXACT_DEFAULT.get(runtime, EXACT_DEFAULT["cpu"])]
    return [p for p in all_passes() if p.exact]


class _Context:
    """The unoptimised model's outputs (the parity reference) and the timing settings."""

    def __init__(self, model, runtime, batch_sizes, threads, duration, margin) -> None:
        self.model, self.runtime, self.threads = model, runtime, threads
        self.batch_sizes, self.duration, self.margin = tuple(batch_sizes), duration, margin
        session = measure.open_model(runtime, model, threads)
        dynamic = any(s.fixed_batch() is None for s in session.inputs)
        checks = sorted({*batch_sizes, 3}) if dynamic else [batch_sizes[0]]
        if dynamic and runtime == "reference":  # numpy kernels: small batches only
            checks = [1, 3]
        self.feeds = {b: measure.make_inputs(session, b, seed=b) for b in checks}
        self.expected = {b: session.run(f) for b, f in self.feeds.items()}
        self.plain = session
        self.clock: Callable[[], float] | None = None

    def session(self, model: onnx.ModelProto):
        return measure.open_model(self.runtime, model, self.threads)

    def parity(self, model: onnx.ModelProto) -> tuple[bool, str]:
        """Whether ``model`` matches the unoptimised outputs at every checked batch size."""
        try:
            session = self.session(model)
            worst = max(
                measure.worst_excess(session.run(f), self.expected[b])
                for b, f in self.feeds.items()
            )
        except StnDeployError as exc:
            return False, f"the rewritten graph does not run: {exc}"
        if worst > 1.0:
            return False, f"outputs moved {worst:.3g}x the parity tolerance"
        return True, ""

    def compare(self, before, after) -> tuple[dict, dict, dict]:
        """Per batch size: p50 µs of two sessions and the median block ratio after/before
        (:func:`~stn_deploy.optimize.measure.paired_p50`)."""
        b_us, a_us, ratio = {}, {}, {}
        for b in self.batch_sizes:
            feeds = measure.make_inputs(before, b, seed=b)
            b_us[b], a_us[b], ratio[b] = measure.paired_p50(
                before, after, feeds, self.duration, clock=self.clock
            )
        return b_us, a_us, ratio

    def wins(self, ratio: dict[int, float]) -> bool:
        """Faster overall (geometric mean of the ratios below 1 - margin) and at no batch size
        slower by more than the margin."""
        ratios = [ratio[b] for b in self.batch_sizes]
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        return geo < 1 - self.margin and max(ratios) < 1 + self.margin


def _exact(ctx: _Context, chosen: list[Pass], record: OptimizeRecord) -> onnx.ModelProto:
    current = ctx.model
    for p in chosen:
        sites = p.find(current)
        if not sites:
            continue
        trial, _ = p.apply(current)
        ok, why = ctx.parity(trial)
        if ok:
            current, record.applied[p.name] = trial, sites
        else:
            record.notes.append(f"{p.name} skipped: {why}")
    return current


def _auto(ctx: _Context, chosen: list[Pass], record: OptimizeRecord) -> onnx.ModelProto:
    current, cur_session = ctx.model, ctx.plain
    for p in chosen:
        for site in p.find(current):
            cand = Candidate(p.name, site)
            record.candidates.append(cand)
            trial, n = p.apply(current, {site})
            ok, cand.note = ctx.parity(trial) if n else (False, "no longer matches")
            if not ok:
                record.notes.append(f"{p.name} at {site} skipped: {cand.note}")
                continue
            session = ctx.session(trial)
            cand.before_us, cand.after_us, cand.ratio = ctx.compare(cur_session, session)
            cand.kept = ctx.wins(cand.ratio)
            if cand.kept:
                current, cur_session = trial, session
                record.applied.setdefault(p.name, []).append(site)
    if current is ctx.model:
        return current
    record.plain_us, record.optimized_us, record.ratio = ctx.compare(ctx.plain, cur_session)
    if not ctx.wins(record.ratio):
        record.notes.append("the kept set did not time faster than the plain graph: dropped")
        record.applied = {}
        return ctx.model
    return current


def optimize_file(
    src: str | os.PathLike, dst: str | os.PathLike, mode: str = "exact", **kw
) -> OptimizeRecord:
    """:func:`optimize_model` of the ONNX file ``src``, written to ``dst`` atomically with the
    record in its metadata (``stn_deploy.optimize``)."""
    from stn_deploy.export.metadata import write_metadata
    from stn_deploy.export.onnx_file import load_onnx
    from stn_deploy.io.atomic import write_bytes_locked
    from stn_deploy.io.paths import check_not_source

    check_not_source(src, dst)
    model = load_onnx(src)
    out, record = optimize_model(model, mode, **kw)
    write_metadata(out, record.metadata())
    write_bytes_locked(dst, out.SerializeToString(deterministic=True))
    return record
