"""The torch model in float64: a second evaluation that exposes float32's own error on an input.

``model.double()`` on a deep copy (the caller's model is untouched), the inputs cast to float64,
the same forward. ``|ref64 - ref32|`` is float32's error on that input, which verify gates
runtimes against (:mod:`stn_deploy.verify.inherent`) and the exporter stores in the golden
bundle (``output64/<name>``) for verify without torch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def double_copy(model: nn.Module) -> nn.Module | None:
    """A float64 deep copy of ``model`` in eval mode (None when it cannot be copied or cast,
    e.g. a model holding float16-only buffers or objects deepcopy refuses)."""
    try:
        m64 = copy.deepcopy(model).double().eval()
    except Exception:  # deepcopy/cast of arbitrary user modules: anything may refuse
        return None
    return m64


def float64_outputs(
    model64: nn.Module,
    arrays: Sequence[np.ndarray],
    forward: Callable[..., Any] | None = None,
) -> list[np.ndarray] | None:
    """``model64``'s outputs on ``arrays`` cast to float64 (floating inputs only), as float64
    numpy arrays in the model's output order; None when the float64 model cannot run (a
    layer with float32-only constants, an op without a double kernel)."""
    xs = [
        torch.from_numpy(np.ascontiguousarray(a, np.float64))
        if np.asarray(a).dtype.kind == "f"
        else torch.from_numpy(np.ascontiguousarray(a))
        for a in arrays
    ]
    try:
        with torch.inference_mode():
            outs = (forward or model64)(*xs)
    except Exception:  # a model that cannot run in float64: no inherent-error estimate
        return None
    if isinstance(outs, dict):
        outs = list(outs.values())
    elif not isinstance(outs, (tuple, list)):
        outs = [outs]
    if not all(isinstance(o, torch.Tensor) for o in outs):
        return None
    return [o.detach().cpu().to(torch.float64).numpy() for o in outs]


def bundle_outputs64(
    model: nn.Module, x: np.ndarray | Sequence[np.ndarray], names: Sequence[str]
) -> dict[str, np.ndarray]:
    """``{name: float64 output}`` of ``model`` on the golden inputs ``x`` for the golden bundle
    (``{}`` when the model cannot run in float64)."""
    m64 = double_copy(model)
    if m64 is None:
        return {}
    outs = float64_outputs(m64, list(x) if isinstance(x, (list, tuple)) else [x])
    if outs is None or len(outs) != len(names):
        return {}
    return dict(zip(names, outs, strict=True))
