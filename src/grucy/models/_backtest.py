"""Rolling-origin evaluation of a :class:`~grucy.Forecaster`:
:meth:`Forecaster.backtest <grucy.Forecaster.backtest>`."""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import _flag, _positive_int, _real
from ._series import is_pandas, read_covariates, read_series

__all__ = ["run_backtest", "interpolate_level"]


#: Quantile levels this close are one level: float32 levels (0.10000000149) and
#: coverages (0.800000011920929) differ from their decimals by up to 6e-8.
LEVEL_TOL = 1e-7


def interpolate_level(q, levels, level):
    """The ``level`` quantile from quantiles (..., Q) at ``levels``, linearly."""
    j = int(np.searchsorted(levels, level - LEVEL_TOL))
    if j < len(levels) and abs(levels[j] - level) < LEVEL_TOL:
        return q[..., j]
    lo, hi = levels[j - 1], levels[j]
    t = (level - lo) / (hi - lo)
    return (1 - t) * q[..., j - 1] + t * q[..., j]


def run_backtest(model, y, X, *, start, horizon, stride, refit, coverage):
    horizon = _positive_int("horizon", horizon)
    stride = _positive_int("stride", stride)
    refit = _flag("refit", refit)
    if coverage is not None:
        coverage = _real("coverage", coverage)
        if not 0 < coverage < 1:
            raise ValueError(f"coverage must lie strictly between 0 and 1, got {coverage}")
    if not refit:
        model._check_is_fitted()
    many = isinstance(y, (list, tuple)) and len(y) > 0 and not np.isscalar(y[0])
    if not many:
        if not refit and model.n_fitted_series_ is not None:
            raise ValueError(f"this model was fitted on a list of {model.n_fitted_series_} "
                             f"series: backtest a list of them, in the order of fit")
        return _backtest_one(model, y, X, 0, start, horizon, stride, refit, coverage)
    if refit:
        raise ValueError("refit=True backtests one series at a time (a global model "
                         "refitted on series cut at different origins is not defined)")
    if model.n_fitted_series_ not in (None, len(y)):
        raise ValueError(f"this model was fitted on {model.n_fitted_series_} series, "
                         f"y holds {len(y)}")
    if X is not None and (not isinstance(X, (list, tuple)) or len(X) != len(y)):
        raise ValueError(f"X must be a list of {len(y)} covariate tables, one per series")
    rows = range(len(y)) if model.n_fitted_series_ is not None else [0] * len(y)
    return [_backtest_one(model, yi, None if X is None else X[i], row, start, horizon,
                          stride, refit, coverage)
            for i, (yi, row) in enumerate(zip(y, rows))]


def _start_position(start, series, n, lookback, horizon):
    if isinstance(start, (bool, np.bool_)):
        raise TypeError(f"start must be an index, a fraction or a label, got {start!r}")
    if isinstance(start, numbers.Integral):
        pos = int(start)
    elif isinstance(start, numbers.Real) and 0 < float(start) < 1:
        pos = int(round(float(start) * n))
    elif series.is_pandas:
        try:
            pos = series.index.get_loc(start)
        except KeyError:
            raise ValueError(f"start={start!r} is not a label of y's index") from None
        if isinstance(pos, slice) and pos.stop - pos.start == 1:
            pos = pos.start  # (a partial date such as "2021-03" of monthly data)
        elif isinstance(pos, np.ndarray) and pos.dtype == bool and pos.sum() == 1:
            pos = int(np.flatnonzero(pos)[0])
        if not isinstance(pos, numbers.Integral):
            raise ValueError(f"start={start!r} matches several steps of y's index")
    else:
        raise TypeError(f"start must be an index, a fraction in (0, 1) or (for pandas) a "
                        f"label of y's index, got {start!r}")
    if pos < lookback or pos + horizon > n:
        raise ValueError(f"start must leave lookback={lookback} steps before it and "
                         f"horizon={horizon} after it: a position in [{lookback}, "
                         f"{n - horizon}] of the {n} steps of y, got {pos}")
    return int(pos)


def _history(y, o):
    return y.iloc[:o] if is_pandas(y) else np.asarray(y)[:o]


def interval_levels(coverage, levels, fix="give a coverage they span, or coverage=None"):
    """The quantile levels of a ``coverage`` interval, which the fitted ``levels``
    must span (None: no interval, or a model without quantiles)."""
    if coverage is None or levels is None:
        return None
    lo, hi = (1 - coverage) / 2, (1 + coverage) / 2
    if lo < levels[0] - LEVEL_TOL or hi > levels[-1] + LEVEL_TOL:
        raise ValueError(f"coverage={coverage} needs the {lo:.10g} and {hi:.10g} "
                         f"quantiles, outside the fitted levels "
                         f"{[float(v) for v in levels]}; {fix}")
    return lo, hi


def _backtest_one(model, y, X, row, start, horizon, stride, refit, coverage):
    # a fitted model reads y as predict does (its columns, by name for a DataFrame);
    # a refit one is fitted on y itself
    series = read_series("y", y) if refit else model._read_history("y", y)
    n = len(series.values)
    L = model.lookback if refit else model.lookback_
    L = _positive_int("lookback", L)
    pos = _start_position(start, series, n, L, horizon)
    origins = np.arange(pos, n - horizon + 1, stride)
    uses_covariates = X is not None
    if not refit and bool(model.n_covariates_) != uses_covariates:
        raise ValueError("X is missing: the model was fitted with covariates" if
                         model.n_covariates_ else
                         "X was given, but the model was fitted without covariates")
    cov = None
    if uses_covariates:  # (by name as predict reads them; a refit reads X as fit does)
        cov = read_covariates("X", X, series,
                              columns=None if refit else model.covariate_names_)
    if refit:
        blocks = []
        for o in origins:
            m = type(model)(**model.get_params())
            m.fit(_history(y, o), None if X is None else _covariate_history(X, y, o))
            if not blocks:  # refused after the first fit, not after all of them
                interval_levels(coverage, m.quantiles_)
            blocks.append(_forecast_at(m, series, cov, [o], horizon, 0)[0])
        q = np.stack(blocks)
        levels = m.quantiles_
        med = 0 if levels is None else m._median_index()
    else:
        interval_levels(coverage, model.quantiles_)
        q = _forecast_at(model, series, cov, origins, horizon, row)
        levels = model.quantiles_
        med = 0 if levels is None else model._median_index()
    forecast = q[..., med]                                   # (n_o, horizon, k)
    actual = np.stack([series.values[o:o + horizon] for o in origins])
    error = forecast - actual
    result = {"origins": origins, "forecast": forecast, "actual": actual, "error": error,
              "mae": np.mean(np.abs(error), axis=(1, 2)),
              "rmse": _rms(error)}
    if levels is not None:
        result["levels"] = levels
        result["quantiles"] = q
        if coverage is not None:
            lo, hi = interval_levels(coverage, levels)
            result["lower"], result["upper"] = interpolate_level(q, levels, lo), \
                interpolate_level(q, levels, hi)
            result["covered"] = (actual >= result["lower"]) & (actual <= result["upper"])
            result["coverage"] = float(np.mean(result["covered"]))
    if series.univariate:
        for key in ("forecast", "actual", "error", "quantiles", "lower", "upper",
                    "covered"):
            if key in result:
                result[key] = result[key][:, :, 0]
    if series.is_pandas:
        result["frame"] = _frame(result, series, origins, horizon)
    return result


def _covariate_history(X, y, o):
    if is_pandas(X) and is_pandas(y):
        return X  # aligned by the labels of the history
    return np.asarray(X)[:o]


def _forecast_at(model, series, cov, origins, horizon, row):
    """(n_origins, horizon, k, Q) forecasts in data units from the histories before
    each origin (the model's own scaling of series ``row``)."""
    L = model.lookback_
    rows = [row] * len(origins)
    windows = model._scaled_windows(np.stack([series.values[o - L:o] for o in origins]),
                                    rows)
    covs = None
    if model.n_covariates_:
        if cov.shape[1] != model.n_covariates_:
            raise ValueError(f"X has {cov.shape[1]} covariates, the model was fitted with "
                             f"{model.n_covariates_}")
        covs = model._scaled_covariates(np.stack([cov[o - L:o + horizon] for o in origins]))
    return model._unscaled(model._forecast_scaled(windows, covs, horizon), rows)


def _frame(result, series, origins, horizon):
    """One row per (origin, forecast step[, series]): a long DataFrame, built column by
    column (a dict per row cost 9 us a row, 2.5x the forecasts themselves)."""
    import pandas as pd

    index = series.index
    k = series.values.shape[1]
    cols = series.columns or [series.name if series.name is not None else "y"]
    origins = np.asarray(origins)
    n = len(origins)
    o = np.repeat(origins, horizon * k)                        # (origin, step, series)
    step = np.tile(np.repeat(np.arange(horizon), k), n)
    frame = {"origin": index[o], "time": index[o + step], "step": step + 1}
    for key in ("forecast", "actual", "error", "lower", "upper"):
        if key in result:
            frame[key] = np.asarray(result[key]).reshape(-1)
            if key == "error" and not series.univariate:
                labels = np.empty(len(cols), dtype=object)  # (tuples of MultiIndex
                labels[:] = list(cols)                       # columns: one label each)
                frame["series"] = np.tile(labels, n * horizon)
    return pd.DataFrame(frame)


def _rms(error):
    """Root mean square per origin, in units of its largest error (squared directly,
    errors near 1e160 gave inf)."""
    top = np.max(np.abs(error), axis=(1, 2), keepdims=True)
    top = np.where(top > 0, top, 1.0)
    return np.sqrt(np.mean(np.square(error / top), axis=(1, 2))) * top[:, 0, 0]
