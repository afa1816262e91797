"""Minimal repro: IREE 3.13 (llvm-cpu) miscompiles ONNX GridSample for grid points outside
[-1, 1] with padding_mode=zeros (no error; NaN, huge or stale values where ONNX says 0).

    .venv/bin/python benchmarks/repros/iree_gridsample_oob.py

One GridSample node (opset 17, bilinear, zeros, align_corners=0) on a 1x1x4x4 image with a
1x1x4x2 grid: two points inside [-1, 1], two outside. ONNX Runtime gives the ONNX answer
(outside points read zeros); the IREE module compiled from the same file (iree-import-onnx
--opset-version 17, iree-compile llvm-cpu) is printed beside it. Exit status 1 when they differ
(the bug is present), 0 when they agree. This is why stn-deploy refuses GridSample files for
the ``iree`` runtime and its ``iree`` target profile uses the portable lowering.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

GRID = np.array([[[[0.0, 0.0], [0.5, -0.5], [1.7, 0.2], [-3.0, 2.5]]]], np.float32)
IMAGE = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)


def model() -> onnx.ModelProto:
    node = helper.make_node(
        "GridSample", ["x", "grid"], ["y"], mode="bilinear", padding_mode="zeros", align_corners=0
    )
    graph = helper.make_graph(
        [node],
        "main_graph",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4]),
            helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 1, 4, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 4])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def iree_run(path: Path) -> np.ndarray:
    import iree.runtime as ireert
    from iree.compiler.tools.binaries import find_tool

    mlir, vmfb = path.with_suffix(".mlir"), path.with_suffix(".vmfb")
    importer = "from iree.compiler.tools.import_onnx.__main__ import _cli_main; _cli_main()"
    subprocess.run(
        [sys.executable, "-c", importer, str(path), "--opset-version", "17", "-o", str(mlir)],
        check=True,
    )
    subprocess.run(
        [
            find_tool("iree-compile"),
            str(mlir),
            "--iree-hal-target-device=local",
            "--iree-hal-local-target-device-backends=llvm-cpu",
            "--iree-llvmcpu-target-cpu=host",
            "-o",
            str(vmfb),
        ],
        check=True,
    )
    config = ireert.Config("local-task")
    vm = ireert.VmModule.mmap(config.vm_instance, str(vmfb))
    ctx = ireert.SystemContext(config=config, vm_modules=[vm])
    return np.array(ctx.modules.module["main_graph"](IMAGE, GRID).to_host(), copy=True)


def main() -> int:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gridsample.onnx"
        onnx.save(model(), path)
        want = ort.InferenceSession(str(path)).run(None, {"x": IMAGE, "grid": GRID})[0]
        got = iree_run(path)
    from importlib.metadata import version

    print(f"iree-base-compiler {version('iree-base-compiler')}, onnxruntime {ort.__version__}")
    print("grid points      :", GRID.reshape(-1, 2).tolist())
    print("onnxruntime      :", want.ravel().tolist())
    print("iree (llvm-cpu)  :", got.ravel().tolist())
    bad = not np.allclose(got, want, atol=1e-5, equal_nan=False)
    print("IREE differs from ONNX: the bug is present" if bad else "IREE agrees with ONNX")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
