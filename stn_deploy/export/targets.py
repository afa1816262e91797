"""Target profiles: the opset and grid-sample lowering known to work on each runtime (no torch).

Each profile's reason is what ../shared/BASELINES.md or benchmarks/runtime_matrix.py measured,
or upstream issues report.
``stn-deploy export --target T`` uses the profile; ``--lowering`` and ``--opset`` override it.
A profile's lowering must be one of the registry's (:mod:`stn_deploy.export.lowerings`) that
can be written into a file, and its opset at least that lowering's minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

from stn_deploy.errors import StnDeployError
from stn_deploy.export.lowerings import get_lowering


@dataclass(frozen=True)
class Target:
    name: str
    opset: int
    lowering: str
    inline: bool
    why: str

    def __post_init__(self) -> None:
        lw = get_lowering(self.lowering, rewrites=True)  # a typo fails at import
        if self.opset < lw.min_opset:
            raise ValueError(f"target {self.name}: {lw.name} needs opset {lw.min_opset}")

    @property
    def sampler(self) -> str:
        """Deprecated name of :attr:`lowering`."""
        return self.lowering


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("ort-cpu", 17, "native", False, "ONNX Runtime has GridSample from opset 16"),
        Target(
            "ort-cuda",
            17,
            "native",
            False,
            "CUDA GridSample kernel from opset 16; AffineGrid (CPU only) is lowered to MatMul",
        ),
        Target(
            "tensorrt",
            17,
            "native",
            False,
            "opset 16-19 'bilinear' is exact; an opset-20 'linear' GridSample is imported as nearest without an error (TensorRT#4646)",
        ),
        Target(
            "openvino",
            16,
            "native",
            False,
            "opset-20 GridSample import was broken until May 2026; OpenVINO does not expand local functions",
        ),
        Target(
            "tflite",
            17,
            "native",
            False,
            "onnx2tf decomposes ONNX GridSample (bilinear, zeros; opset 16-19, not the opset-20 "
            "'linear') into TFLite builtins: 4e-5 off torch at any batch on LiteRT 2.3; the "
            "portable file converts for batch 1 only (benchmarks/results/runtime_matrix.md)",
        ),
        Target(
            "ncnn",
            17,
            "native",
            False,
            "pnnx maps ONNX GridSample to ncnn's GridSample layer: 2.5e-5 off torch with fp32 "
            "settings; the portable sampler's ops (torch.lt, GatherElements) have no ncnn layer",
        ),
        Target(
            "mnn",
            17,
            "native",
            False,
            "MNNConvert reads ONNX GridSample: 2.5e-5 off torch (Winograd off); MNN has no IsNaN, "
            "which the portable lowering uses",
        ),
        Target(
            "iree",
            17,
            "portable",
            False,
            "IREE 3.13 miscompiles GridSample for grid points outside [-1, 1] (silently wrong): "
            "the portable file at opset 17 (the importer rejects opset-11 MaxPool) is 5.5e-5 off",
        ),
        Target("generic", 11, "portable", False, "any runtime that reads standard opset-11 ONNX"),
    ]
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise StnDeployError(f"unknown target {name!r}: expected one of {', '.join(TARGETS)}")
    return TARGETS[name]
