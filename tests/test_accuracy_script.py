"""benchmarks/accuracy.py end to end on generated digits (two tiny runs at once)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import accuracy  # noqa: E402


def test_accuracy_script_runs_end_to_end_on_generated_data(tmp_path, capsys):
    out, runs = tmp_path / "results", tmp_path / "runs"
    argv = ["--synthetic", "--columns", "tc", "--epochs", "paper-cnn=1,paper-st-cnn=2"]
    argv += ["--loc-lr-scale", "0.1", "--theta-reg", "0.01", "--tag", "t"]
    argv += ["--out", str(out), "--runs", str(runs)]
    assert accuracy.main(argv) == 0
    result = json.loads((out / "accuracy-t.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"paper-cnn", "paper-st-cnn"}
    assert rows["paper-cnn"]["epochs"] == 1 and rows["paper-st-cnn"]["epochs"] == 2
    assert rows["paper-st-cnn"]["paper_error"] == 1.7 and rows["paper-cnn"]["paper_error"] == 3.5
    for r in rows.values():
        assert r["column"] == "tc" and r["images_per_s"] > 0 and 0 <= r["test_error"] <= 100
    st_opts = json.loads((out / "accuracy-t-tc-paper-st-cnn.json").read_text())["options"]
    cnn_opts = json.loads((out / "accuracy-t-tc-paper-cnn.json").read_text())["options"]
    assert (st_opts["loc_lr_scale"], st_opts["theta_reg"]) == (0.1, 0.01)
    assert (cnn_opts["loc_lr_scale"], cnn_opts["theta_reg"]) == (1.0, 0.0)  # recipe: ST-CNN only
    assert st_opts["threads"] == cnn_opts["threads"] == 1
    assert (out / "accuracy-t-tc.png").exists()
    md = (out / "accuracy-t.md").read_text()
    assert "| TC | paper-st-cnn |" in md and "Machine:" in md and "generated digits" in md


def test_accuracy_script_sizes_epochs_to_the_budget(tmp_path):
    """--epochs auto: a calibration run per model, then a schedule that fits the budget."""
    out, runs = tmp_path / "results", tmp_path / "runs"
    argv = ["--synthetic", "--columns", "r", "--epochs", "auto", "--max-minutes", "0.1"]
    argv += ["--tag", "a", "--out", str(out), "--runs", str(runs)]
    assert accuracy.main(argv) == 0
    rows = json.loads((out / "accuracy-a.json").read_text())["rows"]
    for r in rows:
        cal = json.loads((runs / "r" / "calibration" / r["model"] / "metrics.json").read_text())
        per_epoch = cal["history"][0]["seconds"]  # --synthetic: calibration epoch = real epoch
        assert r["epochs_planned"] == max(1, int(accuracy.BUDGET_USE * 6 / per_epoch))
        assert r["epochs"] == r["epochs_planned"] or r["stopped_early"]
    assert "--epochs auto" in (out / "accuracy-a.md").read_text()


@pytest.mark.parametrize(
    "argv",
    [["--columns", "xyz"], ["--pair", "paper-cnn"], ["--epochs", "paper-cnn=1,mnist-cnn=2"]],
)
def test_accuracy_script_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit) as err:
        accuracy.parse_args(argv)
    assert err.value.code == 2


def test_accuracy_runs_tabulates_finished_runs(tmp_path):
    import accuracy_runs

    from stn_deploy.pytorch.train import TrainOptions, train

    kw = dict(model="paper-st-cnn", epochs=2, synthetic=True, limit_train=64, limit_test=32)
    train(TrainOptions(**kw, threads=1), tmp_path / "a", progress=False, log=lambda *_: None)
    train(TrainOptions(**kw, out_size=32), tmp_path / "b", progress=False, log=lambda *_: None)
    out = tmp_path / "t.md"
    assert accuracy_runs.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    md = out.read_text()
    errors = [json.loads((tmp_path / n / "metrics.json").read_text())["final"] for n in "ab"]
    assert "| a | paper-st-cnn |" in md and "`--synthetic True --limit-train 64" in md
    assert "--out-size 32" in md.split("| b |")[1].split("\n")[0]
    assert f"{errors[1]['test_error']:.2f}" in md.split("| b |")[1].split("\n")[0]
    with pytest.raises(SystemExit):
        accuracy_runs.main([str(tmp_path / "missing")])
