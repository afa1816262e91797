"""What a caller gives bench for the torch side of a run (bench itself never imports torch).

The torch-side caller (``stn-deploy bench --checkpoint``, ``stn-deploy run``) builds a
:class:`TorchSide` with ``torch_side(loaded)`` of the torch side's ``baselines`` module;
bench then uses it for the ``torch`` baseline (an eager session), the ``stock-export`` baseline
(a stock ``torch.onnx.export`` file) and ``--sampler-sweep`` (each lowering exported from the
model). Without one, bench runs the ONNX model only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stn_deploy.runtimes.base import RuntimeSession


@dataclass(frozen=True)
class TorchSide:
    """The torch model as bench needs it, as callables built by the caller.

    Attributes:
        input_shape: per-image input shape ``(C, H, W)`` of the model.
        open_session: ``open_session(output_names=None, threads=None, **options)`` -> the
            eager session (a :class:`RuntimeSession`) of the ``torch`` baseline.
        stock_export: ``stock_export(path)`` writes the stock ``torch.onnx.export`` of the model
            to ``path`` and returns it (StnDeployError when it cannot).
        export: ``export(path, *, target, sampler, opset, inline)`` writes our export of the
            model in one grid-sample lowering (StnDeployError when it cannot).
        source: where the model came from (checkpoint path or factory), for messages.
    """

    input_shape: tuple[int, ...]
    open_session: Callable[..., RuntimeSession]
    stock_export: Callable[[Path], Path]
    export: Callable[..., Any]
    source: str = ""
