"""``stn-deploy convert``: the converters run on a copy, never install or phone anything, and
write the artifacts + conversion record all at once; bad input is one line and leaves nothing.

Converter tests are skipped with the reason when the converter is not installed here.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from stn_deploy.cli import main
from stn_deploy.convert import RECORD, ConversionError, ConverterMissing, convert_model
from stn_deploy.convert.base import guarded_python, run_tool
from stn_deploy.errors import StnDeployError
from stn_deploy.runtimes import availability

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny_stn.onnx"


def _need(runtime: str) -> None:
    a = availability(runtime)
    if not a.available:
        pytest.skip(f"{runtime} is not installed here: {a.reason}")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STN_DEPLOY_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "in" / "tiny.onnx"
    path.parent.mkdir()
    path.write_bytes(TINY.read_bytes())
    os.chmod(path, 0o444)  # a converter that wrote into it would fail loudly
    return path


def _digest(path: Path) -> tuple[str, int]:
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns


@pytest.fixture
def tripwires(tmp_path, monkeypatch) -> Path:
    """pip, pip3, curl and wget first on PATH, each leaving a mark when started."""
    bin_dir, marks = tmp_path / "tripwires", tmp_path / "marks"
    bin_dir.mkdir()
    marks.mkdir()
    for name in ("pip", "pip3", "curl", "wget"):
        exe = bin_dir / name
        exe.write_text(f"#!/bin/sh\ntouch {marks}/{name}\nexit 1\n")
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return marks


@pytest.mark.parametrize("fmt,runtime", [("mnn", "mnn"), ("ncnn", "ncnn")])
def test_convert_writes_folder_and_record_without_touching_input(
    fmt, runtime, tiny, tmp_path, tripwires
):
    _need(runtime)
    before = _digest(tiny)
    out = tmp_path / "out" / fmt
    r = invoke("convert", tiny, "--to", fmt, "--out", out)
    assert r.exit_code == 0, r.output
    assert f"wrote {out}/" in r.output
    assert _digest(tiny) == before  # never modified, not even rewritten in place
    assert sorted(p.name for p in tiny.parent.iterdir()) == ["tiny.onnx"]  # no by-products
    record = json.loads((out / RECORD).read_text())
    assert record["format"] == fmt and record["tool_version"]
    assert record["source"]["sha256"] == before[0]
    assert record["inputs"][0]["name"] == "image" and record["inputs"][0]["layout"]
    assert all((out / f).is_file() for f in record["files"].values())
    assert not list(tripwires.iterdir()), "a converter started pip/curl/wget"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no work/lock files


def test_ncnn_keeps_fp32_weights_and_one_image(tiny, tmp_path):
    _need("ncnn")
    c = convert_model(tiny, "ncnn", tmp_path / "n")
    assert "fp16=0" in c.record["options"] and c.record["batch"] == 1
    assert c.record["runtime_settings"]["use_fp16_storage"] is False


def test_mnn_runs_the_converter_entry_not_the_logging_script():
    """MNN's ``mnnconvert`` script pip-installs a logging SDK and uploads logs: the command
    stn-deploy runs is the C++ converter's entry under the guard."""
    from stn_deploy.convert import mnn

    try:
        tool = mnn.find_tool()
    except ConverterMissing as exc:
        pytest.skip(str(exc))
    code = " ".join(tool.command)
    assert "_tools.mnnconvert" in code and "MNN.tools" not in code
    assert "addaudithook" in code


def test_guard_blocks_installs_and_network_in_python_converters(tmp_path, tripwires):
    for code in (
        "import os; os.system('pip install -U aliyun-log-python-sdk')",
        "import subprocess; subprocess.run(['pip', 'install', 'x'])",
        "import socket; socket.create_connection(('192.0.2.1', 80), timeout=1)",
    ):
        with pytest.raises(ConversionError, match=r"^mnn: fake failed \(exit 1\): .*blocked"):
            run_tool(guarded_python(code), "mnn", "fake", cwd=tmp_path)
    assert not list(tripwires.iterdir())


def test_existing_out_needs_force(tiny, tmp_path):
    _need("mnn")
    out = tmp_path / "o"
    assert invoke("convert", tiny, "--to", "mnn", "--out", out).exit_code == 0
    first = (out / RECORD).read_text()
    r = invoke("convert", tiny, "--to", "mnn", "--out", out)
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "--force" in r.output
    assert (out / RECORD).read_text() == first
    assert invoke("convert", tiny, "--to", "mnn", "--out", out, "--force").exit_code == 0


def _one_error_line(r, *words):
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _nothing_written(parent: Path) -> None:
    assert not parent.exists() or not list(parent.iterdir()), list(parent.iterdir())


def test_converter_missing_is_one_line(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no onnx2tf anywhere
    monkeypatch.delenv("STN_DEPLOY_ONNX2TF", raising=False)
    out = tmp_path / "t" / "tflite"
    _one_error_line(
        invoke("convert", tiny, "--to", "tflite", "--out", out), "tflite", "make onnx2tf"
    )
    r = invoke("convert", tiny, "--to", "tflite", "--out", out, "--onnx2tf", tmp_path / "nope")
    _one_error_line(r, "tflite", "is not an executable")
    _nothing_written(out.parent)


def test_converter_failure_is_one_line(tmp_path):
    """MNN has no IsNaN (the portable sampler's NaN guard): MNNConvert exits 0 and prints
    'Converted Failed!'; stn-deploy says which op and writes nothing."""
    _need("mnn")
    from stn_deploy.export.lower import lower_model

    src = tmp_path / "portable.onnx"
    onnx.save(lower_model(onnx.load(TINY), "portable", opset=17), src)
    out = tmp_path / "o" / "mnn"
    _one_error_line(invoke("convert", src, "--to", "mnn", "--out", out), "mnn", "IsNaN")
    _nothing_written(out.parent)


def test_artifact_that_fails_to_load_is_one_line(tmp_path):
    _need("ncnn")
    from stn_deploy.export.lower import lower_model

    src = tmp_path / "portable.onnx"
    onnx.save(lower_model(onnx.load(TINY), "portable", opset=17), src)
    out = tmp_path / "o" / "ncnn"
    _one_error_line(invoke("convert", src, "--to", "ncnn", "--out", out), "ncnn", "cannot load")
    _nothing_written(out.parent)


def test_unsupported_lowering_is_refused_before_converting(tiny, tmp_path):
    _need("iree")
    out = tmp_path / "o" / "iree"
    _one_error_line(invoke("convert", tiny, "--to", "iree", "--out", out), "iree", "GridSample")
    _nothing_written(out.parent)


def test_bad_arguments(tiny, tmp_path):
    r = invoke("convert", tiny, "--to", "mnn", "--onnx2tf", tmp_path / "x")
    assert r.exit_code == 2 and "--onnx2tf applies only with --to tflite" in r.output
    assert invoke("convert", tiny, "--to", "coreml").exit_code == 2
    _one_error_line(invoke("convert", tmp_path / "missing.onnx", "--to", "mnn"), "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    _one_error_line(invoke("convert", bad, "--to", "mnn"), "bad.onnx")
    with pytest.raises(StnDeployError, match="give out"):
        convert_model(TINY.read_bytes(), "mnn")
