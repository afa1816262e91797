"""bench_model: statistics on a sleep-based fake runtime, JSON schema, skip rows, fixed batch,
baselines, sweep, IO-binding call paths (on ORT CPU memory), plots.

The fake runtime "sleeps" on a fake clock (conftest.FakeClock) that the timer reads, so call
counts, turns and statistics are exact whatever the load on the machine."""

import functools
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from stn_deploy.bench import SCHEMA, SCHEMA_VERSION, bench_model, format_table, latency_stats
from stn_deploy.bench import api as bench_api
from stn_deploy.bench import runner as bench_runner
from stn_deploy.bench.result import (
    MODEL_KEYS,
    ROUTE_KEYS,
    ROW_KEYS,
    SETTINGS_KEYS,
    TOP_KEYS,
)
from stn_deploy.bench.tables import format_markdown
from stn_deploy.errors import StnDeployError
from stn_deploy.runtimes import Availability, RuntimeInfo, RuntimeSession, TensorSpec
from stn_deploy.timing import CallTimer, time_calls

NATIVE = "exported/mnist-affine-native.onnx"
CHECKPOINT = "exported/mnist-affine-rts.pt"
STAT_KEYS = {
    "iters",
    "batch",
    "mean_us",
    "p50_us",
    "p90_us",
    "p99_us",
    "min_us",
    "max_us",
    "std_us",
    "images_per_s",
}


def relu_model(path, batch="N", shape=(1, 4, 4)):
    """A one-node model: input 'x' [batch, *shape] -> Relu -> 'y' (batch an int = fixed)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *shape])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, *shape])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


class SleepSession(RuntimeSession):
    """A fake runtime whose run sleeps ``base + per_image * batch`` seconds (with ``sleep``)."""

    def __init__(self, name, base=0.002, per_image=0.0, fixed=None, *, sleep):
        self.base, self.per_image, self.sleep = base, per_image, sleep
        self.inputs = [TensorSpec("x", "float32", (fixed, 1, 4, 4))]
        self.outputs = [TensorSpec("y", "float32", (fixed, 1, 4, 4))]
        self.info = RuntimeInfo(name, "fake", "0", "CPU", ("fake",))
        self.calls = 0

    def run(self, feeds, output_names=None):
        self.calls += 1
        self.sleep(self.base + self.per_image * len(feeds["x"]))
        return {"y": feeds["x"]}


@pytest.fixture
def fake_runtime(monkeypatch, fake_clock):
    """Make every runtime a SleepSession on ``fake_clock``, which bench's timer reads; returns
    a dict to set its timings."""
    cfg = {"base": 0.002, "per_image": 0.0, "fixed": None, "sessions": []}

    def fake_open(name, model, **kw):
        s = SleepSession(name, cfg["base"], cfg["per_image"], cfg["fixed"], sleep=fake_clock.sleep)
        cfg["sessions"].append(s)
        return s

    monkeypatch.setattr(bench_runner, "open_session", fake_open)
    monkeypatch.setattr(bench_runner, "CallTimer", functools.partial(CallTimer, clock=fake_clock))
    monkeypatch.setattr(bench_api, "availability", lambda n: Availability(n, True))
    return cfg


def test_latency_stats_on_known_times():
    s = latency_stats([0.001, 0.002, 0.003, 0.004, 0.010], batch=10)
    assert s.iters == 5 and s.batch == 10
    assert s.min_us == pytest.approx(1000) and s.max_us == pytest.approx(10000)
    assert s.p50_us == pytest.approx(3000)
    assert s.mean_us == pytest.approx(4000)
    assert s.p90_us == pytest.approx(np.percentile([1, 2, 3, 4, 10], 90) * 1000)
    assert s.std_us == pytest.approx(np.std([1000, 2000, 3000, 4000, 10000], ddof=1))
    assert s.images_per_s == pytest.approx(10 / 0.004)
    assert latency_stats([0.5], 1).std_us == 0.0
    with pytest.raises(StnDeployError):
        latency_stats([], 1)


def test_time_calls_counts_warmup_iters_and_duration(fake_clock):
    calls = []
    times = time_calls(lambda: calls.append(1), warmup=3, iters=7)
    assert len(times) == 7 and len(calls) == 10
    calls.clear()
    tick = 2.0**-7  # a call of ~7.8 ms; binary fractions: the clock's sums are exact
    call = lambda: (calls.append(1), fake_clock.sleep(tick))  # noqa: E731
    times = time_calls(call, warmup=0, duration=10 * tick, clock=fake_clock)
    assert times == [tick] * 10 and len(calls) == 10  # calls until the duration is spent
    calls.clear()
    times = time_calls(call, warmup=2, duration=2 * tick, clock=fake_clock)
    assert times == [tick] * 5 and len(calls) == 7  # but at least MIN_ITERS timed calls
    for bad in ({"warmup": -1}, {"iters": 0}, {"duration": 0.0}, {"iters": 2, "duration": 1.0}):
        with pytest.raises(StnDeployError):
            time_calls(lambda: None, **bad)


def test_statistics_of_a_sleeping_runtime(fake_runtime, tmp_path):
    fake_runtime.update(base=0.002, per_image=0.0005)  # 2 ms + 0.5 ms per image
    model = relu_model(tmp_path / "m.onnx")
    r = bench_model(model, runtimes="cpu", batch_sizes=(1, 8), warmup=2, iters=6, progress=False)
    rows = {row.batch: row for row in r.rows}
    assert [row.status for row in r.rows] == ["ok", "ok"]
    assert fake_runtime["sessions"][0].calls == 2 * (2 + 6)
    for batch, expect_us in ((1, 2500), (8, 6000)):
        s = rows[batch].stats
        assert s.iters == 6 and s.batch == batch
        # every call takes exactly its fake time: all the statistics are that time
        for got in (s.min_us, s.p50_us, s.p90_us, s.p99_us, s.max_us, s.mean_us):
            assert got == pytest.approx(expect_us, rel=1e-9)
        assert s.std_us == pytest.approx(0.0, abs=1e-6)
        assert s.images_per_s == pytest.approx(batch / (s.mean_us * 1e-6))
    assert rows[8].stats.p50_us > rows[1].stats.p50_us


def test_json_schema_is_stable(fake_runtime, tmp_path):
    model = relu_model(tmp_path / "m.onnx")
    d = bench_model(model, runtimes="cpu", batch_sizes="1", iters=2, progress=False).to_dict()
    assert tuple(d) == TOP_KEYS
    assert (
        d["schema"] == SCHEMA == "stn-deploy/bench" and d["schema_version"] == SCHEMA_VERSION == 1
    )
    assert tuple(d["model"]) == MODEL_KEYS and tuple(d["settings"]) == SETTINGS_KEYS
    assert tuple(d["routes"][0]) == ROUTE_KEYS and tuple(d["rows"][0]) == ROW_KEYS
    assert set(d["rows"][0]["stats"]) == STAT_KEYS
    assert set(d["rows"][0]["speedup"]) == {"torch", "stock-export"}
    assert {"cpu", "cores", "versions", "gpus", "load_average"} <= set(d["machine"])
    assert d["model"]["input_shape"] == [1, 4, 4] and d["model"]["shape_source"] == "model file"
    json.dumps(d)  # JSON-ready
    # the pinned key lists, written out: change them only with a schema_version bump
    assert ROW_KEYS == (
        "route", "kind", "runtime", "label", "lowering", "precision", "mode",
        "batch", "status", "reason", "stats", "speedup",
    )  # fmt: skip


def test_fixed_batch_model_benches_its_own_size_and_says_so(fake_runtime, tmp_path):
    fake_runtime.update(base=1e-4, fixed=2)  # on the fake clock: takes no real time
    model = relu_model(tmp_path / "m.onnx", batch=2)
    r = bench_model(model, runtimes="cpu", batch_sizes=(1, 8), iters=2, progress=False)
    assert [(row.batch, row.status) for row in r.rows] == [
        (1, "skipped"),
        (8, "skipped"),
        (2, "ok"),
    ]
    assert "fixed at 2" in r.rows[0].reason
    assert any("fixed at 2" in n and "benched batch 2" in n for n in r.notes)
    assert r.to_dict()["model"]["fixed_batch"] == 2
    with pytest.raises(StnDeployError, match="fixed at 2"):
        bench_model(model, runtimes="cpu", batch_sizes=(1,), iters=2, progress=False, strict=True)


def test_fixed_batch_on_real_ort(tmp_path):
    model = relu_model(tmp_path / "m.onnx", batch=1)
    r = bench_model(model, runtimes="cpu", batch_sizes=(1, 4), iters=3, progress=False)
    assert [(row.batch, row.status) for row in r.rows] == [(1, "ok"), (4, "skipped")]


def test_cuda_without_a_gpu_is_a_skip_row():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has the CUDA EP")
    r = bench_model(
        NATIVE, runtimes="cpu,cuda", batch_sizes=(1,), iters=3, io_binding=True, progress=False
    )
    by = {(row.route.key): row for row in r.rows}
    assert by["cpu/model"].status == "ok"
    assert by["cuda/model"].status == "skipped"
    assert "CUDAExecutionProvider" in by["cuda/model"].reason
    assert by["cpu/model/io-binding"].status == "skipped"
    assert "GPU execution provider" in by["cpu/model/io-binding"].reason
    assert "skipped: CUDAExecutionProvider" in format_table(r)
    with pytest.raises(StnDeployError, match="cuda cannot run here"):
        bench_model(NATIVE, runtimes="cuda", batch_sizes=(1,), iters=1, strict=True)


def test_bad_arguments_are_one_line_errors(tmp_path):
    for kw, msg in [
        ({"batch_sizes": (0,)}, "1 or more"),
        ({"batch_sizes": "1,-4"}, "1 or more"),
        ({"batch_sizes": "1,x"}, "integers"),
        ({"runtimes": "cpu,nosuch"}, "unknown runtime"),
        ({"compare": "torch"}, "needs the torch model"),
        ({"compare": "tensorflow"}, "unknown baseline"),
        ({"iters": 0}, "iters must"),
        ({"threads": 0}, "threads must"),
        ({"input_shape": "1,40,40"}, "does not fit"),
    ]:
        with pytest.raises(StnDeployError, match=msg):
            bench_model(NATIVE, **{"runtimes": "cpu", "progress": False, **kw})
    dyn = relu_model(tmp_path / "dyn.onnx", shape=("H", 4, 4))
    with pytest.raises(StnDeployError, match="pass input_shape"):
        bench_model(dyn, runtimes="cpu", batch_sizes=(1,), iters=1, progress=False)
    r = bench_model(
        dyn, runtimes="cpu", batch_sizes=(1,), iters=1, input_shape="1,4,4", progress=False
    )
    assert r.rows[0].ok and r.model["shape_source"] == "--input-shape"


def test_baselines_and_speedups_in_the_same_run():
    from stn_deploy.pytorch import torch_side
    from stn_deploy.pytorch.models.loading import load_model

    loaded = load_model(CHECKPOINT)
    r = bench_model(
        NATIVE,
        runtimes="cpu",
        batch_sizes=(1, 2),
        warmup=1,
        iters=3,
        compare=("torch", "stock-export"),
        torch_side=torch_side(loaded),
        progress=False,
    )
    kinds = {(row.route.kind, row.batch): row for row in r.rows}
    assert all(row.ok for row in r.rows), [(row.route.key, row.reason) for row in r.rows]
    ours, torch_row, stock = kinds[("model", 2)], kinds[("torch", 2)], kinds[("stock-export", 2)]
    assert ours.speedup["torch"] == pytest.approx(torch_row.stats.p50_us / ours.stats.p50_us)
    assert ours.speedup["stock-export"] == pytest.approx(stock.stats.p50_us / ours.stats.p50_us)
    assert torch_row.speedup == {"torch": None, "stock-export": None}
    text = format_table(r)
    assert "× torch" in text and "stock torch.onnx.export" in text and "torch eager" in text
    md = format_markdown(r)
    assert md.startswith("# Latency") and "| torch eager | torch |" in md


def test_sampler_sweep_without_torch_rewrites_the_file():
    r = bench_model(
        NATIVE, runtimes="cpu", batch_sizes=(1,), iters=2, sampler_sweep=True, progress=False
    )
    lowerings = {row.route.lowering: row for row in r.rows}
    assert set(lowerings) == {"native", "portable", "custom", "custom-inline", "ort-contrib"}
    assert all(row.ok for row in lowerings.values()), {k: v.reason for k, v in lowerings.items()}
    assert {row["precision"] for row in r.to_dict()["rows"]} == {"fp32"}


def test_io_binding_and_cuda_graph_calls_work_on_host_memory():
    """The IO-binding call paths, exercised with ORT CPU memory (the same API as on CUDA)."""
    import onnxruntime as ort

    from stn_deploy.bench.ort_calls import cuda_graph_call, iobinding_call

    sess = ort.InferenceSession(NATIVE, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 1, 42, 42)).astype(np.float32)
    (want,) = sess.run(None, {"image": x})
    bound = iobinding_call(sess, "cpu", {"image": x}, ["log_probs"])
    bound()
    (got,) = bound.outputs()
    np.testing.assert_array_equal(got, want)  # the same session on the same input: exact
    shapes = {"log_probs": (want.shape, want.dtype)}
    call = cuda_graph_call(sess, "cpu", {"image": x}, shapes)
    call()
    call()
    (got,) = call.outputs()
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_latency_plot(tmp_path, monkeypatch, fake_runtime):
    from stn_deploy.report.latency_plot import save_latency_plot

    model = relu_model(tmp_path / "m.onnx")
    fake_runtime.update(base=1e-4, per_image=1e-4)  # on the fake clock: takes no real time
    d = bench_model(model, runtimes="cpu", batch_sizes=(1, 4), iters=2, progress=False).to_dict()
    out = save_latency_plot(d, tmp_path / "plot.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(StnDeployError, match="nothing to plot"):
        save_latency_plot({"rows": []}, tmp_path / "none.png")
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    with pytest.raises(StnDeployError, match="matplotlib"):
        save_latency_plot(d, tmp_path / "p2.png")


def test_openvino_bf16_is_labelled():
    from stn_deploy.runtimes import availability

    if not availability("openvino").available:
        pytest.skip("OpenVINO is not installed")
    d = bench_model(
        NATIVE, runtimes="openvino,openvino-bf16", batch_sizes=(1,), iters=2, progress=False
    ).to_dict()
    by = {r["runtime"]: r for r in d["rows"]}
    assert by["openvino"]["precision"] == "fp32"
    # the label is what OpenVINO computes in, which depends on the CPU: bf16 where it has
    # bf16 support (AVX512-BF16, AMX), else f32 and a note saying the request fell back
    info = {r["runtime"]: r["runtime_info"] for r in d["routes"]}
    reported = info["openvino-bf16"]["extra"]["inference_precision"]
    import openvino as ov

    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert ("bfloat16" in reported) == has_bf16
    fallback = [n for n in d["notes"] if n.startswith("openvino-bf16: asked to compute in bf16")]
    if "bfloat16" in reported:
        assert by["openvino-bf16"]["precision"] == "bf16 compute"
        assert info["openvino-bf16"]["extra"]["compute_precision"] == "bf16"
        assert not fallback
    else:
        assert "float32" in reported
        assert by["openvino-bf16"]["precision"] == "fp32"
        assert info["openvino-bf16"]["extra"]["compute_precision"] == "fp32"
        assert len(fallback) == 1 and "computes in fp32" in fallback[0]
    assert info["openvino"]["extra"]["compute_precision"] == "fp32"


def test_bf16_label_follows_the_session():
    """The route is labelled by the precision the opened session reports, not by the request."""
    from stn_deploy.bench import runner as r
    from stn_deploy.bench.result import Route

    route = Route(
        "x/model",
        "model",
        "openvino-bf16",
        "m",
        precision="bf16 compute",
        compute="bf16",
        file_precision="fp32",
    )

    class _S:
        info = type("I", (), {"library": "openvino"})()
        compute_precision = "bf16"

    assert r._confirm_compute(route, _S()) is None and route.precision == "bf16 compute"
    _S.compute_precision = "fp32"
    note = r._confirm_compute(route, _S())
    assert route.precision == "fp32" and "computes in fp32" in note


def test_routes_take_turns_when_interleaved(fake_runtime, tmp_path, monkeypatch):
    tick = 2.0**-10  # a call of ~1 ms; binary fractions: the fake clock's sums are exact
    monkeypatch.setattr(bench_runner, "TURN_SECONDS", 4 * tick)
    log = []
    original = SleepSession.run

    def logged(self, feeds, output_names=None):
        log.append(self.info.name)
        return original(self, feeds, output_names)

    monkeypatch.setattr(SleepSession, "run", logged)
    fake_runtime.update(base=tick)
    model = relu_model(tmp_path / "m.onnx")
    # 30 calls each; interleaved: turns of 4 calls (7 full turns and one of 2 each)
    turns = [*["cpu"] * 4, *["openvino"] * 4] * 7 + [*["cpu"] * 2, *["openvino"] * 2]
    for interleave, want in ((True, turns), (False, ["cpu"] * 30 + ["openvino"] * 30)):
        log.clear()
        r = bench_model(
            model,
            runtimes="cpu,openvino",
            batch_sizes=(1,),
            warmup=0,
            duration=30 * tick,
            interleave=interleave,
            progress=False,
        )
        assert [row.status for row in r.rows] == ["ok", "ok"]
        assert [row.stats.iters for row in r.rows] == [30, 30]
        assert log == want
        assert r.to_dict()["settings"]["interleave"] is interleave
