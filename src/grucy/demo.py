"""End-to-end demo: forecast yearly sunspot numbers one year ahead.

Train on 1700-1978, then forecast each of 1979-2008 from the true history before it, and
compare the held-out RMSE with two baselines: persistence (next year = this year) and a
least-squares AR(9) model fitted on the same training years.
"""

from __future__ import annotations

import time

import numpy as np

from .datasets import load_sunspots
from .forecast import SequenceForecaster, sliding_windows

__all__ = ["run_demo", "fit_ar"]

LAST_TRAIN_YEAR = 1978
LOOKBACK = 12
HIDDEN_SIZE = 32
EPOCHS = 80
LEARNING_RATE = 3e-3
AR_ORDER = 9


def fit_ar(series, order):
    """Least-squares AR(order) with intercept: returns (c, a) with
    ``x[t] ~ c + a @ x[t-order:t]`` (coefficients oldest lag first)."""
    X, y = sliding_windows(series, order)
    A = np.column_stack([np.ones(len(y)), X])
    coef = np.linalg.lstsq(A, y, rcond=None)[0]
    return coef[0], coef[1:]


def _rmse(pred, actual):
    return float(np.sqrt(np.mean(np.square(np.asarray(pred) - np.asarray(actual)))))


def run_demo(seed=0, verbose=True):
    """Train the GRU forecaster on sunspots and report held-out one-step-ahead RMSEs.

    Returns a dict with the three RMSEs (``rmse_model``, ``rmse_persistence``,
    ``rmse_ar``), the training loss history, the test years with actual and predicted
    values, and the training time in seconds.  A fixed ``seed`` gives identical numbers.
    """
    years, values = load_sunspots()
    train = values[years <= LAST_TRAIN_YEAR]
    test_idx = np.flatnonzero(years > LAST_TRAIN_YEAR)
    actual = values[test_idx]

    def history(lags):  # the `lags` true values before each test year, oldest first
        return np.stack([values[i - lags:i] for i in test_idx])

    say = print if verbose else (lambda *a, **k: None)
    say(f"Yearly sunspot numbers: train {years[0]}-{LAST_TRAIN_YEAR} ({len(train)} years), "
        f"forecast {years[test_idx[0]]}-{years[test_idx[-1]]} ({len(test_idx)} years) "
        f"one year ahead from the true history.")

    model = SequenceForecaster(LOOKBACK, HIDDEN_SIZE, seed=seed)
    say(f"Training {model.gru!r} + {model.head!r} on windows of {LOOKBACK} years "
        f"(MSE, Adam lr={LEARNING_RATE}, {EPOCHS} epochs, seed={seed}):")
    start = time.perf_counter()
    model.fit(train, epochs=EPOCHS, lr=LEARNING_RATE, verbose=verbose)
    seconds = time.perf_counter() - start
    predicted = model.predict_next(history(LOOKBACK))

    c, a = fit_ar(train, AR_ORDER)
    ar_pred = c + history(AR_ORDER) @ a
    persistence = values[test_idx - 1]

    result = {
        "rmse_model": _rmse(predicted, actual),
        "rmse_persistence": _rmse(persistence, actual),
        "rmse_ar": _rmse(ar_pred, actual),
        "ar_order": AR_ORDER,
        "loss_history": list(model.loss_history_),
        "years": years[test_idx],
        "actual": actual,
        "predicted": predicted,
        "seconds": seconds,
        "seed": seed,
    }
    say(f"Trained in {seconds:.1f} s.")
    say(f"Held-out RMSE, {years[test_idx[0]]}-{years[test_idx[-1]]}:")
    say(f"  GRU forecaster      {result['rmse_model']:6.2f}")
    say(f"  AR({AR_ORDER}), least sq.   {result['rmse_ar']:6.2f}")
    say(f"  persistence         {result['rmse_persistence']:6.2f}")
    return result
