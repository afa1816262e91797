"""The torch side: everything in stn-deploy that imports torch lives in this package.

Models (``models/``), training (``train``), evaluation, the exporter (torch -> ONNX), torch as a
reference runner (``runner``), the torch baselines of a benchmark (``baselines``), the one
object verify and bench take (:func:`torch_side`, in ``side``) and the one-command pipeline. Nothing outside this
package imports torch; importing this package itself does not import torch either (its
submodules do).
"""

# the ``torch`` runtime of stn_deploy.runtimes.open_session (registering it imports no torch)
from stn_deploy.pytorch import runner as _runner  # noqa: E402,F401
from stn_deploy.pytorch.side import torch_side  # noqa: E402

__all__ = ["torch_side"]
