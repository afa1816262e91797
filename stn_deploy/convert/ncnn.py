"""ONNX -> ncnn with pnnx (``pip install ncnn`` and ``pip install --no-deps pnnx``).

The ``pnnx`` console script imports torch; the converter binary inside the package does not,
and that binary is what runs here (``pnnx model.onnx inputshape=[1,C,H,W]f32 fp16=0``). pnnx
writes fp16 weights unless told ``fp16=0`` (2e-2 off); ncnn has no batch dimension, so the
input shape is one image and the runtime feeds one image per extractor. Blobs are named
``in0, in1, ...`` and ``out0, ...`` in the ONNX file's order.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from stn_deploy.convert.base import (
    Artifact,
    ConversionError,
    ConverterMissing,
    Source,
    Tool,
    package_version,
    run_tool,
)

FORMAT = "ncnn"
TOOL = "pnnx"
PARAM, BIN = "model.ncnn.param", "model.ncnn.bin"


def find_tool(**_options) -> Tool:
    spec = importlib.util.find_spec("pnnx")
    binary = Path(spec.submodule_search_locations[0]) / "pnnx" if spec else None
    if binary is None or not binary.is_file():
        raise ConverterMissing(
            "ncnn: pnnx is not installed (pip install --no-deps pnnx; without --no-deps it "
            "pulls a CUDA torch)"
        )
    return Tool(TOOL, package_version("pnnx"), (str(binary),))


def convert(src: Path, dest: Path, source: Source, tool: Tool) -> Artifact:
    shape = ",".join(str(d) for d in (1, *source.image_shape(FORMAT)))
    options = [f"inputshape=[{shape}]f32", "fp16=0"]
    if len(source.inputs) != 1:
        raise ConversionError(
            f"ncnn: one image input is supported, the model has {len(source.inputs)}"
        )
    text = run_tool([*tool.command, src.name, *options], FORMAT, TOOL, cwd=src.parent)
    param, weights = src.with_name(src.stem + ".ncnn.param"), src.with_name(src.stem + ".ncnn.bin")
    if not param.is_file() or not weights.is_file():
        from stn_deploy.convert.base import last_message

        raise ConversionError(f"ncnn: {TOOL} wrote no ncnn model: {last_message(text)}")
    shutil.copyfile(param, dest / PARAM)
    shutil.copyfile(weights, dest / BIN)
    names = {t.name: f"in{i}" for i, t in enumerate(source.inputs)}
    names.update({t.name: f"out{i}" for i, t in enumerate(source.outputs)})
    return Artifact(
        files={"param": PARAM, "bin": BIN},
        options=options,
        layouts={t.name: "CHW, one image per call" for t in source.inputs},
        batch=1,
        names=names,
        runtime_settings={
            "use_fp16_storage": False,
            "use_fp16_packed": False,
            "use_fp16_arithmetic": False,
            "use_bf16_storage": False,
        },
    )
