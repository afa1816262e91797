"""Runtimes behind one protocol (no torch at import): ONNX Runtime per execution provider,
OpenVINO, the onnx reference evaluator, and PyTorch eager. See :mod:`.base` and :mod:`.registry`.
"""

from stn_deploy.runtimes.base import (
    NodePlacement,
    RuntimeInfo,
    RuntimeSession,
    RuntimeUnavailable,
    TensorSpec,
    load_onnx,
)
from stn_deploy.runtimes.registry import (
    Availability,
    availability,
    canonical,
    default_names,
    open_session,
    parse_names,
)

__all__ = [
    "Availability",
    "NodePlacement",
    "RuntimeInfo",
    "RuntimeSession",
    "RuntimeUnavailable",
    "TensorSpec",
    "availability",
    "canonical",
    "default_names",
    "load_onnx",
    "open_session",
    "parse_names",
]
