"""verify's statistics and pass rules on hand-made arrays (no runtime)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stn_deploy.errors import StnDeployError
from stn_deploy.verify.compare import abs_rel_error, compare_arrays, text_histogram
from stn_deploy.verify.tolerances import DEFAULTS, tolerance_for


def test_stats_are_exact_on_a_known_array():
    ref = np.array([1.0, 2.0, 4.0, 8.0], np.float64)
    out = ref + np.array([0.0, 0.1, 0.2, 0.4])
    c = compare_arrays(ref, out, atol=1.0, rtol=1.0)
    s = c.stats
    assert c.passed and s.elements == 4 and s.mismatches == 0
    assert s.max_abs == pytest.approx(0.4)
    assert s.mean_abs == pytest.approx(0.175)
    assert s.median_abs == pytest.approx(0.15)
    assert s.p99_abs == pytest.approx(np.quantile([0, 0.1, 0.2, 0.4], 0.99))
    assert s.max_rel == pytest.approx(0.05)
    assert s.median_rel == pytest.approx(0.05)
    assert s.mean_rel == pytest.approx((0 + 0.05 + 0.05 + 0.05) / 4)


def test_elemwise_passes_an_element_by_either_tolerance():
    ref = np.array([1000.0, 0.001])
    # abs error 0.5 on 1000 (rel 5e-4) and rel error 0.5 on 0.001 (abs 5e-4)
    out = np.array([1000.5, 0.0015])
    assert compare_arrays(ref, out, atol=1e-3, rtol=1e-3).passed
    c = compare_arrays(ref, out, atol=1e-4, rtol=1e-4)
    assert not c.passed and c.stats.mismatches == 2 and "2 of 2 elements" in c.reason


@pytest.mark.parametrize("stat", ["max", "mean", "median", "quantile"])
def test_statistic_rules_fail_only_when_abs_and_rel_both_exceed(stat):
    ref = np.ones(100)
    out = ref.copy()
    out[0] = 2.0  # one outlier: max abs/rel 1, mean 0.01, median 0, q0.99 ~0.01
    c = compare_arrays(ref, out, atol=0.05, rtol=0.05, check_error_stat=stat)
    if stat == "max":
        assert not c.passed and "max abs error" in c.reason
    else:
        assert c.passed
    # a generous rtol alone rescues even the max
    assert compare_arrays(ref, out, atol=0.0, rtol=1.0, check_error_stat=stat).passed


def test_quantile_follows_the_given_quantile():
    ref = np.zeros(10) + 1
    out = ref + np.arange(10) / 10  # abs errors 0..0.9
    assert compare_arrays(
        ref, out, atol=0.5, rtol=0, check_error_stat="quantile", quantile=0.5
    ).passed
    assert not compare_arrays(
        ref, out, atol=0.5, rtol=0, check_error_stat="quantile", quantile=0.9
    ).passed


@pytest.mark.parametrize("stat", ["elemwise", "max", "mean", "median", "quantile"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_never_pass(stat, bad):
    ref = np.zeros((4, 10), np.float32)
    out = ref.copy()
    out[1, 3] = bad
    c = compare_arrays(ref, out, atol=1e9, rtol=1e9, check_error_stat=stat)
    assert not c.passed
    assert ("NaN" if np.isnan(bad) else "Inf") in c.reason and "candidate" in c.reason
    c = compare_arrays(out, ref, atol=1e9, rtol=1e9, check_error_stat=stat)
    assert not c.passed and "reference" in c.reason


def test_relative_error_where_the_reference_is_zero():
    absd, rel = abs_rel_error(np.array([0.0, 0.0, 2.0]), np.array([0.0, 1e-3, 2.0]))
    assert list(absd) == [0.0, 1e-3, 0.0]
    assert rel[0] == 0.0 and math.isinf(rel[1]) and rel[2] == 0.0
    # inf relative error: decided by atol alone
    assert compare_arrays(np.zeros(2), np.array([0.0, 1e-3]), atol=1e-2, rtol=0).passed
    assert not compare_arrays(np.zeros(2), np.array([0.0, 1e-3]), atol=1e-4, rtol=1e9).passed


def test_shape_mismatch_fails():
    c = compare_arrays(np.zeros((2, 10)), np.zeros((2, 9)), atol=1, rtol=1)
    assert not c.passed and "shape" in c.reason


def test_histogram_and_argmax_agreement():
    ref = np.zeros((4, 3))
    ref[:, 0] = 1
    out = ref.copy()
    out[0] = [0, 2, 0]  # row 0 argmax changes
    out[1, 1] = 1e-6
    c = compare_arrays(ref, out, atol=10, rtol=10, classifier=True)
    assert c.argmax_agreement == 0.75
    h = dict(c.histogram)
    assert h["0"] == 9 and h["1e-6..1e-5"] == 1 and h["1e0..1e1"] == 2
    assert sum(n for _, n in text_histogram(np.abs(out - ref))) == out.size


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50))
def test_identical_arrays_always_pass_with_zero_error(values):
    a = np.array(values, np.float32)
    c = compare_arrays(a, a.copy(), atol=0, rtol=0)
    assert c.passed and c.stats.max_abs == 0 and c.stats.max_rel == 0


def test_unknown_error_stat_and_bad_tolerance_are_errors():
    with pytest.raises(StnDeployError, match="unknown check_error_stat"):
        compare_arrays(np.zeros(1), np.zeros(1), atol=1, rtol=1, check_error_stat="p95")
    with pytest.raises(StnDeployError, match="atol"):
        tolerance_for("fp32", atol=-1)


def test_tolerance_defaults_per_precision_and_overrides():
    assert tolerance_for(None) == DEFAULTS["fp32"]
    assert tolerance_for("int8").min_argmax_agreement is not None
    t = tolerance_for("fp16", atol=0.5, check_error_stat="max")
    assert t.atol == 0.5 and t.check_error_stat == "max" and t.rtol == DEFAULTS["fp16"].rtol


def test_argmax_gate_tolerates_one_flip_and_accuracy_gate_needs_100_images():
    from stn_deploy.verify.comparator import CompareFunc
    from stn_deploy.verify.inputs import InputSet

    tol = tolerance_for("int8", atol=1e9, rtol=1e9)  # only the classification gates matter
    compare = CompareFunc.simple(tol, num_classes=10)
    n = 200
    labels = np.arange(n) % 10
    ref = np.full((n, 10), -5.0)
    ref[np.arange(n), labels] = 0.0
    s = InputSet("mnist", {"image": np.zeros((n, 1))}, "", labels=labels)

    def flipped(k):
        out = ref.copy()
        out[:k, :] = ref[:k, ::-1]  # the argmax of the first k rows moves away from the label
        return {"log_probs": out}

    one = compare(
        {"log_probs": ref[:8]},
        {"log_probs": flipped(1)["log_probs"][:8]},
        InputSet("mnist", {"image": np.zeros((8, 1))}, "", labels=labels[:8]),
        "ref",
    )
    assert one.passed and one.accuracy["gated"] is False and one.accuracy["delta"] == -12.5
    ok = compare({"log_probs": ref}, flipped(2), s, "ref")  # 1% drop, 99% agree
    assert ok.passed and ok.accuracy["gated"] and ok.accuracy["delta"] == -1.0
    bad = compare({"log_probs": ref}, flipped(7), s, "ref")  # 96.5% < 97%
    assert not bad.passed and "argmax agreement 96.5% < 97%" in bad.reason
    assert "accuracy" in bad.reason and "3.5 pt below" in bad.reason
