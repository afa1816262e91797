"""stn-deploy: take Spatial Transformer Networks from PyTorch to edge runtimes.

Importing this package never imports torch (nor onnx): the public API below is re-exported
lazily, each name importing its module on first use, so the runtime side works on a device with
only numpy, onnx and a runtime installed. The torch-side names (``load_model``, ``train``,
``export_model``, ``run_pipeline``) need torch when used.

    >>> import stn_deploy
    >>> stn_deploy.bench_model("exported/mnist-affine-native.onnx", runtimes="cpu")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from stn_deploy.errors import StnDeployError

#: public name -> the module that defines it (``module:attribute`` when named otherwise there),
#: imported on first access
_LAZY = {
    "load_model": "stn_deploy.pytorch.models.loading",
    "train": "stn_deploy.pytorch.train",
    "export_model": "stn_deploy.pytorch.exporter",
    "run_pipeline": "stn_deploy.pytorch.pipeline",
    "lower_model": "stn_deploy.export.lower",
    "lower_file": "stn_deploy.export.lower",
    "quantize_file": "stn_deploy.precision.convert",
    "quantize": "stn_deploy.precision.convert:quantize_file",  # the short name
    "verify_model": "stn_deploy.verify",
    "bench_model": "stn_deploy.bench",
    "inspect_model": "stn_deploy.inspect_onnx",
}

__all__ = ["StnDeployError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stn_deploy' has no attribute {name!r}")
    module, _, attr = module.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
