"""Exact graph rewrites kept only when they win on the target runtime (no torch).

- :mod:`.passes`: the pass library (each pass named, exact or approximate with its bound,
  applicable to any ONNX graph where its pattern matches);
- :func:`optimize_model` / :func:`optimize_file`: ``none``, ``exact`` (the default passes for
  the runtime) or ``auto`` (candidate passes timed site by site on the runtime; the fastest set
  at parity with the unoptimised graph is kept), with an :class:`OptimizeRecord` for the
  file's metadata.
"""

from __future__ import annotations

from stn_deploy.optimize.api import (
    EXACT_DEFAULT,
    MODES,
    OptimizeRecord,
    optimize_file,
    optimize_model,
)
from stn_deploy.optimize.base import Pass, all_passes, get_pass

__all__ = [
    "EXACT_DEFAULT",
    "MODES",
    "OptimizeRecord",
    "Pass",
    "all_passes",
    "get_pass",
    "optimize_file",
    "optimize_model",
]
