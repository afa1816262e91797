"""Packaging: the runtime side imports without torch; the extras keep the two ORT wheels apart."""

import subprocess
import sys
import textwrap
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]

NO_TORCH = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    import stn_deploy, stn_deploy.data, stn_deploy.report.png, stn_deploy.io.atomic, stn_deploy.cli
    import stn_deploy.export.lower, stn_deploy.export.golden, stn_deploy.export.portable
    import stn_deploy.export.targets, stn_deploy.inspect_onnx, stn_deploy.timing
    import stn_deploy.runtimes
    from stn_deploy.runtimes import open_session
    s = open_session("cpu", "exported/mnist-affine-native.onnx")
    assert open_session("reference", "exported/mnist-affine-portable.onnx").info.name == "reference"
    import numpy as np
    from stn_deploy.data import make_split, synthetic_digits
    x, y = make_split(*synthetic_digits(4), "rts", 0)
    assert x.shape == (4, 1, 42, 42)
    from click.testing import CliRunner
    r = CliRunner().invoke(stn_deploy.cli.main, ["--help"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(stn_deploy.cli.main, ["data", "info", "--data-dir", "/nonexistent-dir"])
    assert r.exit_code == 1 and r.output.startswith("Error: "), r.output
    r = CliRunner().invoke(stn_deploy.cli.main, ["train", "--epochs", "1", "--out", "/tmp/x"])
    assert r.exit_code == 1, r.output
    assert r.output.strip() == (
        "Error: `stn-deploy train` needs torch, which is not installed: "
        "pip install 'stn-deploy[torch]'"
    ), r.output
    print("torch-free ok", sorted(m for m in sys.modules if m.startswith("torch")))
    """
)


def test_runtime_side_imports_without_torch():
    r = subprocess.run(
        [sys.executable, "-c", NO_TORCH], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "torch-free ok ['torch']" in r.stdout  # only the blocked placeholder


def test_import_stn_deploy_does_not_load_torch():
    code = "import sys, stn_deploy, stn_deploy.cli; print('torch' in sys.modules)"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stdout + r.stderr


def test_ort_wheels_are_mutually_exclusive_extras():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(meta["dependencies"])
    assert "onnxruntime" not in core
    extras = meta["optional-dependencies"]
    assert any(d.startswith("onnxruntime>") for d in extras["cpu"])
    assert any(d.startswith("onnxruntime-gpu") for d in extras["gpu"])
    assert not any(
        "onnxruntime" in d
        for name, deps in extras.items()
        if name not in ("cpu", "gpu")
        for d in deps
    )
    for dep in ("onnx", "click", "numpy", "tqdm"):
        assert any(d.startswith(dep) for d in meta["dependencies"]), dep
    # torch is the training/export side's extra: a target device installs [cpu] alone
    assert not any(d.startswith("torch") for d in meta["dependencies"])
    assert any(d.startswith("torch>") for d in extras["torch"])
    assert meta["scripts"]["stn-deploy"] == "stn_deploy.cli:main"


def test_cpu_constraint_pins_the_local_torch_build():
    lines = [ln.strip() for ln in (ROOT / "constraints" / "cpu.txt").read_text().splitlines()]
    assert "torch==2.13.0" in lines
    assert "-c constraints/cpu.txt" in (ROOT / "Makefile").read_text()


def test_ci_also_runs_the_suite_on_torchs_generic_kernels():
    assert "make test-portable" in (ROOT / ".ci" / "run").read_text()
    assert "ATEN_CPU_CAPABILITY=default" in (ROOT / "Makefile").read_text()


def test_median_us_measures_what_it_calls(fake_clock):
    from stn_deploy.timing import median_us

    calls = []
    durations = iter([1.0] * 2 + [0.002, 0.004, 0.001, 0.003, 0.005])  # warm-up, then timed
    t = median_us(
        lambda: (calls.append(1), fake_clock.sleep(next(durations))),
        warmup=2,
        iters=5,
        clock=fake_clock,
    )
    assert len(calls) == 7
    assert abs(t - 3000) < 1e-3  # the timed calls' median in us; the warm-up is not timed
