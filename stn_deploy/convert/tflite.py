"""ONNX -> ``.tflite`` with onnx2tf, run from its own environment (LiteRT: ``[litert]``).

onnx2tf pins its own TensorFlow, onnx and onnxruntime (about 2.7 GB) and cannot share
stn-deploy's environment: ``make onnx2tf`` makes ``.venv-onnx2tf`` (Python 3.11 resolves
onnx2tf 1.29.x), and the executable is found as ``onnx2tf=PATH``, ``$STN_DEPLOY_ONNX2TF`` or
``onnx2tf`` on PATH. onnx2tf rewrites its input file in place (it gets a copy here) and calls
``onnxsim`` by bare name, so its own bin folder goes first on PATH. The input becomes NHWC
``[N, H, W, C]``; a file without a GridSample node (portable) converts only with a static
input shape, so it is converted for batch 1.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from stn_deploy.convert.base import (
    Artifact,
    ConversionError,
    ConverterMissing,
    Source,
    Tool,
    run_tool,
    tool_env,
)

FORMAT = "tflite"
TOOL = "onnx2tf"
FILE = "model.tflite"
ENV = "STN_DEPLOY_ONNX2TF"
HOW = (
    "run `make onnx2tf` (a separate .venv-onnx2tf, ~2.7 GB) and put .venv-onnx2tf/bin on "
    f"PATH, or give its path with --onnx2tf or ${ENV}"
)


def find_tool(onnx2tf: str | os.PathLike | None = None, **_options) -> Tool:
    given = onnx2tf or os.environ.get(ENV)
    path = Path(given).expanduser() if given else None
    if path is None:
        found = shutil.which("onnx2tf")
        path = Path(found) if found else None
    if path is None or not path.is_file() or not os.access(path, os.X_OK):
        where = f"{path} is not an executable" if given else "onnx2tf is not on PATH"
        raise ConverterMissing(f"tflite: {where}: {HOW}")
    return Tool(TOOL, _version(path), (str(path),))


def _version(exe: Path) -> str:
    """onnx2tf's version from its environment's metadata (``onnx2tf -V`` takes 17 s)."""
    for dist in sorted(
        exe.resolve().parent.parent.glob("lib/python*/site-packages/onnx2tf-*.dist-info")
    ):
        return dist.name.removesuffix(".dist-info").split("-")[1]
    return "unknown"


def convert(src: Path, dest: Path, source: Source, tool: Tool) -> Artifact:
    options = ["-osd", "-coion"]
    batch = 0
    if not source.grid_samples:  # the portable file converts only with a static shape
        dims = ",".join(str(d) for d in (1, *source.image_shape(FORMAT)))
        options += ["-ois", f"{source.inputs[0].name}:{dims}"]
        batch = 1
    out = src.parent / "tf"
    exe = Path(tool.command[0])
    text = run_tool(
        [*tool.command, "-i", str(src), "-o", str(out), *options],
        FORMAT,
        TOOL,
        cwd=src.parent,
        env=tool_env(exe.parent),
    )
    made = out / f"{src.stem}_float32.tflite"
    if not made.is_file():
        raise ConversionError(f"tflite: {TOOL} wrote no float32 model: {_plain(text)}")
    shutil.copyfile(made, dest / FILE)
    simplified = shutil.which("onnxsim", path=str(exe.parent)) is not None
    return Artifact(
        files={"model": FILE},
        options=options,
        layouts={t.name: "NHWC" if len(t.shape or ()) == 4 else "as ONNX" for t in source.inputs},
        batch=batch,
        names={t.name: t.name for t in (*source.inputs, *source.outputs)},
        runtime_settings={"signature": "serving_default", "fallback": "without XNNPACK"},
        notes=[f"onnxsim {'ran' if simplified else 'was not found: onnx2tf skipped it'}"],
    )


def _plain(text: str) -> str:
    from stn_deploy.convert.base import last_message

    return last_message(re.sub(r"\x1b\[[0-9;]*m", "", text))
