"""Issue 16's real-data proof (deliverable 5), measured: on the sunspots and on the weekly
CO2 series (with calendar covariates) the held-out 80% interval covers 70-90% of the
points and the median forecast beats the seasonal-naive and AR baselines; a
variable-length classifier of standard-library source lines beats a character n-gram
naive Bayes.  The demos' own settings (the README's numbers) unless said otherwise."""

import numpy as np
import pytest

from grucy import demo
from grucy.baselines import (CharNGramNaiveBayes, ar_forecast, fit_ar, seasonal_naive,
                             select_ar_order)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sunspots_median_beats_ar9_and_seasonal_naive_and_the_interval_covers(seed):
    r = demo.run_forecast_demo(seed=seed, verbose=False)
    assert r["ar_order"] == 9 and r["rmse_ar"] == pytest.approx(16.17, abs=0.01)
    assert r["rmse_model"] < r["rmse_ar"] < r["rmse_seasonal_naive"]
    assert 0.7 <= r["coverage"] <= 0.9  # 30 held-out years
    assert np.all(r["lower"] <= r["predicted"]) and np.all(r["predicted"] <= r["upper"])


@pytest.mark.parametrize("seed", [0, 3])
def test_co2_with_calendar_covariates_a_year_ahead(seed):
    """The full demo (about 7 s): 52-week forecasts from 102 origins of the held-out
    weeks.  The GRU beats the seasonal naive by a factor of two and a half and AR with
    its order chosen by BIC; AR(104), which reads the same 104 weeks, stays ahead of it
    (the README says so).  Seed 3 fell short of both the AR and the coverage before the
    demo's cosine schedule."""
    r = demo.run_co2_demo(seed=seed, verbose=False)
    assert r["n_origins"] == 102 and r["backtest"]["forecast"].shape == (102, 52)
    assert r["ar_order"] == 59 and r["rmse_ar"] == pytest.approx(0.688, abs=0.001)
    assert r["rmse_model"] < r["rmse_ar"] and 2.5 * r["rmse_model"] < r["rmse_seasonal_naive"]
    assert 0.7 <= r["coverage"] <= 0.9  # 5304 forecasts
    assert r["rmse_ar_lookback"] < r["rmse_model"]  # the honest part of the comparison


def test_stdlib_lines_of_different_lengths_beat_naive_bayes():
    # reduced (the demo trains on 8000 lines for 10 epochs)
    r = demo.run_lines_demo(seed=0, verbose=False, n_train=2000, n_test=1500, epochs=6)
    assert r["accuracy"] > 0.98 > r["naive_bayes"] > 0.85 > 0.5 > r["majority_baseline"]
    assert len(r["kinds"]) == 8


# -- the baselines themselves ------------------------------------------------------------
def test_ar_forecast_is_the_recursion_of_fit_ar():
    rng = np.random.default_rng(0)
    x = np.zeros(400)
    for t in range(2, 400):  # a known AR(2)
        x[t] = 0.5 + 1.2 * x[t - 1] - 0.5 * x[t - 2] + 0.1 * rng.normal()
    c, a = fit_ar(x, 2)
    np.testing.assert_allclose([c, *a], [0.5, -0.5, 1.2], atol=0.05)  # oldest lag first
    f = ar_forecast(c, a, x[:300], 3)
    h = list(x[:300])
    for _ in range(3):
        h.append(c + a @ h[-2:])
    np.testing.assert_allclose(f, h[-3:])
    assert ar_forecast(c, a, np.stack([x[:300], x[:300]]), 3).shape == (2, 3)
    assert select_ar_order(x, 8) == 2
    np.testing.assert_array_equal(seasonal_naive(np.arange(10.0), 5, 3), [7, 8, 9, 7, 8])
    with pytest.raises(ValueError, match="at least season=3"):
        seasonal_naive(np.arange(2.0), 1, 3)


def test_naive_bayes_reads_ngrams_not_order():
    nb = CharNGramNaiveBayes(n=2).fit(["ab", "abab", "ba", "baba"], ["x", "x", "y", "y"])
    assert list(nb.predict(["abab", "baba"])) == ["x", "y"]
    one = CharNGramNaiveBayes(n=1).fit(["ab", "ba"], ["x", "y"])
    assert one.predict(["ab"])[0] == one.predict(["ba"])[0]  # blind to order
