"""The paper's distorted-MNIST networks in the zoo: layers, identity start, export."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from tolerances import SAMPLED, assert_close

from stn_deploy.pytorch.exporter import export_model
from stn_deploy.pytorch.models import ZOO, build_model, count_parameters, load_model

PAPER_ST = [n for n in ZOO if n.startswith("paper-st-cnn")]


def _conv_params(c_in, c_out, k):
    return c_in * c_out * k * k + c_out


@pytest.mark.parametrize("in_size,side", [(28, 2), (42, 5), (60, 10)])
def test_paper_cnn_layers_and_parameter_count(in_size, side):
    m = build_model("paper-cnn", in_size=in_size)
    assert m.stn is None and m.dropout == 0.0
    assert (m.conv1.kernel_size, m.conv1.out_channels) == ((9, 9), 32)
    assert (m.conv2.kernel_size, m.conv2.out_channels) == ((7, 7), 32)
    # conv9 (no padding), pool 2, conv7, pool 2: side ((S - 8) // 2 - 6) // 2
    assert ((in_size - 8) // 2 - 6) // 2 == side
    expected = _conv_params(1, 32, 9) + _conv_params(32, 32, 7) + 32 * side * side * 10 + 10
    assert count_parameters(m) == expected


@pytest.mark.parametrize("name", PAPER_ST)
def test_paper_st_cnn_passes_its_input_through_at_identity(name):
    torch.manual_seed(0)
    m = build_model(name, in_size=28).eval()
    x = torch.rand(4, 1, 28, 28)
    assert_close(m.rectify(x), x, atol_scale=SAMPLED)
    stn = m.stn
    assert [c.out_channels for c in stn.localization if isinstance(c, torch.nn.Conv2d)] == [20, 20]
    assert stn.fc_loc[0].out_features == 50


@pytest.mark.parametrize("name", PAPER_ST)
@pytest.mark.parametrize("in_size", [42, 60])
def test_paper_st_cnn_at_identity_resamples_the_whole_canvas(name, in_size):
    """On RTS/TC the untrained STN shows the whole canvas at 28x28: a plain bilinear resize."""
    torch.manual_seed(0)
    m = build_model(name, in_size=in_size).eval()
    x = torch.rand(2, 1, in_size, in_size)
    ref = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    assert_close(m.rectify(x), ref, atol_scale=SAMPLED)
    assert isinstance(m.stn.localization[0], torch.nn.MaxPool2d)  # pools large canvases first
    assert m(x).shape == (2, 10)


def test_loc_pool_argument():
    m = build_model("paper-st-cnn", in_size=42, loc_pool=1)
    assert isinstance(m.stn.localization[0], torch.nn.Conv2d)
    assert count_parameters(m) > count_parameters(build_model("paper-st-cnn", in_size=42))


@pytest.mark.parametrize("name", ["paper-cnn", "paper-st-cnn-tps"])
def test_paper_models_export_and_match_torch(tmp_path, name):
    torch.manual_seed(1)
    loaded = load_model(name, in_size=42)
    if loaded.model.stn is not None:  # move away from identity so the sampler really warps
        with torch.no_grad():
            loaded.model.stn.fc_loc[-1].weight.normal_(0, 0.02)
    result = export_model(loaded, tmp_path / "m.onnx")  # includes the self-check against torch
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((3, 1, 42, 42), dtype=np.float32)
    with torch.no_grad():
        ref = loaded.model.eval()(torch.from_numpy(x)).numpy()
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x})[:1]
    assert_close(out, ref)


def test_models_command_lists_the_paper_networks_with_their_counts():
    import json

    from click.testing import CliRunner

    from stn_deploy.cli import main

    r = CliRunner().invoke(main, ["models", "--json", "--in-size", "42"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row["params"] for row in json.loads(r.output)}
    for name in ["paper-cnn", *PAPER_ST]:
        assert rows[name] == count_parameters(build_model(name, in_size=42))
    assert rows["paper-cnn"] == 60842 and rows["paper-st-cnn"] == 69018
