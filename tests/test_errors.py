"""Library errors name parameters; the CLI names its flags (stn_deploy.errors).

The same error read through the Python API names the parameter (``runtimes``, ``batch_sizes``,
``trust_factory=True``), through the CLI the flag the user typed (``--runtimes``,
``--batch-sizes``, ``--trust-factory``); a StnDeployError that replaces a foreign exception keeps
it as ``__cause__``, and the CLI still prints one line.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner

from stn_deploy.bench.plan import check_batch_sizes, runtime_names
from stn_deploy.cli import main
from stn_deploy.cli.options import FLAGS, cli_message, flags_for
from stn_deploy.errors import StnDeployError

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "exported" / "mnist-affine-native.onnx"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(r, exit_code: int) -> str:
    assert r.exit_code == exit_code, (r.exit_code, r.output, r.exception)
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert "Traceback" not in r.output
    return lines[0]


# --------------------------------------------------------------------------- the mechanism
def test_placeholders_render_as_parameters_or_flags():
    e = StnDeployError("{runtimes} has an empty item: 'cpu,,x'", param="runtimes")
    assert e.param == "runtimes" and e.params == ("runtimes",)
    assert str(e) == "runtimes has an empty item: 'cpu,,x'"
    assert e.render(FLAGS) == "--runtimes has an empty item: 'cpu,,x'"
    e = StnDeployError("pass {trust_factory=True} if you trust it", param="trust_factory")
    assert str(e) == "pass trust_factory=True if you trust it"
    assert e.render(FLAGS) == "pass --trust-factory if you trust it"
    e = StnDeployError("give {iters} or {duration}, not both", param=("iters", "duration"))
    assert e.param == "iters" and e.render(FLAGS) == "give --iters or --duration, not both"
    assert e.render(lambda name: None) == str(e) == "give iters or duration, not both"


def test_only_the_named_placeholders_are_rendered():
    # braces in the rest of the message (a dict, a file name) are text, not placeholders
    e = StnDeployError("{x} and {'a': 1} in {runtimes}", param="runtimes")
    assert str(e) == "{x} and {'a': 1} in runtimes"
    assert e.render(FLAGS) == "{x} and {'a': 1} in --runtimes"
    plain = StnDeployError("no {runtimes} here")
    assert plain.param is None and str(plain) == "no {runtimes} here"
    unknown = StnDeployError("{not_a_flag} is bad", param="not_a_flag")
    assert unknown.render(FLAGS) == "not_a_flag is bad"


def test_param_survives_pickling():
    e = StnDeployError("pass {force=True} to replace it", param="force")
    back = pickle.loads(pickle.dumps(e))
    assert back.param == "force" and back.render(FLAGS) == "pass --force to replace it"


def test_flags_depend_on_the_command():
    assert flags_for("bench")["strict"] == "--fail-on-error"
    assert flags_for("verify")["strict"] == "--strict"
    assert flags_for("lower")["dst"] == "OUT" and flags_for("quantize")["dst"] == "--out"
    e = StnDeployError("{checkpoint} goes with a zoo name", param="checkpoint")
    assert str(e).startswith("checkpoint goes") and cli_message(e, "verify").startswith("--weights")


# --------------------------------------------------------------------------- API vs CLI
def test_bench_runtimes_empty_item():
    with pytest.raises(StnDeployError) as info:
        runtime_names("cpu,,x")
    assert info.value.param == "runtimes"
    assert str(info.value) == "runtimes has an empty item: 'cpu,,x'"
    line = one_error_line(invoke("bench", NATIVE, "--runtimes", "cpu,,x"), 2)
    assert "--runtimes has an empty item: 'cpu,,x'" in line, line
    # an old spelling is named as typed
    r = invoke("bench", NATIVE, "--providers", "cpu,,x")
    assert "--providers has an empty item" in one_error_line(r, 2)


def test_run_batch_sizes_empty():
    with pytest.raises(StnDeployError) as info:
        check_batch_sizes("")
    assert info.value.param == "batch_sizes" and str(info.value) == "batch_sizes is empty"
    line = one_error_line(invoke("run", "--synthetic", "--batch-sizes", ""), 2)
    assert "--batch-sizes is empty" in line and "batch_sizes" not in line, line


def test_run_data_dir_with_synthetic(tmp_path):
    pytest.importorskip("torch")
    from stn_deploy.pytorch.pipeline import RunOptions

    with pytest.raises(StnDeployError) as info:
        RunOptions(data_dir=str(tmp_path), synthetic=True).check_data_dir()
    assert str(info.value) == "give data_dir (MNIST IDX files) or synthetic=True, not both"
    r = invoke("run", "--synthetic", "--data-dir", tmp_path, "--out", tmp_path / "run")
    assert "give --data-dir (MNIST IDX files) or --synthetic, not both" in one_error_line(r, 2)


def test_verify_strict_and_weights():
    from stn_deploy.runtimes.registry import availability
    from stn_deploy.verify import verify_model

    # --weights without --reference is the CLI's own usage error
    line = one_error_line(invoke("verify", NATIVE, "--weights", NATIVE), 2)
    assert "--weights does not apply without --reference" in line
    if availability("cuda").available:
        pytest.skip("needs a machine without CUDA")
    with pytest.raises(StnDeployError) as info:
        verify_model(NATIVE, runtimes="cuda", inputs="golden", strict=True)
    assert info.value.param == "strict"
    assert str(info.value).startswith("strict: cuda is not available")
    r = invoke("verify", NATIVE, "--runtimes", "cuda", "--inputs", "golden", "--strict")
    assert one_error_line(r, 1).startswith("Error: --strict: cuda is not available")


# --------------------------------------------------------------------------- causes
def test_foreign_errors_are_kept_as_the_cause(tmp_path):
    from stn_deploy.export.onnx_file import load_onnx

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file at all")
    with pytest.raises(StnDeployError) as info:
        load_onnx(bad)
    assert info.value.__cause__ is not None
    assert not isinstance(info.value.__cause__, StnDeployError)
    # the CLI prints the one line only, neither a traceback nor the cause
    r = invoke("inspect", bad)
    line = one_error_line(r, 1)
    assert "is not a readable ONNX model" in line
    assert "direct cause" not in r.output


def test_batch_sizes_parse_error_keeps_its_cause():
    with pytest.raises(StnDeployError) as info:
        check_batch_sizes("1,x")
    assert isinstance(info.value.__cause__, ValueError)
    assert str(info.value) == "batch_sizes takes integers like 1,8,64, got '1,x'"
