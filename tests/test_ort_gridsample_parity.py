"""The native and ort-contrib lowerings hand sampling to ONNX Runtime's GridSample kernel: check
it agrees with torch for every mode x padding x align_corners (onnxruntime#10607 once had bicubic
with border padding disagree). If an ORT upgrade breaks this, the export profiles must change."""

import itertools

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

COMBOS = list(
    itertools.product(["bilinear", "nearest", "bicubic"], ["zeros", "border", "reflection"], [0, 1])
)


@pytest.mark.parametrize("domain,opset", [("", 16), ("", 20), ("com.microsoft", 11)])
def test_ort_gridsample_matches_torch(domain, opset):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 10, 12)).astype(np.float32)
    grid = np.concatenate(
        [rng.uniform(-1.2, 1.2, (2, 7, 9, 2)), rng.uniform(-3, 3, (2, 2, 9, 2))], 1
    )
    grid = grid.astype(np.float32)
    mismatches = []
    for mode, pad, ac in COMBOS:
        name = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode) if opset >= 20 else mode
        node = helper.make_node(
            "GridSample",
            ["x", "g"],
            ["y"],
            mode=name,
            padding_mode=pad,
            align_corners=ac,
            domain=domain,
        )
        imports = [helper.make_opsetid("", opset)] + (
            [helper.make_opsetid(domain, 1)] if domain else []
        )
        io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "g", "y")]
        model = helper.make_model(
            helper.make_graph([node], "t", io[:2], io[2:]), opset_imports=imports
        )
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"x": x, "g": grid})[0]
        ref = F.grid_sample(
            torch.from_numpy(x),
            torch.from_numpy(grid),
            mode=mode,
            padding_mode=pad,
            align_corners=bool(ac),
        )
        err = float(np.abs(got - ref.numpy()).max())
        if err > 1e-4:
            mismatches.append(f"{mode}/{pad}/align_corners={ac}: {err:.2e}")
    assert not mismatches, mismatches
