"""The float32 fast exp/sigmoid/tanh of _fastmath.h against float64 NumPy."""

import numpy as np
import pytest

from grucy import _gru

ULP = 2.0**-24  # relative spacing of float32 near 1 (half an ulp at the top of a binade)


def _inputs():
    wide = np.linspace(-90, 90, 400_001)
    near0 = np.linspace(-1, 1, 200_001)
    tiny = np.logspace(-30, 1, 5_000)
    return np.concatenate([wide, near0, tiny, -tiny]).astype(np.float32)


@pytest.mark.parametrize("name, fast, exact, max_ulp", [
    ("sigmoid", _gru._fast_sigmoidf, lambda v: 1 / (1 + np.exp(-v)), 4),
    ("tanh", _gru._fast_tanhf, np.tanh, 4),
])
def test_relative_error_within_a_few_ulp(name, fast, exact, max_ulp):
    x = _inputs()
    out = np.empty_like(x)
    fast(x, out)
    ref = exact(x.astype(np.float64))
    keep = np.abs(ref) > 1e-37  # leave out float32 denormal results
    rel = np.abs(out[keep] - ref[keep]) / np.abs(ref[keep])
    assert rel.max() < max_ulp * ULP, f"{name}: {rel.max() / ULP:.1f} ulp"


def test_exp_accurate_inside_its_clamp_and_saturates_outside():
    x = np.linspace(-87.0, 88.3, 300_001).astype(np.float32)
    out = np.empty_like(x)
    _gru._fast_expf(x, out)
    ref = np.exp(x.astype(np.float64))
    assert (np.abs(out - ref) / ref).max() < 4 * ULP
    big = np.array([100.0, 1e30, -100.0, -1e30], np.float32)
    _gru._fast_expf(big, out[:4])
    assert np.all(np.isfinite(out[:4]))
    assert out[0] > 1e38 and out[2] < 1e-37


def test_saturation_and_sign():
    x = np.array([-1e30, -50, -9, 0.0, 9, 50, 1e30], np.float32)
    t, s = np.empty_like(x), np.empty_like(x)
    _gru._fast_tanhf(x, t)
    _gru._fast_sigmoidf(x, s)
    np.testing.assert_array_equal(t[[0, 1, 5, 6]], [-1, -1, 1, 1])
    assert t[3] == 0 and s[3] == 0.5
    np.testing.assert_array_equal(s[[5, 6]], [1, 1])
    assert 0 <= s[0] < 1e-37 and np.all((s >= 0) & (s <= 1))
