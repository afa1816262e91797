"""Checkpoints (state_dict + JSON config, weights_only) and loading models from any source."""

import json
import textwrap

import pytest
import torch

from stn_deploy.errors import StnDeployError
from stn_deploy.pytorch.models import (
    build_model,
    load_checkpoint,
    load_factory,
    load_model,
    parse_shape,
    save_checkpoint,
    zoo_config,
)
from stn_deploy.pytorch.models.checkpoint import FORMAT


def _saved(tmp_path, name="mnist-affine", **args):
    torch.manual_seed(0)
    config = zoo_config(name, normalization={"mean": [0.1307], "std": [0.3081]}, **args)
    model = build_model(name, **config.args)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_checkpoint(tmp_path / "ck.pt", model, config)
    return path, model.eval(), config


@pytest.mark.parametrize(
    "name", ["mnist-affine", "mnist-tps", "mnist-cnn", "mnist-affine-parallel"]
)
def test_round_trip_gives_identical_outputs(tmp_path, name):
    path, model, config = (
        _saved(tmp_path, name, in_size=42, mode="bicubic")
        if name != "mnist-cnn"
        else _saved(tmp_path, name, in_size=42)
    )
    loaded = load_checkpoint(path)
    assert loaded.config == config
    assert loaded.input_shape == (1, 42, 42)
    assert loaded.config.normalization == {"mean": [0.1307], "std": [0.3081]}
    assert loaded.config.class_labels == [str(i) for i in range(10)]
    x = torch.rand(4, 1, 42, 42)
    torch.testing.assert_close(loaded.model(x), model(x), atol=0, rtol=0)
    assert not loaded.model.training


def _rewrite(path, mutate):
    payload = torch.load(path, weights_only=True)
    mutate(payload)
    torch.save(payload, path)


def test_config_mismatch_names_first_key(tmp_path):
    path, _, _ = _saved(tmp_path, in_size=42)

    def change_size(p):
        cfg = json.loads(p["config"])
        cfg["args"]["in_size"] = 28
        p["config"] = json.dumps(cfg)

    _rewrite(path, change_size)
    with pytest.raises(
        StnDeployError,
        match=r"key 'stn\.fc_loc\.0\.weight' has shape \(32, 490\), the model expects \(32, 90\)",
    ):
        load_checkpoint(path)


def test_missing_and_unexpected_keys(tmp_path):
    path, _, _ = _saved(tmp_path)
    _rewrite(path, lambda p: p["state_dict"].pop("fc2.bias"))
    with pytest.raises(StnDeployError, match="key 'fc2.bias' is missing"):
        load_checkpoint(path)
    path, _, _ = _saved(tmp_path)
    _rewrite(path, lambda p: p["state_dict"].__setitem__("extra.weight", torch.zeros(1)))
    with pytest.raises(StnDeployError, match="unexpected key 'extra.weight'"):
        load_checkpoint(path)


def test_bad_files(tmp_path):
    with pytest.raises(StnDeployError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(StnDeployError, match="cannot read checkpoint"):
        load_checkpoint(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(StnDeployError, match="not a stn-deploy checkpoint"):
        load_checkpoint(other)
    bad_json = tmp_path / "badjson.pt"
    torch.save({"format": FORMAT, "config": "{nope", "state_dict": {}}, bad_json)
    with pytest.raises(StnDeployError, match="not valid JSON"):
        load_checkpoint(bad_json)


class _Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickled_code_is_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "config": "{}", "state_dict": {}, "x": _Evil()}, path)
    with pytest.raises(StnDeployError, match="cannot read checkpoint"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


FACTORY_SRC = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(1 * 8 * 8, 3)
        def forward(self, x):
            return self.fc(x.flatten(1))

    def make():
        return Tiny()

    def not_a_module():
        return 42
    """
)


def test_factory_loading_and_errors(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(FACTORY_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_factory("user_models:make", "1,8,8")
    assert loaded.input_shape == (1, 8, 8) and loaded.config.arch == "user_models:make"
    assert load_model("user_models:make", input_shape=(1, 1, 8, 8)).model(
        torch.zeros(2, 1, 8, 8)
    ).shape == (2, 3)
    by_path = load_factory(f"{tmp_path / 'user_models.py'}:make", "1x8x8")
    assert by_path.model(torch.zeros(1, 1, 8, 8)).shape == (1, 3)
    with pytest.raises(StnDeployError, match=r"does not accept input shape \(1, 28, 28\)"):
        load_factory("user_models:make", "1,28,28")
    with pytest.raises(StnDeployError, match="needs an input shape"):
        load_factory("user_models:make", None)
    with pytest.raises(StnDeployError, match="returned int"):
        load_factory("user_models:not_a_module", "1,8,8")
    with pytest.raises(StnDeployError, match="has no attribute 'missing'"):
        load_factory("user_models:missing", "1,8,8")
    with pytest.raises(StnDeployError, match="cannot import factory module 'no_such_module_xyz'"):
        load_factory("no_such_module_xyz:make", "1,8,8")


def test_factory_checkpoint_round_trip(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(FACTORY_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_factory("user_models:make", "1,8,8")
    path = save_checkpoint(tmp_path / "f.pt", loaded.model, loaded.config)
    with pytest.raises(StnDeployError, match="which would run code; pass trust_factory=True"):
        load_model(str(path))  # a factory is code: the checkpoint alone may not run it
    again = load_model(str(path), trust_factory=True)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(again.model(x), loaded.model(x))
    named = load_model("user_models:make", checkpoint=path)  # the user names it: trusted
    torch.testing.assert_close(named.model(x), loaded.model(x))


def test_load_model_resolution(tmp_path):
    path, model, _ = _saved(tmp_path)
    assert load_model("mnist-affine").config.arch == "mnist-affine"
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(load_model("mnist-affine", checkpoint=path).model(x), model(x))
    torch.testing.assert_close(load_model(str(path)).model(x), model(x))
    with pytest.raises(StnDeployError, match="holds 'mnist-affine', not 'mnist-tps'"):
        load_model("mnist-tps", checkpoint=path)
    with pytest.raises(StnDeployError, match="unknown model 'resnet'"):
        load_model("resnet")


@pytest.mark.parametrize(
    "text,shape",
    [("1,28,28", (1, 28, 28)), ("1x42x42", (1, 42, 42)), ("8,3,224,224", (3, 224, 224))],
)
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["28,28", "a,b,c", "1,0,28"])
def test_parse_shape_errors(text):
    with pytest.raises(StnDeployError, match="input shape"):
        parse_shape(text)


def test_a_factory_file_using_dataclasses_loads(tmp_path):
    """A factory file is a module like any other: @dataclass with postponed annotations looks
    itself up in sys.modules (it failed with AttributeError when the file was run unregistered)."""
    from stn_deploy.pytorch.models.loading import load_model

    f = tmp_path / "dc_factory.py"
    f.write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "import torch\n\n"
        "@dataclass\n"
        "class Cfg:\n"
        "    scale: float = 2.0\n\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, cfg: Cfg):\n"
        "        super().__init__()\n"
        "        self.cfg = cfg\n\n"
        "    def forward(self, x):\n"
        "        return x * self.cfg.scale\n\n"
        "def make():\n"
        "    return Net(Cfg())\n"
    )
    loaded = load_model(f"{f}:make", input_shape="1,4,4")
    assert loaded.model.cfg.scale == 2.0
