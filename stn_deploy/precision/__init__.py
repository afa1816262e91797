"""Edge precisions for exported STNs: int8 (ORT static QDQ, calibrated on real MNIST) and
fp16 (ORT's float16 converter), with the STN's θ, grid and sampler kept in fp32 by default.

No torch here: quantising an ONNX file works where only onnx and onnxruntime are installed.

* :mod:`.region` — which nodes are the STN's float region (θ onward to the sampler output)
* :mod:`.calibration` — calibration images: MNIST training images, distorted like training
* :mod:`.int8` / :mod:`.fp16` — the two conversions
* :mod:`.convert` — :func:`apply_precision`, :func:`quantize_file` (``stn-deploy quantize``)
* :mod:`.accuracy` — error and argmax agreement on the distorted test set over any runtime
"""

from stn_deploy.precision.calibration import METHODS, CalibrationSpec
from stn_deploy.precision.convert import PRECISIONS, apply_precision, check_precision, quantize_file

__all__ = [
    "METHODS",
    "PRECISIONS",
    "CalibrationSpec",
    "apply_precision",
    "check_precision",
    "quantize_file",
]
