"""matplotlib for the charts, from the ``plots`` extra; without it, a one-line error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stn_deploy.errors import StnDeployError
from stn_deploy.io.atomic import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    try:
        import matplotlib
    except ImportError as exc:
        raise StnDeployError("plots need matplotlib: pip install 'stn-deploy[plots]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def png_figure(path: str | Path, *args: Any, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """``(fig, axes)`` of ``plt.subplots(*args, **subplots)``, laid out and written atomically
    to ``path`` as a PNG when the block ends without an error; closed either way."""
    plt = pyplot()
    fig, axes = plt.subplots(*args, **subplots)
    try:
        yield fig, axes
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
