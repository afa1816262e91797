"""The ``stn-deploy quantize`` command and the precision options ``export`` shares with it.

Only click is imported here; the conversion (onnx, onnxruntime) is imported when a command runs,
and never torch: ``quantize`` works where only the runtime side is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stn_deploy.cli.options import Command, cache_dir_option, precision_option, seed_option
from stn_deploy.data.distortions import CANVAS

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIBRATION_COUNT = 512

_OPTIONS = [
    click.option(
        "--calibration-count",
        type=click.IntRange(1, 60000),
        default=DEFAULT_CALIBRATION_COUNT,
        show_default=True,
        help="int8: MNIST training images the activation ranges are calibrated on.",
    ),
    click.option(
        "--calibration-method",
        type=click.Choice(CALIBRATION_METHODS),
        default="minmax",
        show_default=True,
        help="int8: ONNX Runtime's calibration method.",
    ),
    click.option(
        "--distortion",
        type=click.Choice(list(CANVAS), case_sensitive=False),
        default=None,
        help="int8: distortion of the calibration images [default: the model's training one, "
        "else from the canvas: 42 rts, 60 tc].",
    ),
    click.option(
        "--quantize-sampler",
        is_flag=True,
        help="int8: quantise θ's Gemm and the grid generator too (kept fp32 by default: an "
        "int8 θ or grid moves every pixel).",
    ),
    click.option(
        "--localization-fp32",
        is_flag=True,
        help="int8: keep the STN's localisation net fp32 too (an int8 one moves θ slightly: "
        "most of int8's argmax disagreements).",
    ),
    click.option(
        "--keep-fp32",
        multiple=True,
        metavar="NODE",
        help="int8: leave this node in fp32 as well (repeatable).",
    ),
    click.option(
        "--fp16-sampler",
        is_flag=True,
        help="fp16: convert θ, the grid and the sampler too (kept fp32 by default).",
    ),
    click.option(
        "--keep-io-types/--no-keep-io-types",
        default=True,
        show_default=True,
        help="fp16: keep float32 inputs and outputs.",
    ),
    click.option(
        "--synthetic-calibration",
        is_flag=True,
        help="int8: calibrate on generated digits instead of MNIST (smoke tests only).",
    ),
    cache_dir_option,
]


def precision_options(f):
    """The calibration and fp16 options (``export`` and ``quantize``)."""
    for option in reversed(_OPTIONS):
        f = option(f)
    return f


def build_precision_options(seed: int, kw: dict[str, Any]) -> dict[str, Any]:
    """Pop the :func:`precision_options` values from ``kw`` into ``apply_precision`` options."""
    from stn_deploy.precision.calibration import CalibrationSpec

    distortion = kw.pop("distortion")
    spec = CalibrationSpec(
        count=kw.pop("calibration_count"),
        method=kw.pop("calibration_method"),
        seed=seed,
        distortion=distortion.lower() if distortion else None,
        synthetic=kw.pop("synthetic_calibration"),
    )
    return {
        "calibration": spec,
        "cache_dir": kw.pop("cache_dir"),
        "quantize_sampler": kw.pop("quantize_sampler"),
        "keep_fp32": tuple(kw.pop("keep_fp32")),
        "localization_fp32": kw.pop("localization_fp32"),
        "keep_io_types": kw.pop("keep_io_types"),
        "fp16_sampler": kw.pop("fp16_sampler"),
    }


def describe(metadata: dict[str, Any]) -> str:
    """One line on what the conversion kept in fp32."""
    if "calibration" in metadata:
        c = metadata["calibration"]
        kept = ", ".join(f"{k} {v}" for k, v in c["excluded_ops"].items()) or "nothing"
        return (
            f"int8 QDQ ({c['method']}, {c['source']}): {len(c['quantised_layers'])} layers "
            f"quantised; kept fp32: {kept}"
        )
    if "fp16" in metadata:
        f = metadata["fp16"]
        kept = ", ".join(f"{k} {v}" for k, v in f["fp32_ops"].items()) or "nothing"
        io = "fp32" if f["keep_io_types"] else "fp16"
        return f"fp16 ({io} inputs/outputs); kept fp32: {kept}"
    return "fp32"


@click.command("quantize", cls=Command)
@click.argument("model", metavar="ONNX", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="OUT.onnx to write; OUT.io.npz (golden bundle with the fp32 reference) goes beside it.",
)
@precision_option(
    "int8",
    ("int8", "fp16"),
    "int8: ONNX Runtime static quantisation, QDQ, per-channel weights; fp16: "
    "ONNX Runtime's float16 converter.",
)
@seed_option(0, "Calibration seed.")
@precision_options
def quantize_cmd(model: Path, out: Path, precision: str, seed: int, **kw) -> None:
    """Convert an fp32 ONNX file to int8 or fp16, keeping the STN's θ, grid and sampler in
    fp32.

    Example: stn-deploy quantize exported/mnist-affine-native.onnx --out m-int8.onnx
    """
    from stn_deploy.precision.convert import quantize_file

    options = build_precision_options(seed, kw)
    s = quantize_file(model, out, precision, **options)
    click.echo(describe(s.metadata))
    click.echo(
        f"wrote {s.path} ({s.precision}, {s.nodes} nodes, {s.bytes:,} bytes, "
        f"fp32 {s.src_bytes:,}) and {s.golden_path}"
    )
