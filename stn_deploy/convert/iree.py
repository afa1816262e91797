"""ONNX -> IREE (``iree-base-compiler[onnx]``): ``iree-import-onnx --opset-version 17`` then
``iree-compile`` for the llvm-cpu backend of this CPU (the ``[iree]`` extra).

The importer is a Python program: it runs in a child Python under
:data:`~stn_deploy.convert.base.GUARD`. IREE 3.13 rejects opset-11 MaxPool (hence the import at
opset 17) and miscompiles GridSample for grid points outside [-1, 1] with zeros padding (NaN or
1e38, no error: ``benchmarks/repros/iree_gridsample_oob.py``), so a file with a GridSample node
(native, or custom, which the importer reads as GridSample) is refused: use the portable lowering.
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
    package_version,
    run_tool,
)

FORMAT = "iree"
TOOL = "iree-compile"
FILE = "model.vmfb"
OPSET = 17
COMPILE_OPTIONS = (
    "--iree-hal-target-device=local",
    "--iree-hal-local-target-device-backends=llvm-cpu",
    "--iree-llvmcpu-target-cpu=host",
)
_IMPORT = """
from iree.compiler.tools.import_onnx.__main__ import _cli_main
sys.argv = ["iree-import-onnx", *sys.argv[1:]]
sys.exit(_cli_main())
"""


def find_tool(**_options) -> Tool:
    if (
        importlib.util.find_spec("iree") is None
        or importlib.util.find_spec("iree.compiler") is None
    ):
        raise ConverterMissing(
            "iree: iree-base-compiler is not installed (pip install 'stn-deploy[iree]')"
        )
    from iree.compiler.tools.binaries import find_tool as iree_find

    try:
        binary = iree_find("iree-compile")
    except Exception as exc:
        raise ConverterMissing(f"iree: iree-compile not found: {exc}") from exc
    return Tool(TOOL, package_version("iree-base-compiler"), (str(binary),))


def refusal(source: Source) -> str:
    """Why IREE cannot run ``source`` correctly ("" when it can)."""
    if source.grid_samples:
        return (
            "iree: IREE 3.13 miscompiles GridSample (wrong values, no error, where the grid "
            "leaves [-1, 1]; benchmarks/repros/iree_gridsample_oob.py): lower the file to "
            "portable first (stn-deploy lower --lowering portable)"
        )
    return ""


def convert(src: Path, dest: Path, source: Source, tool: Tool) -> Artifact:
    why = refusal(source)
    if why:
        raise ConversionError(why)
    mlir = src.with_suffix(".mlir")
    imp = guarded_python(_IMPORT) + [str(src), "--opset-version", str(OPSET), "-o", str(mlir)]
    run_tool(imp, FORMAT, "iree-import-onnx", cwd=src.parent)
    out = dest / FILE
    text = run_tool(
        [*tool.command, str(mlir), *COMPILE_OPTIONS, "-o", str(out)], FORMAT, TOOL, cwd=src.parent
    )
    if not out.is_file() or out.stat().st_size == 0:
        from stn_deploy.convert.base import last_message

        raise ConversionError(f"iree: {TOOL} wrote no module: {last_message(text)}")
    return Artifact(
        files={"module": FILE},
        options=[f"iree-import-onnx --opset-version {OPSET}", *COMPILE_OPTIONS],
        layouts={t.name: "as ONNX" for t in source.inputs},
        names={t.name: t.name for t in (*source.inputs, *source.outputs)},
        runtime_settings={"driver": "local-task", "entry": "main_graph", "copy_results": True},
        notes=["compiled for this machine's CPU (--iree-llvmcpu-target-cpu=host)"],
    )
