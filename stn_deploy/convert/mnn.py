"""ONNX -> MNN with the converter inside the ``mnn`` wheel (the ``[mnn]`` extra).

The wheel's ``mnnconvert`` console script runs ``pip install -U aliyun-log-python-sdk`` and
uploads usage logs after converting (``MNN/tools/utils/log.py``): stn-deploy never runs it. It
calls the converter's own entry, ``_tools.mnnconvert(argv)`` (the C++ converter the script
wraps), in a child Python under :data:`~stn_deploy.convert.base.GUARD`, which makes any process
start or network connection inside it fail.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from stn_deploy.convert.base import (
    Artifact,
    ConversionError,
    ConverterMissing,
    Source,
    Tool,
    guarded_python,
    last_message,
    package_version,
    run_tool,
)

FORMAT = "mnn"
TOOL = "MNNConvert"
FILE = "model.mnn"

_CONVERT = """
import _tools
ok = _tools.mnnconvert(["MNNConvert", *sys.argv[1:]])
sys.exit(0 if ok else 1)
"""


def find_tool(**_options) -> Tool:
    if importlib.util.find_spec("_tools") is None or importlib.util.find_spec("MNN") is None:
        raise ConverterMissing(
            "mnn: the MNN converter is not installed (pip install 'stn-deploy[mnn]')"
        )
    return Tool(TOOL, package_version("mnn"), tuple(guarded_python(_CONVERT)))


def convert(src: Path, dest: Path, source: Source, tool: Tool) -> Artifact:
    options = ["-f", "ONNX", "--bizCode", "stn-deploy"]
    out = dest / FILE
    cmd = [*tool.command, *options, "--modelFile", str(src), "--MNNModel", str(out)]
    text = run_tool(cmd, FORMAT, TOOL, cwd=src.parent)
    if not out.is_file() or out.stat().st_size == 0 or "Converted Success" not in text:
        # MNNConvert returns success and prints "Converted Failed!" on unsupported ops
        unsupported = [
            ln.split("Not Support:", 1)[1].strip()
            for ln in text.splitlines()
            if "Not Support:" in ln
        ]
        why = f"unsupported ops {', '.join(unsupported)}" if unsupported else last_message(text)
        raise ConversionError(f"mnn: {TOOL} failed: {why}")
    return Artifact(
        files={"model": FILE},
        options=options,
        layouts={t.name: "as ONNX" for t in source.inputs},
        names={t.name: t.name for t in (*source.inputs, *source.outputs)},
        runtime_settings={
            "precision": "high",
            "hint": "WINOGRAD_MEMORY_LEVEL=0 (Winograd 5x5 convolutions cost 2e-3)",
        },
    )
