"""The one torch-side object: :func:`torch_side` turns a loaded torch model into the
:class:`~stn_deploy.torch_side.TorchSide` that verify (reference, ``--bisect``) and bench
(``torch`` and ``stock-export`` baselines, ``--lowering-sweep``) take. Importing this module does
not import torch; the callables do when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stn_deploy.torch_side import TorchSide


def torch_side(loaded: Any) -> TorchSide:
    """``loaded`` (a :class:`~stn_deploy.pytorch.models.loading.LoadedModel`) as a
    :class:`~stn_deploy.torch_side.TorchSide`: its eager session
    (:class:`~stn_deploy.pytorch.runner.TorchSession`), our exporter, the stock
    ``torch.onnx.export``, its input shape, source and training distortion. Build it once and
    pass it to ``verify_model(..., torch_side=)`` and ``bench_model(..., torch_side=)``."""

    def open_session(**options: Any):
        from stn_deploy.pytorch.runner import TorchSession

        return TorchSession(loaded, **options)

    def export(path: Path, **export_args: Any) -> Any:
        from stn_deploy.pytorch.exporter import export_model

        return export_model(loaded, path, **{"golden_count": 1, **export_args})

    def stock_export(path: Path) -> Path:
        from stn_deploy.pytorch.baselines import stock_export_loaded

        return stock_export_loaded(loaded, path)

    extra = getattr(loaded.config, "extra", None) or {}
    return TorchSide(
        input_shape=tuple(int(d) for d in loaded.input_shape),
        open_session=open_session,
        export=export,
        stock_export=stock_export,
        source=str(getattr(loaded, "source", "") or ""),
        distortion=(extra.get("trained_on") or {}).get("distortion"),
        input_shapes=tuple(
            tuple(int(d) for d in s)
            for s in getattr(loaded, "input_shapes", None) or [loaded.input_shape]
        ),
    )
