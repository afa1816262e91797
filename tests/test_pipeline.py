"""``stn-deploy run`` end to end on a tiny budget, and its error paths."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from stn_deploy.cli import main

TINY = [
    "--synthetic",
    "--limit-train", "256",
    "--limit-test", "64",
    "--epochs", "1",
    "--runtimes", "cpu,openvino",
    "--batch-sizes", "1,4",
    "--duration", "0.02",
    "--compare", "torch",
    "--no-progress",
]  # fmt: skip


@pytest.mark.slow
def test_run_end_to_end_on_a_tiny_budget(tmp_path):
    out = tmp_path / "report"
    r = CliRunner().invoke(main, ["run", *TINY, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "verify: passed" in r.output
    for name in ("report.md", "report.json", "verify.json", "bench.json", "rectification.png"):
        assert (out / name).is_file(), name
    assert (out / "train" / "checkpoint.pt").is_file()
    (onnx_file,) = (out / "model").glob("*.onnx")
    assert onnx_file.with_name(onnx_file.stem + ".io.npz").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True
    assert [r["name"] for r in report["verify"]["runtimes"]] == ["cpu", "openvino"]
    assert all(r["status"] == "passed" for r in report["verify"]["runtimes"])
    rows = report["bench"]["rows"]
    assert {(row["runtime"], row["batch"]) for row in rows if row["status"] == "ok"} >= {
        ("cpu", 1),
        ("cpu", 4),
        ("openvino", 1),
        ("torch", 4),
    }
    cpu1 = next(row for row in rows if row["runtime"] == "cpu" and row["batch"] == 1)
    assert cpu1["speedup"]["torch"] > 0
    # paths name the final folder, not the temporary one it was built in
    text = (out / "report.md").read_text()
    assert ".tmp-" not in text and ".tmp-" not in (out / "verify.json").read_text()
    assert str(out) in report["verify"]["model"]["path"]
    assert "Verification PASSED" in text and "train" in text
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "not drawn" in text
    else:
        assert (out / "latency.png").is_file() and (out / "errors.png").is_file()
    # nothing else is left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_run_exports_at_the_precision_asked_for(tmp_path):
    # offline: a --synthetic run calibrates int8 on generated digits, not the MNIST cache
    out = tmp_path / "int8"
    args = [a for a in TINY if a not in ("cpu,openvino",)]
    args[args.index("--runtimes") + 1 : args.index("--runtimes") + 1] = ["cpu"]
    r = CliRunner().invoke(main, ["run", *args, "--precision", "int8", "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["steps"]["export"]["precision"] == "int8"
    assert report["verify"]["model"]["precision"] == "int8"
    assert report["verify"]["tolerance"]["check_error_stat"] == "median"  # int8's default
    assert {row["precision"] for row in report["bench"]["rows"] if row["kind"] == "model"} == {
        "int8"
    }
    assert "int8" in (out / "report.md").read_text()


def test_run_creates_missing_parent_directories(tmp_path, monkeypatch):
    import stn_deploy.pytorch.pipeline as pipeline

    seen = {}

    def fake_run(opts, work, *a):  # the steps are covered above; here only the folder handling
        seen["work"] = work
        (work / "x.txt").write_text("x")
        return pipeline.RunReport(options={}, passed=True, bench={"rows": []})

    monkeypatch.setattr(pipeline, "_run", fake_run)
    monkeypatch.setattr(pipeline, "_write_reports", lambda report, work, out: None)
    out = tmp_path / "runs" / "deep" / "main"
    pipeline.run_pipeline(pipeline.RunOptions(), out, log=lambda *_: None)
    assert (out / "x.txt").read_text() == "x" and not seen["work"].exists()


def test_run_refuses_an_existing_folder_without_force(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    r = CliRunner().invoke(main, ["run", *TINY, "--out", str(out)])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "--force" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-sizes", "0,4"], "--batch-sizes must be 1 or more, got 0"),
        (["--batch-sizes", "-1"], "--batch-sizes must be 1 or more, got -1"),
        (["--compare", "tf"], "unknown baseline 'tf' for --compare"),
        (["--precision", "int4"], "Invalid value for '--precision'"),
        (["--runtimes", "gpu"], "unknown runtime/provider 'gpu'"),
        (["--out", "{tmp}/a-file/report"], "cannot write to directory"),
    ],
)
def test_run_bad_input_is_one_line_and_leaves_nothing(tmp_path, args, message):
    base = (
        [a for a in TINY if a not in ("--batch-sizes", "1,4")] if "--batch-sizes" in args else TINY
    )
    (tmp_path / "a-file").write_text("not a directory")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    argv = ["run", *base, "--out", str(tmp_path / "report"), *args]
    r = CliRunner().invoke(main, argv)
    assert r.exit_code != 0
    assert r.output.startswith("Error: ") and len(r.output.strip().splitlines()) == 1, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_run_reads_mnist_from_data_dir(tmp_path, monkeypatch):
    """--data-dir reaches training (the four IDX files there instead of the cache)."""
    import stn_deploy.pytorch.train as train_mod
    from stn_deploy.errors import StnDeployError

    empty = tmp_path / "idx"
    empty.mkdir()
    base = [a for a in TINY if a != "--synthetic"]
    r = CliRunner().invoke(
        main, ["run", *base, "--data-dir", str(empty), "--out", str(tmp_path / "r")]
    )
    assert r.exit_code == 1 and "train-images-idx3-ubyte" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()

    seen = {}

    def fake_train(opts, *a, **kw):
        seen["data_dir"] = opts.data_dir
        raise StnDeployError("stop here")

    monkeypatch.setattr(train_mod, "train", fake_train)
    r = CliRunner().invoke(
        main, ["run", *base, "--data-dir", str(empty), "--out", str(tmp_path / "r")]
    )
    assert "stop here" in r.output and seen == {"data_dir": str(empty)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--synthetic"], "--synthetic, not both"),
        (["--weights", "w.pt"], "only when MODEL is trained here"),
    ],
)
def test_run_data_dir_that_does_not_apply_is_a_usage_error(tmp_path, args, message):
    (tmp_path / "w.pt").write_bytes(b"")
    argv = ["run", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]
    argv += [a.replace("w.pt", str(tmp_path / "w.pt")) for a in args]
    r = CliRunner().invoke(main, argv)
    assert r.exit_code == 2 and message in r.output and r.output.startswith("Error: "), r.output
