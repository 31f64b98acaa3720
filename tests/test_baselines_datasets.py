"""grucy.baselines and grucy.datasets refuse bad input with errors that name the
argument (tests/test_real_data.py measures the baselines on the real data; these are the
quick checks of their arguments)."""

import numpy as np
import pytest

from grucy.baselines import (CharNGramNaiveBayes, ar_forecast, char_bigram_bits_per_char,
                             fit_ar, seasonal_naive, select_ar_order)
from grucy.datasets import calendar_features, load_stdlib_lines, load_stdlib_text


# -- baselines ------------------------------------------------------------------------------
def _ar2(n, seed=1):
    rng = np.random.default_rng(seed)
    x, e = np.zeros(n), rng.standard_normal(n)
    for t in range(2, n):
        x[t] = 0.5 + 0.6 * x[t - 1] - 0.3 * x[t - 2] + e[t]
    return x


def test_select_ar_order_refuses_a_series_too_short_for_max_order():
    """12 values, max_order=6: 6 targets for AR(6)'s 7 parameters, an exact fit whose
    near-zero residual won the BIC (6 was chosen)."""
    x = _ar2(12)
    with pytest.raises(ValueError, match=r"^series of 12 values is too short for "
                                         r"max_order=6: .* pass at least 14 values or "
                                         r"max_order <= 5"):
        select_ar_order(x, 6)
    assert select_ar_order(x, 5) <= 5  # the largest max_order allowed (6 targets > 6)
    assert select_ar_order(_ar2(300), 6) == 2


def test_select_ar_order_takes_the_smallest_exact_fit_without_a_warning():
    # every order fits a constant series exactly: log(0) = -inf, and a divide-by-zero
    # RuntimeWarning was printed
    with np.errstate(all="raise"):
        assert select_ar_order(np.zeros(20), 4) == 1


@pytest.mark.parametrize("call", [lambda x: fit_ar(x, 2), lambda x: select_ar_order(x, 3)],
                         ids=["fit_ar", "select_ar_order"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_ar_fits_refuse_a_non_finite_series(call, bad, capfd):
    # NaN reached LAPACK: "DLASCL parameter number 4" on stderr, then a LinAlgError
    x = np.sin(np.arange(50.0))
    x[20] = bad
    with pytest.raises(ValueError, match=rf"^series contains NaN or inf \(first at index "
                                         rf"\(20,\), value {bad}\)"):
        call(x)
    assert "DLASCL" not in capfd.readouterr().err


def test_ar_forecast_and_seasonal_naive_check_shapes():
    for call, error, message in [
            (lambda: ar_forecast(0.0, np.ones((2, 2)), np.ones(5), 3), ValueError,
             r"^a must be 1-D .* got shape \(2, 2\)"),
            (lambda: ar_forecast(np.array([1.0, 2.0]), [0.5, 0.2], [1, 2], 3), TypeError,
             r"^c must be a real number"),
            (lambda: ar_forecast(0.0, [0.5, 0.2], np.ones((2, 2, 5)), 3), ValueError,
             r"^history must be 1-D \(m,\) or 2-D \(N, m\), got shape \(2, 2, 5\)"),
            (lambda: ar_forecast(0.0, [0.5, np.nan], [1, 2], 3), ValueError,
             r"^a contains NaN or inf"),
            (lambda: seasonal_naive(5.0, 3, 1), ValueError,
             r"^history must be 1-D \(m,\) or 2-D \(N, m\), got shape \(\)"),
            (lambda: seasonal_naive([1.0, np.inf], 3, 1), ValueError,
             r"^history contains NaN or inf")]:
        with pytest.raises(error, match=message):
            call()
    np.testing.assert_allclose(ar_forecast(1.0, [0.5], [2.0], 2), [2.0, 2.0])
    np.testing.assert_allclose(ar_forecast(np.float64(1.0), [0.5], [[2.0], [0.0]], 1),
                               [[2.0], [1.0]])
    np.testing.assert_array_equal(seasonal_naive([[1, 2, 3]], 4, 2), [[2, 3, 2, 3]])


def test_naive_bayes_checks_texts_labels_and_fitted():
    nb = CharNGramNaiveBayes()
    # zip() dropped the extra labels, and the priors counted all 5
    with pytest.raises(ValueError, match=r"^labels must hold one label per text: 2 texts, "
                                         r"got labels of shape \(5,\)"):
        nb.fit(["aaaa", "bbbb"], [0, 1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"^labels must hold one label per text: 3 texts"):
        nb.fit(["a", "b", "c"], [0, 1])
    # a str was read as one text per character
    with pytest.raises(TypeError, match=r"^texts must be a list of str \(one per text\), "
                                        r"got a single str 'abab'; wrap it in a list"):
        nb.fit("abab", [0, 1, 0, 1])
    with pytest.raises(TypeError, match=r"^texts\[1\] must be a str, got int 1"):
        nb.fit(["a", 1], [0, 1])
    with pytest.raises(ValueError, match=r"^texts must hold at least one text"):
        nb.fit([], [])
    # a raw AttributeError ('log_prior_') before fit
    with pytest.raises(ValueError, match=r"^This CharNGramNaiveBayes instance is not fitted "
                                         r"yet. Call 'fit'") as info:
        nb.predict(["a"])
    assert type(info.value).__name__ == "NotFittedError"
    nb.fit(np.array(["aaaa", "bbbb", "abba"]), np.array([0, 1, 1]))
    assert nb.predict(["aaa", "bb"]).tolist() == [0, 1]
    with pytest.raises(TypeError, match=r"^texts must be a list of str"):
        nb.predict("aaa")


@pytest.mark.parametrize("alpha", [np.inf, np.nan])
def test_smoothing_alpha_must_be_finite(alpha):
    # inf passed "alpha > 0": NaN bits per character, an all-NaN naive Bayes
    with pytest.raises(ValueError, match=rf"^alpha must be finite, got {alpha}"):
        char_bigram_bits_per_char("abcabc", "abd", alpha=alpha)
    with pytest.raises(ValueError, match=rf"^alpha must be finite, got {alpha}"):
        CharNGramNaiveBayes(alpha=alpha)
    with pytest.raises(ValueError, match=r"^alpha must be > 0, got 0.0"):
        CharNGramNaiveBayes(alpha=0)


# -- datasets -------------------------------------------------------------------------------
def test_calendar_features_refuses_missing_dates():
    # NaT became -9.2e18 days: finite, made-up features
    d = np.array(["2020-03-01", "2020-03-02", "NaT", "NaT"], dtype="datetime64[D]")
    with pytest.raises(ValueError, match=r"^dates contains NaT, a missing date \(first at "
                                         r"index 2\)"):
        calendar_features(d)
    with pytest.raises(ValueError, match=r"^dates contains NaT, a missing date \(first at "
                                         r"index 0\)"):
        calendar_features("NaT")


@pytest.mark.parametrize("period, error, message", [
    (0, ValueError, r"^period_days must be a positive finite number .* got 0.0"),
    (-1, ValueError, r"^period_days must be a positive finite number .* got -1.0"),
    (-365.25, ValueError, r"^period_days must be a positive finite number"),
    (float("nan"), ValueError, r"^period_days must be finite, got nan"),
    ("365", TypeError, r"^period_days must be a real number")])
def test_calendar_features_checks_period_days(period, error, message):
    with pytest.raises(error, match=message):
        calendar_features(["2020-03-01"], 1, period_days=period)


def test_calendar_features_is_one_row_per_date_of_1d_input():
    with pytest.raises(ValueError, match=r"^dates must be 1-D \(one date per row\) or a "
                                         r"single date, got shape \(1, 2\)"):
        calendar_features([["2020-03-01", "2020-03-02"]], harmonics=1)
    assert calendar_features(["2020-03-01", "2020-03-02"], harmonics=1).shape == (2, 2)
    assert calendar_features("2020-03-01", harmonics=3).shape == (1, 6)


def test_calendar_features_of_aware_timestamps_use_their_local_date():
    """2021-01-01 02:00 in Tokyo is still 2020-12-31 in UTC, whose features it got."""
    import datetime

    pd = pytest.importorskip("pandas")
    naive = calendar_features(["2021-01-01", "2021-07-01"], 2)
    idx = pd.DatetimeIndex(["2021-01-01 02:00", "2021-07-01 23:30"]).tz_localize("Asia/Tokyo")
    for dates in (idx, pd.Series(idx), list(idx)):
        np.testing.assert_array_equal(calendar_features(dates, 2), naive)
    np.testing.assert_array_equal(calendar_features(idx[0], 2), naive[:1])
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    np.testing.assert_array_equal(
        calendar_features([datetime.datetime(2021, 1, 1, 2, tzinfo=tokyo)], 2), naive[:1])
    west = idx.tz_convert("America/Los_Angeles")  # Dec 31 and Jul 1 there
    np.testing.assert_array_equal(calendar_features(west, 2),
                                  calendar_features(["2020-12-31", "2021-07-01"], 2))


@pytest.mark.parametrize("load", [lambda m: load_stdlib_text(1000, modules=m),
                                  lambda m: load_stdlib_lines(60, modules=m)],
                         ids=["text", "lines"])
def test_stdlib_loaders_check_modules(load):
    # a str gave "no standard-library source files found ... installed without .py
    # sources?", [1] an AttributeError, None a TypeError about iteration
    with pytest.raises(TypeError, match=r"^modules must be a list of module names, got a "
                                        r"single str 'textwrap'; wrap it in a list"):
        load("textwrap")
    with pytest.raises(TypeError, match=r"^modules\[1\] must be a module name \(str\), got "
                                        r"int 1"):
        load(["textwrap", 1])
    with pytest.raises(TypeError, match=r"^modules must be a list of module names, got "
                                        r"NoneType"):
        load(None)
    assert load(("textwrap",))
