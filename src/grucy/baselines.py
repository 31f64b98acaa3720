"""Simple baselines the demos and quality tests compare the GRU models against.

- :func:`fit_ar`: least-squares autoregression, the classic yardstick for sunspots;
- :func:`char_bigram_bits_per_char`: a smoothed character bigram model.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from numpy.typing import ArrayLike

from ._validation import _positive_int

__all__ = ["sliding_windows", "fit_ar", "char_bigram_bits_per_char"]


def sliding_windows(series: ArrayLike, lookback: int) -> Tuple[np.ndarray, np.ndarray]:
    """All (window, next value) pairs of a 1-D series.

    Returns ``X`` (N, lookback) and ``y`` (N,) with ``X[i] = series[i:i+lookback]`` and
    ``y[i] = series[i+lookback]``, N = len(series) - lookback.
    """
    series = np.asarray(series, dtype=np.float64)
    lookback = _positive_int("lookback", lookback)
    if series.ndim != 1:
        raise ValueError(f"series must be 1-D, got shape {series.shape}")
    if series.size <= lookback:
        raise ValueError(f"series needs more than lookback={lookback} values, "
                         f"got {series.size}")
    X = np.lib.stride_tricks.sliding_window_view(series[:-1], lookback)
    return X.copy(), series[lookback:].copy()


def fit_ar(series: ArrayLike, order: int) -> Tuple[float, np.ndarray]:
    """Least-squares AR(order) with intercept: returns ``(c, a)`` with
    ``x[t] ~ c + a @ x[t-order:t]`` (coefficients oldest lag first)."""
    X, y = sliding_windows(series, order)
    A = np.column_stack([np.ones(len(y)), X])
    coef = np.linalg.lstsq(A, y, rcond=None)[0]
    return coef[0], coef[1:]


def char_bigram_bits_per_char(train: str, test: str, alpha: float = 0.1) -> float:
    """Bits per character of ``test`` under a character bigram model of ``train``.

    ``P(b | a) = (count(a, b) + alpha) / (count(a) + alpha * V)`` (additive smoothing),
    V = the characters of ``train`` plus one symbol for every unseen character.  The
    first character of ``test`` is not scored (it has no predecessor), exactly as
    :meth:`grucy.CharLM.bits_per_char` scores ``len(test) - 1`` characters.
    """
    if not isinstance(train, str) or not isinstance(test, str):
        raise TypeError("train and test must be str")
    if len(train) < 2 or len(test) < 2:
        raise ValueError("train and test need at least 2 characters each")
    alpha = float(alpha)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    vocab = {c: i for i, c in enumerate(sorted(set(train)))}
    V = len(vocab) + 1

    def encode(text):
        return np.fromiter((vocab.get(c, V - 1) for c in text), np.int64, len(text))

    a, b = encode(train), encode(test)
    counts = np.zeros((V, V))
    np.add.at(counts, (a[:-1], a[1:]), 1.0)
    prob = (counts + alpha) / (counts.sum(axis=1, keepdims=True) + alpha * V)
    return float(-np.mean(np.log2(prob[b[:-1], b[1:]])))
