"""verify's comparator (after Polygraphy's): compare functions with per-output tolerances and
results with named statistics and a truth value; Comparator.run then compare_accuracy over fake
runners; VerifyOptions; verify never refers to the torch side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from stn_deploy.errors import StnDeployError
from stn_deploy.runtimes import RuntimeInfo, RuntimeUnavailable, TensorSpec
from stn_deploy.verify import (
    Comparator,
    CompareFunc,
    OutputComparison,
    Runner,
    SetResult,
    Tolerance,
    VerifyOptions,
    compare_arrays,
    verify_model,
)
from stn_deploy.verify.inputs import InputSet

ROOT = Path(__file__).resolve().parents[1]
FP32 = Tolerance(atol=1e-4, rtol=1e-3)


def input_set(name="random", n=4, labels=None):
    return InputSet(name, {"image": np.zeros((n, 1, 2, 2), np.float32)}, name, labels=labels)


# --------------------------------------------------------------------------- result objects
def test_output_comparison_has_named_statistics_and_a_truth_value():
    ref = np.array([[1.0, 2.0, 4.0]], np.float32)
    ok = compare_arrays(ref, ref + np.float32(5e-5), atol=1e-4, rtol=1e-3, name="y")
    bad = compare_arrays(ref, ref * 2, atol=1e-4, rtol=1e-3, name="y")
    assert isinstance(ok, OutputComparison) and ok and ok.passed
    assert not bad and not bad.passed and "3 of 3 elements" in bad.reason
    assert bad.stats.max_abs == pytest.approx(4.0) and bad.stats.max_rel == pytest.approx(1.0)
    assert bad.stats.mismatches == 3 and bad.stats.elements == 3
    assert bad.stats.median_abs == pytest.approx(2.0) and bad.stats.mean_abs == pytest.approx(7 / 3)


def test_set_result_is_true_when_every_output_passed():
    assert SetResult("golden", "torch", True)
    assert not SetResult("golden", "torch", False, "no output 'y'")


# --------------------------------------------------------------------------- compare functions
def test_simple_compare_holds_each_output_to_its_own_tolerance():
    ref = {"log_probs": np.zeros((4, 10)), "theta": np.zeros((4, 6))}
    out = {"log_probs": ref["log_probs"] + 5e-5, "theta": ref["theta"] + 5e-3}
    s = input_set()
    strict = CompareFunc.simple(FP32)
    res = strict(ref, out, s, "torch")
    assert not res and res.input_set == "random" and res.reference == "torch"
    assert [bool(o) for o in res.outputs] == [True, False]
    assert res.reason.startswith("theta: 24 of 24 elements beyond atol=0.0001")

    loose = CompareFunc.simple(FP32, per_output={"theta": Tolerance(atol=1e-2, rtol=0)})
    assert loose.tolerance_for("theta").atol == 1e-2 and loose.tolerance_for("log_probs") == FP32
    res = loose(ref, out, s, "torch")
    assert res and res.reason == ""
    assert res.outputs[1].stats.max_abs == pytest.approx(5e-3)
    # the per-output tolerance can also be stricter than the default
    tight = CompareFunc.simple(FP32, per_output={"log_probs": Tolerance(atol=1e-6, rtol=0)})
    assert [bool(o) for o in tight(ref, {**out, "theta": ref["theta"]}, s, "t").outputs] == [
        False,
        True,
    ]


def test_simple_compare_missing_output_and_classifier_gates():
    ref = {"log_probs": np.eye(4, 10)}
    res = CompareFunc.simple(FP32)(ref, {}, input_set(), "golden bundle")
    assert not res and res.reason == "no output 'log_probs'" and res.outputs == []
    # a classifier output: argmax agreement and (labelled) accuracy, computed once per set
    labels = np.arange(4)
    res = CompareFunc.simple(FP32, num_classes=10)(
        ref, {"log_probs": np.eye(4, 10)}, input_set("mnist", labels=labels), "torch"
    )
    assert res and res.outputs[0].argmax_agreement == 1.0
    assert res.accuracy == {
        "reference": 100.0,
        "candidate": 100.0,
        "delta": 0.0,
        "images": 4,
        "gated": False,
    }


# --------------------------------------------------------------------------- run, then compare
class FakeSession:
    def __init__(self, name, scale=1.0, fail_on=None):
        self.info = RuntimeInfo(name=name, library="fake", version="0", device="cpu")
        self.inputs = [TensorSpec("image", "float32", (None, 1, 2, 2))]
        self.outputs = [TensorSpec("y", "float32", None)]
        self.primary = "fake"
        self.scale, self.fail_on = scale, fail_on

    def run(self, feeds, output_names=None):
        x = feeds["image"]
        if self.fail_on is not None and len(x) == self.fail_on:
            raise StnDeployError("boom")
        return {"y": (x.reshape(len(x), -1).sum(1, keepdims=True) + 1) * self.scale}

    def placement(self, feeds):
        return None


class FakeRunner(Runner):
    def __init__(self, name, session=None, exc=None, unavailable=""):
        super().__init__(name, None, unavailable=unavailable)
        self.session, self.exc = session, exc

    def activate(self):
        if self.exc is not None:
            raise self.exc
        return self.session


def test_comparator_runs_every_runner_then_judges_each():
    sets = [input_set("golden", 2), input_set("random", 3)]
    runners = [
        FakeRunner("good", FakeSession("good")),
        FakeRunner("wrong", FakeSession("wrong", scale=2.0)),
        FakeRunner("crashes", FakeSession("crashes", fail_on=3)),
        FakeRunner("gone", unavailable="not installed"),
        FakeRunner("nope", exc=RuntimeUnavailable("no device")),
        FakeRunner("broken", exc=StnDeployError("cannot load")),
        FakeRunner("secondary", FakeSession("secondary")),
    ]
    runs = Comparator.run(runners, sets, skip={"secondary": {"random"}})
    statuses = [r.status for r in runs]
    assert statuses == ["ran", "ran", "error", "unavailable", "unavailable", "error", "ran"]
    assert runs[2].errors == {"random": "run on the random inputs failed: boom"}
    assert list(runs[2].outputs) == ["golden"]
    assert runs[5].reason == "load failed: cannot load"
    assert list(runs[-1].outputs) == ["golden"]  # it is the reference of random
    assert runs[0].placement == {"reported": False, "primary": "fake"}

    refs = SimpleNamespace(
        outputs={s.name: {"y": np.ones((s.count, 1))} for s in sets},
        labels={"golden": "golden bundle", "random": "secondary"},
        gated={"golden", "random"},
    )
    results = Comparator.compare_accuracy(runs, sets, refs, CompareFunc.simple(FP32))
    by = {r.name: r for r in results}
    assert by["good"].passed and by["secondary"].passed
    assert [s.input_set for s in by["secondary"].sets] == ["golden"]
    assert by["wrong"].status == "failed"
    assert by["wrong"].reason.startswith("golden inputs: y: 2 of 2 elements beyond")
    crashed = by["crashes"]
    assert crashed.status == "error" and crashed.reason == "run on the random inputs failed: boom"
    assert [s.input_set for s in crashed.sets] == ["golden", "random"] and crashed.sets[0]
    assert (by["gone"].status, by["gone"].reason) == ("unavailable", "not installed")
    assert (by["nope"].status, by["broken"].status) == ("unavailable", "error")


def test_an_ungated_set_is_reported_but_does_not_fail_the_runtime():
    sets = [input_set("golden", 2), input_set("stress", 2)]
    runs = Comparator.run([FakeRunner("rt", FakeSession("rt"))], sets)
    refs = SimpleNamespace(
        outputs={"golden": {"y": np.ones((2, 1))}, "stress": {"y": np.full((2, 1), 9.0)}},
        labels={"golden": "torch", "stress": "torch"},
        gated={"golden"},
    )
    (r,) = Comparator.compare_accuracy(runs, sets, refs, CompareFunc.simple(FP32))
    stress = r.sets[1]
    assert r.status == "passed" and not stress and stress.gated is False


# --------------------------------------------------------------------------- options
def test_verify_options_take_todays_keywords():
    o = VerifyOptions.of(runtimes="cpu", count=3, bisect=True)
    assert o.runtimes == "cpu" and o.count == 3 and o.bisect and o.seed == 0
    assert VerifyOptions.of(o, count=5).count == 5 and VerifyOptions.of(o, count=5).bisect
    with pytest.raises(TypeError, match="loaded"):
        VerifyOptions.of(loaded=object())
    with pytest.raises(StnDeployError, match="count must"):
        VerifyOptions.of(count=0).check()
    per = VerifyOptions.of(atol=1e-3, output_tolerances={"theta": {"atol": 0.5}})
    assert per.tolerance("fp32").atol == 1e-3
    assert per.per_output("fp32")["theta"].atol == 0.5
    assert per.per_output("fp32")["theta"].rtol == per.tolerance("fp32").rtol


def test_per_output_tolerances_reach_the_report(tmp_path):
    """A zero tolerance fails the file when nothing else gates it: the bundle is copied without
    its float64 outputs (an older bundle), so the inherent-error rule has no estimate."""
    import shutil

    src = ROOT / "exported" / "mnist-affine-native.onnx"
    native = tmp_path / src.name
    shutil.copyfile(src, native)
    with np.load(src.with_suffix(".io.npz")) as z:
        kept = {k: z[k] for k in z.files if not k.startswith("output64/")}
    np.savez(native.with_suffix(".io.npz"), **kept)
    rep = verify_model(
        native,
        VerifyOptions(runtimes="cpu", inputs="golden", stn_stats=False),
        output_tolerances={"log_probs": {"atol": 0.0, "rtol": 0.0}},
    )
    assert not rep.passed and rep.tolerance["per_output"]["log_probs"]["atol"] == 0.0
    assert verify_model(native, runtimes="cpu", inputs="golden", stn_stats=False).passed
    assert "per_output" not in verify_model(native, runtimes="cpu", inputs="golden").tolerance


# --------------------------------------------------------------------------- the torch boundary
def test_verify_never_refers_to_the_torch_side():
    src = ROOT / "stn_deploy" / "verify"
    assert not [p.name for p in src.glob("*.py") if "pytorch" in p.read_text()]
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import stn_deploy.verify, stn_deploy.verify.bisect, stn_deploy.verify.comparator\n"
        "print(sorted(m for m in sys.modules if m.startswith('stn_deploy.pytorch')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_one_torch_side_serves_verify_and_bench():
    """verify and bench take the same TorchSide (a torch-free protocol): here one whose "eager
    session" is ONNX Runtime on the exported file itself, so no torch is needed."""
    import onnx

    from stn_deploy.bench import bench_model
    from stn_deploy.runtimes import open_session
    from stn_deploy.torch_side import TorchSide

    native = ROOT / "exported" / "mnist-affine-native.onnx"
    opened, exported = [], []

    def session(output_names=None, threads=None):
        opened.append(output_names)
        return open_session("cpu", native, threads=threads, output_names=output_names)

    def export(path, **export_args):
        exported.append(export_args)
        onnx.save(onnx.load(str(native)), str(path))

    side = TorchSide(
        input_shape=(1, 42, 42),
        open_session=session,
        export=export,
        stock_export=lambda path: path,
        source="fake",
        distortion="rts",
    )
    rep = verify_model(native, torch_side=side, runtimes="cpu", inputs="golden", count=2)
    assert rep.passed and rep.reference["kind"] == "cpu", rep.reference
    assert rep.reference["description"] == "cpu eager (fake)" and opened == [["log_probs"]]
    r = bench_model(
        native,
        runtimes="cpu",
        batch_sizes=(1,),
        iters=1,
        warmup=0,
        compare=("torch",),
        torch_side=side,
        progress=False,
    )
    assert {row.route.kind for row in r.rows} == {"model", "torch"} and len(opened) == 2
    proto = side.reexport({"sampler": "native", "target": "ort-cpu"})
    assert isinstance(proto, onnx.ModelProto) and exported == [
        {"lowering": "native", "target": "ort-cpu"}
    ]
