"""Converted models kept by content: ``<cache>/converted/<sha256 of the ONNX bytes>/<format>/``
(``<cache>``: ``$STN_DEPLOY_CACHE``, else ``$XDG_CACHE_HOME/stn-deploy``, else
``~/.cache/stn-deploy``). An entry is written all at once by :func:`convert_model` (after the
runtime's load check), so a failed or killed conversion leaves no entry behind."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stn_deploy.convert.api import Converted, check_format, read_source, write_conversion
from stn_deploy.convert.base import RECORD


def cache_root() -> Path:
    from stn_deploy.data.mnist import default_cache_dir

    return default_cache_dir() / "converted"


def cached_conversion(
    model: str | os.PathLike | Any,
    to: str,
    *,
    check: Callable[[Converted], None] | None = None,
    onnx2tf: str | os.PathLike | None = None,
) -> Converted:
    """The cached conversion of ``model`` to ``to``, converting it first when there is none."""
    fmt = check_format(to)
    name, data = read_source(model)
    folder = cache_root() / hashlib.sha256(data).hexdigest() / fmt
    if (folder / RECORD).is_file():
        return Converted.load(folder)
    return write_conversion(fmt, name, data, folder, onnx2tf=onnx2tf, check=check)
