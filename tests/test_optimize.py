"""optimize_model / optimize_file / `stn-deploy optimize`: modes, parity gating, the record and
its metadata, one-line errors. Timing is exercised (auto really times on ORT CPU) but nothing
asserts a speed: which sites win depends on the CPU and its load (benchmarks/optimize.py)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from tolerances import assert_close

from stn_deploy.errors import StnDeployError
from stn_deploy.export.metadata import stn_metadata
from stn_deploy.optimize import EXACT_DEFAULT, optimize_file, optimize_model
from stn_deploy.optimize import base as pass_base
from stn_deploy.optimize.passes import relu_pool

ort = pytest.importorskip("onnxruntime")


def run(model, x):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})[0]


@pytest.fixture(scope="module")
def native(plain_native):
    return onnx.load(plain_native)


@pytest.fixture(scope="module")
def golden(plain_native):
    g = np.load(plain_native.with_suffix(".io.npz"))
    return g["input/image"], g["output/log_probs"]


def test_none_is_the_model_itself(native):
    out, record = optimize_model(native, "none")
    assert out is native and record.applied == {} and record.mode == "none"


def test_exact_applies_the_default_passes_at_parity(native, golden):
    out, record = optimize_model(native, "exact")
    assert set(record.passes) == {"relu-before-maxpool", "affine-grid-gemm"}
    assert set(record.passes) <= set(EXACT_DEFAULT["cpu"])
    assert record.applied["relu-before-maxpool"] and not record.notes
    x, want = golden
    assert_close(run(out, x), want)
    assert len(native.graph.node) == 26  # the input model is never changed


@pytest.fixture
def bad_pass():
    """A registered pass that claims to be exact but moves every Gemm's output (scales B)."""

    def find(model):
        return [n.output[0] for n in model.graph.node if n.op_type == "Gemm"]

    def rewrite(model, sites=None):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        for t in out.graph.initializer:
            if t.name == "fc2.weight":
                arr = onnx.numpy_helper.to_array(t) * np.float32(1.01)
                t.CopyFrom(onnx.numpy_helper.from_array(arr, t.name))
        return out, 1

    pass_base._REGISTRY["bad"] = pass_base.Pass("bad", True, "none", "wrong", find, rewrite)
    yield "bad"
    del pass_base._REGISTRY["bad"]


def test_a_pass_that_moves_results_is_skipped_with_a_note(native, golden, bad_pass):
    out, record = optimize_model(native, "exact", passes=(bad_pass, relu_pool.NAME))
    assert record.passes == [relu_pool.NAME]
    assert any(n.startswith("bad skipped: outputs moved") for n in record.notes), record.notes
    assert_close(run(out, golden[0]), golden[1])


def test_auto_times_each_site_and_keeps_only_parity(native, golden, bad_pass):
    out, record = optimize_model(
        native, "auto", batch_sizes=(1, 4), duration=0.02,
        passes=(relu_pool.NAME, "affine-grid-gemm", bad_pass),
    )  # fmt: skip
    tried = [(c.pass_name, c.site) for c in record.candidates]
    assert len([t for t in tried if t[0] == relu_pool.NAME]) == 4
    for c in record.candidates:
        if c.pass_name == "bad":
            assert not c.kept and "outputs moved" in c.note and not c.after_us
        else:
            assert set(c.before_us) == set(c.after_us) == set(c.ratio) == {1, 4}
            assert all(v > 0 for v in [*c.before_us.values(), *c.after_us.values()])
    kept = {c.site for c in record.candidates if c.kept}
    assert kept == {s for sites in record.applied.values() for s in sites} or not record.applied
    assert_close(run(out, golden[0]), golden[1])
    meta = json.loads(json.dumps(record.metadata(), sort_keys=True))
    assert meta["optimize"]["mode"] == "auto" and meta["optimize"]["batch_sizes"] == [1, 4]


def test_bad_arguments_are_one_line(native, monkeypatch):
    with pytest.raises(StnDeployError, match="mode must be one of none, exact, auto"):
        optimize_model(native, "fast")
    with pytest.raises(StnDeployError, match="batch_sizes must be positive"):
        optimize_model(native, "exact", batch_sizes=(0,))
    with pytest.raises(StnDeployError, match="cannot be timed"):
        optimize_model(native, "auto", runtime="reference")
    from stn_deploy.runtimes import registry

    monkeypatch.setattr(
        registry, "availability", lambda n: registry.Availability(n, False, "not installed")
    )
    with pytest.raises(StnDeployError, match="openvino, which cannot run here: not installed"):
        optimize_model(native, "auto", runtime="openvino")


def test_optimize_file_writes_the_record(tmp_path, golden, plain_native):
    dst = tmp_path / "opt.onnx"
    record = optimize_file(plain_native, dst, "exact")
    meta = stn_metadata(onnx.load(str(dst)))
    assert json.loads(meta["optimize"])["applied"] == record.applied
    assert meta["lowering"] == "native"  # the export's own metadata is kept
    assert_close(run(dst, golden[0]), golden[1])


def test_cli(tmp_path, plain_native):
    from stn_deploy.cli import main

    NATIVE = str(plain_native)
    r = CliRunner().invoke(main, ["optimize", NATIVE, str(tmp_path / "o.onnx")])
    assert r.exit_code == 0, r.output
    assert "relu-before-maxpool x4" in r.output and "affine-grid-gemm x1" in r.output
    for args, code, text in (
        ([NATIVE, NATIVE], 1, "OUT"),
        ([str(tmp_path / "missing.onnx"), str(tmp_path / "x.onnx")], 1, "not found"),
        ([NATIVE, str(tmp_path / "x.onnx"), "--batch-sizes", "0"], 2, "--batch-sizes"),
        ([NATIVE, str(tmp_path / "x.onnx"), "--passes", "nope"], 2, "unknown pass"),
        ([NATIVE, str(tmp_path / "x.onnx"), "--mode", "fast"], 2, "--mode"),
    ):
        r = CliRunner().invoke(main, ["optimize", *args])
        assert r.exit_code == code and text in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "x.onnx").exists()


def test_a_site_is_kept_only_when_faster_overall_and_nowhere_slower():
    from stn_deploy.optimize.api import _Context

    ctx = _Context.__new__(_Context)  # the verdict alone: no model, no session
    ctx.batch_sizes, ctx.margin = (1, 64), 0.02
    assert ctx.wins({1: 0.99, 64: 0.9})
    assert not ctx.wins({1: 1.1, 64: 0.8})  # slower at batch 1
    assert not ctx.wins({1: 1.0, 64: 0.98})  # within the noise margin


def test_auto_on_openvino_when_installed(native, golden):
    pytest.importorskip("openvino")
    out, record = optimize_model(
        native, "auto", runtime="openvino", batch_sizes=(2,), duration=0.02,
        passes=("affine-grid-gemm",),
    )  # fmt: skip
    assert record.runtime == "openvino" and len(record.candidates) == 1
    assert record.candidates[0].after_us  # parity held on OpenVINO, then it was timed
    assert_close(run(out, golden[0]), golden[1])


def test_exact_without_the_runtime_checks_on_the_reference(native, monkeypatch):
    from stn_deploy.optimize import api

    monkeypatch.setattr(api, "_available", lambda runtime: False)
    out, record = optimize_model(native, "exact", passes=("affine-grid-gemm",))
    assert record.passes == ["affine-grid-gemm"]
    assert record.notes == ["cpu is not installed: parity checked on the reference runtime"]
