"""Edge precisions for exported STNs: int8 (ORT static QDQ, calibrated on real MNIST) and
fp16 (ORT's float16 converter), with the STN's θ, grid and sampler kept in fp32 by default.

No torch here: quantising an ONNX file works where only onnx and onnxruntime are installed.

* :mod:`.region` — which nodes are the STN's float region (θ onward to the sampler output)
* :mod:`.calibration` — calibration images: MNIST training images, distorted like training
* :mod:`.int8` / :mod:`.fp16` — the two conversions (:mod:`.qdq`: int8's graph clean-ups)
* :mod:`.convert` — :func:`apply_precision`, :func:`quantize_file` (``stn-deploy quantize``)
* :mod:`.accuracy` — error and argmax agreement on the distorted test set over any runtime
* :mod:`.latency` — latency ratios from interleaved rounds (for noisy, shared machines)

Example:
    >>> from stn_deploy.precision import quantize_file                       # doctest: +SKIP
    >>> s = quantize_file("exported/mnist-affine-native.onnx", "m-int8.onnx", "int8")  # doctest: +SKIP
    >>> s["metadata"]["calibration"]["excluded_ops"]                           # doctest: +SKIP
    {'Constant': 3, 'Gemm': 1, 'GridSample': 1, 'MatMul': 1, 'Reshape': 2, 'Transpose': 1}
"""

from stn_deploy.precision.calibration import METHODS, CalibrationSpec
from stn_deploy.precision.convert import (
    PRECISIONS,
    QuantizeResult,
    apply_precision,
    check_precision,
    quantize_file,
)

__all__ = [
    "METHODS",
    "PRECISIONS",
    "CalibrationSpec",
    "apply_precision",
    "check_precision",
    "QuantizeResult",
    "quantize_file",
]
