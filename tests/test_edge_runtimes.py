"""The edge runtimes (litert, ncnn, mnn, iree): convert a tiny STN into the cache, run it, verify
it against ONNX Runtime; LiteRT from a committed .tflite when onnx2tf is absent; bad input.

Each runtime's test is skipped with the reason when its extra is not installed here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from tolerances import assert_close

from stn_deploy.cli import main
from stn_deploy.convert import RECORD, cache_root
from stn_deploy.errors import StnDeployError
from stn_deploy.runtimes import RuntimeUnavailable, availability, canonical, open_session

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny_stn.onnx"
TINY_TFLITE = FIXTURES / "tiny_stn-tflite"


def _need(runtime: str) -> None:
    a = availability(runtime)
    if not a.available:
        pytest.skip(f"{runtime} is not installed here: {a.reason}")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One conversion cache for the module (IREE compiles once)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache(shared_cache, monkeypatch):
    monkeypatch.setenv("STN_DEPLOY_CACHE", str(shared_cache))


@pytest.fixture(scope="module")
def tiny_portable(tmp_path_factory) -> Path:
    from stn_deploy.export.lower import lower_model

    path = tmp_path_factory.mktemp("portable") / "tiny_portable.onnx"
    onnx.save(lower_model(onnx.load(TINY), "portable", opset=17), path)
    return path


def _images(n: int = 3) -> np.ndarray:
    return np.random.default_rng(7).random((n, 1, 8, 8), np.float32)


def _ort(path, x) -> np.ndarray:
    return open_session("cpu", path).run({"image": x})["log_probs"]


def test_edge_names_are_runtimes():
    assert [canonical(n) for n in ("LiteRT", "ncnn", "MNN", "iree")] == [
        "litert",
        "ncnn",
        "mnn",
        "iree",
    ]
    for name in ("litert", "ncnn", "mnn", "iree"):
        a = availability(name)
        assert a.available or a.reason.startswith(name), a


@pytest.mark.parametrize("runtime", ["mnn", "ncnn", "iree"])
def test_convert_into_cache_and_run(runtime, tiny_portable):
    _need(runtime)
    model = tiny_portable if runtime == "iree" else TINY  # IREE: GridSample is refused
    before = Path(model).read_bytes()
    x = _images(3)  # ncnn: one image per call, looped; the grid leaves [-1, 1] for these
    session = open_session(runtime, model, threads=1)
    got = session.run({"image": x})["log_probs"]
    assert got.shape == (3, 4) and got.dtype == np.float32
    assert_close(got, _ort(model, x))
    assert Path(model).read_bytes() == before  # the converter worked on a copy
    folder = Path(session.info.extra["artifact"])
    assert folder.parent.parent == cache_root() and folder.name == session.converted.format
    record = json.loads((folder / RECORD).read_text())
    assert record["tool_version"] and record["source"]["name"] == Path(model).name
    # a second session reuses the entry: the same folder, nothing converted again
    assert Path(open_session(runtime, model).info.extra["artifact"]) == folder
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("runtime", ["mnn", "ncnn"])
def test_verify_cli_on_edge_runtime(runtime):
    _need(runtime)
    r = CliRunner().invoke(
        main,
        ["verify", str(TINY), "--runtimes", runtime, "--reference-onnx", str(TINY)]
        + ["--inputs", "random", "--count", "4"],
    )
    assert r.exit_code == 0, r.output
    assert f"{runtime}: PASSED" in r.output


def test_iree_refuses_gridsample_in_one_line():
    _need("iree")
    with pytest.raises(StnDeployError, match=r"^iree: IREE 3.13 miscompiles GridSample"):
        open_session("iree", TINY)
    sha = hashlib.sha256(TINY.read_bytes()).hexdigest()
    assert not (cache_root() / sha / "iree").exists()
    assert not [p for p in (cache_root() / sha).glob(".*") if "iree" in p.name]


def test_litert_runs_the_committed_tflite():
    """The committed LiteRT file (tests/fixtures/make_edge_fixtures.py --tflite, made with
    onnx2tf): NHWC input fed from NCHW arrays, parity with ORT on the ONNX it came from."""
    _need("litert")
    if not (TINY_TFLITE / RECORD).is_file():
        pytest.skip("no committed tests/fixtures/tiny_stn-tflite (make_edge_fixtures.py --tflite)")
    record = json.loads((TINY_TFLITE / RECORD).read_text())
    assert record["inputs"][0]["layout"] == "NHWC"
    assert record["source"]["sha256"] == hashlib.sha256(TINY.read_bytes()).hexdigest()
    x = _images(5)
    got = open_session("litert", TINY_TFLITE).run({"image": x})["log_probs"]
    assert_close(got, _ort(TINY, x))


@pytest.mark.slow  # onnx2tf takes a minute or more (TensorFlow)
def test_litert_converts_when_onnx2tf_is_here(tmp_path):
    _need("litert")
    if shutil.which("onnx2tf") is None:
        pytest.skip(
            "onnx2tf is not on PATH (make onnx2tf): the committed .tflite test covers LiteRT"
        )
    x = _images(2)
    got = open_session("litert", TINY).run({"image": x})["log_probs"]
    assert_close(got, _ort(TINY, x))


def test_litert_without_onnx2tf_is_unavailable_in_one_line(monkeypatch, tmp_path):
    _need("litert")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("STN_DEPLOY_ONNX2TF", raising=False)
    with pytest.raises(RuntimeUnavailable, match=r"onnx2tf is not on PATH: run `make onnx2tf`"):
        open_session("litert", TINY)


def test_artifact_that_fails_to_load_leaves_no_cache_entry(tiny_portable):
    """The portable sampler's gather has no ncnn layer: pnnx converts it, ncnn cannot load it;
    the error names the runtime and the layer, and the cache keeps nothing."""
    _need("ncnn")
    with pytest.raises(StnDeployError, match=r"^ncnn: cannot load the converted model: .*layer"):
        open_session("ncnn", tiny_portable)
    entry = cache_root() / hashlib.sha256(tiny_portable.read_bytes()).hexdigest()
    assert not (entry / "ncnn").exists()
    assert not [p for p in entry.glob(".*") if "ncnn" in p.name]  # no work folder or lock


@pytest.mark.parametrize("runtime", ["mnn", "ncnn"])
def test_bench_cli_on_edge_runtime(runtime):
    _need(runtime)
    r = CliRunner().invoke(
        main,
        ["bench", str(TINY), "--runtimes", f"cpu,{runtime}", "--batch-sizes", "1,3"]
        + ["--iters", "3", "--warmup", "1", "--compare", "none", "--json"],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output[r.output.index("{") :])["rows"]
    timed = {(row["runtime"], row["batch"]) for row in rows if row["status"] == "ok"}
    assert {(runtime, 1), (runtime, 3)} <= timed, rows
