"""int8 (static QDQ) and fp16: the STN's θ, grid and sampler stay fp32, calibration is
deterministic, the files load in ORT CPU and OpenVINO, the metadata and golden bundle say what
they are, and the error paths of `quantize` and `export --precision` are one line each."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper

from stn_deploy.cli import main
from stn_deploy.data import mnist_available, synthetic_mnist
from stn_deploy.errors import StnDeployError
from stn_deploy.export.golden import read_bundle
from stn_deploy.export.metadata import stn_metadata
from stn_deploy.precision import CalibrationSpec, apply_precision, quantize_file
from stn_deploy.precision.accuracy import agreement_pct, distorted_test_set, predict
from stn_deploy.precision.calibration import calibration_set, distortion_for
from stn_deploy.precision.region import float_region, inline_functions
from stn_deploy.pytorch.exporter import export_model
from stn_deploy.pytorch.models import build_model, load_model, save_checkpoint, zoo_config
from stn_deploy.runtimes import open_session

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "exported"
SYNTH = CalibrationSpec(count=32, synthetic=True)


def _loaded(tmp_path, name="mnist-affine", in_size=42):
    torch.manual_seed(0)
    config = zoo_config(name, normalization={"mean": [0.1307], "std": [0.3081]}, in_size=in_size)
    model = build_model(name, **config.args)
    with torch.no_grad():  # move the STN away from the identity so the sampler really warps
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return load_model(str(save_checkpoint(tmp_path / f"{name}.pt", model, config)))


@pytest.fixture(scope="module")
def fp32_models(tmp_path_factory):
    """An untrained mnist-affine (42x42) exported with each lowering."""
    tmp = tmp_path_factory.mktemp("fp32")
    loaded = _loaded(tmp)
    paths = {}
    for sampler, opset, inline in [
        ("native", 17, False),
        ("portable", 11, False),
        ("custom", 13, False),
        ("ort-contrib", 11, False),
    ]:
        s = export_model(
            loaded, tmp / f"{sampler}.onnx", lowering=sampler, opset=opset, inline=inline
        )
        paths[sampler] = Path(s.path)
    return paths


def _fed_by_quantize(model: onnx.ModelProto, region_names: set[str]) -> list[str]:
    """Region nodes past θ's Gemm with an input that went through an activation
    QuantizeLinear (θ's Gemm itself reads the int8 localisation net's features, dequantised,
    with fp32 weights)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    bad = []
    for n in model.graph.node:
        if n.name not in region_names or n.op_type == "Gemm":
            continue
        for name in n.input:
            dq = producer.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    bad.append(f"{n.op_type} {n.name} <- {name}")
    return bad


def _x(n=16, size=42, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 1, size, size)).astype(np.float32)


# ----------------------------------------------------------------------------- int8
@pytest.mark.parametrize("lowering", ["native", "portable", "custom", "ort-contrib"])
def test_int8_keeps_theta_grid_and_sampler_float(fp32_models, tmp_path, lowering):
    src = fp32_models[lowering]
    fp32 = inline_functions(onnx.load(src))
    region = {fp32.graph.node[i].name for i in float_region(fp32)}
    s = quantize_file(src, tmp_path / "q.onnx", "int8", calibration=SYNTH)
    q = onnx.load(s.path)
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert region <= {n.name for n in q.graph.node}  # every region node is still there ...
    assert _fed_by_quantize(q, region) == []  # ... reading float tensors
    inits = {i.name: i for i in q.graph.initializer}
    theta = next(n for n in q.graph.node if n.name == "/stn/fc_loc/fc_loc.2/Gemm")
    assert inits[theta.input[1]].data_type == TensorProto.FLOAT  # θ's weights stay fp32
    samplers = [n for n in q.graph.node if n.op_type in ("GridSample", "GatherElements")]
    assert samplers and all(n.name in region for n in samplers)
    meta = stn_metadata(q)
    assert meta["precision"] == "int8"
    assert '"method": "minmax"' in meta["calibration"] and '"count": 32' in meta["calibration"]
    assert int(meta["opset"]) >= 13
    out = open_session("cpu", s.path).run({"image": _x()})["log_probs"]
    assert out.shape == (16, 10) and np.isfinite(out).all()


def test_quantize_sampler_quantises_theta(fp32_models, tmp_path):
    src = fp32_models["native"]
    fp32 = onnx.load(src)
    region = {fp32.graph.node[i].name for i in float_region(fp32)}
    q, meta = apply_precision(fp32, "int8", calibration=SYNTH, quantize_sampler=True)
    assert meta["calibration"]["excluded_nodes"] == []
    theta = next(n for n in q.graph.node if n.name == "/stn/fc_loc/fc_loc.2/Gemm")
    assert "DequantizeLinear" in theta.input[1]  # θ's weights are int8 now
    assert _fed_by_quantize(q, region)  # and the grid reads quantised tensors


def test_calibration_is_deterministic_for_a_seed(fp32_models, tmp_path):
    src = fp32_models["native"]
    a = quantize_file(src, tmp_path / "a.onnx", "int8", calibration=SYNTH)
    b = quantize_file(src, tmp_path / "b.onnx", "int8", calibration=SYNTH)
    c = quantize_file(
        src,
        tmp_path / "c.onnx",
        "int8",
        calibration=CalibrationSpec(count=32, seed=5, synthetic=True),
    )
    assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
    assert Path(a.path).read_bytes() != Path(c.path).read_bytes()
    x1, _ = calibration_set(SYNTH, (1, 42, 42), [0.1307], [0.3081])
    x2, _ = calibration_set(SYNTH, (1, 42, 42), [0.1307], [0.3081])
    assert np.array_equal(x1, x2)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_other_calibration_methods(fp32_models, method):
    spec = CalibrationSpec(count=16, method=method, synthetic=True)
    q, meta = apply_precision(onnx.load(fp32_models["native"]), "int8", calibration=spec)
    assert meta["calibration"]["method"] == method
    assert open_session("cpu", q).run({"image": _x(4)})["log_probs"].shape == (4, 10)


def test_int8_loads_in_ort_and_openvino_with_stable_agreement(fp32_models, tmp_path):
    pytest.importorskip("openvino")
    src = fp32_models["native"]
    s = quantize_file(src, tmp_path / "q.onnx", "int8", calibration=SYNTH)
    data = synthetic_mnist(n_train=1, n_test=64, seed=3)
    from stn_deploy.data import make_split

    x, _ = make_split(data.test_images, data.test_labels, "rts", 0, split="test")
    x = ((x - 0.1307) / 0.3081).astype(np.float32)
    ref = predict(open_session("cpu", src), x)
    agreements = set()
    for rt in ("cpu", "openvino", "cpu"):
        out = predict(open_session(rt, s.path, threads=1), x, batch=16)
        assert out.shape == (64, 10)
        if rt == "cpu":
            agreements.add(agreement_pct(out, ref))
    assert len(agreements) == 1  # the same figure on every run


def test_int8_golden_bundle_holds_the_fp32_reference(fp32_models, tmp_path):
    src = fp32_models["native"]
    s = quantize_file(src, tmp_path / "q.onnx", "int8", calibration=SYNTH)
    ref, got = read_bundle(src.with_suffix(".io.npz")), read_bundle(s.golden_path)
    assert np.array_equal(ref.inputs["image"], got.inputs["image"])
    assert np.array_equal(ref.outputs["log_probs"], got.outputs["log_probs"])
    assert got.meta["precision"] == "int8" and got.meta["model"] == "q.onnx"


@pytest.mark.parametrize("name", ["mnist-tps", "mnist-affine-series", "mnist-attention"])
def test_int8_other_stn_families(tmp_path, name):
    loaded = _loaded(tmp_path, name)
    path = export_model(loaded, tmp_path / "m.onnx", lowering="native").path
    model = onnx.load(path)
    region = {model.graph.node[i].name for i in float_region(model)}
    q, _ = apply_precision(model, "int8", calibration=SYNTH)
    assert _fed_by_quantize(q, region) == []
    assert open_session("cpu", q).run({"image": _x(4)})["log_probs"].shape == (4, 10)


@pytest.mark.mnist
@pytest.mark.skipif(not mnist_available(), reason="needs the MNIST cache (stn-deploy data fetch)")
def test_int8_on_real_mnist_agrees_with_fp32(tmp_path):
    src = EXPORTED / "mnist-affine-native.onnx"
    s = quantize_file(src, tmp_path / "q.onnx", "int8", calibration=CalibrationSpec(count=128))
    x, y = distorted_test_set("rts", 0, [0.1307], [0.3081], limit=1000)
    ref = predict(open_session("cpu", src), x)
    out = predict(open_session("cpu", s.path), x)
    assert agreement_pct(out, ref) >= 99.0
    assert agreement_pct(predict(open_session("cpu", s.path), x), ref) == agreement_pct(out, ref)


def test_distortion_follows_the_canvas():
    assert distortion_for((1, 42, 42)) == "rts" and distortion_for((1, 60, 60)) == "tc"
    assert distortion_for((1, 28, 28), "r") == "r"
    with pytest.raises(StnDeployError, match="calibration.distortion"):
        distortion_for((1, 28, 28))
    with pytest.raises(StnDeployError, match="makes 28x28"):
        distortion_for((1, 42, 42), "r")


def test_nothing_to_quantise_is_a_clear_error(tmp_path):
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 42, 42])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 42, 42])
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["y"], name="r")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(StnDeployError, match="nothing to quantise: the model has no Conv, Gemm"):
        apply_precision(model, "int8", calibration=SYNTH)


# ----------------------------------------------------------------------------- fp16
@pytest.mark.parametrize("lowering", ["native", "portable", "custom"])
def test_fp16_keeps_fp32_io_and_sampler(fp32_models, tmp_path, lowering):
    src = fp32_models[lowering]
    s = quantize_file(src, tmp_path / "h.onnx", "fp16")
    h = onnx.load(s.path)
    onnx.checker.check_model(h)
    assert [i.type.tensor_type.elem_type for i in h.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in h.graph.output] == [TensorProto.FLOAT]
    assert any(t.data_type == TensorProto.FLOAT16 for t in h.graph.initializer)
    meta = stn_metadata(h)
    assert meta["precision"] == "fp16" and '"keep_io_types": true' in meta["fp16"]
    kept = set(json.loads(meta["fp16"])["fp32_nodes"])
    producer = {o: n for n in h.graph.node for o in n.output}
    for n in h.graph.node:  # no fp16 rounding inside the region: no Cast(fp16) feeds it
        if n.name in kept:
            for i in n.input:
                p = producer.get(i)
                if (
                    p is not None
                    and p.op_type == "Cast"
                    and p.attribute[0].i == TensorProto.FLOAT16
                ):
                    raise AssertionError(f"{n.name} reads an fp16 cast of {i}")
    x = _x()
    ref = open_session("cpu", src).run({"image": x})["log_probs"]
    out = open_session("cpu", s.path).run({"image": x})["log_probs"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.exp(out), np.exp(ref), atol=2e-2)


def test_fp16_without_io_types(fp32_models):
    h, _ = apply_precision(onnx.load(fp32_models["native"]), "fp16", keep_io_types=False)
    assert h.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16


# ----------------------------------------------------------------------------- CLI
def test_cli_quantize_and_bad_input(fp32_models, tmp_path):
    src = str(fp32_models["native"])
    runner = CliRunner()
    out = tmp_path / "q.onnx"
    args = [
        "quantize",
        src,
        "--out",
        str(out),
        "--synthetic-calibration",
        "--calibration-count",
        "16",
    ]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "kept fp32: Gemm 2, GridSample 1" in r.output and out.is_file()  # θ and its grid

    def fails(cmd, match, env=None, code=1):
        before = sorted(p.name for p in tmp_path.iterdir())
        r = runner.invoke(main, cmd, env=env)
        assert r.exit_code == code, r.output
        line = r.output.strip()
        assert line.startswith("Error: ") and "\n" not in line and match in line, r.output
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial file

    fails(
        ["quantize", src, "--out", str(tmp_path / "x.onnx"), "--precision", "int4"],
        "unknown precision 'int4'",
        code=2,  # a bad option value is a usage error
    )
    fails(
        ["quantize", str(out), "--out", str(tmp_path / "x.onnx"), "--synthetic-calibration"],
        "already quantised",
    )
    fails(
        ["quantize", src, "--out", str(tmp_path / "x.onnx")],
        "stn-deploy data fetch",
        env={"STN_DEPLOY_CACHE": str(tmp_path / "empty-cache")},
    )
    relu = tmp_path / "relu.onnx"
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 42, 42])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 42, 42])
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["y"], name="r")], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), relu)
    fails(
        ["quantize", str(relu), "--out", str(tmp_path / "x.onnx"), "--synthetic-calibration"],
        "nothing to quantise",
    )
    fails(
        ["export", "mnist-affine", "--out", str(tmp_path / "x.onnx"), "--precision", "bf8"],
        "unknown precision 'bf8'",
        code=2,
    )
    fails(
        [
            "export",
            "mnist-affine",
            "--out",
            str(tmp_path / "x.onnx"),
            "--precision",
            "int8",
            "--distortion",
            "none",
        ],
        "stn-deploy data fetch",
        env={"STN_DEPLOY_CACHE": str(tmp_path / "empty-cache")},
    )


def test_cli_export_precision(tmp_path):
    torch.manual_seed(0)
    config = zoo_config("mnist-affine", normalization={"mean": [0.1307], "std": [0.3081]})
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model("mnist-affine", **config.args), config)
    runner = CliRunner()
    base = ["export", str(ckpt), "--out", str(tmp_path)]
    for extra in (
        [],
        ["--precision", "fp16"],
        [
            "--precision",
            "int8",
            "--synthetic-calibration",
            "--distortion",
            "none",
            "--calibration-count",
            "16",
        ],
    ):
        r = runner.invoke(main, base + extra)
        assert r.exit_code == 0, r.output
    fp32 = tmp_path / "mnist-affine-native.onnx"
    assert stn_metadata(onnx.load(fp32))["precision"] == "fp32"
    ref = read_bundle(fp32.with_suffix(".io.npz"))
    for p in ("fp16", "int8"):
        path = tmp_path / f"mnist-affine-native-{p}.onnx"
        assert stn_metadata(onnx.load(path))["precision"] == p
        got = read_bundle(path.with_suffix(".io.npz"))  # torch's fp32 outputs, as for fp32
        np.testing.assert_array_equal(ref.outputs["log_probs"], got.outputs["log_probs"])
        out = open_session("cpu", path).run({"image": got.inputs["image"]})["log_probs"]
        assert np.abs(np.exp(out) - np.exp(ref.outputs["log_probs"])).max() < 0.1


NO_TORCH = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None
    from click.testing import CliRunner
    import stn_deploy.cli
    src, out = sys.argv[1], sys.argv[2]
    for p, extra in (("int8", ["--synthetic-calibration", "--calibration-count", "16"]), ("fp16", [])):
        r = CliRunner().invoke(stn_deploy.cli.main, ["quantize", src, "--out", out + p + ".onnx",
                                                     "--precision", p, *extra])
        assert r.exit_code == 0, r.output
    print("torch-free ok", sorted(m for m in sys.modules if m.startswith("torch")))
    """
)


def test_quantize_works_without_torch(fp32_models, tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(fp32_models["native"]), str(tmp_path / "m-")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "torch-free ok ['torch']" in r.stdout


def test_localization_fp32_keeps_the_localisation_net_float(fp32_models):
    q, meta = apply_precision(
        onnx.load(fp32_models["native"]), "int8", calibration=SYNTH, localization_fp32=True
    )
    excluded = set(meta["calibration"]["excluded_nodes"])
    loc = {"/stn/localization/localization.0/Conv", "/stn/localization/localization.3/Conv"}
    assert loc | {"/stn/fc_loc/fc_loc.0/Gemm"} <= excluded
    assert meta["calibration"]["quantised_layers"] == [
        "/conv1/Conv",
        "/conv2/Conv",
        "/fc1/Gemm",
        "/fc2/Gemm",
    ]
    inits = {i.name: i for i in q.graph.initializer}
    for n in q.graph.node:
        if n.name in loc:
            assert inits[n.input[1]].data_type == TensorProto.FLOAT


def test_logits_are_not_rounded_to_int8(fp32_models):
    q, meta = apply_precision(onnx.load(fp32_models["native"]), "int8", calibration=SYNTH)
    assert meta["calibration"]["float_scores"] == ["/fc2/Gemm_output_0"]
    softmax = next(n for n in q.graph.node if n.op_type == "LogSoftmax")
    assert softmax.input[0] == "/fc2/Gemm_output_0"


def test_fp16_log_probs_are_finite_on_the_reference_evaluator(fp32_models):
    h, meta = apply_precision(onnx.load(fp32_models["native"]), "fp16")
    assert meta["fp16"]["fp32_ops"]["LogSoftmax"] == 1  # exp underflows in fp16
    x = _x(4) * 20  # confident, far-apart logits
    out = open_session("reference", h).run({"image": x})["log_probs"]
    assert np.isfinite(out).all()


def test_int8_static_batch_model(tmp_path):
    loaded = _loaded(tmp_path)
    path = export_model(loaded, tmp_path / "s.onnx", lowering="native", dynamic_batch=False).path
    q, _ = apply_precision(onnx.load(path), "int8", calibration=SYNTH)
    assert open_session("cpu", q).run({"image": _x(1)})["log_probs"].shape == (1, 10)


@pytest.mark.parametrize("lowering", ["native", "portable"])
def test_int8_with_float_localisation_samples_exactly_as_fp32(tmp_path, lowering):
    """θ from an fp32 localisation net + the float grid and sampler: the rectified image (an
    --expose-stn output, also read by the int8 classifier) is fp32's, bit for bit."""
    loaded = _loaded(tmp_path)
    path = export_model(loaded, tmp_path / "e.onnx", lowering=lowering, expose_stn=True).path
    fp32 = onnx.load(path)
    q, meta = apply_precision(fp32, "int8", calibration=SYNTH, localization_fp32=True)
    assert meta["calibration"]["float_outputs"] == ["rectified"]
    x = _x(8)
    ref = open_session("cpu", fp32).run({"image": x})
    out = open_session("cpu", q).run({"image": x})
    np.testing.assert_array_equal(out["theta"], ref["theta"])
    np.testing.assert_array_equal(out["rectified"], ref["rectified"])
    assert not np.array_equal(out["log_probs"], ref["log_probs"])  # the classifier is int8


def test_interleaved_timing_runs_every_candidate_every_round():
    from stn_deploy.precision.latency import interleaved_median_us

    calls = []
    t = interleaved_median_us(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        rounds=3,
        iters=2,
        warmup=1,
    )
    assert set(t) == {"a", "b"} and calls.count("a") == calls.count("b") == 1 + 3 * 3
    assert t["a"]["min_round_us"] <= t["a"]["median_us"] <= t["a"]["max_round_us"]
