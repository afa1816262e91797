"""The result of a benchmark run and its JSON form (schema ``stn-deploy/bench``, version 1).

``BenchResult.to_dict()`` gives, with these keys and no others (tests pin them)::

    schema          "stn-deploy/bench"
    schema_version  1 (bumped on any incompatible change)
    created         UTC time the run finished, ISO 8601
    wall_s          seconds the whole run took
    model           path, name, lowering, precision (from the file's stn_deploy metadata, else
                    null), input_name, input_shape [C, H, W], input_dtype, fixed_batch (int or
                    null), shape_source (where the input shape came from): the first
                    input's; inputs: every input as {name, shape, dtype, fixed_batch,
                    shape_source}, in the file's order (one entry for a one-input model)
    settings        runtimes, batch_sizes, warmup, iters, duration_s, threads, opt_level,
                    io_binding, cuda_graph, compare, sampler_sweep, strict,
                    interleave
    machine         see stn_deploy.bench.machine.machine_description (load_average at the start)
    routes          one per thing benched: key, kind, runtime, label, model, lowering,
                    precision, mode, runtime_info (RuntimeInfo.to_dict() or null)
    rows            one per route x batch size: route, kind, runtime, label, lowering,
                    precision, mode, batch, status, reason, stats, speedup
    notes           sentences about what was skipped or adapted, and why

Row ``kind``: ``model`` (the file given), ``lowering`` (a --lowering-sweep variant),
``stock-export`` (the same model through stock ``torch.onnx.export(dynamo=True)``), ``torch``
(PyTorch eager). ``mode``: ``run`` (host inputs), ``io-binding``, ``cuda-graph``.
``status``: ``ok`` (``stats`` set), ``skipped`` (not run: ``reason`` says why, e.g. no CUDA here
or a fixed batch), ``failed`` (the runtime refused or crashed: ``reason``).
``stats``: iters, batch, mean_us, p50_us, p90_us, p99_us, min_us, max_us, std_us,
images_per_s. ``speedup``: {"torch": x, "stock-export": y}, each the baseline's p50 over this
row's p50 at the same batch size (stock export on the same runtime), null when not measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stn_deploy.bench.stats import LatencyStats

SCHEMA = "stn-deploy/bench"
SCHEMA_VERSION = 1
TOP_KEYS = (
    "schema",
    "schema_version",
    "created",
    "wall_s",
    "model",
    "settings",
    "machine",
    "routes",
    "rows",
    "notes",
)
MODEL_KEYS = (
    "path",
    "name",
    "lowering",
    "precision",
    "input_name",
    "input_shape",
    "input_dtype",
    "fixed_batch",
    "shape_source",
    "inputs",
)
SETTINGS_KEYS = (
    "runtimes",
    "batch_sizes",
    "warmup",
    "iters",
    "duration_s",
    "threads",
    "opt_level",
    "io_binding",
    "cuda_graph",
    "compare",
    "sampler_sweep",
    "strict",
    "interleave",
)
ROUTE_KEYS = (
    "key",
    "kind",
    "runtime",
    "label",
    "model",
    "lowering",
    "precision",
    "mode",
    "runtime_info",
)
ROW_KEYS = (
    "route",
    "kind",
    "runtime",
    "label",
    "lowering",
    "precision",
    "mode",
    "batch",
    "status",
    "reason",
    "stats",
    "speedup",
)
BASELINES = ("torch", "stock-export")
KINDS = ("model", "lowering", "stock-export", "torch")
MODES = ("run", "io-binding", "cuda-graph")


@dataclass
class Route:
    """One thing benched: a model file (or torch) on one runtime, called one way."""

    key: str
    kind: str
    runtime: str
    label: str
    model: str | None = None
    lowering: str | None = None
    precision: str | None = None
    mode: str = "run"
    skip: str | None = None  # set before running: every row of the route is skipped for this
    skip_status: str = "skipped"  # or "failed" (e.g. the stock export failed)
    runtime_info: dict[str, Any] | None = None
    # the runtime was asked to compute in this precision (``openvino-bf16``: "bf16"); the
    # label ``precision`` says "<it> compute" only once the opened session confirms it, else
    # it falls back to ``file_precision`` (neither is in the JSON: ``precision`` says it all)
    compute: str | None = None
    file_precision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ROUTE_KEYS}


@dataclass
class BenchRow:
    """One route at one batch size."""

    route: Route
    batch: int
    status: str
    reason: str = ""
    stats: LatencyStats | None = None
    speedup: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(BASELINES))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        r = self.route
        return {
            "route": r.key,
            "kind": r.kind,
            "runtime": r.runtime,
            "label": r.label,
            "lowering": r.lowering,
            "precision": r.precision,
            "mode": r.mode,
            "batch": self.batch,
            "status": self.status,
            "reason": self.reason,
            "stats": self.stats.to_dict() if self.stats else None,
            "speedup": {
                k: (round(v, 3) if v is not None else None) for k, v in self.speedup.items()
            },
        }


@dataclass
class BenchResult:
    """What :func:`stn_deploy.bench.bench_model` measured; ``to_dict()`` is the JSON form."""

    model: dict[str, Any]
    settings: dict[str, Any]
    machine: dict[str, Any]
    routes: list[Route]
    rows: list[BenchRow]
    notes: list[str]
    created: str
    wall_s: float

    def ok_rows(self) -> list[BenchRow]:
        return [r for r in self.rows if r.ok]

    def row(self, route_key: str, batch: int) -> BenchRow | None:
        """The row of route ``route_key`` at ``batch`` (None if there is none)."""
        for r in self.rows:
            if r.route.key == route_key and r.batch == batch:
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "wall_s": round(self.wall_s, 3),
            "model": {k: self.model.get(k) for k in MODEL_KEYS},
            "settings": {k: self.settings.get(k) for k in SETTINGS_KEYS},
            "machine": self.machine,
            "routes": [r.to_dict() for r in self.routes],
            "rows": [r.to_dict() for r in self.rows],
            "notes": list(self.notes),
        }
