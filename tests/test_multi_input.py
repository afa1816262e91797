"""Models with several inputs (``forward(self, image, theta)``) in bench and verify: every
input gets seeded samples of its own shape, on every route (ORT, OpenVINO, torch eager, the stock
export); verify's ``random`` set feeds every input (``mnist``/``stress`` stay image-only)."""

from __future__ import annotations

import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch")

from stn_deploy.bench import bench_model, format_table  # noqa: E402
from stn_deploy.bench.runner import RunSettings  # noqa: E402
from stn_deploy.bench.tables import format_markdown  # noqa: E402
from stn_deploy.errors import StnDeployError  # noqa: E402
from stn_deploy.runtimes import TensorSpec, availability  # noqa: E402
from stn_deploy.verify import verify_model  # noqa: E402

USER = textwrap.dedent(
    """
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Warp(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, image, theta):
            grid = F.affine_grid(theta.view(-1, 2, 3), image.shape, align_corners=False)
            return self.conv(F.grid_sample(image, grid, align_corners=False))


    def make():
        torch.manual_seed(0)
        return Warp().eval()
    """
)
SHAPES = "3,8,8;6"
QUICK = {"batch_sizes": (1, 2), "warmup": 1, "duration": 0.05, "progress": False}


def _runtimes() -> str:
    return "cpu,openvino" if availability("openvino").available else "cpu"


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    """The user's 2-input module loaded as a factory, and its native export (with the golden
    bundle, one array per input) in a temporary directory."""
    from stn_deploy.pytorch.exporter import export_model
    from stn_deploy.pytorch.models.loading import load_factory

    folder = tmp_path_factory.mktemp("multi")
    (folder / "gt_user.py").write_text(USER)
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(folder))
    try:
        loaded = load_factory("gt_user:make", SHAPES)
        result = export_model(loaded, folder / "gt.onnx", lowering="native")
    finally:
        mp.undo()
    return loaded, result.path


def _assert_all_ok(r):
    assert r.rows and all(row.ok for row in r.rows), [
        (row.route.key, row.batch, row.reason) for row in r.rows if not row.ok
    ]


def _assert_two_inputs(model: dict, source: str):
    assert [(i["name"], i["shape"], i["dtype"]) for i in model["inputs"]] == [
        ("image", [3, 8, 8], "float32"),
        ("theta", [6], "float32"),
    ]
    assert all(source in i["shape_source"] for i in model["inputs"])
    # the single-input fields describe the first input
    assert (model["input_name"], model["input_shape"]) == ("image", [3, 8, 8])
    assert model["fixed_batch"] is None  # both inputs have a dynamic batch


def test_bench_without_reference_takes_shapes_from_the_golden_bundle(two_inputs):
    _, path = two_inputs
    r = bench_model(path, runtimes=_runtimes(), **QUICK)
    _assert_all_ok(r)
    assert {(row.route.runtime, row.batch) for row in r.rows} == {
        (rt, b) for rt in _runtimes().split(",") for b in (1, 2)
    }
    d = r.to_dict()
    _assert_two_inputs(d["model"], "golden bundle")
    assert "inputs image [3, 8, 8] float32" in format_table(d) and "theta [6]" in format_table(d)
    assert "`theta` [6] float32" in format_markdown(d)


def test_bench_with_torch_reference_times_every_route(two_inputs):
    from stn_deploy.pytorch import torch_side

    loaded, path = two_inputs
    r = bench_model(
        path,
        runtimes=_runtimes(),
        compare=("torch", "stock-export"),
        torch_side=torch_side(loaded),
        input_shape=SHAPES,
        **QUICK,
    )
    _assert_all_ok(r)
    kinds = {(row.route.kind, row.route.runtime, row.batch) for row in r.rows}
    for b in (1, 2):
        assert ("torch", "torch", b) in kinds
        for rt in _runtimes().split(","):
            assert {("model", rt, b), ("stock-export", rt, b)} <= kinds
    _assert_two_inputs(r.to_dict()["model"], "--input-shape")
    ours = next(row for row in r.rows if row.route.kind == "model" and row.batch == 2)
    assert ours.speedup["torch"] is not None and ours.speedup["stock-export"] is not None


def test_bench_shapes_from_the_torch_model_and_wrong_counts(two_inputs):
    from stn_deploy.pytorch import torch_side

    loaded, path = two_inputs
    r = bench_model(path, runtimes="cpu", torch_side=torch_side(loaded), **QUICK)
    _assert_all_ok(r)
    _assert_two_inputs(r.to_dict()["model"], "checkpoint")
    with pytest.raises(StnDeployError, match="1 shape.*2 inputs"):
        bench_model(path, runtimes="cpu", input_shape="3,8,8", **QUICK)
    with pytest.raises(StnDeployError, match="theta"):
        bench_model(path, runtimes="cpu", input_shape="3,8,8;7", **QUICK)


def test_bench_runtime_with_one_input_only_is_a_skip_row(two_inputs):
    _, path = two_inputs
    r = bench_model(path, runtimes="cpu,ncnn", **QUICK)
    ncnn = [row for row in r.rows if row.route.runtime == "ncnn"]
    assert ncnn and all(row.status == "skipped" for row in ncnn), [row.reason for row in ncnn]
    if availability("ncnn").available:
        assert all("one image input" in row.reason for row in ncnn)
    assert all(row.ok for row in r.rows if row.route.runtime == "cpu")


def test_feeds_follow_input_names_else_positions():
    s = RunSettings(shape=(3, 8, 8), input_names=("image", "theta"), more_shapes=((6,),))
    swapped = [TensorSpec("theta", "float32", ("N", 6)), TensorSpec("image", "float32", None)]
    feeds = s.feeds(swapped, 2)
    assert feeds["theta"].shape == (2, 6) and feeds["image"].shape == (2, 3, 8, 8)
    renamed = [TensorSpec("x", "float32", None), TensorSpec("t", "float16", None)]
    feeds = s.feeds(renamed, 2)
    assert feeds["x"].shape == (2, 3, 8, 8) and feeds["t"].shape == (2, 6)
    assert feeds["t"].dtype == np.float16
    assert not np.array_equal(s.inputs(2)[:, 0, 0, :6], s.inputs(2, index=1))
    with pytest.raises(StnDeployError, match="1 input"):
        s.feeds(renamed[:1], 2)


def test_single_input_bench_dict_keeps_its_fields(tmp_path):
    """A one-input model: the model dict keeps its fields and values, ``inputs`` repeats them,
    and the timed samples are the seeded ones bench has always fed."""
    path = tmp_path / "relu.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 4, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    d = bench_model(path, runtimes="cpu", **QUICK).to_dict()
    m = d["model"]
    assert list(m)[:9] == [
        "path",
        "name",
        "lowering",
        "precision",
        "input_name",
        "input_shape",
        "input_dtype",
        "fixed_batch",
        "shape_source",
    ]
    assert (m["input_name"], m["input_shape"], m["input_dtype"]) == ("x", [1, 4, 4], "float32")
    assert (m["fixed_batch"], m["shape_source"]) == (None, "model file")
    assert m["inputs"] == [
        {
            "name": "x",
            "shape": [1, 4, 4],
            "dtype": "float32",
            "fixed_batch": None,
            "shape_source": "model file",
        }
    ]
    assert "relu.onnx: input x [1, 4, 4] float32 (model file)" in format_table(d)
    s = RunSettings(shape=(1, 4, 4))
    expected = np.random.default_rng([0, 3]).standard_normal((3, 1, 4, 4), np.float32)
    np.testing.assert_array_equal(s.feeds([TensorSpec("x", "float32", None)], 3)["x"], expected)


def test_verify_random_set_feeds_every_input(two_inputs):
    from stn_deploy.pytorch import torch_side

    loaded, path = two_inputs
    rep = verify_model(
        path, torch_side=torch_side(loaded), runtimes=_runtimes(), inputs="all", count=4
    )
    assert rep.passed
    sets = {s["name"]: s for s in rep.input_sets}
    assert set(sets) == {"golden", "random"} and sets["random"]["count"] == 4
    assert "image [3, 8, 8], theta [6]" in sets["random"]["description"]
    for kind in ("mnist", "stress"):
        assert "2 inputs" in rep.skipped_input_sets[kind]


def test_verify_random_set_catches_a_broken_two_input_file(two_inputs, tmp_path):
    """The random set alone (no golden bundle beside the file) against torch: a tampered
    weight fails, so the set really drives both inputs through the model."""
    from stn_deploy.pytorch import torch_side

    loaded, path = two_inputs
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.name.endswith("weight"))
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    side = torch_side(loaded)
    rep = verify_model(bad, torch_side=side, runtimes="cpu", inputs="random", count=4)
    assert not rep.passed
    good = verify_model(path, torch_side=side, runtimes="cpu", inputs="random", count=4)
    assert good.passed
