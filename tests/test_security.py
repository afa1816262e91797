"""A checkpoint may not make stn-deploy run code (issue 11).

``torch.load(weights_only=True)`` runs no code, but a checkpoint's config ``arch`` may name a
``module:callable`` or ``file.py:callable`` factory, which is imported and called. Every command
that loads a checkpoint refuses one that names a factory unless the user opts in: with
``--trust-factory``, or by naming that same factory themselves as the model.
"""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from stn_deploy.cli import main
from stn_deploy.errors import StnDeployError
from stn_deploy.pytorch.models import ModelConfig, load_checkpoint, load_factory, load_model
from stn_deploy.pytorch.models.checkpoint import save_checkpoint
from stn_deploy.pytorch.models.loading import LoadedModel
from stn_deploy.pytorch.train_options import TrainOptions

SHAPE = [1, 28, 28]

# what the checkpoint names: imported, it writes the marker; called, it writes it again
FACTORY_SRC = textwrap.dedent(
    """
    import pathlib
    from torch import nn

    pathlib.Path({marker!r}).write_text("imported")

    def make():
        pathlib.Path({marker!r}).write_text("called")
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    """
)


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def _config(arch: str) -> ModelConfig:
    return ModelConfig(
        arch=arch,
        args={},
        input_shape=list(SHAPE),
        normalization={"mean": [0.1307], "std": [0.3081]},
        class_labels=[str(i) for i in range(10)],
    )


def _checkpoint(run_dir: Path, arch: str) -> Path:
    """``run_dir/checkpoint.pt`` naming ``arch``, with the state an interrupted run would have."""
    torch.manual_seed(0)
    model = _tiny()
    opts = TrainOptions(model=arch, distortion="none", epochs=2, schedule="none", synthetic=True)
    opts.limit_train, opts.limit_test = 32, 16
    state = {
        "epoch": 1,
        "options": json.dumps(asdict(opts)),
        "history": "[]",
        "optimizer": torch.optim.Adam(model.parameters(), lr=opts.lr).state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    return save_checkpoint(run_dir / "checkpoint.pt", model, _config(arch), state)


def _plant(kind: str, tmp_path: Path, monkeypatch) -> tuple[str, Path]:
    """A factory that leaves a marker file when run; returns (its reference, the marker).

    file: ``/abs/path/evil.py:make``; cwd: ``evil:make`` with evil.py in the current directory;
    installed: ``evil:make`` of a module already importable (like ``os:abort``).
    """
    name = f"evil_{kind}_{uuid.uuid4().hex[:8]}"  # never cached in sys.modules by another test
    marker = tmp_path / f"{name}.ran"
    where = {"file": tmp_path / "files", "cwd": tmp_path / "cwd", "installed": tmp_path / "site"}
    folder = where[kind]
    folder.mkdir()
    src = folder / f"{name}.py"
    src.write_text(FACTORY_SRC.format(marker=str(marker)))
    if kind == "cwd":
        monkeypatch.chdir(folder)
    if kind == "installed":
        monkeypatch.syspath_prepend(str(folder))
    return (f"{src}:make" if kind == "file" else f"{name}:make"), marker


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """An export of the tiny model (what verify/bench are pointed at)."""
    from stn_deploy.pytorch.exporter import export_model

    loaded = LoadedModel(_tiny().eval(), _config("tiny:make"), source="tiny")
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return Path(export_model(loaded, out, golden_count=2).path)


def _argv(command: str, ckpt: Path, onnx_path: Path, tmp_path: Path) -> list[str]:
    return {
        "export": ["export", ckpt, "--out", tmp_path / "x.onnx", "--golden-count", "2"],
        "evaluate": ["evaluate", ckpt, "--synthetic", "--distortion", "none", "--limit-test", "16"],
        "verify": ["verify", onnx_path, "--reference", ckpt, "--runtimes", "cpu",
                   "--inputs", "random", "--count", "2"],
        "bench": ["bench", onnx_path, "--reference", ckpt, "--runtimes", "cpu",
                  "--batch-sizes", "1", "--iters", "2", "--warmup", "0"],
        "run": ["run", ckpt, "--out", tmp_path / "report", "--synthetic",
                "--distortion", "none", "--runtimes", "cpu", "--batch-sizes", "1",
                "--duration", "0.01", "--compare", "none", "--no-progress"],
        "train": ["train", "--resume", "--out", ckpt.parent, "--no-progress"],
    }[command]  # fmt: skip


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


COMMANDS = ["export", "evaluate", "verify", "bench", "run", "train"]
KINDS = ["file", "cwd", "installed"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_checkpoint_naming_a_factory_is_refused(command, kind, tmp_path, monkeypatch, tiny_onnx):
    arch, marker = _plant(kind, tmp_path, monkeypatch)
    ckpt = _checkpoint(tmp_path / "run", arch)
    r = invoke(*_argv(command, ckpt, tiny_onnx, tmp_path))
    assert not marker.exists(), f"the checkpoint ran {arch}: {marker.read_text()}"
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert f"names factory {arch!r}" in lines[0] and "--trust-factory" in lines[0], r.output
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "report").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_trust_factory_loads_it(kind, tmp_path, monkeypatch):
    arch, marker = _plant(kind, tmp_path, monkeypatch)
    if kind == "cwd":  # a trusted checkpoint's module must be importable without the cwd
        monkeypatch.syspath_prepend(str(Path.cwd()))
    ckpt = _checkpoint(tmp_path / "run", arch)
    r = invoke(*_argv("evaluate", ckpt, Path("unused"), tmp_path), "--trust-factory")
    assert r.exit_code == 0, r.output
    assert f"{arch} on NONE test set" in r.output and marker.read_text() == "called"


def test_trust_factory_on_every_command(tmp_path, monkeypatch):
    arch, marker = _plant("installed", tmp_path, monkeypatch)
    ckpt = _checkpoint(tmp_path / "run", arch)
    onnx_path = tmp_path / "x.onnx"  # the export of this very checkpoint: verify passes
    for command in COMMANDS:
        r = invoke(*_argv(command, ckpt, onnx_path, tmp_path), "--trust-factory")
        assert r.exit_code == 0, f"{command}: {r.output}"
    assert marker.read_text() == "called"
    assert (tmp_path / "report" / "report.md").is_file()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_run"] == 1


def test_a_trusted_checkpoint_factory_does_not_import_from_the_cwd(tmp_path, monkeypatch):
    arch, marker = _plant("cwd", tmp_path, monkeypatch)
    assert "" not in sys.path and str(Path.cwd()) not in sys.path
    ckpt = _checkpoint(tmp_path / "run", arch)
    r = invoke(*_argv("evaluate", ckpt, Path("unused"), tmp_path), "--trust-factory")
    assert r.exit_code == 1 and r.output.startswith("Error: cannot import factory module")
    assert not marker.exists()


def test_naming_the_factory_yourself_opts_in(tmp_path, monkeypatch):
    """MODEL (or train --model) naming the checkpoint's factory is the user's own choice: it loads,
    importing from the current directory as a factory typed on the command line does."""
    arch, marker = _plant("cwd", tmp_path, monkeypatch)
    ckpt = _checkpoint(tmp_path / "run", arch)
    before = list(sys.path)
    r = invoke("evaluate", arch, "--weights", ckpt, "--synthetic", "--distortion", "none")
    assert r.exit_code == 0, r.output
    assert marker.read_text() == "called"
    assert sys.path == before  # the cwd was importable for the call only
    r = invoke("train", arch, "--resume", "--out", ckpt.parent, "--no-progress")
    assert r.exit_code == 0, r.output
    # another factory, or a zoo name, with that checkpoint is refused before anything runs
    r = invoke("export", "other:make", "--weights", ckpt, "--out", tmp_path / "y.onnx")
    assert r.exit_code == 1 and f"holds {arch!r}, not 'other:make'" in r.output
    r = invoke("evaluate", "mnist-affine", "--weights", ckpt)
    assert r.exit_code == 1 and f"holds {arch!r}, not 'mnist-affine'" in r.output


def test_resume_of_a_run_trained_from_a_factory(tmp_path, monkeypatch):
    """train --model F, interrupted, resumes with --trust-factory (or with --model F)."""
    arch, marker = _plant("file", tmp_path, monkeypatch)
    out = tmp_path / "mine"
    base = ["--synthetic", "--distortion", "none", "--limit-train", "32", "--limit-test", "16"]
    r = invoke("train", arch, *base, "--epochs", "3", "--max-minutes", "1e-9",
               "--out", out, "--no-progress")  # fmt: skip
    assert r.exit_code == 0 and "time budget" in r.output, r.output
    marker.unlink()
    r = invoke("train", "--resume", "--out", out, "--max-minutes", "1e-9", "--no-progress")
    assert r.exit_code == 1 and "--trust-factory" in r.output and not marker.exists()
    r = invoke("train", "--resume", "--trust-factory", "--out", out, "--max-minutes", "1e-9",
               "--no-progress")  # fmt: skip
    assert r.exit_code == 0 and "epoch 2/3" in r.output, r.output
    r = invoke("train", arch, "--resume", "--out", out, "--no-progress")
    assert r.exit_code == 0 and "epoch 3/3" in r.output, r.output


def test_python_api(tmp_path, monkeypatch):
    arch, marker = _plant("installed", tmp_path, monkeypatch)
    ckpt = _checkpoint(tmp_path / "run", arch)
    for load in (load_model, load_checkpoint):
        with pytest.raises(StnDeployError, match="trust_factory=True"):
            load(str(ckpt))
    assert not marker.exists()
    x = torch.rand(2, *SHAPE)
    trusted = load_checkpoint(ckpt, trust_factory=True).model(x)
    torch.testing.assert_close(load_model(str(ckpt), trust_factory=True).model(x), trusted)
    torch.testing.assert_close(load_model(arch, checkpoint=ckpt).model(x), trusted)
    from stn_deploy.pytorch.pipeline import RunOptions

    assert RunOptions().trust_factory is False


def test_a_typed_factory_leaves_sys_path_as_it_was(tmp_path, monkeypatch):
    arch, _ = _plant("cwd", tmp_path, monkeypatch)
    before = list(sys.path)
    assert load_factory(arch, SHAPE).input_shape == tuple(SHAPE)
    assert sys.path == before


def test_a_config_arch_that_is_not_a_string_is_one_line(tmp_path):
    ckpt = save_checkpoint(tmp_path / "c.pt", _tiny(), _config("x:make"))
    payload = torch.load(ckpt, weights_only=True)
    payload["config"] = payload["config"].replace('"x:make"', '["os", "abort"]')
    torch.save(payload, ckpt)
    r = invoke("evaluate", ckpt, "--synthetic")
    assert r.exit_code == 1 and "config 'arch' must be a string" in r.output


def test_naming_the_factory_on_verify_and_run(tmp_path, monkeypatch):
    arch, marker = _plant("cwd", tmp_path, monkeypatch)
    ckpt = _checkpoint(tmp_path / "run", arch)
    r = invoke("export", arch, "--weights", ckpt, "--out", tmp_path / "x.onnx")
    assert r.exit_code == 0, r.output
    r = invoke("verify", tmp_path / "x.onnx", "--reference", arch, "--weights", ckpt,
               "--runtimes", "cpu", "--inputs", "random", "--count", "2")  # fmt: skip
    assert r.exit_code == 0, r.output
    run = _argv("run", ckpt, Path("unused"), tmp_path)
    run[1] = arch
    r = invoke(*run, "--weights", ckpt)
    assert r.exit_code == 0, r.output
    assert marker.read_text() == "called"
