"""The suite's cross-runtime tolerance (tests/tolerances.py) passes reordering noise only."""

import numpy as np
import pytest
import torch
from tolerances import SAMPLED, assert_close, tolerance


def test_noise_scaled_by_magnitude_passes_and_real_errors_fail():
    rng = np.random.default_rng(0)
    logp = -np.abs(rng.standard_normal((4, 10)).astype(np.float32)) * 30  # log-probs to ~-90
    logp[:, 0] = 0.0
    noisy = logp + np.float32(40) * np.spacing(np.abs(logp).max()) * rng.choice([-1, 1], logp.shape)
    assert_close(noisy, logp)  # 40 ulps of the largest entry, also on the entries near 0
    assert_close(torch.from_numpy(noisy), torch.from_numpy(logp))
    wrong = logp.copy()
    wrong[2, 3] += 1e-2  # what a wrong tap or weight does
    with pytest.raises(AssertionError, match=r"1/40 entries .* worst at \(2, 3\)"):
        assert_close(wrong, logp)
    with pytest.raises(AssertionError, match="1/40 entries"):
        assert_close(wrong, logp, atol_scale=SAMPLED)
    assert tolerance(np.zeros(3)) == 1e-5 and tolerance([-200.0, np.inf]) == pytest.approx(2e-3)


def test_shapes_and_non_finite_entries_must_match():
    with pytest.raises(AssertionError, match="shape"):
        assert_close(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close(np.array([np.inf]), np.array([-np.inf]))
    assert_close(np.array([np.nan, -np.inf, 1.0]), np.array([np.nan, -np.inf, 1.0]))
