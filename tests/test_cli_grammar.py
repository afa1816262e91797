"""The command-line grammar (README "Command-line grammar"), through the CLI: the new spellings
work, each deprecated alias still works and prints one deprecation line, and an option that
does not apply or conflicts with another is a one-line usage error (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from stn_deploy.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "exported"
NATIVE = EXPORTED / "mnist-affine-native.onnx"
CKPT = EXPORTED / "mnist-affine-rts.pt"
BENCH = ["--batch-sizes", "1", "--iters", "1", "--warmup", "0"]
VERIFY = ["--inputs", "golden"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def usage_error(r, *fragments: str) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def warned(r, old: str, new: str) -> None:
    """Exit 0 and exactly one deprecation line naming the old and the new spelling."""
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("Warning: ")]
    assert lines == [f"Warning: {old} is deprecated: use {new}"], r.output


# --------------------------------------------------------------------------- new spellings
def test_verify_and_bench_new_spellings():
    r = invoke("verify", NATIVE, "--runtimes", "cpu", *VERIFY, "--reference", CKPT, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["passed"]
    r = invoke("bench", NATIVE, "--runtimes", "cpu", *BENCH, "--compare", "torch",
               "--reference", CKPT, "--fail-on-error")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "torch eager" in r.output
    r = invoke("bench", NATIVE, "--runtimes", "cpu", *BENCH, "--compare", "none", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["rows"], r.output


def test_verify_reference_zoo_name_with_weights():
    r = invoke("verify", NATIVE, "--runtimes", "cpu", *VERIFY, "--count", "2",
               "--reference", "mnist-affine", "--weights", CKPT)  # fmt: skip
    assert r.exit_code == 0, r.output


def test_lower_and_export_take_lowering(tmp_path):
    r = invoke("lower", NATIVE, tmp_path / "p.onnx", "--lowering", "portable")
    assert r.exit_code == 0, r.output
    r = invoke("export", "mnist-affine", "--weights", CKPT, "--lowering", "portable",
               "--golden-count", "1", "--out", tmp_path / "e.onnx")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "portable" in r.output


def test_help_shows_only_the_grammar():
    for cmd, hidden in [
        ("verify", ["--providers", "--checkpoint", "--factory", "--reference-model"]),
        ("bench", ["--providers", "--checkpoint", "--factory", "--sampler-sweep", "--strict "]),
        ("run", ["--providers", "--checkpoint", "--model", "--bench-duration"]),
        ("export", ["--checkpoint", "--sampler"]),
        ("train", ["--model"]),
        ("lower", ["--sampler"]),
    ]:
        text = invoke(cmd, "--help").output
        for old in hidden:
            assert old not in text, (cmd, old)
    assert "--runtimes" in invoke("verify", "--help").output
    assert "--reference MODEL" in invoke("bench", "--help").output


# --------------------------------------------------------------------------- deprecated aliases
@pytest.mark.parametrize(
    "argv, old, new",
    [
        (["verify", NATIVE, "--providers", "cpu", *VERIFY], "--providers", "--runtimes"),
        (["verify", NATIVE, "--runtimes", "cpu", *VERIFY, "--count", "2", "--checkpoint", CKPT],
         "--checkpoint", "--reference"),
        (["verify", NATIVE, "--runtimes", "cpu", "--inputs", "random", "--count", "2",
          "--reference-model", NATIVE], "--reference-model", "--reference-onnx"),
        (["bench", NATIVE, "--providers", "cpu", *BENCH], "--providers", "--runtimes"),
        (["bench", NATIVE, "--runtimes", "cpu", *BENCH, "--strict"], "--strict",
         "--fail-on-error"),
        (["bench", NATIVE, "--runtimes", "cpu", *BENCH, "--compare", "torch", "--checkpoint", CKPT],
         "--checkpoint", "--reference"),
    ],
)  # fmt: skip
def test_deprecated_alias_works_with_one_warning(argv, old, new):
    warned(invoke(*argv), old, new)


def test_deprecated_model_and_weights_aliases(tmp_path):
    r = invoke("export", "mnist-affine", "--checkpoint", CKPT, "--golden-count", "1",
               "--out", tmp_path / "a.onnx")  # fmt: skip
    warned(r, "--checkpoint", "--weights")
    r = invoke("lower", NATIVE, tmp_path / "b.onnx", "--sampler", "portable")
    warned(r, "--sampler", "--lowering")
    r = invoke("evaluate", "mnist-affine", "--checkpoint", CKPT, "--synthetic", "--limit-test", "8")
    warned(r, "--checkpoint", "--weights")


def test_train_and_run_old_model_option(tmp_path):
    tiny = ["--synthetic", "--distortion", "none", "--limit-train", "64", "--limit-test", "32",
            "--epochs", "1", "--no-progress"]  # fmt: skip
    r = invoke("train", "--model", "mnist-cnn", *tiny, "--out", tmp_path / "t")
    warned(r, "--model", "the positional MODEL")
    r = invoke("run", "--model", "mnist-affine", *tiny, "--runtimes", "cpu", "--batch-sizes",
               "1", "--bench-duration", "0.01", "--compare", "none", "--out", tmp_path / "r")  # fmt: skip
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("Warning: ")]
    assert sorted(warnings) == [
        "Warning: --bench-duration is deprecated: use --duration",
        "Warning: --model is deprecated: use the positional MODEL",
    ], r.output


# --------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize(
    "argv, fragments",
    [
        # an old and a new spelling of one option
        (["verify", NATIVE, "--runtimes", "cpu", "--providers", "cpu"], ["--runtimes", "--providers"]),
        (["bench", NATIVE, "--reference", CKPT, "--checkpoint", CKPT], ["--reference", "--checkpoint"]),
        (["verify", NATIVE, "--checkpoint", CKPT, "--factory", "m:f"], ["--checkpoint", "--factory"]),
        (["train", "mnist-affine", "--model", "mnist-cnn", "--out", "x"], ["MODEL", "--model"]),
        (["export", "mnist-affine", "--weights", CKPT, "--checkpoint", CKPT, "--out", "x"],
         ["--weights", "--checkpoint"]),
        # options that do not apply
        (["verify", NATIVE, "--weights", CKPT], ["--weights", "without --reference"]),
        (["verify", NATIVE, "--input-shape", "1,42,42"], ["--input-shape"]),
        (["verify", NATIVE, "--trust-factory"], ["--trust-factory"]),
        (["bench", NATIVE, "--weights", CKPT], ["--weights", "without --reference"]),
        (["verify", NATIVE, "--reference", CKPT, "--weights", CKPT], ["--weights", "checkpoint file"]),
        (["verify", NATIVE, "--reference", "mnist-affine", "--input-shape", "1,42,42"],
         ["--input-shape", "zoo"]),
        (["verify", NATIVE, "--reference", CKPT, "--reference-onnx", NATIVE],
         ["--reference", "--reference-onnx"]),
        (["evaluate", CKPT, "--weights", CKPT], ["--weights", "checkpoint file"]),
        (["evaluate", "mnist-affine", "--input-shape", "1,42,42"], ["--input-shape", "zoo"]),
        (["export", "mnist-affine", "--trust-factory", "--out", "x"], ["--trust-factory"]),
        (["run", CKPT, "--weights", CKPT, "--out", "x"], ["--weights", "checkpoint file"]),
        (["run", "m:f", "--weights", CKPT, "--input-shape", "1,28,28", "--out", "x"],
         ["--input-shape", "--weights"]),
        (["train", "--trust-factory", "--out", "x"], ["--trust-factory", "--resume"]),
        (["lower", NATIVE, "x.onnx"], ["--lowering"]),
        (["lower", NATIVE, "x.onnx", "--lowering", "native", "--inline"], ["--inline"]),
        (["bench", NATIVE, "--compare", "torch"], ["--compare torch", "--reference"]),
        # one validator per concept, one exit code
        (["bench", NATIVE, "--threads", "0"], ["--threads"]),
        (["verify", NATIVE, "--threads", "0"], ["--threads"]),
        (["run", "--threads", "0"], ["--threads"]),
        (["export", "mnist-affine", "--precision", "int4", "--out", "x"], ["--precision", "int4"]),
        (["quantize", NATIVE, "--precision", "fp32", "--out", "x.onnx"], ["--precision", "fp32"]),
        (["run", "--precision", "int4"], ["--precision"]),
        (["export", "mnist-affine", "--opset", "10", "--out", "x"], ["--opset"]),
        (["lower", NATIVE, "x.onnx", "--lowering", "portable", "--opset", "10"], ["--opset"]),
        (["run", "--compare", "tf"], ["--compare", "tf"]),
        (["bench", NATIVE, "--compare", "tf"], ["--compare", "tf"]),
        (["run", "--runtimes", "warpdrive"], ["--runtimes", "warpdrive"]),
        (["verify", NATIVE, "--runtimes", "warpdrive"], ["--runtimes", "warpdrive"]),
        (["bench", NATIVE, "--batch-sizes", "0"], ["--batch-sizes must be 1 or more"]),
        (["run", "--batch-sizes", "0"], ["--batch-sizes must be 1 or more"]),
        (["bench", NATIVE, "--duration", "0"], ["--duration"]),
        (["run", "--duration", "0"], ["--duration"]),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_exit_2(argv, fragments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    usage_error(invoke(*argv), *fragments)
    assert not any(tmp_path.iterdir())
