"""stn-deploy inspect: any ONNX file, its lowering and where it can run."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from stn_deploy.cli import main
from stn_deploy.errors import StnDeployError
from stn_deploy.export.metadata import stn_metadata, write_metadata
from stn_deploy.export.portable import grid_sample_model
from stn_deploy.inspect_onnx import inspect_model


def _gridsample_model(opset: int, mode: str, domain: str = "", functions=()) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])
    g = helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["N", 28, 28, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 28, 28])
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode, domain=domain)
    imports = [helper.make_opsetid("", opset)]
    if domain:
        imports.append(helper.make_opsetid(domain, 1))
    graph = helper.make_graph([node], "g", [x, g], [y])
    return helper.make_model(graph, opset_imports=imports, functions=list(functions))


def _save(tmp_path, model, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    return path


def test_native_opset16_runs_everywhere_with_gridsample(tmp_path):
    info = inspect_model(_save(tmp_path, _gridsample_model(16, "bilinear")))
    assert info["lowering"] == "native"
    assert info["opsets"] == {"ai.onnx": 16}
    assert info["inputs"][0] == {"name": "x", "dtype": "float32", "shape": ["N", 1, 28, 28]}
    assert info["op_histogram"] == {"GridSample": 1}
    t = info["targets"]
    assert t["ort-cpu"]["ok"] and t["tensorrt"]["ok"] and t["openvino"]["ok"]
    assert t["tflite"]["ok"] and t["ncnn"]["ok"] and t["mnn"]["ok"]  # measured: runtime_matrix
    assert not t["iree"]["ok"] and "portable" in t["iree"]["why"]  # IREE's GridSample miscompile
    assert "CPU" in t["ort-cuda"]["why"]


def test_opset20_linear_is_the_tensorrt_trap(tmp_path):
    info = inspect_model(_save(tmp_path, _gridsample_model(20, "linear")))
    assert info["gridsample_modes"] == ["linear"]
    assert not info["targets"]["tensorrt"]["ok"]
    assert "nearest" in info["targets"]["tensorrt"]["why"]
    assert info["targets"]["ort-cpu"]["ok"]


def test_ort_contrib_is_ort_only(tmp_path):
    info = inspect_model(_save(tmp_path, _gridsample_model(11, "bilinear", domain="com.microsoft")))
    assert info["lowering"] == "ort-contrib"
    assert info["targets"]["ort-cpu"]["ok"]
    assert not info["targets"]["tensorrt"]["ok"] and not info["targets"]["openvino"]["ok"]


def test_custom_domain_with_and_without_a_body(tmp_path):
    body = helper.make_function(
        "stn_deploy",
        "GridSample",
        ["x", "grid"],
        ["y"],
        [helper.make_node("GridSample", ["x", "grid"], ["y"])],
        [helper.make_opsetid("", 16)],
    )
    with_body = _gridsample_model(16, "bilinear", domain="stn_deploy", functions=[body])
    info = inspect_model(_save(tmp_path, with_body))
    assert info["lowering"] == "custom" and info["functions"] == ["stn_deploy::GridSample"]
    assert info["targets"]["ort-cpu"]["ok"]
    assert not info["targets"]["openvino"]["ok"] and "inline" in info["targets"]["openvino"]["why"]
    info = inspect_model(
        _save(tmp_path, _gridsample_model(16, "bilinear", domain="stn_deploy"), "nb.onnx")
    )
    assert info["lowering"] == "custom-no-body"
    assert not info["targets"]["ort-cpu"]["ok"]


def test_portable_model_suits_runtimes_without_gridsample(tmp_path):
    model = grid_sample_model(2, 1, 28, 28, 28, 28, "bilinear", "zeros", False)
    write_metadata(model, {"lowering": "portable", "class_labels": ["a", "b"]})
    info = inspect_model(_save(tmp_path, model))
    assert info["lowering"] == "portable" and "declared" in info["lowering_reason"]
    assert "GridSample" not in info["op_histogram"]
    t = info["targets"]
    # measured (benchmarks/results/runtime_matrix.md): ncnn has no GatherElements layer and MNN
    # no IsNaN, both of which the portable sampler uses; every other target reads it
    assert not t["ncnn"]["ok"] and "GatherElements" in t["ncnn"]["why"]
    assert not t["mnn"]["ok"] and "IsNaN" in t["mnn"]["why"]
    assert all(v["ok"] for k, v in t.items() if k not in ("ncnn", "mnn")), t
    assert info["metadata"]["stn_deploy.class_labels"] == '["a", "b"]'
    assert stn_metadata(model)["lowering"] == "portable"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_stock_torch_export_is_read(tmp_path):
    torch = pytest.importorskip("torch")

    class Warp(torch.nn.Module):
        def forward(self, x, grid):
            return torch.nn.functional.grid_sample(x, grid, align_corners=False)

    path = tmp_path / "stock.onnx"
    torch.onnx.export(
        Warp(),
        (torch.rand(1, 1, 8, 8), torch.rand(1, 8, 8, 2)),
        str(path),
        opset_version=16,
        dynamo=False,
    )
    info = inspect_model(path)
    assert info["lowering"] == "native" and info["op_histogram"].get("GridSample") == 1


def test_cli_inspect_text_json_and_errors(tmp_path):
    path = _save(tmp_path, _gridsample_model(20, "linear"))
    r = CliRunner().invoke(main, ["inspect", str(path)])
    assert r.exit_code == 0 and "lowering: native" in r.output and "NO   tensorrt" in r.output
    r = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert json.loads(r.output)["opsets"] == {"ai.onnx": 20}
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(np.random.default_rng(0).bytes(64))
    missing = tmp_path / "none.onnx"
    for target, msg in ((bad, "not a readable ONNX model"), (missing, "model file not found")):
        r = CliRunner().invoke(main, ["inspect", str(target)])
        assert r.exit_code == 1 and r.output.startswith("Error: ") and msg in r.output, r.output
    with pytest.raises(StnDeployError):
        inspect_model(bad)
