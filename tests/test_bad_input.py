"""Bad input is refused with one ``Error:`` line, a non-zero exit and nothing written (issue 11):
infinite tolerances, batches that cannot fit in memory, endless benchmark budgets, bad golden
bundles copied by quantize, empty lists, options that do not apply, and lower over its source."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stn_deploy.cli import main
from stn_deploy.errors import StnDeployError
from stn_deploy.export.golden import read_bundle, write_bundle
from stn_deploy.io.hashing import file_sha256

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "exported"
NATIVE = EXPORTED / "mnist-affine-native.onnx"
CKPT = EXPORTED / "mnist-affine-rts.pt"
BENCH_QUICK = ["--runtimes", "cpu", "--warmup", "0", "--iters", "1"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, *fragments, code: int = 1) -> str:
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def copy_model(tmp: Path, bundle: bool = True) -> Path:
    path = tmp / "m.onnx"
    shutil.copy(NATIVE, path)
    if bundle:
        shutil.copy(NATIVE.with_name("mnist-affine-native.io.npz"), tmp / "m.io.npz")
    return path


# --------------------------------------------------------------------------- verify tolerances
@pytest.mark.parametrize("option", ["--atol", "--rtol"])
@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_verify_tolerance_must_be_finite_and_non_negative(option, value, tmp_path):
    plot = tmp_path / "err.png"
    r = invoke(
        "verify", NATIVE, "--runtimes", "cpu", "--inputs", "golden", option, value, "--plot", plot
    )
    one_line_error(r, option, "finite", code=2)
    assert not plot.exists()


# --------------------------------------------------------------------------- bench budgets
def test_bench_batch_that_cannot_fit_in_memory(tmp_path, monkeypatch):
    from stn_deploy.bench import api

    monkeypatch.setattr(api, "_run_all", lambda *a, **k: pytest.fail("benched anyway"))
    out = tmp_path / "b.json"
    r = invoke("bench", NATIVE, *BENCH_QUICK, "--batch-sizes", "1,100000000", "--json-out", out)
    line = one_line_error(r, "batch 100000000", "bytes", "available")
    assert "705,600,000,000" in line  # 1x42x42 float32 images
    assert not out.exists()


def test_bench_memory_error_while_running_is_a_row_or_one_line(monkeypatch):
    from stn_deploy.bench.runner import RunSettings

    def no_memory(self, batch, dtype=None):
        raise MemoryError

    monkeypatch.setattr(RunSettings, "inputs", no_memory)
    r = invoke("bench", NATIVE, *BENCH_QUICK, "--batch-sizes", "2", "--json")
    assert r.exit_code == 0, r.output
    assert "out of memory at batch 2" in r.output
    one_line_error(
        invoke("bench", NATIVE, *BENCH_QUICK, "--batch-sizes", "2", "--fail-on-error"),
        "out of memory at batch 2",
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--iters", "1000000000000"], "--iters"),
        (["--duration", "inf"], "--duration"),
        (["--duration", "nan"], "--duration"),
        (["--duration", "1e9"], "--duration"),
        (["--warmup", "1000000000000"], "--warmup"),
    ],
)
def test_bench_budget_is_bounded(args, fragment, monkeypatch):
    from stn_deploy.bench import api

    monkeypatch.setattr(api, "_run_all", lambda *a, **k: pytest.fail("benched anyway"))
    r = invoke("bench", NATIVE, "--runtimes", "cpu", "--batch-sizes", "1", *args)
    one_line_error(r, fragment, code=2)


def test_bench_help_documents_the_limits():
    from stn_deploy.timing import MAX_DURATION, MAX_TIMED_CALLS

    text = " ".join(invoke("bench", "--help").output.split())
    assert f"{MAX_TIMED_CALLS:,}" in text and f"{MAX_DURATION:g} s" in text


# --------------------------------------------------------------------------- quantize bundles
def _rewrite_bundle(path: Path, inputs=None, outputs=None, sha: str | None = None) -> None:
    b = read_bundle(path.with_name("m.io.npz"))
    write_bundle(
        path.with_name("m.io.npz"),
        inputs if inputs is not None else b.inputs,
        outputs if outputs is not None else b.outputs,
        {"model_sha256": sha or file_sha256(path)},
    )


def _quantize_refused(tmp: Path, *fragments) -> None:
    before = listing(tmp)
    r = invoke("quantize", tmp / "m.onnx", "--precision", "fp16", "--out", tmp / "q.onnx")
    one_line_error(r, *fragments)
    assert listing(tmp) == before


def test_quantize_refuses_a_nan_golden_bundle(tmp_path):
    path = copy_model(tmp_path)
    b = read_bundle(tmp_path / "m.io.npz")
    out = {k: v.copy() for k, v in b.outputs.items()}
    out["log_probs"][1, 2] = np.nan
    _rewrite_bundle(path, outputs=out)
    _quantize_refused(tmp_path, "m.io.npz", "1 NaN")
    x = {k: v.copy() for k, v in b.inputs.items()}
    x["image"][0, 0, 0, 0] = np.inf
    _rewrite_bundle(path, inputs=x, outputs=b.outputs)
    _quantize_refused(tmp_path, "m.io.npz", "input 'image'", "1 Inf")


def test_quantize_refuses_a_bundle_of_another_model(tmp_path):
    copy_model(tmp_path)
    shutil.copy(EXPORTED / "mnist-affine-portable.io.npz", tmp_path / "m.io.npz")
    _quantize_refused(tmp_path, "made for another model")


def test_quantize_refuses_bundle_inputs_that_do_not_fit(tmp_path):
    path = copy_model(tmp_path)
    _rewrite_bundle(path, inputs={"image": np.zeros((2, 1, 28, 28), np.float32)})
    _quantize_refused(tmp_path, "has shape [2, 1, 28, 28], the model takes")


def test_quantize_with_a_good_bundle_still_copies_it(tmp_path):
    copy_model(tmp_path)
    r = invoke("quantize", tmp_path / "m.onnx", "--precision", "fp16", "--out", tmp_path / "q.onnx")
    assert r.exit_code == 0, r.output
    src, dst = read_bundle(tmp_path / "m.io.npz"), read_bundle(tmp_path / "q.io.npz")
    assert np.array_equal(src.outputs["log_probs"], dst.outputs["log_probs"])


# --------------------------------------------------------------------------- verify references
def test_verify_reference_model_needs_no_golden_bundle(tmp_path):
    path = copy_model(tmp_path, bundle=False)
    r = invoke(
        "verify",
        path,
        "--reference-onnx",
        NATIVE,
        "--runtimes",
        "cpu",
        "--inputs",
        "random,stress",
        "--count",
        "2",
    )
    assert r.exit_code == 0, r.output
    assert "mnist-affine-native.onnx on cpu" in r.output and "PASSED" in r.output
    # the golden set is skipped, not an error, unless asked for with --strict
    r = invoke("verify", path, "--reference-onnx", NATIVE, "--runtimes", "cpu", "--count", "2")
    assert r.exit_code == 0, r.output
    one_line_error(
        invoke(
            "verify",
            path,
            "--reference-onnx",
            NATIVE,
            "--runtimes",
            "cpu",
            "--inputs",
            "golden,random",
            "--strict",
            "--count",
            "2",
        ),
        "no golden inputs",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# --------------------------------------------------------------------------- empty lists
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["verify", NATIVE, "--runtimes", "", "--inputs", "golden"], "--runtimes"),
        (["verify", NATIVE, "--runtimes", "cpu,,openvino", "--inputs", "golden"], "--runtimes"),
        (["verify", NATIVE, "--runtimes", "cpu", "--inputs", ""], "--inputs"),
        (["verify", NATIVE, "--runtimes", "cpu", "--inputs", "golden,"], "--inputs"),
        (["bench", NATIVE, *BENCH_QUICK[2:], "--runtimes", ""], "--runtimes"),
        (["bench", NATIVE, *BENCH_QUICK, "--batch-sizes", "1,,2"], "--batch-sizes"),
        (["bench", NATIVE, *BENCH_QUICK, "--batch-sizes", ""], "--batch-sizes"),
        (["bench", NATIVE, *BENCH_QUICK, "--batch-sizes", "1", "--compare", ""], "--compare"),
        (["run", "--batch-sizes", "1,,2", "--out", "never"], "--batch-sizes"),
        (["run", "--batch-sizes", "", "--out", "never"], "--batch-sizes"),
        (["run", "--runtimes", "", "--out", "never"], "--runtimes"),
    ],
    ids=lambda a: " ".join(map(str, a)).replace(str(EXPORTED), "") if isinstance(a, list) else a,
)
def test_empty_list_or_item_is_an_error(args, fragment, monkeypatch, tmp_path):
    from stn_deploy.bench import api
    from stn_deploy.pytorch import pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(api, "_run_all", lambda *a, **k: pytest.fail("benched anyway"))
    monkeypatch.setattr(pipeline, "_run", lambda *a, **k: pytest.fail("ran anyway"))
    one_line_error(invoke(*args), fragment, "empty", code=2)  # a usage error
    assert not any(tmp_path.iterdir())


def test_one_batch_size_parser_for_bench_and_run():
    from stn_deploy.bench.plan import check_batch_sizes

    assert check_batch_sizes("1, 8,64,8") == [1, 8, 64]
    for bad in ("1,,2", "", " ", "1,x", "0", "2,-1"):
        with pytest.raises(StnDeployError):
            check_batch_sizes(bad)
    import stn_deploy.cli.run as cli_run

    assert not hasattr(cli_run, "_int_list")  # run parses with check_batch_sizes too


# --------------------------------------------------------------------------- options that do not apply
def test_export_input_shape_for_a_zoo_name(tmp_path):
    one_line_error(
        invoke("export", "mnist-affine", "--input-shape", "1,60,60", "--out", tmp_path),
        "--input-shape",
        "mnist-affine",
        code=2,
    )
    assert not any(tmp_path.iterdir())


def test_export_checkpoint_file_with_checkpoint_option(tmp_path):
    one_line_error(
        invoke("export", CKPT, "--weights", "/nonexistent.pt", "--out", tmp_path),
        "--weights",
        code=2,
    )
    one_line_error(
        invoke("export", CKPT, "--input-shape", "1,42,42", "--out", tmp_path),
        "--input-shape",
        code=2,
    )
    assert not any(tmp_path.iterdir())


def test_verify_weights_or_input_shape_that_do_not_apply():
    quick = ["--runtimes", "cpu", "--inputs", "golden"]
    r = invoke("verify", NATIVE, *quick, "--weights", "/nonexistent.pt")
    one_line_error(r, "--weights", code=2)
    r = invoke("verify", NATIVE, *quick, "--reference", CKPT, "--weights", "/nonexistent.pt")
    one_line_error(r, "--weights", "checkpoint file", code=2)
    r = invoke("verify", NATIVE, *quick, "--input-shape", "1,42,42")
    one_line_error(r, "--input-shape", code=2)


# --------------------------------------------------------------------------- lower onto itself
def test_lower_refuses_to_overwrite_its_source(tmp_path, monkeypatch):
    path = copy_model(tmp_path, bundle=False)
    os.link(path, tmp_path / "hard.onnx")
    (tmp_path / "sym.onnx").symlink_to(path)
    before = listing(tmp_path)
    monkeypatch.chdir(tmp_path)
    for dst in (path, "m.onnx", "./sub/../m.onnx", tmp_path / "hard.onnx", "sym.onnx"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        one_line_error(invoke("lower", path, dst, "--lowering", "portable"), "overwrite", "m.onnx")
    (tmp_path / "sub").rmdir()
    assert listing(tmp_path) == before


def test_quantize_refuses_to_overwrite_its_source(tmp_path):
    path = copy_model(tmp_path)
    os.link(path, tmp_path / "hard.onnx")
    before = listing(tmp_path)
    for dst in (path, tmp_path / "hard.onnx"):
        r = invoke("quantize", path, "--precision", "fp16", "--out", dst)
        one_line_error(r, "--out", "overwrite")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("value, code", [("inf", 2), ("nan", 2), ("1e9", 2)])
def test_run_bench_duration_is_bounded(value, code, tmp_path, monkeypatch):
    from stn_deploy.pytorch import pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, "_run", lambda *a, **k: pytest.fail("ran anyway"))
    one_line_error(invoke("run", "--duration", value, "--out", "r"), "duration", code=code)
    assert not any(tmp_path.iterdir())


def test_run_input_shape_for_a_zoo_model(tmp_path, monkeypatch):
    from stn_deploy.pytorch import pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, "_run", lambda *a, **k: pytest.fail("ran anyway"))
    r = invoke("run", "mnist-affine", "--input-shape", "1,60,60", "--out", "r")
    one_line_error(r, "--input-shape", code=2)
    assert not any(tmp_path.iterdir())
