"""matplotlib for the charts, from the ``plots`` extra; without it, a one-line error."""

from __future__ import annotations

from stn_deploy.errors import StnDeployError


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    try:
        import matplotlib
    except ImportError:
        raise StnDeployError("plots need matplotlib: pip install 'stn-deploy[plots]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
