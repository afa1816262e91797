"""The baselines a benchmark compares against (torch side: imported only when asked for).

- ``stock-export``: the same model through stock ``torch.onnx.export(dynamo=True)`` with a
  dynamic batch, run on the same runtimes as ours. Needs torch and onnxscript.
- ``torch``: PyTorch eager (``inference_mode``), :class:`stn_deploy.pytorch.runner.TorchSession`.

:func:`torch_side` hands both, and the exporter for ``--sampler-sweep``, to bench.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

from stn_deploy.bench.baselines import TorchSide
from stn_deploy.errors import StnDeployError, one_line


def stock_export(model: Any, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Export ``model`` (a ``torch.nn.Module`` taking one ``(N, *input_shape)`` tensor) to
    ``path`` with stock ``torch.onnx.export(dynamo=True)``, batch dimension dynamic.

    The exporter's progress lines are swallowed (they would mix into ``--json`` output).
    Raises StnDeployError with one line when torch, onnxscript or the export fails.
    """
    try:
        import torch
    except ImportError:
        raise StnDeployError("the stock-export baseline needs torch") from None
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency)
    except ImportError:
        raise StnDeployError(
            "the stock-export baseline needs onnxscript (pip install onnxscript)"
        ) from None
    model = model.eval()
    example = torch.zeros(2, *input_shape)
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
                (example,),
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("N")},),
                verbose=False,
            )
            program.save(str(path))
    except Exception as exc:
        raise StnDeployError(
            f"stock torch.onnx.export(dynamo=True) failed: {one_line(exc)}"
        ) from None
    finally:
        quiet.setLevel(level)
    return Path(path)


def stock_export_loaded(loaded: Any, path: str | Path) -> Path:
    """:func:`stock_export` of a :class:`~stn_deploy.pytorch.models.loading.LoadedModel`."""
    return stock_export(loaded.model, tuple(loaded.input_shape), path)


def torch_side(loaded: Any) -> TorchSide:
    """What bench needs of a :class:`~stn_deploy.pytorch.models.loading.LoadedModel`: the eager
    session (``torch`` baseline), the stock export (``stock-export``) and our exporter
    (``--sampler-sweep``), as a :class:`~stn_deploy.bench.baselines.TorchSide`."""
    from stn_deploy.pytorch.runner import TorchSession

    def open_session(**options: Any) -> TorchSession:
        return TorchSession(loaded, **options)

    def stock(path: Path) -> Path:
        return stock_export_loaded(loaded, path)

    def export(path: Path, **options: Any) -> Any:
        from stn_deploy.pytorch.exporter import export_model

        return export_model(loaded, path, golden_count=1, **options)

    return TorchSide(
        input_shape=tuple(int(d) for d in loaded.input_shape),
        open_session=open_session,
        stock_export=stock,
        export=export,
        source=str(getattr(loaded, "source", "")),
    )
