"""Whether two paths name one file (no torch): a command must not write over its own input."""

from __future__ import annotations

import os
from pathlib import Path

from stn_deploy.errors import StnDeployError


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file: equal once resolved (``..``, symlinks), or, when
    both exist, the same file on disk (hard links, bind mounts)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_not_source(src: str | os.PathLike, dst: str | os.PathLike, what: str = "dst") -> None:
    """Raise when writing ``dst`` would overwrite the input ``src`` (see :func:`same_file`);
    ``what`` is the parameter that names ``dst`` (the error's ``param``)."""
    if same_file(src, dst):
        raise StnDeployError(
            f"{{{what}}} {dst} is the input {src} itself: writing it would overwrite the source; "
            "give another path",
            param=what,
        )
