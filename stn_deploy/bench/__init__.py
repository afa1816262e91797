"""Latency benchmarks across runtimes and batch sizes, with baselines in the same run (no torch:
the torch and stock-export baselines come from the caller as a
:class:`~stn_deploy.torch_side.TorchSide`, built by the torch side's ``torch_side(loaded)``).

- :func:`bench_model` times a model and returns a :class:`BenchResult` (``to_dict()``: the JSON
  schema documented in :mod:`stn_deploy.bench.result`);
- :func:`format_table`, :func:`format_markdown`, :func:`write_markdown` present it;
- :func:`stn_deploy.report.latency_plot.save_latency_plot` draws it (matplotlib).
"""

from stn_deploy.bench.api import BenchOptions, bench_model
from stn_deploy.bench.machine import machine_description
from stn_deploy.bench.result import SCHEMA, SCHEMA_VERSION, BenchResult, BenchRow, Route
from stn_deploy.bench.stats import LatencyStats, latency_stats
from stn_deploy.bench.tables import format_markdown, format_table, write_markdown

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "BenchOptions",
    "BenchResult",
    "BenchRow",
    "LatencyStats",
    "Route",
    "bench_model",
    "format_markdown",
    "format_table",
    "latency_stats",
    "machine_description",
    "write_markdown",
]
