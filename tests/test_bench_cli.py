"""`stn-deploy bench` through the command line: output, reports, one-line errors, torch-free."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from stn_deploy.cli import main

ROOT = Path(__file__).resolve().parents[1]
NATIVE = str(ROOT / "exported" / "mnist-affine-native.onnx")
QUICK = ["--batch-sizes", "1,2", "--iters", "2", "--warmup", "1", "--runtimes", "cpu"]


def invoke(*args):
    return CliRunner().invoke(main, ["bench", *map(str, args)])


def test_table_and_reports(tmp_path):
    out = tmp_path / "reports"
    r = invoke(
        NATIVE,
        *QUICK,
        "--json-out",
        out / "b.json",
        "--markdown",
        out / "b.md",
        "--plot",
        out / "b.png",
    )
    assert r.exit_code == 0, r.output
    assert "p50 µs" in r.output and "img/s" in r.output and "machine:" in r.output
    d = json.loads((out / "b.json").read_text())
    assert d["schema"] == "stn-deploy/bench" and [row["batch"] for row in d["rows"]] == [1, 2]
    assert (out / "b.md").read_text().startswith("# Latency")
    assert (out / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_json_to_stdout():
    r = invoke(NATIVE, *QUICK, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert all(row["status"] == "ok" for row in d["rows"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-sizes", "0"], "--batch-sizes must be 1 or more, got 0"),
        (["--batch-sizes", "1,-8"], "--batch-sizes must be 1 or more, got -8"),
        (["--runtimes", "cpu,warpdrive"], "unknown runtime/provider 'warpdrive'"),
        (["--compare", "torch"], "--compare torch needs the torch model"),
        (["--compare", "stock-export"], "--compare stock-export needs the torch model"),
        (["--runtimes", "torch"], "needs the torch model"),
        (["--iters", "3", "--duration", "1"], "not both"),
        (["--warmup", "-1"], "--warmup must be 0 or more"),
    ],
)
def test_bad_input_is_a_one_line_error(args, message):
    r = invoke(NATIVE, *args)
    assert r.exit_code == 2, r.output  # a usage error
    assert r.output.startswith("Error: ") and message in r.output
    assert r.output.count("\n") == 1, r.output


def test_unwritable_report_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for opt in ("--markdown", "--json-out", "--plot"):
        r = invoke(NATIVE, *QUICK, opt, blocker / "sub" / "report.out")
        assert r.exit_code == 1 and r.output.startswith("Error: cannot write to directory"), (
            r.output
        )
        assert r.output.count("\n") == 1


def test_missing_model_is_a_one_line_error(tmp_path):
    r = invoke(tmp_path / "nope.onnx", *QUICK)
    assert r.exit_code == 1 and "model file not found" in r.output


def test_cuda_without_gpu_skip_row_and_strict():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has the CUDA EP")
    r = invoke(
        NATIVE, "--runtimes", "cpu,cuda", "--batch-sizes", "1", "--iters", "2", "--cuda-graph"
    )
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.split()[:1] == ["mnist-affine-native"]]
    assert any(" cuda " in ln and "skipped: CUDAExecutionProvider is not in" in ln for ln in lines)
    assert any(
        "[cuda-graph]" in ln and " cpu " in ln and "skipped: CUDA graphs" in ln for ln in lines
    )
    r = invoke(NATIVE, "--runtimes", "cuda", "--batch-sizes", "1", "--fail-on-error")
    assert r.exit_code == 1 and r.output.startswith("Error: cuda cannot run here")


def test_compare_with_checkpoint():
    r = invoke(
        NATIVE,
        *QUICK,
        "--compare",
        "torch",
        "--reference",
        ROOT / "exported" / "mnist-affine-rts.pt",
    )
    assert r.exit_code == 0, r.output
    assert "torch eager" in r.output and "× torch" in r.output


NO_TORCH = textwrap.dedent(
    """
    import json, sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    from click.testing import CliRunner
    from stn_deploy.cli import main
    model = "exported/mnist-affine-native.onnx"
    r = CliRunner().invoke(main, ["bench", model, "--runtimes", "cpu", "--batch-sizes", "1,3",
                                  "--iters", "2", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert [row["status"] for row in d["rows"]] == ["ok", "ok"], d["rows"]
    assert d["model"]["input_shape"] == [1, 42, 42], d["model"]
    assert d["model"]["shape_source"].startswith("golden bundle"), d["model"]
    r = CliRunner().invoke(main, ["bench", model, "--runtimes", "cpu", "--batch-sizes", "1",
                                  "--iters", "1", "--input-shape", "1,42,42"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["bench", model, "--compare", "torch", "--reference",
                                  "exported/mnist-affine-rts.pt"])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "torch" in r.output, r.output
    assert r.output.count("\\n") == 1, r.output
    print("torch-free ok", sorted(m for m in sys.modules if m.startswith("torch")))
    """
)


def test_bench_runs_without_torch():
    r = subprocess.run(
        [sys.executable, "-c", NO_TORCH], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "torch-free ok ['torch']" in r.stdout


def test_compare_with_factory(tmp_path):
    factory = tmp_path / "factory.py"
    factory.write_text(
        "from stn_deploy.pytorch.models import build_model\n"
        "def make():\n"
        "    return build_model('mnist-affine', in_size=42)\n"
    )
    r = invoke(
        NATIVE,
        *QUICK,
        "--compare",
        "torch",
        "--reference",
        f"{factory}:make",
        "--input-shape",
        "1,42,42",
    )
    assert r.exit_code == 0, r.output
    assert "torch eager" in r.output
    r = invoke(NATIVE, *QUICK, "--compare", "torch", "--reference", f"{factory}:make")
    assert r.exit_code == 1 and "--input-shape" in r.output, r.output
