"""stn-deploy export: every lowering x zoo family at parity with torch on ORT CPU, metadata,
golden bundles, determinism, user modules with F.affine_grid, and the error paths."""

import textwrap
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from tolerances import SAMPLED, assert_close

from stn_deploy.cli import main
from stn_deploy.errors import StnDeployError
from stn_deploy.export.golden import check_bundle_matches, read_bundle
from stn_deploy.export.metadata import KEYS, stn_metadata
from stn_deploy.pytorch.exporter import export_model
from stn_deploy.pytorch.models import (
    build_model,
    load_factory,
    load_model,
    save_checkpoint,
    zoo_config,
)

SAMPLERS = [
    ("native", 17, False),
    ("portable", 11, False),
    ("custom", 13, False),
    ("custom", 13, True),
    ("ort-contrib", 11, False),
]


def _loaded(tmp_path, name, **args):
    torch.manual_seed(0)
    config = zoo_config(name, normalization={"mean": [0.1307], "std": [0.3081]}, in_size=42, **args)
    model = build_model(name, **config.args)
    with torch.no_grad():  # move every STN away from the identity so the sampler really warps
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = save_checkpoint(tmp_path / f"{name}.pt", model, config)
    return load_model(str(path))


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


@pytest.mark.parametrize("sampler,opset,inline", SAMPLERS, ids=lambda v: str(v))
@pytest.mark.parametrize(
    "name,args",
    [
        ("mnist-affine", {}),
        ("mnist-tps", {"mode": "bicubic", "padding_mode": "border"}),
        ("mnist-projective", {"mode": "nearest", "align_corners": True}),
        ("mnist-attention", {"padding_mode": "reflection"}),
        ("mnist-affine-series", {}),
        ("mnist-affine-parallel", {}),
    ],
)
def test_parity_with_torch_for_every_lowering(tmp_path, name, args, sampler, opset, inline):
    loaded = _loaded(tmp_path, name, **args)
    s = export_model(
        loaded, tmp_path / "m.onnx", lowering=sampler, opset=opset, inline=inline, target="generic"
    )
    model = onnx.load(s.path)
    ops = Counter((n.domain, n.op_type) for n in model.graph.node)
    assert ("", "AffineGrid") not in ops
    assert (("", "GridSample") in ops) == (sampler == "native")
    assert (("com.microsoft", "GridSample") in ops) == (sampler == "ort-contrib")
    assert (("stn_deploy", "GridSample") in ops) == (sampler == "custom" and not inline)
    assert bool(model.functions) == (sampler == "custom" and not inline)
    assert {i.domain or "": i.version for i in model.opset_import}[""] == opset
    x = np.random.default_rng(1).standard_normal((5, 1, 42, 42)).astype(np.float32)
    with torch.inference_mode():
        ref = loaded.model(torch.from_numpy(x)).numpy()
    (got,) = _run(s.path, x)  # batch 5 though traced with 1: dynamic batch
    # log-probabilities: assert_close covers float32 reordering in the convolutions (scaled by
    # the magnitude of the log-probs); a wrong tap, weight or padding rule moves them by 1e-2
    assert_close(got, ref)
    golden = read_bundle(s.golden_path)
    check_bundle_matches(golden, s.path)
    (g_out,) = _run(s.path, golden.inputs["image"])
    assert_close(g_out, golden.outputs["log_probs"])


def test_metadata_determinism_and_golden(tmp_path):
    loaded = _loaded(tmp_path, "mnist-affine")
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a = export_model(loaded, tmp_path / "a" / "m.onnx", target="tensorrt")
    b = export_model(loaded, tmp_path / "b" / "m.onnx", target="tensorrt")
    assert open(a.path, "rb").read() == open(b.path, "rb").read()
    assert open(a.golden_path, "rb").read() == open(b.golden_path, "rb").read()
    meta = stn_metadata(onnx.load(a.path))
    assert set(KEYS) <= set(meta)
    assert (meta["lowering"], meta["opset"], meta["target"], meta["transform"]) == (
        "native",
        "17",
        "tensorrt",
        "affine",
    )
    assert meta["normalization_mean"] == "[0.1307]"
    model = onnx.load(a.path)
    onnx.checker.check_model(model, full_check=True)
    gs = [n for n in model.graph.node if n.op_type == "GridSample"]
    assert [a.s for n in gs for a in n.attribute if a.name == "mode"] == [
        b"bilinear"
    ]  # not 'linear'


def test_default_name_and_directory_output(tmp_path):
    (tmp_path / "out").mkdir()
    s = export_model(_loaded(tmp_path, "mnist-tps"), tmp_path / "out", target="generic")
    assert s.path.endswith("out/mnist-tps-portable.onnx") and s.golden_path.endswith(
        "mnist-tps-portable.io.npz"
    )


def test_expose_stn_and_static_batch(tmp_path):
    loaded = _loaded(tmp_path, "mnist-affine")
    s = export_model(
        loaded, tmp_path / "e.onnx", expose_stn=True, dynamic_batch=False, lowering="portable"
    )
    model = onnx.load(s.path)
    assert [o.name for o in model.graph.output] == ["log_probs", "theta", "rectified"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    x = np.random.default_rng(0).standard_normal((1, 1, 42, 42)).astype(np.float32)
    lp, theta, rect = _run(s.path, x)
    with torch.inference_mode():
        r, t = loaded.model.stn.forward_with_theta(torch.from_numpy(x))
    assert_close(theta, t)
    assert_close(rect, r, atol_scale=SAMPLED)
    assert rect.shape == (1, 1, 28, 28)


USER_STN = textwrap.dedent(
    """
    import torch
    import torch.nn.functional as F

    class UserSTN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.loc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 24 * 20, 6))
            with torch.no_grad():
                self.loc[1].weight.mul_(0.01)
                self.loc[1].bias.copy_(torch.tensor([0.8, 0.3, 0.1, -0.3, 0.9, 0.0]))
            self.head = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            theta = self.loc(x).view(-1, 2, 3)
            grid = torch.nn.functional.affine_grid(theta, [x.shape[0], 3, 16, 12], align_corners=True)
            return self.head(F.grid_sample(x, grid, mode="bicubic", padding_mode="reflection", align_corners=True))

    def make():
        return UserSTN()
    """
)


@pytest.mark.parametrize("sampler,opset", [("native", 16), ("portable", 11)])
def test_user_module_with_affine_grid(tmp_path, monkeypatch, sampler, opset):
    (tmp_path / "user_stn.py").write_text(USER_STN)
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_factory("user_stn:make", "3,24,20")
    s = export_model(loaded, tmp_path / "u.onnx", lowering=sampler, opset=opset, target="generic")
    ops = Counter(n.op_type for n in onnx.load(s.path).graph.node)
    assert "AffineGrid" not in ops and "MatMul" in ops
    x = np.random.default_rng(0).random((3, 3, 24, 20), dtype=np.float32)
    with torch.inference_mode():
        ref = loaded.model(torch.from_numpy(x)).numpy()
    (got,) = _run(s.path, x)
    assert_close(got, ref)
    assert read_bundle(s.golden_path).meta["source"].startswith("seeded uniform noise")


def test_export_errors_leave_nothing(tmp_path):
    loaded = _loaded(tmp_path, "mnist-affine")
    with pytest.raises(StnDeployError, match="needs opset 16"):
        export_model(loaded, tmp_path / "n.onnx", lowering="native", opset=11)
    cnn = _loaded(tmp_path, "mnist-cnn")
    with pytest.raises(StnDeployError, match="--expose-stn needs"):
        export_model(cnn, tmp_path / "c.onnx", expose_stn=True)
    with pytest.raises(StnDeployError, match="unknown target"):
        export_model(loaded, tmp_path / "t.onnx", target="coreml")
    with pytest.raises(StnDeployError, match="output directory .*missing does not exist"):
        export_model(loaded, tmp_path / "missing" / "m.onnx")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.npz"))


def test_cli_export_and_inspect(tmp_path):
    (tmp_path / "x").mkdir()
    loaded_ck = _loaded(tmp_path, "mnist-affine").source
    r = CliRunner().invoke(
        main, ["export", loaded_ck, "--target", "openvino", "--out", str(tmp_path / "x")]
    )
    assert r.exit_code == 0, r.output
    assert "native, opset 16" in r.output
    r = CliRunner().invoke(
        main, ["inspect", str(tmp_path / "x" / "mnist-affine-native.onnx"), "--json"]
    )
    assert r.exit_code == 0 and '"lowering": "native"' in r.output
    r = CliRunner().invoke(
        main,
        [
            "export",
            loaded_ck,
            "--lowering",
            "native",
            "--opset",
            "11",
            "--out",
            str(tmp_path / "y.onnx"),
        ],
    )
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "opset 16" in r.output
    assert not (tmp_path / "y.onnx").exists()
    r = CliRunner().invoke(main, ["export", "no_such_mod:make", "--out", str(tmp_path / "z.onnx")])
    assert r.exit_code == 1 and "input shape" in r.output


def test_export_leaves_torch_onnx_export_stock(tmp_path):
    import io

    import torch.nn.functional as F

    export_model(_loaded(tmp_path, "mnist-affine"), tmp_path / "m.onnx", lowering="portable")
    assert F.affine_grid.__module__ == "torch.nn.functional"

    class Warp(torch.nn.Module):
        def forward(self, x, grid):
            return F.grid_sample(x, grid, align_corners=False)

    buf = io.BytesIO()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Warp(),
            (torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4, 2)),
            buf,
            opset_version=16,
            dynamo=False,
        )
    ops = {(n.domain, n.op_type) for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert ("", "GridSample") in ops and ("com.microsoft", "GridSample") not in ops


def test_model_without_sampler_is_exported_with_a_note(tmp_path):
    ck = _loaded(tmp_path, "mnist-cnn").source
    r = CliRunner().invoke(main, ["export", ck, "--out", str(tmp_path / "cnn.onnx")])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("note: the model has no grid sampler")
    x = np.random.default_rng(0).standard_normal((2, 1, 42, 42)).astype(np.float32)
    with torch.inference_mode():
        ref = load_model(ck).model(torch.from_numpy(x)).numpy()
    assert_close(_run(tmp_path / "cnn.onnx", x)[0], ref)


def test_auto_times_candidates_at_parity_and_keeps_the_fastest(tmp_path):
    import json

    loaded = _loaded(tmp_path, "mnist-affine")
    s = export_model(loaded, tmp_path / "auto.onnx", lowering="auto", target="ort-cpu")
    auto = s.auto
    assert auto["provider"] == "CPUExecutionProvider"
    assert set(auto["candidates"]) == {"native", "portable", "custom", "ort-contrib"}
    scores = {
        c: r["batch1_us"] + r["batch64_us"] for c, r in auto["candidates"].items() if r["at_parity"]
    }
    assert auto["chosen"] == min(scores, key=scores.get) == s.lowering
    meta = stn_metadata(onnx.load(s.path))
    assert json.loads(meta["auto"])["chosen"] == meta["lowering"] == auto["chosen"]
    low = export_model(loaded, tmp_path / "auto11.onnx", lowering="auto", opset=11)
    assert "skipped" in low.auto["candidates"]["native"] and low.lowering != "native"


@pytest.mark.parametrize(
    "target,match", [("tensorrt", "pick --lowering"), ("openvino", "pick --lowering")]
)
def test_auto_needs_a_runtime_to_time_on(tmp_path, target, match):
    with pytest.raises(StnDeployError, match=match):
        export_model(
            _loaded(tmp_path, "mnist-affine"), tmp_path / "a.onnx", lowering="auto", target=target
        )
    assert not (tmp_path / "a.onnx").exists()


def test_auto_for_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(StnDeployError, match="needs CUDAExecutionProvider"):
        export_model(
            _loaded(tmp_path, "mnist-affine"),
            tmp_path / "a.onnx",
            lowering="auto",
            target="ort-cuda",
        )


@pytest.mark.parametrize("align", [False, True])
def test_attention_exports_in_the_exact_separable_form(tmp_path, align):
    loaded = _loaded(tmp_path, "mnist-attention", align_corners=align)
    with torch.no_grad():  # a zoom-in with a shift, partly outside the canvas
        loaded.model.stn.fc_loc[-1].bias.copy_(torch.tensor([0.7, 0.35, -0.4]))
    s = export_model(loaded, tmp_path / "a.onnx", lowering="portable", opset=11)
    model = onnx.load(s.path)
    ops = Counter(n.op_type for n in model.graph.node)
    assert "GridSample" not in ops and "GatherElements" not in ops and ops["MatMul"] >= 2
    assert s.lowering == "separable" and s.separable == 1
    assert stn_metadata(model)["lowering"] == "separable"
    x = np.random.default_rng(2).standard_normal((4, 1, 42, 42)).astype(np.float32)
    with torch.inference_mode():
        ref = loaded.model(torch.from_numpy(x)).numpy()
        rect = loaded.model.stn(torch.from_numpy(x))
    assert_close(_run(s.path, x)[0], ref)
    e = export_model(loaded, tmp_path / "e.onnx", expose_stn=True, lowering="portable", opset=11)
    assert_close(_run(e.path, x)[2], rect, atol_scale=SAMPLED)


def test_separable_only_where_it_is_exact(tmp_path):
    loaded = _loaded(tmp_path, "mnist-attention", padding_mode="reflection")
    s = export_model(loaded, tmp_path / "r.onnx", lowering="native")
    assert s.separable == 0 and s.lowering == "native"
    plain = _loaded(tmp_path, "mnist-attention")
    off = export_model(plain, tmp_path / "off.onnx", lowering="native", separable=False)
    assert off.separable == 0
    assert "GridSample" in {n.op_type for n in onnx.load(off.path).graph.node}
