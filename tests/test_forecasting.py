"""The Forecaster as users of darts, NeuralForecast, sktime and skforecast expect it (issue
16, deliverable 4): covariates known in advance, many series (a global model), quantiles
and intervals that never cross, pandas in and out, rolling-origin backtests, weights."""

import subprocess
import sys

import numpy as np
import pytest

import grucy

from conftest import requires


def _promo_series(n=400, seed=0):
    """y_t = 3 x_t + a weekly wave + noise: x (a promotion flag) is known in advance and
    not predictable from the past."""
    rng = np.random.default_rng(seed)
    x = (rng.random(n) < 0.3).astype(float)
    t = np.arange(n)
    y = 3 * x + np.sin(2 * np.pi * t / 7) + 0.1 * rng.normal(size=n)
    return y, x[:, None]


# -- covariates ----------------------------------------------------------------------------
def test_covariates_known_in_advance_are_used_for_the_future_steps():
    y, x = _promo_series()
    kw = dict(lookback=14, horizon=3, hidden_size=16, epochs=40, random_state=0)
    with_x = grucy.Forecaster(**kw).fit(y[:300], x[:300])
    without = grucy.Forecaster(**kw).fit(y[:300])
    assert with_x.n_covariates_ == 1 and without.n_covariates_ == 0
    origins = np.arange(300, 397, 1)
    pred_x = np.stack([with_x.predict(y[:o], 3, X=x[:o + 3]) for o in origins])
    pred_0 = np.stack([without.predict(y[:o], 3) for o in origins])
    truth = np.stack([y[o:o + 3] for o in origins])
    rmse_x = np.sqrt(np.mean((pred_x - truth) ** 2))
    rmse_0 = np.sqrt(np.mean((pred_0 - truth) ** 2))
    assert rmse_x < 0.3 < 1.0 < rmse_0  # the flag's effect (3) is only knowable from X
    # a step's forecast never depends on later covariates (filler steps, causal GRU)
    o = 350
    X2 = x[:o + 3].copy()
    X2[o + 2] = 1 - X2[o + 2]
    a, b = with_x.predict(y[:o], 3, X=x[:o + 3]), with_x.predict(y[:o], 3, X=X2)
    np.testing.assert_array_equal(a[:2], b[:2])
    assert a[2] != b[2]
    # horizon 2 is the first two steps of horizon 3 (the last block is cut, not refit)
    np.testing.assert_array_equal(with_x.predict(y[:o], 2, X=x[:o + 2]), a[:2])
    # recursive beyond the model's horizon: 5 steps from two blocks
    assert with_x.predict(y[:o], 5, X=x[:o + 5]).shape == (5,)


def test_missing_or_misaligned_covariates_are_clear_errors():
    y, x = _promo_series(n=80)
    model = grucy.Forecaster(10, horizon=2, hidden_size=4, epochs=1, random_state=0)
    with pytest.raises(ValueError, match=r"X must have one row per step: 80 rows for the "
                                         r"80 steps of y, got 79"):
        model.fit(y, x[:79])
    model.fit(y, x)
    with pytest.raises(ValueError, match=r"X is missing: the model was fitted with "
                                         r"covariates; give them for the 80 steps of y and "
                                         r"the 3 steps ahead \(83 rows\)"):
        model.predict(y, 3)
    with pytest.raises(ValueError, match=r"83 rows for the 80 steps of y and the 3 steps "
                                         r"ahead, got 80"):
        model.predict(y, 3, X=x)
    with pytest.raises(ValueError, match="X has 2 covariates, the model was fitted with 1"):
        model.predict(y, 1, X=np.ones((81, 2)))
    with pytest.raises(ValueError, match="X contains NaN"):
        model.predict(y, 1, X=np.r_[x, [[np.nan]]])
    plain = grucy.Forecaster(10, hidden_size=4, epochs=1, random_state=0).fit(y)
    with pytest.raises(ValueError, match="X was given, but the model was fitted without"):
        plain.predict(y, 1, X=np.ones((81, 1)))
    with pytest.raises(TypeError, match="X must hold real numbers"):
        grucy.Forecaster(10, epochs=1).fit(y, np.array(["a"] * 80))


# -- many series ---------------------------------------------------------------------------
def test_a_global_model_over_many_series_scales_each_on_its_own():
    t = np.arange(300)
    small = np.sin(2 * np.pi * t / 12)
    large = 1000 + 100 * np.sin(2 * np.pi * t[:240] / 12 + 1.0)
    model = grucy.Forecaster(24, horizon=2, hidden_size=16, epochs=30,
                             random_state=0).fit([small[:250], large[:200]])
    assert model.n_fitted_series_ == 2 and model.mean_.shape == (2, 1)
    np.testing.assert_allclose(model.mean_[:, 0], [small[:250].mean(), large[:200].mean()])
    pred = model.predict([small[:250], large[:200]], horizon=4)
    assert isinstance(pred, list) and [p.shape for p in pred] == [(4,), (4,)]
    # each in its own units: errors relative to each series' scale are alike and small
    err_small = np.abs(pred[0] - small[250:254]).max()
    err_large = np.abs(pred[1] - large[200:204]).max() / 100
    assert err_small < 0.15 and err_large < 0.15
    with pytest.raises(ValueError, match="fitted on a list of 2 series: give a list of 2 "
                                         "histories"):
        model.predict(small[:250], 1)
    with pytest.raises(ValueError, match="fitted on a list of 2 series"):
        model.predict([small[:250]], 1)
    with pytest.raises(ValueError, match=r"y\[1\] needs at least lookback \+ horizon = 26 "
                                         r"values, got 20"):
        grucy.Forecaster(24, horizon=2, epochs=1).fit([small, large[:20]])
    with pytest.raises(ValueError, match="every series of y must have the same columns"):
        grucy.Forecaster(4, epochs=1).fit([small[:50], np.ones((50, 2))])


def test_one_series_model_predicts_a_list_of_histories():
    s = np.sin(np.arange(200) / 4)
    model = grucy.Forecaster(8, hidden_size=8, epochs=5, random_state=0).fit(s)
    out = model.predict([s[:100], s[:150]], horizon=3)
    np.testing.assert_array_equal(out[1], model.predict(s[:150], 3))
    batch = model.predict(np.stack([s[50:100], s[100:150]]), horizon=3)
    np.testing.assert_array_equal(batch, np.stack(out))


# -- quantiles and intervals ----------------------------------------------------------------
def _noisy_wave(n=1200, sigma=0.5, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.sin(2 * np.pi * t / 20) + sigma * rng.normal(size=n)


def test_quantiles_match_a_known_noise_and_intervals_cover():
    """Gaussian noise of sd 0.5 about a wave: the 10% and 90% quantiles lie 0.64 below and
    above the median, and the 80% interval covers ~80% of held-out points."""
    y = _noisy_wave()
    model = grucy.Forecaster(20, quantiles=(0.1, 0.9), hidden_size=16, epochs=30,
                             random_state=0).fit(y[:900])
    np.testing.assert_array_equal(model.quantiles_, [0.1, 0.5, 0.9])  # the median added
    H = np.stack([y[o - 20:o] for o in range(900, 1200)])
    q = model.predict_quantiles(H, 1)[:, 0]
    assert q.shape == (300, 3) and np.all(np.diff(q, axis=1) > 0)
    half_width = (q[:, 2] - q[:, 0]).mean() / 2
    assert half_width == pytest.approx(1.2816 * 0.5, rel=0.2)
    covered = np.mean((y[900:] >= q[:, 0]) & (y[900:] <= q[:, 2]))
    assert 0.74 <= covered <= 0.86
    lo, hi = model.predict_interval(H, 1, coverage=0.8)
    np.testing.assert_array_equal(lo[:, 0], q[:, 0])
    np.testing.assert_array_equal(hi[:, 0], q[:, 2])
    lo6, hi6 = model.predict_interval(H, 1, coverage=0.6)  # 0.2 and 0.8: interpolated
    assert np.all((lo6 > lo) & (lo6 < q[:, None, 1]) & (hi6 < hi) & (hi6 > q[:, None, 1]))
    np.testing.assert_array_equal(model.predict(H, 1), q[:, None, 1])  # the median
    with pytest.raises(ValueError, match=r"coverage=0.95 needs the 0.025 and 0.975 "
                                         r"quantiles, outside the fitted levels"):
        model.predict_interval(H, 1, coverage=0.95)
    with pytest.raises(ValueError, match="coverage must lie strictly between 0 and 1"):
        model.predict_interval(H, 1, coverage=1.5)


def test_multivariate_quantiles_never_cross_and_shapes():
    rng = np.random.default_rng(1)
    t = np.arange(300)
    y = np.column_stack([np.sin(t / 5), np.cos(t / 5)]) + 0.2 * rng.normal(size=(300, 2))
    model = grucy.Forecaster(10, horizon=3, quantiles=[0.05, 0.25, 0.75, 0.95],
                             hidden_size=8, epochs=5, random_state=0).fit(y)
    q = model.predict_quantiles(y, 7)  # beyond the horizon: recursive on the median
    assert q.shape == (7, 2, 5) and np.all(np.diff(q, axis=-1) >= 0)
    np.testing.assert_array_equal(model.predict(y, 7), q[..., 2])
    np.testing.assert_array_equal(model.predict_quantiles(y, 3), q[:3])
    lo, hi = model.predict_interval(y, 7, coverage=0.5)
    np.testing.assert_array_equal(lo, q[..., 1])
    with pytest.raises(ValueError, match="needs a model fitted with quantiles"):
        grucy.Forecaster(10, epochs=1).fit(y).predict_interval(y, 2)
    for bad, match in [((0.5, 1.2), "strictly between 0 and 1"),
                       ((0.9, 0.1), "increasing and distinct")]:
        with pytest.raises(ValueError, match=match):
            grucy.Forecaster(10, epochs=1, quantiles=bad).fit(y)


# -- weights -------------------------------------------------------------------------------
def test_sample_weight_zero_leaves_corrupted_targets_out():
    rng = np.random.default_rng(2)
    y = _noisy_wave(n=600, sigma=0.05)
    corrupted = y.copy()
    corrupted[100:300] += 5 * rng.standard_normal(200)  # sensor failure
    w = np.ones(600)
    w[100:300] = 0
    kw = dict(lookback=20, hidden_size=16, epochs=30, random_state=0)
    weighted = grucy.Forecaster(**kw).fit(corrupted[:500], sample_weight=w[:500])
    plain = grucy.Forecaster(**kw).fit(corrupted[:500])
    H = np.stack([y[o - 20:o] for o in range(500, 600)])

    def rmse(m):
        return np.sqrt(np.mean((m.predict(H, 1)[:, 0] - y[500:]) ** 2))
    assert rmse(weighted) < 0.5 * rmse(plain)
    for bad, exc, match in [(np.ones(499), ValueError, r"one weight per step of y, shape "
                                                       r"\(500,\)"),
                            (-np.ones(500), ValueError, "sample_weight must be >= 0"),
                            (np.zeros(500), ValueError, "zero everywhere")]:
        with pytest.raises(exc, match=match):
            grucy.Forecaster(**kw).fit(corrupted[:500], sample_weight=bad)


# -- backtest ------------------------------------------------------------------------------
def test_backtest_rolls_the_origin_and_refits_on_request():
    y = _noisy_wave(n=300, sigma=0.1)
    model = grucy.Forecaster(20, horizon=4, quantiles=(0.1, 0.9), hidden_size=8,
                             epochs=5, random_state=0).fit(y[:200])
    r = model.backtest(y, start=200, horizon=4, stride=10)
    assert list(r["origins"]) == list(range(200, 297, 10))
    assert r["forecast"].shape == r["actual"].shape == (10, 4)
    np.testing.assert_array_equal(r["actual"][1], y[210:214])
    # (a batch of windows may round differently from one: the readout's GEMM)
    np.testing.assert_allclose(r["forecast"][1], model.predict(y[:210], 4), rtol=1e-6)
    np.testing.assert_allclose(r["error"], r["forecast"] - r["actual"])
    np.testing.assert_allclose(r["mae"], np.abs(r["error"]).mean(1))
    assert r["quantiles"].shape == (10, 4, 3) and r["lower"].shape == (10, 4)
    assert r["coverage"] == pytest.approx(np.mean((r["actual"] >= r["lower"])
                                                  & (r["actual"] <= r["upper"])))
    same = model.backtest(y, start=2 / 3, horizon=4, stride=10)
    np.testing.assert_array_equal(same["forecast"], r["forecast"])
    # refit: a fresh model (same options) trained on the history before each origin
    refit = model.backtest(y, start=280, horizon=4, stride=8, refit=True)
    fresh = grucy.Forecaster(**model.get_params()).fit(y[:288])
    np.testing.assert_allclose(refit["forecast"][1], fresh.predict(y[:288], 4), rtol=1e-6)
    for kwargs, match in [(dict(start=10), r"start must leave lookback=20 steps before it "
                                           r"and horizon=4 after it"),
                          (dict(start=298), r"a position in \[20, 296\]"),
                          (dict(start="x"), "start must be an index, a fraction"),
                          (dict(start=200, stride=0), "stride must be a positive integer")]:
        with pytest.raises((ValueError, TypeError), match=match):
            model.backtest(y, **{"horizon": 4, **kwargs})


def test_backtest_with_covariates_and_many_series():
    y, x = _promo_series(n=160)
    model = grucy.Forecaster(14, horizon=2, hidden_size=8, epochs=3,
                             random_state=0).fit([y[:120], y[:100] + 1], [x[:120], x[:100]])
    results = model.backtest([y, y + 1], [x, x], start=130, horizon=2, stride=5)
    assert len(results) == 2 and results[0]["forecast"].shape == (6, 2)
    np.testing.assert_allclose(results[1]["forecast"][0],
                               model.predict([y[:130], y[:130] + 1], 2,
                                             X=[x[:132], x[:132]])[1], rtol=1e-6)
    with pytest.raises(ValueError, match="X is missing"):
        model.backtest([y, y + 1], start=130)


# -- pandas ----------------------------------------------------------------------------------
def test_import_grucy_does_not_import_pandas():
    code = ("import sys, grucy, numpy as np; grucy.Forecaster(3, epochs=1)"
            ".fit(np.arange(20.0)).predict(np.arange(5.0)); print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@requires("pandas")
def test_pandas_in_pandas_out_with_dates_and_columns():
    import pandas as pd

    t = np.arange(120)
    weekly = pd.Series(np.sin(t / 4), name="visits",
                       index=pd.date_range("2020-01-04", periods=120, freq="W-SAT"))
    model = grucy.Forecaster(8, hidden_size=4, epochs=2, random_state=0).fit(weekly)
    assert model.freq_ == "W-SAT"
    pred = model.predict(weekly, 3)
    assert isinstance(pred, pd.Series) and pred.name == "visits"
    assert list(pred.index) == list(pd.date_range("2022-04-23", periods=3, freq="W-SAT"))
    np.testing.assert_array_equal(pred.to_numpy(), model.predict(weekly.to_numpy(), 3))
    # a DataFrame: columns kept, taken by name
    frame = pd.DataFrame({"a": np.sin(t / 5), "b": np.cos(t / 3)},
                         index=pd.period_range("2000-01", periods=120, freq="M"))
    multi = grucy.Forecaster(8, quantiles=(0.2, 0.8), hidden_size=4, epochs=2,
                             random_state=0).fit(frame)
    out = multi.predict(frame[["b", "a"]], 2)
    assert list(out.columns) == ["a", "b"] and str(out.index[0]) == "2010-01"
    np.testing.assert_array_equal(out.to_numpy(), multi.predict(frame.to_numpy(), 2))
    q = multi.predict_quantiles(frame, 2)
    assert list(q.columns) == [("a", 0.2), ("a", 0.5), ("a", 0.8), ("b", 0.2), ("b", 0.5),
                               ("b", 0.8)]
    lo, hi = multi.predict_interval(frame, 2, coverage=0.6)
    assert isinstance(lo, pd.DataFrame) and (hi.to_numpy() >= lo.to_numpy()).all()
    # an integer index continues with its step
    ranged = pd.Series(np.sin(t / 4), index=pd.RangeIndex(0, 240, 2))
    assert list(model.predict(ranged, 2).index) == [240, 242]


@requires("pandas")
def test_pandas_covariates_align_by_date_and_errors_say_what_to_do():
    import pandas as pd

    y, x = _promo_series(n=100)
    idx = pd.date_range("2021-01-01", periods=100, freq="D")
    ys, xs = pd.Series(y, index=idx), pd.DataFrame({"promo": x[:, 0]}, index=idx)
    model = grucy.Forecaster(7, hidden_size=4, epochs=2, random_state=0)
    model.fit(ys[:90], xs)  # X covers more than y: aligned by the dates
    assert model.covariate_names_ == ["promo"]
    pred = model.predict(ys[:90], 3, X=xs)
    np.testing.assert_array_equal(pred.to_numpy(),
                                  model.predict(y[:90], 3, X=x[:93]))
    with pytest.raises(ValueError, match=r"X has no rows for 3 of the steps it must cover "
                                         r"\(y's steps and the 8 ahead\), first 2021-04-11"):
        model.predict(ys[:95], 8, X=xs)
    irregular = ys.drop(ys.index[[3, 10]])
    with pytest.raises(ValueError, match=r"cannot infer the frequency of y's DatetimeIndex "
                                         r".*set it, e.g. y = y.asfreq\('D'\)"):
        grucy.Forecaster(7, epochs=1).fit(irregular)
    with pytest.raises(ValueError, match="increasing without repeats"):
        grucy.Forecaster(7, epochs=1).fit(ys[::-1])
    with pytest.raises(ValueError, match="DatetimeIndex, PeriodIndex or integer index"):
        grucy.Forecaster(7, epochs=1).fit(pd.Series(y, index=[f"d{i:03d}" for i in
                                                              range(100)]))


@requires("pandas")
def test_pandas_backtest_frame():
    import pandas as pd

    y = pd.Series(_noisy_wave(n=120, sigma=0.1),
                  index=pd.date_range("2000-01-01", periods=120, freq="MS"))
    model = grucy.Forecaster(12, horizon=2, quantiles=(0.1, 0.9), hidden_size=4, epochs=2,
                             random_state=0).fit(y[:100])
    r = model.backtest(y, start=pd.Timestamp("2008-05-01"), horizon=2, stride=3)
    assert r["origins"][0] == 100
    frame = r["frame"]
    assert list(frame.columns) == ["origin", "time", "step", "forecast", "actual", "error",
                                   "lower", "upper"]
    assert len(frame) == 2 * len(r["origins"])
    assert frame["time"].iloc[1] == pd.Timestamp("2008-06-01")


# -- saving ------------------------------------------------------------------------------------
def test_forecasters_with_the_new_options_save_and_load(tmp_path):
    y, x = _promo_series(n=120)
    models = [
        (grucy.Forecaster(10, horizon=2, quantiles=(0.1, 0.9), temporal_norm=True,
                          hidden_size=4, epochs=2, random_state=0).fit(y, x),
         lambda m: m.predict_quantiles(y, 3, X=np.r_[x, x[:3]])),
        (grucy.Forecaster(10, hidden_size=4, epochs=2, random_state=0).fit(
            [y, y[:60] * 2]), lambda m: np.stack(m.predict([y, y[:60] * 2], 2))),
    ]
    for i, (model, use) in enumerate(models):
        grucy.save(model, tmp_path / f"f{i}.grucy")
        loaded = grucy.load(tmp_path / f"f{i}.grucy")
        np.testing.assert_array_equal(use(loaded), use(model))
        assert loaded.get_params() == {**model.get_params(),
                                       "quantiles": loaded.quantiles}


def test_temporal_norm_follows_a_level_beyond_the_training_range():
    t = np.arange(400)
    y = 0.05 * t + np.sin(2 * np.pi * t / 10)  # a trend: the test levels are all new
    kw = dict(lookback=20, hidden_size=16, epochs=30, random_state=0)
    normed = grucy.Forecaster(temporal_norm=True, **kw).fit(y[:300])
    plain = grucy.Forecaster(**kw).fit(y[:300])
    H = np.stack([y[o - 20:o] for o in range(300, 400)])

    def rmse(m):
        return np.sqrt(np.mean((m.predict(H, 1)[:, 0] - y[300:]) ** 2))
    assert rmse(normed) < 0.1 < 1.0 < rmse(plain)


# -- ar_order: a linear forecast under the network -----------------------------------------
def _two_waves(n):
    """sin(2 pi t / 17) + 0.5 sin(2 pi t / 7): exactly an AR(4) recursion (each sinusoid
    obeys x_t = 2 cos(w) x_{t-1} - x_{t-2}), so any future value is a fixed linear
    function of the last 4."""
    t = np.arange(n)
    return np.sin(2 * np.pi * t / 17) + 0.5 * np.sin(2 * np.pi * t / 7)


@pytest.mark.parametrize("covariates", [False, True])
def test_ar_order_fits_the_exact_linear_forecast_and_the_network_the_rest(covariates):
    y = _two_waves(400)
    x = np.cos(np.arange(400) / 3.0)[:, None] if covariates else None  # (uninformative)
    kw = dict(lookback=12, horizon=3, hidden_size=8, epochs=15, random_state=0)
    fit_x = None if x is None else x[:300]
    model = grucy.Forecaster(ar_order=4, **kw).fit(y[:300], fit_x)
    assert model.ar_coef_.shape == (4, 3) and model.ar_intercept_.shape == (3,)
    # the oracle: the recursion itself, in the model's scaled units
    s = (y - model.mean_) / model.scale_
    idx = np.arange(300 - 4 - 3)[:, None]
    feats, future = s[idx + np.arange(4)], s[idx + 4 + np.arange(3)]
    np.testing.assert_allclose(feats @ model.ar_coef_ + model.ar_intercept_, future,
                               atol=1e-9)
    # the network learned residuals that are all zero: forecasts close to the truth
    # (without the linear part the same GRU is ~10x further off)
    plain = grucy.Forecaster(**kw).fit(y[:300], fit_x)
    H = np.stack([y[o - 12:o] for o in range(300, 397)])
    X = None if x is None else np.stack([x[o - 12:o + 3] for o in range(300, 397)])
    truth = np.stack([y[o:o + 3] for o in range(300, 397)])
    err = np.abs(model.predict(H, 3, X=X) - truth).max()
    assert err < 0.05 < 0.1 * np.abs(plain.predict(H, 3, X=X) - truth).max()


def test_ar_order_with_quantiles_weights_saving_and_bad_values(tmp_path):
    y = _noisy_wave(n=400, sigma=0.1)
    kw = dict(lookback=20, horizon=2, hidden_size=4, epochs=2, random_state=0)
    model = grucy.Forecaster(ar_order=20, quantiles=(0.1, 0.9), **kw).fit(y)
    q = model.predict_quantiles(y, 5)
    assert q.shape == (5, 3) and np.all(np.diff(q, axis=1) > 0)  # shifted, never crossed
    np.testing.assert_array_equal(model.predict(y, 5), q[:, 1])
    grucy.save(model, tmp_path / "ar.grucy")
    loaded = grucy.load(tmp_path / "ar.grucy")
    np.testing.assert_array_equal(loaded.predict_quantiles(y, 5), q)
    np.testing.assert_array_equal(loaded.ar_coef_, model.ar_coef_)
    # per-target weights take the weighted path; equal weights give the same fit
    weighted = grucy.Forecaster(ar_order=20, **kw).fit(y, sample_weight=np.full(400, 2.0))
    plain = grucy.Forecaster(ar_order=20, **kw).fit(y)
    np.testing.assert_allclose(weighted.ar_coef_, plain.ar_coef_, rtol=1e-7, atol=1e-9)
    for bad, exc, match in [(-1, ValueError, "ar_order must be from 0 to lookback=20, "
                                             "got -1"),
                            (21, ValueError, "from 0 to lookback=20, got 21"),
                            (2.0, TypeError, "ar_order must be an integer, got float"),
                            (True, TypeError, "ar_order must be an integer, got bool")]:
        with pytest.raises(exc, match=match):
            grucy.Forecaster(ar_order=bad, **kw).fit(y)


# -- pandas labels are matched, never silently shifted -------------------------------------
@requires("pandas")
def test_repeated_index_labels_in_covariates_or_weights_are_refused():
    import pandas as pd

    idx = pd.date_range("2020-01-04", periods=70, freq="W-SAT")
    y = pd.Series(np.sin(np.arange(60) / 4) + 5, index=idx[:60])
    X = pd.DataFrame({"promo": (np.arange(70) % 5 == 0).astype(float)}, index=idx)
    # one week listed twice (a bad join): .loc gives 61 rows for 60 steps, every later
    # covariate shifted by one step
    X_dup = pd.concat([X.iloc[:30], X.iloc[29:]])
    model = grucy.Forecaster(8, hidden_size=4, epochs=2, random_state=0)
    with pytest.raises(ValueError, match=r"X's index repeats 1 label\(s\), first "
                                         r"\[Timestamp\('2020-07-25 00:00:00'\)\]"):
        model.fit(y, X_dup)
    model.fit(y, X)
    with pytest.raises(ValueError, match=r"X's index repeats 1 label"):
        model.predict(y, 3, X=X_dup)
    w = pd.Series(np.ones(60), index=y.index)
    with pytest.raises(ValueError, match=r"sample_weight's index repeats 1 label\(s\), "
                                         r"first \[Timestamp\('2020-01-04 00:00:00'\)\]"):
        grucy.Forecaster(8, hidden_size=4, epochs=1).fit(y, sample_weight=pd.concat(
            [w, w.iloc[:1]]))


@requires("pandas")
def test_dataframe_columns_are_taken_by_name_or_refused():
    import pandas as pd

    t = np.arange(60.)
    df = pd.DataFrame({"a": np.sin(t / 3), "b": 10 + np.cos(t / 5)},
                      index=pd.date_range("2000-01-01", periods=60, freq="D"))
    model = grucy.Forecaster(8, hidden_size=4, epochs=2, random_state=0).fit(df)
    ok = model.predict(df, 2).to_numpy()
    # names on both sides that do not match: "b" would be read as "a"
    with pytest.raises(ValueError, match=r"y lacks the column\(s\) \['a'\] the model was "
                                         r"fitted on \(its columns: \['b', 'c'\]\)"):
        model.predict(df[["b", "a"]].rename(columns={"a": "c"}), 2)
    # a superset (by name), an array and a frame of default labels (by position) agree
    more = df.assign(c=0.0)[["c", "b", "a"]]
    np.testing.assert_array_equal(model.predict(more, 2).to_numpy(), ok)
    np.testing.assert_array_equal(model.predict(df.to_numpy(), 2), ok)
    unnamed = pd.DataFrame(df.to_numpy(), index=df.index)
    np.testing.assert_array_equal(model.predict(unnamed, 2).to_numpy(), ok)
    # a model fitted on unnamed columns reads any frame by position
    plain = grucy.Forecaster(8, hidden_size=4, epochs=2, random_state=0).fit(unnamed)
    np.testing.assert_array_equal(plain.predict(df, 2).to_numpy(),
                                  plain.predict(unnamed, 2).to_numpy())
    # covariates alike
    y = df["a"]
    X = pd.DataFrame({"u": np.arange(70) % 3 * 1.0, "v": np.sin(np.arange(70.))},
                     index=pd.date_range("2000-01-01", periods=70, freq="D"))
    cov = grucy.Forecaster(8, hidden_size=4, epochs=2, random_state=0).fit(y, X)
    with pytest.raises(ValueError, match=r"X lacks the column\(s\) \['u'\]"):
        cov.predict(y, 2, X=X.rename(columns={"u": "w"}))
    np.testing.assert_array_equal(cov.predict(y, 2, X=X[["v", "u"]]).to_numpy(),
                                  cov.predict(y, 2, X=X).to_numpy())
    # a global model: every table's columns by the first one's names
    ys, Xs = [y, y * 2], [X, X]
    kw = dict(hidden_size=4, epochs=2, random_state=0)
    want = grucy.Forecaster(8, **kw).fit(ys, Xs).predict(ys, 2, X=Xs)
    got = grucy.Forecaster(8, **kw).fit(ys, [X, X[["v", "u"]]]).predict(ys, 2, X=Xs)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    with pytest.raises(ValueError, match=r"X\[1\] lacks the column\(s\) \['u'\]"):
        grucy.Forecaster(8, **kw).fit(ys, [X, X.rename(columns={"u": "w"})])


def test_backtest_checks_y_against_the_fitted_series():
    t = np.arange(80.)
    y1, y2 = np.sin(t / 4), np.c_[np.sin(t / 4), np.cos(t / 5)]
    two = grucy.Forecaster(8, horizon=2, hidden_size=4, epochs=2, random_state=0).fit(y2)
    # (the 1-D series used to be broadcast into both columns, with forecasts and errors)
    with pytest.raises(ValueError, match=r"y must be \(m, 2\) or \(N, m, 2\) for a model "
                                         r"fitted on 2 series, got shape \(80,\)"):
        two.backtest(y1, start=60, horizon=2)
    one = grucy.Forecaster(8, horizon=2, hidden_size=4, epochs=2, random_state=0).fit(y1)
    with pytest.raises(ValueError, match=r"y must be \(m,\) or \(N, m\) for a model fitted "
                                         r"on a 1-D series, got shape \(80, 2\)"):
        one.backtest(y2, start=60, horizon=2)


@requires("pandas")
def test_backtest_takes_pandas_covariates_by_name_as_predict_does():
    import pandas as pd

    idx = pd.date_range("2020-01-04", periods=90, freq="W-SAT")
    y = pd.Series(np.sin(np.arange(80) / 4), index=idx[:80], name="y")
    X = pd.DataFrame({"a": np.arange(90) % 4 * 1.0, "b": np.sin(np.arange(90.))},
                     index=idx)
    model = grucy.Forecaster(8, horizon=2, hidden_size=4, epochs=2, random_state=0).fit(y, X)
    r = model.backtest(y, X[["b", "a"]], start=idx[70], horizon=2)
    np.testing.assert_array_equal(r["forecast"], model.backtest(y, X, start=idx[70],
                                                                horizon=2)["forecast"])
    np.testing.assert_array_equal(r["forecast"][0],
                                  model.predict(y.iloc[:70], 2, X).to_numpy())


@requires("pandas")
def test_a_global_model_reads_every_frame_as_its_first_and_as_predict_does():
    import pandas as pd

    n = 60
    idx = pd.date_range("2021-01-01", periods=n, freq="D")
    t = np.arange(n)
    s1 = pd.DataFrame({"a": np.sin(t / 4), "b": 100 + np.cos(t / 4)}, index=idx)
    s2 = pd.DataFrame({"a": np.sin(t / 5), "b": 100 + np.cos(t / 5)}, index=idx)
    kw = dict(hidden_size=4, epochs=2, random_state=0)
    want = grucy.Forecaster(6, **kw).fit([s1, s2])
    # (s2's columns reordered used to be read by position: "b" trained as "a")
    got = grucy.Forecaster(6, **kw).fit([s1, s2[["b", "a"]]])
    np.testing.assert_array_equal(got.mean_, want.mean_)
    for a, b in zip(got.predict([s1, s2], 2), want.predict([s1, s2], 2)):
        np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    with pytest.raises(ValueError, match=r"y\[1\] lacks the column\(s\) \['a', 'b'\]"):
        grucy.Forecaster(6, **kw).fit([s1, s2.rename(columns={"a": "x", "b": "y"})])
    # every series evenly spaced, named (the second used to be trained on as it was)
    gappy = s2.drop(s2.index[[5, 9, 30]])
    with pytest.raises(ValueError, match=r"frequency of y\[1\]'s DatetimeIndex"):
        grucy.Forecaster(6, **kw).fit([s1, gappy])
    with pytest.raises(ValueError, match=r"frequency of y\[1\]'s DatetimeIndex"):
        want.predict([s1, gappy], 2)


@requires("pandas")
def test_pandas_weights_without_a_label_of_y_are_named_not_nan():
    import pandas as pd

    idx = pd.date_range("2021-01-01", periods=40, freq="D")
    y = pd.Series(np.sin(np.arange(40) / 3), index=idx)
    m = grucy.Forecaster(4, hidden_size=4, epochs=1, random_state=0)
    # (both read as "sample_weight contains NaN or inf")
    for w in (pd.Series(1.0, index=idx[5:]), pd.Series(np.ones(40))):
        with pytest.raises(ValueError, match=r"sample_weight has no weight for \d+ of y's "
                                             r"steps, first 2021-01-01"):
            m.fit(y, sample_weight=w)


@requires("pandas")
def test_forecasts_keep_a_period_index_name():
    import pandas as pd

    idx = pd.period_range("2000-01", periods=40, freq="M", name="month")
    y = pd.Series(np.sin(np.arange(40) / 3), index=idx)
    f = grucy.Forecaster(4, hidden_size=4, epochs=1, random_state=0).fit(y).predict(y, 3)
    assert f.index.name == "month" and f.index[0] == pd.Period("2003-05", "M")


def test_backtest_refuses_an_interval_the_levels_do_not_span_before_refitting(monkeypatch):
    y = np.sin(np.arange(80) / 4)
    m = grucy.Forecaster(6, quantiles=(0.25, 0.75), hidden_size=4, epochs=1,
                         random_state=0)
    fits = []
    real_fit = grucy.Forecaster.fit
    monkeypatch.setattr(grucy.Forecaster, "fit",
                        lambda self, *a, **k: fits.append(1) or real_fit(self, *a, **k))
    with pytest.raises(ValueError, match=r"coverage=0.8 needs the 0.1 and 0.9 quantiles, "
                                         r"outside the fitted levels \[0.25, 0.5, 0.75\]"):
        m.backtest(y, start=40, horizon=2, stride=2, refit=True)
    assert len(fits) == 1          # (it used to come after all 20 refits)
    bt = m.fit(y[:40]).backtest(y, start=40, horizon=2, coverage=0.5)
    assert 0 <= bt["coverage"] <= 1


def test_validation_windows_share_no_target_step_with_training_windows():
    """A window's targets are its next horizon steps: the last horizon - 1 training
    windows were trained on steps the first validation window is scored on."""
    from grucy.models.forecaster import _chronological_split
    train, val = _chronological_split([50, 30], 0.2, 3)
    np.testing.assert_array_equal(val, [*range(40, 50), *range(74, 80)])
    np.testing.assert_array_equal(train, [*range(0, 37), *range(50, 71)])
    L, h = 4, 4  # window i reads steps i..i+L-1 and is scored on i+L..i+L+h-1
    for first_val, last_train in ((40, 36), (74, 70)):
        assert last_train + L + h - 1 < first_val + L  # no target step in common
    train, val = _chronological_split([5], 0.2, 4)  # no room for a gap: no validation
    np.testing.assert_array_equal(train, range(5))
    assert val.size == 0
    series = np.sin(np.arange(120.0) / 3)
    model = grucy.Forecaster(lookback=6, horizon=4, hidden_size=4, epochs=2,
                             validation_fraction=0.25, random_state=0).fit(series)
    n = len(series) - 6 - 4 + 1  # windows
    val_windows = int(n * 0.25)
    # the recorded validation RMSE is that of the held-out windows' forecasts
    X = np.stack([series[i:i + 6] for i in range(n - val_windows, n)])
    Y = np.stack([series[i + 6:i + 10] for i in range(n - val_windows, n)])
    want = np.sqrt(np.mean((model.predict(X, horizon=4) - Y) ** 2))
    assert model.history_["val_rmse"][-1] == pytest.approx(want, rel=1e-5)


@requires("pandas")
def test_messy_calendars_found_by_exploratory_testing():
    import warnings

    import pandas as pd

    kw = dict(hidden_size=4, epochs=2, random_state=0)
    # business days read back from a file (no freq): the last lookback days looked
    # daily to pandas, and the forecast fell on a Saturday
    days = pd.bdate_range("2024-01-01", periods=40)
    y = pd.Series(np.sin(np.arange(40) / 3), index=pd.DatetimeIndex(list(days)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (pandas 3's infer_freq warned on every call)
        model = grucy.Forecaster(5, **kw).fit(y)
        assert model.freq_ == "B"
        short = model.predict(y.iloc[-5:], 3)
    want = pd.bdate_range(days[-1] + pd.offsets.BDay(), periods=3)
    assert list(short.index) == list(want)
    np.testing.assert_array_equal(short.to_numpy(), model.predict(y, 3).to_numpy())
    # ... and read the covariates of those days, not Saturday's
    cal = pd.DataFrame({"monday": (pd.date_range("2024-01-01", "2024-03-31").day_of_week
                                   == 0).astype(float)},
                       index=pd.date_range("2024-01-01", "2024-03-31"))
    with_x = grucy.Forecaster(5, **kw).fit(y, cal)
    np.testing.assert_array_equal(with_x.predict(y.iloc[-5:], 3, X=cal).to_numpy(),
                                  with_x.predict(y, 3, X=cal).to_numpy())
    # one label of an integer index steps by the fitted step
    ranged = pd.Series(np.sin(np.arange(40) / 3), index=pd.RangeIndex(0, 200, 5))
    one = grucy.Forecaster(1, **kw).fit(ranged)
    assert list(one.predict(ranged.iloc[-1:], 3).index) == [200, 205, 210]
    # a PeriodIndex's frequency is kept as pandas' period alias
    monthly = pd.Series(np.sin(np.arange(40) / 3),
                        index=pd.period_range("2020-01", periods=40, freq="M"))
    m = grucy.Forecaster(4, **kw).fit(monthly)
    assert m.freq_ == "M" and len(pd.period_range("2024-01", periods=2, freq=m.freq_))
    # backtest from a partial date naming one step
    dated = monthly.copy()
    dated.index = dated.index.to_timestamp()
    mb = grucy.Forecaster(4, **kw).fit(dated)
    a = mb.backtest(dated, start="2022-03", horizon=2)
    b = mb.backtest(dated, start=26, horizon=2)
    np.testing.assert_array_equal(a["forecast"], b["forecast"])
    # repeated column labels: the first column was read for each
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["s", "s"])
    with pytest.raises(ValueError, match=r"y repeats the column label\(s\) \['s'\]"):
        grucy.Forecaster(4, **kw).fit(frame)
    with pytest.raises(ValueError, match=r"X repeats the column label\(s\) \['t'\]"):
        grucy.Forecaster(4, **kw).fit(y, pd.DataFrame(np.ones((40, 2)), columns=["t", "t"],
                                                      index=y.index))
    # an index of strings or with NaT: "sort it" was the wrong advice
    with pytest.raises(ValueError, match=r"DatetimeIndex, PeriodIndex or integer index .* "
                                         r"pd.to_datetime\(y.index\)"):
        grucy.Forecaster(4, **kw).fit(pd.Series(np.ones(20),
                                                index=[str(i) for i in range(1, 21)]))
    gap = y.copy()
    gap.index = pd.DatetimeIndex(list(days[:-1]) + [pd.NaT])
    with pytest.raises(ValueError, match="y's index holds NaT at position 39"):
        grucy.Forecaster(4, **kw).fit(gap)
    flags = pd.DataFrame({"holiday": pd.array([True, False, None] + [False] * 37,
                                              dtype="boolean")}, index=y.index)
    with pytest.raises(ValueError, match=r"X contains a missing value \(<NA>, first at "
                                         r"index \(2, 0\)\)"):
        grucy.Forecaster(4, **kw).fit(y, flags)  # (was: "values ... that are not numbers")


@requires("pandas")
def test_backtest_frame_has_a_row_per_origin_step_and_series():
    """Built column by column now (a dict per row cost 2.5x the forecasts); checked
    against rows made one by one."""
    import pandas as pd

    n = 50
    index = pd.date_range("2024-03-30", periods=n, freq="h", tz="Europe/Berlin")
    y = pd.DataFrame(np.random.default_rng(0).normal(size=(n, 2)), index=index,
                     columns=["a", "b"])
    m = grucy.Forecaster(4, horizon=3, quantiles=(0.1, 0.9), hidden_size=4, epochs=1,
                         random_state=0).fit(y)
    res = m.backtest(y, start=40, horizon=3, stride=2, coverage=0.8)
    rows = [{"origin": index[o], "time": index[o + j], "step": j + 1,
             "forecast": res["forecast"][i, j, c], "actual": res["actual"][i, j, c],
             "error": res["error"][i, j, c], "series": ["a", "b"][c],
             "lower": res["lower"][i, j, c], "upper": res["upper"][i, j, c]}
            for i, o in enumerate(res["origins"]) for j in range(3) for c in range(2)]
    pd.testing.assert_frame_equal(res["frame"], pd.DataFrame(rows))


def test_quantile_levels_found_by_exploratory_testing():
    y = np.sin(np.arange(80.0) / 3)
    kw = dict(lookback=6, hidden_size=4, epochs=2, random_state=0)
    # float32 levels and coverages (0.10000000149, 0.800000011920929) were refused:
    # "needs the 0.1 and 0.9 quantiles, outside the fitted levels [0.1, 0.5, 0.9]"
    m = grucy.Forecaster(quantiles=np.array([0.1, 0.9], np.float32), **kw).fit(y)
    lo, hi = m.predict_interval(y, 2, coverage=np.float32(0.8))
    q = m.predict_quantiles(y, 2)
    np.testing.assert_array_equal(lo, q[:, 0])
    np.testing.assert_array_equal(hi, q[:, 2])
    assert "coverage" in m.backtest(y, start=60, horizon=2)  # its default coverage=0.8
    with pytest.raises(ValueError, match=r"needs the 0.025 and 0.975 quantiles, outside "
                                         r"the fitted levels \[0.10000000149"):
        m.predict_interval(y, 2, coverage=0.95)
    # 0.499999 stood in for the median (np.isclose): 0.5 was never added, and predict
    # returned the 0.499999 quantile
    near = grucy.Forecaster(quantiles=(0.1, 0.499999, 0.9), **kw).fit(y)
    assert near.quantiles_.tolist() == [0.1, 0.499999, 0.5, 0.9]
    np.testing.assert_array_equal(near.predict(y, 2), near.predict_quantiles(y, 2)[:, 2])


@requires("pandas")
def test_backtest_frame_keeps_multiindex_column_labels():
    import pandas as pd

    cols = pd.MultiIndex.from_tuples([("s", "a"), ("s", "b")])
    y = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 2)), columns=cols,
                     index=pd.date_range("2021-01-01", periods=60))
    y.columns.names = ["region", "store"]
    m = grucy.Forecaster(4, hidden_size=4, epochs=1, random_state=0).fit(y)
    frame = m.backtest(y, start=50, horizon=2)["frame"]  # (a pandas-internal error)
    assert frame["series"].tolist()[:2] == [("s", "a"), ("s", "b")]
    # predict keeps the MultiIndex and its level names (it gave a flat Index of tuples)
    pred = m.predict(y, 2)
    assert pred.columns.equals(y.columns) and list(pred.columns.names) == ["region", "store"]
    q = grucy.Forecaster(4, quantiles=(0.1, 0.9), hidden_size=4, epochs=1,
                         random_state=0).fit(y).predict_quantiles(y, 2)
    assert q.columns.nlevels == 3 and q.columns[0] == ("s", "a", 0.1)
