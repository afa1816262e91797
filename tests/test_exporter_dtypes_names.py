"""Issue 13: what the exporter takes from the user's module — its float dtype (fp16, fp64), its
input name (``forward``'s first parameter), volumes given as C,D,H,W — and which torch exporter
an opset gets (torch.export at 16 and above, down-converted from its 18; TorchScript below)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from tolerances import assert_close  # noqa: E402

import stn_deploy  # noqa: E402
from stn_deploy.errors import StnDeployError  # noqa: E402
from stn_deploy.export.golden import read_bundle  # noqa: E402
from stn_deploy.export.metadata import stn_metadata  # noqa: E402
from stn_deploy.pytorch.exporter import export_model  # noqa: E402
from stn_deploy.pytorch.models.loading import load_factory, load_model  # noqa: E402

USER = textwrap.dedent(
    """
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Warp(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(2, 6)
            with torch.no_grad():
                self.fc.weight.mul_(0.1)
                self.fc.bias.copy_(torch.tensor([0.9, 0.2, 0.05, -0.2, 1.1, -0.1]))
            self.head = nn.Conv2d(2, 3, 3)

        def forward(self, frames):
            theta = self.fc(frames.mean((2, 3))).view(-1, 2, 3)
            grid = F.affine_grid(theta, list(frames.shape), align_corners=False)
            return self.head(F.grid_sample(frames, grid, padding_mode="border", align_corners=False))


    def warp():
        return Warp().eval()


    def warp_fp16():
        return Warp().half().eval()


    def warp_fp64():
        return Warp().double().eval()


    class WarpOnly(Warp):
        def forward(self, frames):
            theta = self.fc(frames.mean((2, 3))).view(-1, 2, 3)
            grid = F.affine_grid(theta, list(frames.shape), align_corners=False)
            return F.grid_sample(frames, grid, padding_mode="border", align_corners=False)


    def warp_only_fp64():
        return WarpOnly().double().eval()


    class GivenTheta(nn.Module):
        # a warp whose transform is an input: forward(image, theta)

        def forward(self, image, theta):
            grid = F.affine_grid(theta, list(image.shape), align_corners=False)
            return F.grid_sample(image, grid, mode="bicubic", align_corners=False)


    def given_theta():
        return GivenTheta().eval()
    """
)


@pytest.fixture
def user(tmp_path, monkeypatch):
    (tmp_path / "user_warp.py").write_text(USER)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_input_named_after_forward_output_not_log_probs(user):
    loaded = load_factory("user_warp:warp", "2,12,10")
    r = export_model(loaded, user / "w.onnx")
    model = onnx.load(r.path)
    assert [i.name for i in model.graph.input] == ["frames"]
    assert [o.name for o in model.graph.output] == ["output"]  # an image, not log-probs
    assert list(read_bundle(r.golden_path).inputs) == ["frames"]
    assert stn_metadata(model)["input_layout"].startswith("frames: NCHW float32 [2, 12, 10]")


def test_zoo_models_keep_image_and_log_probs(tmp_path):
    r = export_model(load_model("mnist-affine"), tmp_path)
    model = onnx.load(r.path)
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["log_probs"]
    # nodes named after their module, as TorchScript names them; no per-node metadata (the
    # exporter's stack traces would carry this checkout's paths into the file)
    names = [n.name for n in model.graph.node]
    assert "/stn/fc_loc/fc_loc.2/Gemm" in names and "/fc2/Gemm" in names
    assert all(not n.metadata_props for n in model.graph.node)
    assert str(Path(stn_deploy.__file__).parent).encode() not in Path(r.path).read_bytes()


@pytest.mark.parametrize("lowering", ["native", "portable", "custom"])
def test_fp16_model_exports_in_fp16(user, lowering):
    """An fp16 module: fp16 input and output, checked against torch's fp16 at the fp16
    tolerance (the export's self-check), and again here on other inputs."""
    loaded = load_factory("user_warp:warp_fp16", "2,12,10")
    r = export_model(loaded, user / f"h-{lowering}.onnx", lowering=lowering)
    model = onnx.load(r.path)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    x = np.random.default_rng(1).random((3, 2, 12, 10)).astype(np.float16)
    got = _run(r.path, x)
    assert got.dtype == np.float16
    with torch.inference_mode():
        ref = loaded.model(torch.from_numpy(x)).float().numpy()
    assert_close(got.astype(np.float32), ref, atol_scale=2e-2)


def test_fp64_models(user):
    """ONNX Runtime CPU has no float64 Conv: the self-check cannot run such a file, which is
    one line naming the way round and leaves nothing. A float64 warp (base grid in θ's dtype)
    in the portable lowering runs there, passes the check, and matches torch to 1e-12."""
    loaded = load_factory("user_warp:warp_fp64", "2,12,10")
    with pytest.raises(StnDeployError, match=r"cannot load .*check=False") as info:
        export_model(loaded, user / "d.onnx")
    assert "\n" not in str(info.value)
    assert not list(user.glob("d.*"))
    loaded = load_factory("user_warp:warp_only_fp64", "2,12,10")
    r = export_model(loaded, user / "d.onnx", lowering="portable")
    model = onnx.load(r.path)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    x = np.random.default_rng(2).random((2, 2, 12, 10))
    got = _run(r.path, x)
    with torch.inference_mode():
        ref = loaded.model(torch.from_numpy(x)).numpy()
    assert got.dtype == np.float64
    assert_close(got, ref, atol_scale=1e-12)


@pytest.mark.parametrize("opset", [16, 17, 18])
def test_dynamo_writes_the_asked_opset(user, opset):
    """torch.export traces at opset 18; 16 and 17 come from onnx's version converter (with the
    opset-18 reduction attribute dropped), and the file is checked like any other."""
    loaded = load_factory("user_warp:warp", "2,12,10")
    r = export_model(loaded, user / f"o{opset}.onnx", opset=opset)
    model = onnx.load(r.path)
    assert r.opset == opset and '"exporter": "dynamo"' in stn_metadata(model)["export_args"]
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(3).random((4, 2, 12, 10), dtype=np.float32)
    with torch.inference_mode():
        ref = loaded.model(torch.from_numpy(x)).numpy()
    assert_close(_run(r.path, x), ref)


def test_below_opset_16_the_default_is_torchscript(user):
    loaded = load_factory("user_warp:warp", "2,12,10")
    r = export_model(loaded, user / "g.onnx", target="generic")
    assert r.opset == 11 and r.lowering == "portable"
    assert '"exporter": "torchscript"' in stn_metadata(onnx.load(r.path))["export_args"]
    with pytest.raises(StnDeployError, match="opset 16 or newer"):
        export_model(loaded, user / "h.onnx", target="generic", exporter="dynamo")


def test_torchlib_registry_is_built_once_per_opset(user):
    from stn_deploy.pytorch import dynamo_trace

    loaded = load_factory("user_warp:warp", "2,12,10")
    first = export_model(loaded, user / "a.onnx")
    cached = dict(dynamo_trace._REGISTRIES)
    assert 18 in cached
    second = export_model(loaded, user / "b.onnx")
    assert dynamo_trace._REGISTRIES == cached  # the same registry objects, not rebuilt
    # and the copies it hands out do not leak our translations into the cached one
    assert open(first.path, "rb").read() == open(second.path, "rb").read()


@pytest.mark.parametrize("shape", ["1,6,10,12", "1x1x6x10x12"])
def test_volume_shape_given_as_cdhw_or_ncdhw(shape):
    from corpus.models import by_name

    loaded = load_model(by_name("stn-volumetric").ref, input_shape=shape)
    assert loaded.input_shape == (1, 6, 10, 12)


def test_image_shape_given_as_nchw_still_drops_the_batch():
    from corpus.models import by_name

    loaded = load_model(by_name("stn-two-grids").ref, input_shape="4,1,28,28")
    assert loaded.input_shape == (1, 28, 28)


def test_trace_is_reused_across_lowerings_until_a_weight_changes(user):
    """Exporting one model in several lowerings traces it once; an in-place weight update
    (a training step) makes the next export trace again, and that file follows the new weights."""
    from stn_deploy.pytorch import tracing

    tracing._TRACES.clear()
    loaded = load_factory("user_warp:warp", "2,12,10")
    export_model(loaded, user / "n.onnx", lowering="native")
    export_model(loaded, user / "p.onnx", lowering="portable")
    assert len(tracing._TRACES) == 1
    with torch.no_grad():
        loaded.model.fc.bias.add_(0.05)
    r = export_model(loaded, user / "n2.onnx", lowering="native")
    assert len(tracing._TRACES) == 2
    x = np.random.default_rng(4).random((3, 2, 12, 10), dtype=np.float32)
    with torch.inference_mode():
        ref = loaded.model(torch.from_numpy(x)).numpy()
    assert_close(_run(r.path, x), ref)
    assert (user / "n.onnx").read_bytes() != (user / "n2.onnx").read_bytes()


@pytest.mark.parametrize("lowering", ["native", "portable"])
def test_several_inputs_named_from_forward(user, lowering):
    """``forward(self, image, theta)`` with ``--input-shape "2,12,10;2,3"``: two graph inputs
    named after the parameters, both with a dynamic batch, both in the golden bundle; the file
    matches torch at another batch."""
    loaded = load_factory("user_warp:given_theta", "2,12,10;2,3")
    assert loaded.input_shapes == [(2, 12, 10), (2, 3)]
    r = export_model(loaded, user / f"t-{lowering}.onnx", lowering=lowering)
    model = onnx.load(r.path)
    assert [i.name for i in model.graph.input] == ["image", "theta"]
    assert list(read_bundle(r.golden_path).inputs) == ["image", "theta"]
    rng = np.random.default_rng(5)
    x = rng.random((5, 2, 12, 10), dtype=np.float32)
    theta = (np.eye(2, 3) + 0.1 * rng.standard_normal((5, 2, 3))).astype(np.float32)
    sess = ort.InferenceSession(r.path, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"image": x, "theta": theta})
    with torch.inference_mode():
        ref = loaded.model(torch.from_numpy(x), torch.from_numpy(theta)).numpy()
    assert_close(got, ref)


def test_bad_multi_input_shape_is_one_line(user):
    with pytest.raises(StnDeployError, match="does not accept input shape") as info:
        load_factory("user_warp:given_theta", "2,12,10;3,3")
    assert "\n" not in str(info.value)
