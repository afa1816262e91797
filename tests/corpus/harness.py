"""Export and compare corpus models: shared by ``tests/test_corpus.py`` and
``benchmarks/export_coverage.py``.

One comparison rule everywhere: the ONNX file on ONNX Runtime CPU against torch eager at batch 1
and batch 3 on seeded uniform images, every output, ``atol = 1e-4 * max(1, max|ref|)``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from stn_deploy.errors import StnDeployError, one_line

LOWERINGS = ("native", "portable", "custom")
BATCHES = (1, 3)
RTOL_SCALE = 1e-4


def tolerance(ref: np.ndarray) -> float:
    return RTOL_SCALE * max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)


def inputs(shape: tuple[int, ...], batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + batch)
    return torch.rand(batch, *shape, generator=g)


def torch_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(x)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    return [o.detach().numpy() for o in outs]


def compare(
    path: str | Path, model: torch.nn.Module, shape: tuple[int, ...]
) -> tuple[bool, float, str]:
    """Run ``path`` on ORT CPU vs ``model`` at batch 1 and 3: ``(agrees, max abs error, note)``;
    ``note`` says why a file that does not agree failed (a run error, a shape mismatch), the
    error is ``inf`` then."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return False, float("inf"), f"ORT cannot load it: {one_line(exc)[:160]}"
    name = sess.get_inputs()[0].name
    agrees, worst, note = True, 0.0, ""
    for b in BATCHES:
        x = inputs(shape, b)
        refs = torch_outputs(model, x)
        try:
            got = sess.run(None, {name: x.numpy()})
        except Exception as exc:
            return False, float("inf"), f"fails at batch {b}: {one_line(exc)[:160]}"
        if len(got) != len(refs):
            return False, float("inf"), f"{len(got)} outputs, torch has {len(refs)}"
        for i, (g, r) in enumerate(zip(got, refs, strict=True)):
            if g.shape != r.shape:
                return False, float("inf"), f"batch {b} output {i}: shape {g.shape} != {r.shape}"
            if r.size == 0:
                continue
            d = np.abs(g.astype(np.float64) - r)
            bad = ~np.isfinite(d) & ~(np.isnan(g) & np.isnan(r))
            err = float(np.nanmax(np.where(np.isfinite(d), d, 0.0)))
            if bad.any():
                return False, float("inf"), f"batch {b} output {i}: non-finite mismatch"
            worst = max(worst, err)
            if err > tolerance(r):
                agrees = False
                note = note or f"batch {b} output {i}: max |diff| {err:.3g} > {tolerance(r):.3g}"
    return agrees, worst, note


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow the exporters' warnings and progress output (stdout and stderr)."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def onnx_files(directory: str | Path) -> list[str]:
    return sorted(p for p in os.listdir(directory) if p.endswith(".onnx"))


def timed(fn, *args, **kwargs):
    """``(result or StnDeployError, seconds)``: any other exception propagates."""
    t = time.perf_counter()
    try:
        with quiet():
            result = fn(*args, **kwargs)
    except StnDeployError as exc:
        result = exc
    return result, time.perf_counter() - t


__all__ = [
    "BATCHES",
    "LOWERINGS",
    "compare",
    "inputs",
    "one_line",
    "onnx_files",
    "quiet",
    "timed",
    "tolerance",
    "torch_outputs",
]
