"""The one ONNX file loader: every command that reads a ``.onnx`` file goes through
:func:`load_onnx`, so a missing, empty or corrupt file reads the same everywhere (onnx only)."""

from __future__ import annotations

import os
from pathlib import Path

from stn_deploy.errors import StnDeployError, one_line


def load_onnx(path: str | os.PathLike, *, check: bool = False, load_external_data: bool = True):
    """``onnx.load`` with one-line errors for a missing, empty or corrupt file (and, with
    ``check``, one that fails ``onnx.checker.check_model``)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise StnDeployError(f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise StnDeployError(f"{path} is not a readable ONNX model: the file is empty")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # noqa: BLE001 - DecodeError and friends
        raise StnDeployError(f"{path} is not a readable ONNX model: {one_line(exc, 200)}") from exc
    if not model.graph.node and not model.graph.output:
        raise StnDeployError(f"{path} is not a readable ONNX model: it holds no graph")
    if check:
        try:
            onnx.checker.check_model(model)
        except Exception as exc:  # noqa: BLE001 - ValidationError, ...
            raise StnDeployError(
                f"{path} is not a readable ONNX model: {one_line(exc, 200)}"
            ) from exc
    return model
