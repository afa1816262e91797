"""``stn-deploy export`` from the command line: ``--exporter``, ``--no-check``, ``--output-names``
and the self-check's one-line refusal, on small ``file.py:callable`` factories (3x7x7 input).

Library errors name parameters (``check=False``); here they must come out as flags."""

import textwrap

import onnx
import pytest
from click.testing import CliRunner

from stn_deploy.cli import main
from stn_deploy.export.metadata import stn_metadata

FACTORIES = textwrap.dedent(
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    _ID = torch.tensor([[1.0, 0, 0], [0, 1, 0]])


    class TupleOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 6)

        def forward(self, x):
            theta = self.fc(x.mean((2, 3))).view(-1, 2, 3) * 0.2 + _ID
            grid = F.affine_grid(theta, x.shape, align_corners=False)
            y = F.grid_sample(x, grid, align_corners=False)
            return y.flatten(1).log_softmax(1), theta


    class DictOut(TupleOut):
        def forward(self, x):
            y, theta = super().forward(x)
            return {"scores": y, "theta": theta}


    class BatchBranch(TupleOut):
        def forward(self, x):
            y, _ = super().forward(x)
            if x.shape[0] > 1:
                return y * 2
            return y


    def _make(cls):
        torch.manual_seed(0)
        return cls().eval()


    def tuple_out():
        return _make(TupleOut)


    def dict_out():
        return _make(DictOut)


    def batch_branch():
        return _make(BatchBranch)
    """
)


@pytest.fixture
def factories(tmp_path):
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES)
    out = tmp_path / "out"
    out.mkdir()
    return path, out


def _export(path, fn, out, *args):
    return CliRunner().invoke(
        main, ["export", f"{path}:{fn}", "--input-shape", "3,7,7", "--out", str(out), *args]
    )


def _error_line(r):
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    assert len(errors) == 1, r.output
    assert "Traceback" not in r.output
    return errors[0]


def _outputs(path):
    return [o.name for o in onnx.load(str(path)).graph.output]


@pytest.mark.parametrize(
    "fn,names", [("tuple_out", ["output_0", "output_1"]), ("dict_out", ["scores", "theta"])]
)
def test_tuple_and_dict_outputs_are_named(factories, fn, names):
    path, out = factories
    r = _export(path, fn, out / "m.onnx")
    assert r.exit_code == 0, r.output
    assert _outputs(out / "m.onnx") == names
    assert "self_check" not in stn_metadata(onnx.load(str(out / "m.onnx")))  # it passed


def test_output_names(factories):
    path, out = factories
    r = _export(path, "tuple_out", out / "m.onnx", "--output-names", "probs, theta")
    assert r.exit_code == 0, r.output
    assert _outputs(out / "m.onnx") == ["probs", "theta"]
    meta = stn_metadata(onnx.load(str(out / "m.onnx")))
    assert '"output_names": ["probs", "theta"]' in meta["export_args"]


@pytest.mark.parametrize(
    "value,message",
    [
        ("probs", "--output-names gives 1 names, the model has 2 outputs"),
        ("a,b,c", "--output-names gives 3 names, the model has 2 outputs"),
        ("a,a", "--output-names must be distinct"),
        ("a,", "--output-names has an empty name"),
    ],
)
def test_bad_output_names_are_one_line_usage_errors(factories, value, message):
    path, out = factories
    r = _export(path, "tuple_out", out, "--output-names", value)
    assert r.exit_code == 2, r.output
    line = _error_line(r)
    assert message in line and "output_names" not in line
    assert list(out.iterdir()) == []


def test_self_check_failure_is_one_line_naming_no_check(factories):
    """A branch on the batch size: torch.export specialises it to the traced batch (2), so the
    file is wrong at batch 1; TorchScript traces at batch 1, so its file is wrong at batch 8.
    Either way: one line and no file."""
    path, out = factories
    r = _export(path, "batch_branch", out)
    assert r.exit_code == 1, r.output
    line = _error_line(r)
    assert line.startswith("Error: self-check failed: ") and "at batch 1 " in line
    assert "specialises it to the traced batch" in line and "--no-check skips the check" in line
    r = _export(path, "batch_branch", out, "--exporter", "torchscript")
    assert r.exit_code == 1, r.output
    line = _error_line(r)
    assert line.startswith("Error: self-check failed: ") and "at batch 8" in line
    assert "--no-check skips the check" in line and "--exporter='dynamo'" in line
    assert "check=False" not in line and "{" not in line
    assert list(out.iterdir()) == []  # no file, no bundle


def test_no_check_keeps_the_file_and_says_so(factories):
    path, out = factories
    r = _export(path, "batch_branch", out / "b.onnx", "--no-check")
    assert r.exit_code == 0, r.output
    assert "note: self-check skipped" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["b.io.npz", "b.onnx"]
    assert "--no-check" in stn_metadata(onnx.load(str(out / "b.onnx")))["self_check"]


def test_exporter_choice(factories, monkeypatch):
    path, out = factories
    monkeypatch.setattr("stn_deploy.pytorch.tracing._warned_torchscript", False)
    r = _export(path, "tuple_out", out / "t.onnx", "--exporter", "torchscript")
    assert r.exit_code == 0, r.output
    assert r.output.count("Warning: the torchscript exporter") == 1  # one line, not Python's two
    assert (
        '"exporter": "torchscript"' in stn_metadata(onnx.load(str(out / "t.onnx")))["export_args"]
    )
    r = _export(path, "tuple_out", out, "--exporter", "onnxscript")
    assert r.exit_code == 2 and "--exporter" in _error_line(r)
    r = _export(
        path,
        "tuple_out",
        out / "o.onnx",
        "--exporter",
        "dynamo",
        "--opset",
        "15",
        "--lowering",
        "portable",
    )
    assert r.exit_code == 1, r.output
    line = _error_line(r)
    assert "opset 16 or newer" in line and "--opset=16 or --exporter='torchscript'" in line
    assert not (out / "o.onnx").exists()


def test_exporter_dynamo_is_the_default(factories):
    """The default export goes through torch.export at the target's opset (17 for ort-cpu,
    down-converted from the exporter's 18), recorded in export_args; ``--output-names``
    applies to it too."""
    pytest.importorskip("onnxscript")
    path, out = factories
    r = _export(path, "tuple_out", out / "d.onnx", "--output-names", "y,t")
    assert r.exit_code == 0, r.output
    assert "opset 17" in r.output and "Warning" not in r.output
    model = onnx.load(str(out / "d.onnx"))
    assert '"exporter": "dynamo"' in stn_metadata(model)["export_args"]
    assert _outputs(out / "d.onnx") == ["y", "t"]
    assert [i.name for i in model.graph.input] == ["x"]  # forward(self, x)


def test_optimize_default_exact_for_ort_cpu_and_none_on_request(factories):
    """ort-cpu exports run the exact rewrites (stn_deploy.optimize) by default and record them;
    --optimize none writes the plain lowering; both are self-checked against torch."""
    import json

    path, out = factories
    r = _export(path, "tuple_out", out / "e.onnx")
    assert r.exit_code == 0, r.output
    meta = stn_metadata(onnx.load(str(out / "e.onnx")))
    assert json.loads(meta["optimize"])["mode"] == "exact"
    assert '"optimize": "exact"' in meta["export_args"]
    r = _export(path, "tuple_out", out / "n.onnx", "--optimize", "none")
    assert r.exit_code == 0, r.output
    meta = stn_metadata(onnx.load(str(out / "n.onnx")))
    assert "optimize" not in meta and '"optimize": "none"' in meta["export_args"]
    r = _export(path, "tuple_out", out / "x.onnx", "--optimize", "fast")
    assert r.exit_code == 2 and "--optimize" in _error_line(r)
    r = _export(path, "tuple_out", out / "o.onnx", "--target", "openvino")
    assert r.exit_code == 0, r.output
    assert "optimize" not in stn_metadata(onnx.load(str(out / "o.onnx")))
