"""``stn-deploy verify``: numerical parity of an ONNX file across runtimes (no torch at import).

- :mod:`.compare`: error statistics of one output against its reference and a pass flag;
- :mod:`.tolerances`: default tolerances per precision;
- :mod:`.inputs`: golden, random, MNIST and stress input sets;
- :mod:`.runner`: :func:`verify_model`, the entry point;
- :mod:`.report`: :class:`VerifyReport` (JSON schema in its docstring) and :func:`format_table`;
- :mod:`.bisect` / :mod:`.expose`: the first diverging node of a failing runtime;
- :mod:`.stn_stats`: how far the sampler's grid reached outside the image.
"""

from stn_deploy.verify.compare import ERROR_STATS, ErrorStats, OutputComparison, compare_arrays
from stn_deploy.verify.report import SCHEMA, RuntimeResult, SetResult, VerifyReport, format_table
from stn_deploy.verify.runner import verify_model
from stn_deploy.verify.tolerances import DEFAULTS, Tolerance, tolerance_for

__all__ = [
    "DEFAULTS",
    "ERROR_STATS",
    "SCHEMA",
    "ErrorStats",
    "OutputComparison",
    "RuntimeResult",
    "SetResult",
    "Tolerance",
    "VerifyReport",
    "compare_arrays",
    "format_table",
    "tolerance_for",
    "verify_model",
]
