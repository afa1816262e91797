"""``bench_model``: latency of an ONNX model across runtimes and batch sizes, with baselines.

Example:
    >>> r = bench_model("exported/mnist-affine-native.onnx", runtimes="cpu",
    ...                 batch_sizes=(1, 64), iters=50, progress=False)        # doctest: +SKIP
    >>> print(format_table(r))                                               # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from stn_deploy.bench.machine import machine_description
from stn_deploy.bench.ort_calls import cuda_graph_reason, io_binding_reason
from stn_deploy.bench.plan import (
    BENCH_ALIASES,
    check_batch_memory,
    check_batch_sizes,
    check_compare,
    input_dtype,
    inputs_reason,
    precision_of,
    resolve_input_shapes,
    runtime_names,
)
from stn_deploy.bench.result import BASELINES, BenchResult, BenchRow, Route
from stn_deploy.bench.runner import RunSettings, fixed_batch, run_routes
from stn_deploy.bench.sweep import Variant, make_variants
from stn_deploy.errors import StnDeployError
from stn_deploy.export.metadata import stn_metadata
from stn_deploy.runtimes import availability
from stn_deploy.runtimes.base import TensorSpec, graph_inputs, load_onnx, onnx_specs
from stn_deploy.runtimes.registry import NON_ORT
from stn_deploy.timing import check_budget
from stn_deploy.torch_side import TorchSide

ORT_LIKE_EXCLUDED = (*NON_ORT, *BENCH_ALIASES)


@dataclass
class BenchOptions:
    """How :func:`bench_model` benches (the keyword arguments of ``bench_model``).

    Attributes:
        runtimes: runtime names (``cpu``, ``cuda``, ``openvino``,
            ``openvino-bf16``, ...); None: every runtime available here but the reference.
        batch_sizes: positive sizes; a model with a fixed batch runs its own size only (the
            others are skip rows, and a note says so).
        warmup, iters, duration: untimed calls, then ``iters`` calls or ``duration`` seconds of
            calls per row (neither: about 1 s, 5 to 1000 calls).
        threads: intra-op threads of every runtime (None: each runtime's default).
        opt_level: ORT graph optimisation level (disable, basic, extended, all).
        io_binding, cuda_graph: also time the ORT GPU EPs with device-resident inputs and
            outputs / with a captured CUDA graph; other EPs get a skip row saying why.
        compare: baselines, ``torch`` (eager) and/or ``stock-export``; both need ``torch_side``.
        input_shape: per-image shape ``C,H,W`` (default: checkpoint, golden bundle, model); a
            model with several inputs takes one shape per input, ``;``-separated
            (``"3,16,16;6"``, as export), each input's default found the same way.
        sampler_sweep: also time every other grid-sample lowering of the model.
        progress: a progress bar on stderr (None: when stderr is a terminal).
        strict: raise instead of writing a skip or failure row.
        interleave: at each batch size the routes take turns of ~20 ms until each has its
            budget, instead of one after the other. Off by default: the runtimes' worker
            threads spin-wait after a call (ORT, OpenMP in torch), so with short turns each
            route runs against the previous one's spinning threads (measured: torch eager 9x
            and ORT 1.3x slower at batch 64 on 2 cores).
    """

    runtimes: str | Sequence[str] | None = None
    batch_sizes: str | int | Iterable[int] = (1, 8, 64, 256)
    warmup: int = 5
    iters: int | None = None
    duration: float | None = None
    threads: int | None = None
    opt_level: str | None = None
    io_binding: bool = False
    cuda_graph: bool = False
    compare: str | Sequence[str] = ()
    input_shape: str | Sequence[int] | None = None
    sampler_sweep: bool = False
    progress: bool | None = True
    strict: bool = False
    interleave: bool = False


@dataclass
class _Feed:
    """One input of the model as bench feeds it: seeded standard-normal samples of ``shape``."""

    spec: TensorSpec
    shape: tuple[int, ...]
    shape_source: str
    dtype: np.dtype

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "shape": list(self.shape),
            "dtype": self.dtype.name,
            "fixed_batch": self.spec.fixed_batch(),
            "shape_source": self.shape_source,
        }


@dataclass
class _Input:
    """The model's inputs as bench feeds them (the first one's fields as properties)."""

    meta: dict[str, str]
    feeds: list[_Feed]
    precision: str
    fixed: int | None

    @property
    def spec(self) -> TensorSpec:
        return self.feeds[0].spec

    @property
    def shape(self) -> tuple[int, ...]:
        return self.feeds[0].shape

    @property
    def shape_source(self) -> str:
        return self.feeds[0].shape_source

    @property
    def dtype(self) -> np.dtype:
        return self.feeds[0].dtype


def bench_model(
    model_path: str | Path,
    options: BenchOptions | None = None,
    *,
    torch_side: TorchSide | None = None,
    **kwargs: Any,
) -> BenchResult:
    """Time ``model_path`` on each runtime at each batch size, with baselines in the same run.

    Args:
        model_path: an ONNX file; each of its inputs gets seeded standard-normal samples of
            its own shape and dtype.
        options: a :class:`BenchOptions`; ``kwargs`` (its field names) override its fields.
        torch_side: the torch model as bench needs it (:class:`~stn_deploy.torch_side.
            TorchSide`, built by the caller), for the ``torch`` and ``stock-export`` baselines
            and a sampler sweep exported from torch; None: the ONNX model only.

    Returns:
        A :class:`BenchResult`; ``to_dict()`` is its JSON (schema in :mod:`.result`).

    Raises:
        StnDeployError: bad arguments, an unreadable model, a missing input shape; with
            ``strict``, anything that could not be benched.
        TypeError: a keyword that is not a :class:`BenchOptions` field.
    """
    o = replace(options or BenchOptions(), **kwargs)
    t_start = time.perf_counter()
    machine = machine_description()
    sizes, names, baselines = _check_args(o, torch_side)
    model_path = Path(model_path)
    inp = _describe_input(model_path, o, torch_side)
    for feed in inp.feeds:
        check_batch_memory([inp.fixed] if inp.fixed else sizes, feed.shape, feed.dtype)

    available = {n: availability(BENCH_ALIASES.get(n, (n, {}))[0]) for n in names}
    if o.strict:
        for n, a in available.items():
            if not a.available:
                raise StnDeployError(f"{n} cannot run here: {a.reason}")
    notes: list[str] = []
    settings = RunSettings(
        warmup=o.warmup,
        iters=o.iters,
        duration=o.duration,
        threads=o.threads,
        opt_level=o.opt_level,
        torch_session=_torch_session(torch_side, inp),
        shape=tuple(inp.shape),
        dtype=inp.dtype,
        input_names=tuple(f.spec.name for f in inp.feeds),
        more_shapes=tuple(f.shape for f in inp.feeds[1:]),
    )
    with tempfile.TemporaryDirectory(prefix="stn-deploy-bench-") as tmp:
        stock = _stock_export(baselines, torch_side, Path(tmp), o.strict)
        variants = _variants(model_path, inp.meta, torch_side, tmp, o) if o.sampler_sweep else []
        plan = _Plan(model_path, available, inp.meta, inp.precision, o, notes, len(inp.feeds))
        routes = _plan_routes(plan, names, variants, stock, baselines)
        rows = _run_all(routes, sizes, settings, notes, o.progress, o.interleave)
    _speedups(rows)
    if o.strict:
        bad = next((r for r in rows if not r.ok), None)
        if bad is not None:
            raise StnDeployError(
                f"{bad.route.label} on {bad.route.runtime} at batch {bad.batch}: "
                f"{bad.status}: {bad.reason}"
            )
    return BenchResult(
        model=_model_dict(model_path, inp),
        settings=_settings_dict(o, names, sizes, baselines),
        machine=machine,
        routes=routes,
        rows=rows,
        notes=notes,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        wall_s=time.perf_counter() - t_start,
    )


def _check_args(
    o: BenchOptions, torch_side: TorchSide | None
) -> tuple[list[int], list[str], list[str]]:
    """The batch sizes, runtime names and baselines, checked (before anything is loaded)."""
    sizes = check_batch_sizes(o.batch_sizes)
    check_budget(o.warmup, o.iters, o.duration)
    if o.threads is not None and o.threads < 1:
        raise StnDeployError(f"{{threads}} must be 1 or more, got {o.threads}", param="threads")
    baselines = check_compare(o.compare)
    names = runtime_names(o.runtimes)
    if "torch" in names:  # torch named as a runtime is the torch baseline
        names.remove("torch")
        baselines = ["torch", *[b for b in baselines if b != "torch"]]
    for b in baselines:
        if torch_side is None:
            raise StnDeployError(
                f"{{compare}} {b} needs the torch model: give {{torch_side}}",
                param=("compare", "torch_side"),
            )
    if not names and not baselines:
        raise StnDeployError("no runtime to bench")
    return sizes, names, baselines


def _describe_input(model_path: Path, o: BenchOptions, torch_side: TorchSide | None) -> _Input:
    """The model's metadata and its inputs: each one's shape (and where it came from) and
    dtype; the precision and the fixed batch."""
    meta, specs = _read_model(model_path)
    if not specs:
        raise StnDeployError(f"{model_path.name} has no input to feed")
    torch_shapes = _torch_shapes(torch_side)
    resolved = resolve_input_shapes(model_path, specs, o.input_shape, torch_shapes)
    shapes = [tuple(shape) for shape, _ in resolved]
    if torch_shapes is not None and [tuple(t) for t in torch_shapes] != shapes:
        raise StnDeployError(
            f"the torch model takes input {_shown(torch_shapes)}, the ONNX model {_shown(shapes)}"
        )
    feeds = [
        _Feed(spec, shape, source, input_dtype(spec))
        for spec, (shape, source) in zip(specs, resolved, strict=True)
    ]
    precision = precision_of(meta, feeds[0].dtype)
    return _Input(meta, feeds, precision, fixed_batch(specs))


def _shown(shapes: list[tuple[int, ...]]) -> str:
    return "; ".join(str(list(s)) for s in shapes)


def _torch_shapes(torch_side: TorchSide | None) -> list[tuple[int, ...]] | None:
    """The torch model's per-sample input shapes (None: no torch model)."""
    if torch_side is None:
        return None
    shapes = getattr(torch_side, "shapes", None) or (torch_side.input_shape,)
    return [tuple(int(d) for d in s) for s in shapes]


def _torch_session(torch_side: TorchSide | None, inp: _Input):
    """The torch baseline's ``open_session``; for several inputs, told the file's input names
    (fed to ``forward`` by position)."""
    if torch_side is None:
        return None
    if len(inp.feeds) == 1 or not _takes(torch_side.open_session, "input_names"):
        return torch_side.open_session  # a hand-written one: its rows say what it takes
    names = [f.spec.name for f in inp.feeds]
    return functools.partial(torch_side.open_session, input_names=names)


def _takes(fn: Any, keyword: str) -> bool:
    """Whether ``fn`` accepts ``keyword``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in params)


def _stock_export(
    baselines: list[str], torch_side: TorchSide | None, tmp: Path, strict: bool
) -> tuple[Path | None, str | None]:
    """The stock-export baseline's file, or why there is none (None, None: not asked for)."""
    if "stock-export" not in baselines or torch_side is None:
        return None, None
    try:
        return torch_side.stock_export(tmp / "stock-export.onnx"), None
    except StnDeployError as exc:
        if strict:
            raise
        return None, str(exc)


def _variants(
    model_path: Path,
    meta: dict[str, str],
    torch_side: TorchSide | None,
    tmp: str,
    o: BenchOptions,
) -> list[Variant]:
    """The sampler sweep's files: exported from torch when the caller gave it, else rewritten
    from the given file."""
    variants = make_variants(
        model_path,
        tmp,
        export=torch_side.export if torch_side is not None else None,
        skip=meta.get("lowering") or None,
    )
    if o.strict:
        for v in variants:
            if v.path is None:
                raise StnDeployError(
                    f"{{sampler_sweep}}: {v.lowering}: {v.reason}", param="sampler_sweep"
                )
    return variants


def _model_dict(model_path: Path, inp: _Input) -> dict[str, Any]:
    return {
        "path": str(model_path),
        "name": model_path.name,
        "lowering": inp.meta.get("lowering"),
        "precision": inp.precision,
        "input_name": inp.spec.name,
        "input_shape": list(inp.shape),
        "input_dtype": inp.dtype.name,
        "fixed_batch": inp.fixed,
        "shape_source": inp.shape_source,
        "inputs": [f.to_dict() for f in inp.feeds],
    }


def _settings_dict(
    o: BenchOptions, names: list[str], sizes: list[int], baselines: list[str]
) -> dict[str, Any]:
    return {
        "runtimes": names,
        "batch_sizes": sizes,
        "warmup": o.warmup,
        "iters": o.iters,
        "duration_s": o.duration,
        "threads": o.threads,
        "opt_level": o.opt_level,
        "io_binding": o.io_binding,
        "cuda_graph": o.cuda_graph,
        "compare": baselines,
        "sampler_sweep": o.sampler_sweep,
        "strict": o.strict,
        "interleave": o.interleave,
    }


def _read_model(path: Path) -> tuple[dict[str, str], list[TensorSpec]]:
    """The file's stn-deploy metadata and its input specs."""
    proto = load_onnx(path)
    return stn_metadata(proto), onnx_specs(graph_inputs(proto))


def _precision_of_file(path: Path, default: str | None) -> str | None:
    try:
        meta, specs = _read_model(path)
    except StnDeployError:
        return default
    return precision_of(meta, input_dtype(specs[0])) if specs else default


@dataclass
class _Plan:
    """What every route of the run shares."""

    model_path: Path
    available: dict
    meta: dict[str, str]
    precision: str
    options: BenchOptions
    notes: list[str]
    inputs: int = 1

    @property
    def label(self) -> str:
        return self.model_path.stem


def _plan_routes(
    plan: _Plan,
    names: list[str],
    variants: list[Variant],
    stock: tuple[Path | None, str | None],
    baselines: list[str],
) -> list[Route]:
    """Every route of the run, in table order: per runtime the model (and its io-binding /
    cuda-graph calls), each sweep variant and the stock export; then torch eager."""
    # each variant file's precision, read once (not once per runtime)
    variant_precision = {
        v.lowering: _precision_of_file(v.path, None) if v.path else None for v in variants
    }
    routes: list[Route] = []
    for rt in names:
        unavailable = None if plan.available[rt].available else plan.available[rt].reason
        unavailable = unavailable or inputs_reason(rt, plan.inputs)
        # OpenVINO asked to compute in bf16: say so in the precision column (the runner
        # relabels the route if the opened session computes in something else)
        computes = BENCH_ALIASES.get(rt, ("", {}))[1].get("precision")
        rt_precision = f"{computes} compute" if computes else plan.precision
        routes.append(
            Route(
                f"{rt}/model",
                "model",
                rt,
                plan.label,
                str(plan.model_path),
                plan.meta.get("lowering"),
                rt_precision,
                skip=unavailable,
                compute=computes,
                file_precision=plan.precision,
            )
        )
        routes += _mode_routes(plan, rt, unavailable)
        for v in variants:
            routes.append(
                Route(
                    f"{rt}/lowering/{v.lowering}",
                    "lowering",
                    rt,
                    f"sweep: {v.lowering}",
                    str(v.path) if v.path else None,
                    v.lowering,
                    (computes and rt_precision) or variant_precision[v.lowering],
                    skip=unavailable or (v.reason or None),
                    skip_status="skipped" if unavailable or not v.reason else "failed",
                    compute=computes,
                    file_precision=variant_precision[v.lowering],
                )
            )
        if "stock-export" in baselines:
            routes.append(_stock_route(rt, stock, unavailable, computes, rt_precision))
    if "torch" in baselines:
        routes.append(Route("torch", "torch", "torch", "torch eager", None, None, "fp32"))
    return routes


def _mode_routes(plan: _Plan, rt: str, unavailable: str | None) -> list[Route]:
    """The model on ``rt`` with IO binding / a CUDA graph, when asked (ORT GPU EPs only)."""
    from stn_deploy.runtimes.ort import ep_for

    routes = []
    is_ort = rt not in ORT_LIKE_EXCLUDED
    for mode, wanted, why in (
        ("io-binding", plan.options.io_binding, io_binding_reason),
        ("cuda-graph", plan.options.cuda_graph, cuda_graph_reason),
    ):
        if not wanted:
            continue
        if not is_ort:
            plan.notes.append(f"--{mode} applies to ONNX Runtime GPU providers, not to {rt}")
            continue
        reason = unavailable or why(ep_for(rt) or rt)
        routes.append(
            Route(
                f"{rt}/model/{mode}",
                "model",
                rt,
                plan.label,
                str(plan.model_path),
                plan.meta.get("lowering"),
                plan.precision,
                mode=mode,
                skip=reason,
            )
        )
    return routes


def _stock_route(
    rt: str,
    stock: tuple[Path | None, str | None],
    unavailable: str | None,
    computes: str | None,
    rt_precision: str,
) -> Route:
    stock_path, stock_reason = stock
    return Route(
        f"{rt}/stock-export",
        "stock-export",
        rt,
        "stock torch.onnx.export",
        str(stock_path) if stock_path else None,
        None,
        rt_precision if computes else "fp32",
        skip=unavailable or stock_reason,
        skip_status="skipped" if unavailable or not stock_reason else "failed",
        compute=computes,
        file_precision="fp32",
    )


def _run_all(
    routes: list[Route],
    sizes: list[int],
    s: RunSettings,
    notes: list[str],
    progress: bool | None,
    interleave: bool,
) -> list[BenchRow]:
    from tqdm.auto import tqdm

    with tqdm(
        total=len(routes) * len(sizes),
        desc="bench",
        unit="row",
        file=sys.stderr,
        disable=None if progress is None else not progress,
        leave=False,
    ) as bar:

        def tick(desc: str) -> None:
            bar.set_description_str(desc[:40], refresh=False)
            if bar.n < bar.total:
                bar.update(1)

        rows, route_notes = run_routes(routes, sizes, s, tick, interleave=interleave)
    notes += [n for n in route_notes if n not in notes]
    return rows


def _speedups(rows: list[BenchRow]) -> None:
    """Fill each row's speed-up over the torch row and the stock-export row (same runtime) at
    the same batch size: baseline p50 / row p50."""
    torch_p50 = {r.batch: r.stats.p50_us for r in rows if r.ok and r.route.kind == "torch"}
    stock_p50 = {
        (r.route.runtime, r.batch): r.stats.p50_us
        for r in rows
        if r.ok and r.route.kind == "stock-export"
    }
    for r in rows:
        r.speedup = dict.fromkeys(BASELINES)
        if not r.ok or r.route.kind == "torch":
            continue
        if r.batch in torch_p50:
            r.speedup["torch"] = torch_p50[r.batch] / r.stats.p50_us
        if r.route.kind in ("model", "lowering") and (r.route.runtime, r.batch) in stock_p50:
            r.speedup["stock-export"] = stock_p50[(r.route.runtime, r.batch)] / r.stats.p50_us
