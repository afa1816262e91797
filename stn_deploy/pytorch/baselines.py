"""The baselines a benchmark compares against (torch side: imported only when asked for).

- ``stock-export``: the same model through stock ``torch.onnx.export(dynamo=True)`` with a
  dynamic batch, run on the same runtimes as ours. Needs torch and onnxscript.
- ``torch``: PyTorch eager (``inference_mode``), :class:`stn_deploy.pytorch.runner.TorchSession`.

:func:`stn_deploy.pytorch.torch_side` hands both, and the exporter for ``--lowering-sweep``, to
bench.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stn_deploy.errors import StnDeployError, one_line


def stock_export(
    model: Any, input_shape: Sequence[int] | Sequence[Sequence[int]], path: str | Path
) -> Path:
    """Export ``model`` (a ``torch.nn.Module`` taking one ``(N, *input_shape)`` tensor, or one
    tensor per shape when ``input_shape`` is a sequence of shapes) to ``path`` with stock
    ``torch.onnx.export(dynamo=True)``, batch dimension dynamic (one ``N`` for every input).

    The exporter's progress lines are swallowed (they would mix into ``--json`` output).
    Raises StnDeployError with one line when torch, onnxscript or the export fails.
    """
    try:
        import torch
    except ImportError as exc:
        raise StnDeployError("the stock-export baseline needs torch") from exc
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency)
    except ImportError as exc:
        raise StnDeployError(
            "the stock-export baseline needs onnxscript (pip install onnxscript)"
        ) from exc
    model = model.eval()
    several = len(input_shape) > 0 and hasattr(input_shape[0], "__len__")
    shapes = list(input_shape) if several else [input_shape]
    examples = tuple(torch.zeros(2, *s) for s in shapes)
    batch = torch.export.Dim("N")
    quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed" warnings
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            torch.inference_mode(False),
        ):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                examples,
                dynamo=True,
                dynamic_shapes=tuple({0: batch} for _ in examples),
                verbose=False,
            )
            program.save(str(path))
    except Exception as exc:
        raise StnDeployError(
            f"stock torch.onnx.export(dynamo=True) failed: {one_line(exc)}"
        ) from exc
    finally:
        quiet.setLevel(level)
    return Path(path)


def stock_export_loaded(loaded: Any, path: str | Path) -> Path:
    """:func:`stock_export` of a :class:`~stn_deploy.pytorch.models.loading.LoadedModel`."""
    shapes = [tuple(s) for s in getattr(loaded, "input_shapes", None) or [loaded.input_shape]]
    return stock_export(loaded.model, shapes if len(shapes) > 1 else shapes[0], path)
