"""End-to-end demos on real data, each with a simple baseline and a fixed seed.

- :func:`run_forecast_demo` (``grucy demo`` / ``grucy demo forecast``): yearly sunspot
  numbers, trained on 1700-1978, one-year-ahead forecasts of 1979-2008 from the true
  history, against persistence and a least-squares AR(9) fitted on the same years.
- :func:`run_classify_demo` (``grucy demo classify``): scikit-learn's digits read row by
  row (8 steps of 8 pixels), 30% held out.
- :func:`run_lm_demo` (``grucy demo lm``): a character-level language model of Python
  standard-library source, held-out bits per character against a character bigram model.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

import numpy as np

from .baselines import char_bigram_bits_per_char, fit_ar
from .datasets import load_digits_sequences, load_stdlib_text, load_sunspots
from .models import CharLM, Forecaster, GRUClassifier

__all__ = ["run_forecast_demo", "run_classify_demo", "run_lm_demo", "run_demo",
           "DEFAULT_PLOT"]

LAST_TRAIN_YEAR = 1978
AR_ORDER = 9
#: Where ``grucy demo forecast`` writes its plot unless told otherwise (in the cwd).
DEFAULT_PLOT = "grucy-demo-forecast.png"

#: The settings of each demo (seeded; the README's numbers come from these).
FORECAST_SETTINGS = dict(lookback=12, hidden_size=32, epochs=80, lr=3e-3, batch_size=32)
CLASSIFY_SETTINGS = dict(hidden_size=64, epochs=30, lr=1e-2, batch_size=32)
LM_SETTINGS = dict(hidden_size=256, embedding_dim=32, bptt=64, batch_size=32, epochs=2,
                   lr=3e-3)
LM_TEXT_CHARS = 400_000
HELD_OUT = 0.3  # digits
LM_HELD_OUT = 0.1  # the text's tail


def _rmse(pred, actual):
    return float(np.sqrt(np.mean(np.square(np.asarray(pred) - np.asarray(actual)))))


def _say(verbose) -> Callable:
    return print if verbose else (lambda *a, **k: None)


def sunspot_split():
    """(years, values, train values, test indices) of the sunspot demo."""
    years, values = load_sunspots()
    return years, values, values[years <= LAST_TRAIN_YEAR], np.flatnonzero(
        years > LAST_TRAIN_YEAR)


def run_forecast_demo(seed: int = 0, verbose: bool = True, plot: Optional[str] = None,
                      **overrides) -> dict:
    """Train a :class:`grucy.Forecaster` on sunspots; held-out one-step-ahead RMSEs.

    Parameters
    ----------
    seed : int
    verbose : bool
        Print the setting, a progress bar and the results.
    plot : path or None
        Write a PNG of forecast vs truth there (needs matplotlib; skipped with a note
        otherwise).
    **overrides
        Replace entries of ``FORECAST_SETTINGS`` (e.g. fewer epochs in tests).

    Returns
    -------
    dict
        ``rmse_model``, ``rmse_ar``, ``rmse_persistence``, ``ar_order``, ``years``,
        ``actual``, ``predicted``, ``ar_predicted``, ``history``, ``seconds``, ``seed``,
        ``plot`` (the path written, or None).
    """
    say = _say(verbose)
    years, values, train, test_idx = sunspot_split()
    actual = values[test_idx]
    settings = {**FORECAST_SETTINGS, **overrides}
    L = settings["lookback"]

    def history(lags):  # the `lags` true values before each test year, oldest first
        return np.stack([values[i - lags:i] for i in test_idx])

    say(f"Yearly sunspot numbers: train {years[0]}-{LAST_TRAIN_YEAR} ({len(train)} years), "
        f"forecast {years[test_idx[0]]}-{years[test_idx[-1]]} ({len(test_idx)} years) "
        f"one year ahead from the true history.")
    model = Forecaster(random_state=seed, verbose=1 if verbose else 0, **settings)
    say(f"Training {model!r}:")
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    predicted = model.predict(history(L), horizon=1)[:, 0]

    c, a = fit_ar(train, AR_ORDER)
    ar_pred = c + history(AR_ORDER) @ a
    persistence = values[test_idx - 1]
    result = {
        "rmse_model": _rmse(predicted, actual),
        "rmse_persistence": _rmse(persistence, actual),
        "rmse_ar": _rmse(ar_pred, actual),
        "ar_order": AR_ORDER,
        "history": model.history_,
        "years": years[test_idx],
        "actual": actual,
        "predicted": predicted,
        "ar_predicted": ar_pred,
        "seconds": seconds,
        "seed": seed,
        "plot": None,
    }
    say(f"Trained in {seconds:.1f} s.")
    say(f"Held-out RMSE, {years[test_idx[0]]}-{years[test_idx[-1]]}:")
    say(f"  GRU forecaster      {result['rmse_model']:6.2f}")
    say(f"  AR({AR_ORDER}), least sq.   {result['rmse_ar']:6.2f}")
    say(f"  persistence         {result['rmse_persistence']:6.2f}")
    if plot is not None:
        result["plot"] = _plot_forecast(plot, years, values, result)
        if result["plot"] is None:
            say("matplotlib is not installed, so no plot was written (pip install "
                "matplotlib, or pip install 'grucy[plot]')")
        else:
            say(f"Plot of forecast vs truth written to {result['plot']}")
    return result


def _plot_forecast(path, years, values, result):
    """PNG of the held-out years: truth, GRU and AR forecasts; returns the path or None."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    shown = years >= result["years"][0] - 40
    ax.plot(years[shown], values[shown], color="0.6", lw=1, label="observed")
    ax.plot(result["years"], result["actual"], "k.-", lw=1.5, label="truth (held out)")
    ax.plot(result["years"], result["predicted"], "C0o-",
            label=f"GRU forecaster, RMSE {result['rmse_model']:.1f}")
    ax.plot(result["years"], result["ar_predicted"], "C1s--", ms=4,
            label=f"AR({result['ar_order']}), RMSE {result['rmse_ar']:.1f}")
    ax.axvline(LAST_TRAIN_YEAR + 0.5, color="0.3", ls=":", lw=1)
    ax.set_xlabel("year")
    ax.set_ylabel("yearly mean sunspot number")
    ax.set_title("One-year-ahead sunspot forecasts (grucy demo)")
    ax.legend(loc="upper left", fontsize=8)
    path = os.fspath(path)
    fig.savefig(path, dpi=120)
    return os.path.abspath(path)


def run_classify_demo(seed: int = 0, verbose: bool = True, **overrides) -> dict:
    """Train a :class:`grucy.GRUClassifier` on digits read row by row; held-out accuracy.

    30% of the 1797 images (a seeded permutation) are held out.  ``overrides`` replace
    entries of ``CLASSIFY_SETTINGS``; ``n_samples`` limits the data (tests).  Returns a
    dict with ``accuracy``, ``majority_baseline``, ``n_train``, ``n_test``,
    ``history``, ``seconds``, ``seed``.
    """
    say = _say(verbose)
    X, y = load_digits_sequences()
    n_samples = overrides.pop("n_samples", len(X))
    perm = np.random.default_rng(seed).permutation(len(X))[:n_samples]
    n_test = int(round(HELD_OUT * len(perm)))
    test, train = perm[:n_test], perm[n_test:]
    settings = {**CLASSIFY_SETTINGS, **overrides}
    model = GRUClassifier(random_state=seed, verbose=1 if verbose else 0, **settings)
    say(f"Digits (8x8 images read row by row: 8 steps of 8 pixels): train {len(train)}, "
        f"held out {len(test)}.")
    say(f"Training {model!r}:")
    start = time.perf_counter()
    model.fit(X[train], y[train])
    seconds = time.perf_counter() - start
    accuracy = model.score(X[test], y[test])
    majority = float(np.mean(y[test] == np.bincount(y[train]).argmax()))
    say(f"Trained in {seconds:.1f} s.")
    say(f"Held-out accuracy: GRU classifier {accuracy:.4f}  (majority class {majority:.4f})")
    return {"accuracy": accuracy, "majority_baseline": majority, "n_train": len(train),
            "n_test": len(test), "history": model.history_, "seconds": seconds,
            "seed": seed}


def run_lm_demo(seed: int = 0, verbose: bool = True, n_chars: Optional[int] = None,
                **overrides) -> dict:
    """Train a :class:`grucy.CharLM` on standard-library source; held-out bits/char.

    The text (:func:`grucy.datasets.load_stdlib_text` of ``n_chars`` characters, default
    ``LM_TEXT_CHARS``) is split
    into its first 90% (training) and last 10% (held out); the character bigram model of
    :func:`grucy.baselines.char_bigram_bits_per_char` sees the same split.  Returns a dict
    with ``bpc_model``, ``bpc_bigram``, ``sample`` (generated text), ``n_train``,
    ``n_test``, ``history``, ``seconds``, ``seed``.
    """
    say = _say(verbose)
    text = load_stdlib_text(LM_TEXT_CHARS if n_chars is None else n_chars)
    n_test = int(len(text) * LM_HELD_OUT)
    train, test = text[:-n_test], text[-n_test:]
    settings = {**LM_SETTINGS, **overrides}
    model = CharLM(random_state=seed, verbose=1 if verbose else 0, **settings)
    say(f"Python standard-library source: {len(train)} characters for training, the next "
        f"{len(test)} held out.")
    say(f"Training {model!r}:")
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    bpc = model.bits_per_char(test)
    bigram = char_bigram_bits_per_char(train, test)
    sample = model.generate("def ", 160, temperature=0.6, random_state=seed)
    say(f"Trained in {seconds:.1f} s.")
    say("Held-out bits per character:")
    say(f"  GRU language model    {bpc:.3f}")
    say(f"  character bigram      {bigram:.3f}")
    say("Sample (prompt 'def ', temperature 0.6):")
    say("def " + sample)
    return {"bpc_model": bpc, "bpc_bigram": bigram, "sample": sample,
            "n_train": len(train), "n_test": len(test), "history": model.history_,
            "seconds": seconds, "seed": seed}


def run_demo(seed: int = 0, verbose: bool = True, plot: Optional[str] = None) -> dict:
    """The default demo (sunspots); see :func:`run_forecast_demo`."""
    return run_forecast_demo(seed=seed, verbose=verbose, plot=plot)
