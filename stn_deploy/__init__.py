"""stn-deploy: take Spatial Transformer Networks from PyTorch to edge runtimes.

Importing this package never imports torch: the training, loading and export
code import it lazily, so the runtime side works on a device with only numpy,
onnx and a runtime installed.
"""

__version__ = "0.1.0"

from stn_deploy.errors import StnDeployError

__all__ = ["StnDeployError", "__version__"]
