"""``stn-deploy verify``: numerical parity of an ONNX file across runtimes (no torch at import,
and no reference to the torch side: a torch reference comes from the caller).

Split the way Polygraphy splits its comparator:

- :mod:`.options`: :class:`VerifyOptions` (what :func:`verify_model` is asked; a torch
  reference comes in as its ``torch_side``, a :class:`~stn_deploy.torch_side.TorchSide`);
- :mod:`.subject`: the file under verification (model, metadata, golden bundle);
- :mod:`.inputs`: the data loader: golden, random, MNIST and stress input sets;
- :mod:`.sessions`: runtimes as runners (:class:`Runner`), batched runs, node placement;
- :mod:`.reference`: the reference outputs of every input set (torch, golden, secondary);
- :mod:`.comparator`: :class:`Comparator` (``run`` then ``compare_accuracy``) and
  :class:`CompareFunc` (``simple``: per-output tolerances -> a result with a truth value);
- :mod:`.compare`: error statistics of one output against its reference
  (:class:`OutputComparison`, true when it passed);
- :mod:`.tolerances`: default tolerances per precision;
- :mod:`.inherent`: float32's own error on an input (the reference in float64), the second gate
  of fp32 files: an element passes within atol/rtol or within ``K`` times it;
- :mod:`.outputs`: what each output is (class scores, image, theta, tensor), from the model;
- :mod:`.budget`: each runtime's time budget, the subsets that fit it, progress lines;
- :mod:`.runner`: :func:`verify_model`, the entry point;
- :mod:`.report`: :class:`VerifyReport` (JSON schema in its docstring) and :func:`format_table`;
- :mod:`.bisect` / :mod:`.expose`: the first diverging node of a failing runtime;
- :mod:`.stn_stats`: how far the sampler's grid reached outside the image.
"""

from stn_deploy.verify.comparator import Comparator, CompareFunc, RunResult, SimpleCompare
from stn_deploy.verify.compare import ERROR_STATS, ErrorStats, OutputComparison, compare_arrays
from stn_deploy.verify.options import VerifyOptions
from stn_deploy.verify.report import SCHEMA, RuntimeResult, SetResult, VerifyReport, format_table
from stn_deploy.verify.runner import verify_model
from stn_deploy.verify.sessions import Runner
from stn_deploy.verify.tolerances import DEFAULTS, Tolerance, tolerance_for

__all__ = [
    "DEFAULTS",
    "ERROR_STATS",
    "SCHEMA",
    "CompareFunc",
    "Comparator",
    "ErrorStats",
    "OutputComparison",
    "RunResult",
    "Runner",
    "RuntimeResult",
    "SetResult",
    "SimpleCompare",
    "Tolerance",
    "VerifyOptions",
    "VerifyReport",
    "compare_arrays",
    "format_table",
    "tolerance_for",
    "verify_model",
]
