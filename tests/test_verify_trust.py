"""verify on users' own models (issue 14): the inherent float32 error gate (an ill-conditioned
noise input passes with its inherent error reported, a wrong file on it fails), stock exports
and multi-output models against their torch factory, output kinds, the time budget, every
runtime failure phase as one line, --reference-onnx without a bundle, float64 golden outputs."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from stn_deploy.cli import main
from stn_deploy.errors import StnDeployError
from stn_deploy.export.golden import read_bundle, write_bundle
from stn_deploy.io.hashing import file_sha256
from stn_deploy.runtimes import RuntimeInfo, TensorSpec
from stn_deploy.verify import Comparator, CompareFunc, Runner, format_table, sessions, verify_model
from stn_deploy.verify import budget as budget_mod
from stn_deploy.verify.budget import TimeBudget
from stn_deploy.verify.inherent import K, inherent_error
from stn_deploy.verify.inputs import InputSet
from stn_deploy.verify.tolerances import Tolerance

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "exported"
NATIVE = EXPORTED / "mnist-affine-native.onnx"
SENSITIVE = f"{ROOT / 'benchmarks' / 'stn224.py'}:stn48_sensitive"
SHAPE = (3, 48, 48)


def load(ref: str, shape: tuple[int, ...]):
    from stn_deploy.pytorch.models.loading import load_model

    return load_model(ref, input_shape=",".join(map(str, shape)))


def side_of(loaded):
    from stn_deploy.pytorch import torch_side

    return torch_side(loaded)


def stock_file(loaded, path: Path, **kw) -> Path:
    """Stock ``torch.onnx.export`` (the TorchScript path: fast), input named ``x``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            loaded.model,
            (torch.zeros(1, *loaded.input_shape),),
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "N"}},
            **kw,
        )
    return path


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory):
    loaded = load(SENSITIVE, SHAPE)
    path = stock_file(loaded, tmp_path_factory.mktemp("stock") / "stn48.onnx")
    return loaded, path


def cli(*args):
    return CliRunner().invoke(main, ["verify", *map(str, args)])


# --------------------------------------------------------------------------- inherent error
def test_inherent_error_is_the_rows_largest_float32_error_with_an_ulp_floor():
    r32 = np.array([[1.0, 2.0, 0.0], [5.0, 5.0, 5.0]], np.float32)
    r64 = np.array([[1.0 + 1e-6, 2.0, 0.0], [5.0, 5.0, 5.0]])
    inh = inherent_error(r32, r64)
    assert inh[0].tolist() == pytest.approx([1e-6] * 3, rel=1e-3)  # the row's largest
    # a row where float32 is exact: a few ulps of each value, never 0 above 0
    assert inh[1].tolist() == [4 * float(np.spacing(np.float32(5.0)))] * 3


def test_noise_input_on_an_image_stn_passes_with_its_inherent_error_reported(sensitive):
    loaded, path = sensitive
    rep = verify_model(
        path,
        torch_side=side_of(loaded),
        runtimes="cpu",
        inputs="stress",
        count=6,
        stn_stats=False,
    )
    assert rep.passed, format_table(rep)
    (s,) = rep.runtimes[0].sets
    (o,) = s.outputs
    # ill-conditioned: float32 itself (torch's float32 vs its float64) is beyond atol here
    assert o.stats.inherent_max > rep.tolerance["atol"]
    assert rep.model["inputs"][0]["name"] == "x" and rep.model["output_kinds"] == {
        o.output: "image"
    }
    assert o.argmax_agreement is None and s.accuracy is None  # not class scores
    assert "inherent" in format_table(rep)
    assert rep.input_sets[0]["inherent"] == [o.output]


def test_a_wrong_file_fails_on_the_same_noise_input(sensitive, tmp_path):
    loaded, path = sensitive
    m = onnx.load(str(path))
    gs = next(n for n in m.graph.node if n.op_type == "GridSample")
    for a in gs.attribute:
        if a.name == "padding_mode":
            a.s = b"border"
    bad = tmp_path / "border.onnx"
    onnx.save(m, str(bad))
    rep = verify_model(
        bad, torch_side=side_of(loaded), runtimes="cpu", inputs="stress", count=6, stn_stats=False
    )
    assert not rep.passed
    assert f"and {K:g} x the inherent error" in rep.runtimes[0].reason


def test_reduced_precision_keeps_its_own_gate():
    rep = verify_model(EXPORTED / "mnist-affine-native-fp16.onnx", runtimes="cpu", inputs="golden")
    assert rep.tolerance["inherent_k"] is None


# --------------------------------------------------------------------------- any file, any output
def test_multi_output_stock_export_verifies_against_its_factory(tmp_path):
    ref = f"{ROOT / 'benchmarks' / 'stn224.py'}:stn32_pair"
    loaded = load(ref, (3, 32, 32))
    path = stock_file(loaded, tmp_path / "two.onnx", output_names=["output_0", "output_1"])
    r = cli(
        path,
        "--reference",
        ref,
        "--input-shape",
        "3,32,32",
        "--runtimes",
        "cpu",
        "--inputs",
        "random,stress",
        "--count",
        "3",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    assert "output_0" in r.output and "output_1" in r.output and "PASSED" in r.output
    assert r.output.count(" ok") == 4  # 2 outputs x 2 input sets


def test_output_kinds_come_from_the_model():
    from stn_deploy.verify.outputs import output_kinds
    from stn_deploy.verify.subject import Subject

    s = Subject.load(NATIVE)
    assert output_kinds(s.proto, s.meta) == {"log_probs": "class-scores"}
    assert output_kinds(s.proto, {**s.meta, "output_kinds": '{"log_probs": "tensor"}'}) == {
        "log_probs": "tensor"
    }


def test_reference_onnx_needs_no_bundle_and_matches_inputs_by_position(tmp_path):
    m = onnx.load(str(NATIVE))
    m.graph.input[0].name = "x"
    for n in m.graph.node:
        n.input[:] = ["x" if i == "image" else i for i in n.input]
    path = tmp_path / "renamed.onnx"
    onnx.save(m, str(path))
    rep = verify_model(
        path, reference_model=NATIVE, runtimes="cpu", inputs="random", count=2, stn_stats=False
    )
    assert rep.passed, format_table(rep)
    assert any("matched by position (x -> image)" in w for w in rep.warnings)


def test_golden_bundle_float64_outputs_round_trip_and_old_bundles_fall_back(tmp_path):
    path = tmp_path / "m.onnx"
    shutil.copy(NATIVE, path)
    b = read_bundle(EXPORTED / "mnist-affine-native.io.npz")
    out64 = {k: v.astype(np.float64) for k, v in b.outputs.items()}
    meta = {"model_sha256": file_sha256(path)}
    write_bundle(tmp_path / "m.io.npz", b.inputs, b.outputs, meta, outputs64=out64)
    assert read_bundle(tmp_path / "m.io.npz").outputs64.keys() == out64.keys()
    rep = verify_model(path, runtimes="cpu", inputs="golden", stn_stats=False)
    assert rep.passed and rep.input_sets[0]["inherent"] == ["log_probs"]
    assert not any("float64" in w for w in rep.warnings)
    write_bundle(tmp_path / "m.io.npz", b.inputs, b.outputs, meta)  # an old bundle
    rep = verify_model(path, runtimes="cpu", inputs="golden", stn_stats=False)
    assert rep.passed and rep.input_sets[0]["inherent"] == []
    assert any("holds no float64 reference" in w for w in rep.warnings)


# --------------------------------------------------------------------------- failure phases
class Boom:
    """An ORT session that fails in one phase with a foreign exception type."""

    def __init__(self, inner, phase):
        self.inner, self.phase = inner, phase
        self.info, self.inputs, self.outputs = inner.info, inner.inputs, inner.outputs
        self.primary = inner.primary

    def run(self, feeds, output_names=None):
        if self.phase == "run":
            raise ValueError("kernel exploded\nsecond line")
        return self.inner.run(feeds, output_names)

    def placement(self, feeds):
        if self.phase == "placement probe":
            raise RuntimeError("profiler crashed")
        return self.inner.placement(feeds)


@pytest.mark.parametrize("phase", ["load", "run", "placement probe"])
def test_every_runtime_failure_phase_is_one_line_and_exit_1(monkeypatch, phase):
    real = sessions.open_runtime

    def open_runtime(name, model, **kw):
        if phase == "load":
            raise OSError("cannot map the file")
        return Boom(real(name, model, **kw), phase)

    monkeypatch.setattr(sessions, "open_runtime", open_runtime)
    r = cli(NATIVE, "--runtimes", "cpu", "--inputs", "golden", "--quiet")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception
    last = r.output.strip().splitlines()[-1]
    want = "run on the golden inputs" if phase == "run" else phase
    assert last.startswith(f"Error: verify failed: cpu: {want} failed: "), r.output
    assert "Traceback" not in r.output and "second line" not in r.output


def test_a_failing_torch_reference_is_one_line(monkeypatch, sensitive):
    loaded, path = sensitive
    side = side_of(loaded)

    def broken(**kw):
        session = side.open_session(**kw)
        session.run = lambda feeds, output_names=None: (_ for _ in ()).throw(KeyError("x"))
        return session

    from dataclasses import replace

    with pytest.raises(StnDeployError, match=r"^the torch reference: run on the stress inputs"):
        verify_model(
            path,
            torch_side=replace(side, open_session=broken),
            runtimes="cpu",
            inputs="stress",
            count=2,
        )


# --------------------------------------------------------------------------- time budget
class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class SlowSession:
    """1 s per image on a fake clock."""

    def __init__(self, clock, estimate=None):
        self.clock = clock
        self.info = RuntimeInfo(name="slow", library="fake", version="0", device="cpu")
        self.inputs = [TensorSpec("image", "float32", (None, 1, 2, 2))]
        self.outputs = [TensorSpec("y", "float32", None)]
        self.primary = "fake"
        if estimate is not None:
            self.estimate_seconds_per_image = lambda: estimate

    def run(self, feeds, output_names=None):
        x = feeds["image"]
        self.clock.t += len(x)
        return {"y": x.reshape(len(x), -1).sum(1, keepdims=True)}

    def placement(self, feeds):
        return None


class SlowRunner(Runner):
    def __init__(self, session):
        super().__init__("slow", None)
        self.session = session

    def activate(self):
        return self.session


def sets(n=6):
    x = np.ones((n, 1, 2, 2), np.float32)
    return [InputSet(k, {"image": x}, k) for k in ("golden", "random", "stress")]


def test_a_slow_runtime_runs_the_subset_that_fits_its_budget(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(budget_mod.time, "perf_counter", clock)
    lines = []
    (run,) = Comparator.run(
        [SlowRunner(SlowSession(clock))], sets(), budget=TimeBudget(7.0, lines.append)
    )
    # one image timed (1 s), then 6 s left for 3 sets: 2 each; the last takes what is left
    assert {k: len(v["y"]) for k, v in run.outputs.items()} == {
        "golden": 2,
        "random": 2,
        "stress": 3,
    }
    assert run.rows == {"golden": 2, "random": 2, "stress": 3} and clock.t == 7.0
    assert "2 of 6 images run within the 7 s budget" in run.notes[0]
    assert len(lines) == 3 and lines[0].split()[1:4] == ["slow", "golden", "2/6"]
    refs = type("R", (), {})()
    refs.outputs = {s.name: {"y": np.full((6, 1), 4.0)} for s in sets()}
    refs.labels = {s.name: "t" for s in sets()}
    refs.gated = {s.name for s in sets()}
    (res,) = Comparator.compare_accuracy(
        [run], sets(), refs, CompareFunc.simple(Tolerance(1e-4, 1e-3))
    )
    assert res.passed and [s.rows for s in res.sets] == [2, 2, 3]


def test_a_runtime_whose_estimate_exceeds_its_budget_is_skipped_with_a_note(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(budget_mod.time, "perf_counter", clock)
    (run,) = Comparator.run(
        [SlowRunner(SlowSession(clock, estimate=30.0))], sets(), budget=TimeBudget(20.0)
    )
    assert run.status == "skipped" and clock.t == 0 and "not run within the 20 s" in run.reason


def test_the_reference_evaluator_is_skipped_on_a_model_too_big_for_its_budget(monkeypatch):
    from stn_deploy.runtimes.reference import ReferenceSession

    monkeypatch.setattr(ReferenceSession, "estimate_seconds_per_image", lambda self: 1e3)
    rep = verify_model(NATIVE, inputs="golden", runtimes=None, stn_stats=False)
    by = {r.name: r for r in rep.runtimes}
    assert by["reference"].status == "skipped" and "--timeout" in by["reference"].reason
    assert by["cpu"].passed and rep.passed
    # named explicitly, it runs whatever the estimate says
    rep = verify_model(NATIVE, inputs="random", runtimes="reference", count=1, stn_stats=False)
    assert rep.runtimes[0].passed


# --------------------------------------------------------------------------- bisect in functions
def test_bisect_looks_inside_model_local_functions(tmp_path):
    """A wrong constant inside the custom lowering's function body: bisect inlines the
    functions (of the file and of its re-export) and names the node inside it."""
    from stn_deploy.pytorch import torch_side
    from stn_deploy.pytorch.exporter import export_model
    from stn_deploy.pytorch.models.loading import load_model

    loaded = load_model(str(EXPORTED / "mnist-affine-rts.pt"))
    fresh = tmp_path / "fresh.onnx"  # exported now, so that its re-export matches it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_model(loaded, fresh, lowering="custom", exporter="torchscript", golden_count=1)
    m = onnx.load(str(fresh))
    one = next(n for n in m.functions[0].node if n.output[0] == "one")
    one.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(1.05, np.float32)))
    path = tmp_path / "custom.onnx"
    onnx.save(m, str(path))
    side = torch_side(loaded)
    rep = verify_model(
        path,
        torch_side=side,
        runtimes="cpu",
        inputs="random",
        count=2,
        bisect=True,
        stn_stats=False,
    )
    assert not rep.passed
    b = rep.runtimes[0].bisect
    assert b["kind"] == "model" and b["first"] is not None, b
    top = {n.name for n in m.graph.node}
    assert b["first"]["node"] not in top and "gs_g1" in b["first"]["output"], b["first"]
