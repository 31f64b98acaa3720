"""Simple baselines the demos and quality tests compare the GRU models against.

- :func:`fit_ar`: least-squares autoregression, the classic yardstick for sunspots;
  :func:`ar_forecast` runs it recursively, :func:`select_ar_order` picks its order by
  an information criterion;
- :func:`seasonal_naive`: the value one season earlier;
- :func:`char_bigram_bits_per_char`: a smoothed character bigram model;
- :class:`CharNGramNaiveBayes`: a bag-of-character-n-grams text classifier (order
  within the n-grams only), the yardstick of the line-classification demo.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
from numpy.typing import ArrayLike

from ._validation import _as_real_array, _positive_int, _real, _str_list, check_finite

__all__ = ["sliding_windows", "fit_ar", "ar_forecast", "select_ar_order", "seasonal_naive",
           "char_bigram_bits_per_char", "CharNGramNaiveBayes"]


def _series(series):
    """``series`` as a finite 1-D float64 array.  Checked up front: a NaN or inf would
    otherwise reach LAPACK's least squares, which prints its own complaint and fails
    with an error that names nothing of the caller's."""
    series = _as_real_array("series", series).astype(np.float64, copy=False)
    if series.ndim != 1:
        raise ValueError(f"series must be 1-D, got shape {series.shape}")
    check_finite("series", series, hint="fill or drop missing values first")
    return series


def _history(history):
    """A forecast's ``history``: a finite float64 array (m,) or (N, m), as documented
    (any other shape would fail later with a raw NumPy broadcasting or index error)."""
    h = _as_real_array("history", history).astype(np.float64, copy=False)
    if h.ndim not in (1, 2):
        raise ValueError(f"history must be 1-D (m,) or 2-D (N, m), got shape {h.shape}")
    check_finite("history", h)
    return h


def _smoothing(alpha):
    """The additive-smoothing ``alpha``: finite (an infinite one turns every
    probability into inf / inf = NaN) and > 0."""
    alpha = _real("alpha", alpha)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return alpha


def sliding_windows(series: ArrayLike, lookback: int) -> Tuple[np.ndarray, np.ndarray]:
    """All (window, next value) pairs of a 1-D series.

    Returns ``X`` (N, lookback) and ``y`` (N,) with ``X[i] = series[i:i+lookback]`` and
    ``y[i] = series[i+lookback]``, N = len(series) - lookback.
    """
    series = _series(series)
    lookback = _positive_int("lookback", lookback)
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


def ar_forecast(c: float, a: ArrayLike, history: ArrayLike, horizon: int) -> np.ndarray:
    """Recursive forecasts of a fitted AR (``c, a`` from :func:`fit_ar`): the next
    ``horizon`` values after ``history`` (m,) or after each row of (N, m), m >= order;
    each forecast is fed back as the newest value.  Returns (horizon,) or (N, horizon)."""
    c = _real("c", c)  # the intercept: one number (an array would be broadcast wrongly)
    a = _as_real_array("a", a).astype(np.float64, copy=False)
    if a.ndim != 1:
        raise ValueError(f"a must be 1-D (the order coefficients, oldest lag first), got "
                         f"shape {a.shape}")
    check_finite("a", a)
    h = _history(history)
    horizon = _positive_int("horizon", horizon)
    single = h.ndim == 1
    h = np.atleast_2d(h)
    p = len(a)
    if h.shape[1] < p:
        raise ValueError(f"history needs at least order={p} values, got {h.shape[1]}")
    window = h[:, h.shape[1] - p:].copy()
    out = np.empty((len(h), horizon))
    for j in range(horizon):
        out[:, j] = c + window @ a
        window = np.concatenate([window[:, 1:], out[:, j:j + 1]], axis=1)
    return out[0] if single else out


def select_ar_order(series: ArrayLike, max_order: int, criterion: str = "bic") -> int:
    """The AR order in 1..max_order minimising ``criterion`` ("bic", statsmodels'
    default, or "aic") for least-squares fits on the same sample (the series after its
    first max_order values).

    Every fit must be overdetermined: the ``len(series) - max_order`` targets must
    outnumber the ``max_order + 1`` parameters of the largest fit, so the series needs
    at least ``2 * max_order + 2`` values (ValueError otherwise).  A fit with as many
    parameters as targets passes through every point, and its zero residual would win
    any criterion.  An order that fits exactly nonetheless (a noise-free series) scores
    -inf; the smallest such order is chosen.
    """
    series = _series(series)
    max_order = _positive_int("max_order", max_order)
    if criterion not in ("aic", "bic"):
        raise ValueError(f"criterion must be 'aic' or 'bic', got {criterion!r}")
    n = series.size - max_order  # targets of every fit (the common sample)
    if n <= max_order + 1:
        raise ValueError(f"series of {series.size} values is too short for "
                         f"max_order={max_order}: the fits need more targets (the "
                         f"{max(n, 0)} values after the first max_order) than the "
                         f"{max_order + 1} parameters of AR({max_order}); pass at least "
                         f"{2 * max_order + 2} values or max_order <= "
                         f"{max((series.size - 2) // 2, 0)}")
    penalty = 2.0 if criterion == "aic" else np.log(n)
    best, best_order = np.inf, 1
    for p in range(1, max_order + 1):
        X, y = sliding_windows(series[max_order - p:], p)
        A = np.column_stack([np.ones(len(y)), X])
        resid = y - A @ np.linalg.lstsq(A, y, rcond=None)[0]
        with np.errstate(divide="ignore"):  # an exact fit: log(0) = -inf, see above
            value = n * np.log(np.mean(resid ** 2)) + penalty * (p + 1)
        if value < best:
            best, best_order = value, p
    return best_order


def seasonal_naive(history: ArrayLike, horizon: int, season: int) -> np.ndarray:
    """The seasonal-naive forecast: each of the next ``horizon`` values is the value one
    season (``season`` steps) earlier, repeating the last season as often as needed.
    ``history`` (m,) or (N, m) with m >= season."""
    h = _history(history)
    horizon = _positive_int("horizon", horizon)
    season = _positive_int("season", season)
    if h.shape[-1] < season:
        raise ValueError(f"history needs at least season={season} values, got "
                         f"{h.shape[-1]}")
    last = h[..., h.shape[-1] - season:]
    return last[..., np.arange(horizon) % season]


def _texts(texts):
    return _str_list("texts", texts, "str (one per text)", "a str")


class CharNGramNaiveBayes:
    """Multinomial naive Bayes on the character n-grams of a text (n = 1..``n``), with
    additive smoothing ``alpha``: a classic bag-of-n-grams text classifier, blind to
    order beyond ``n`` characters.  ``fit(texts, labels)``, ``predict(texts)``."""

    def __init__(self, n: int = 2, alpha: float = 0.1):
        self.n = _positive_int("n", n)
        self.alpha = _smoothing(alpha)

    def _grams(self, text):
        return [text[i:i + k] for k in range(1, self.n + 1)
                for i in range(len(text) - k + 1)]

    def fit(self, texts, labels) -> "CharNGramNaiveBayes":
        texts = _texts(texts)
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(texts):
            # zip() would drop the extra texts or labels, yet the priors count them all
            raise ValueError(f"labels must hold one label per text: {len(texts)} texts, "
                             f"got labels of shape {labels.shape}")
        if not texts:
            raise ValueError("texts must hold at least one text to fit")
        self.classes_ = np.unique(labels)
        vocab: Dict[str, int] = {}
        counts = []
        for c in self.classes_:
            row: Dict[str, int] = {}
            for t, lab in zip(texts, labels):
                if lab == c:
                    for g in self._grams(t):
                        row[g] = row.get(g, 0) + 1
                        vocab.setdefault(g, len(vocab))
            counts.append(row)
        table = np.zeros((len(self.classes_), len(vocab)))
        for i, row in enumerate(counts):
            for g, k in row.items():
                table[i, vocab[g]] = k
        table += self.alpha
        self.vocab_ = vocab
        self.log_prob_ = np.log(table / table.sum(axis=1, keepdims=True))
        self.log_prior_ = np.log(np.array([np.mean(labels == c) for c in self.classes_]))
        return self

    def predict(self, texts) -> np.ndarray:
        if not hasattr(self, "log_prior_"):
            from .models.base import not_fitted  # the models' error

            raise not_fitted(self)
        texts = _texts(texts)
        scores = np.tile(self.log_prior_, (len(texts), 1))
        for j, t in enumerate(texts):
            idx = [self.vocab_[g] for g in self._grams(t) if g in self.vocab_]
            if idx:
                scores[j] += self.log_prob_[:, idx].sum(axis=1)
        return self.classes_[np.argmax(scores, axis=1)]


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
    alpha = _smoothing(alpha)
    vocab = {c: i for i, c in enumerate(sorted(set(train)))}
    V = len(vocab) + 1

    def encode(text):
        return np.fromiter((vocab.get(c, V - 1) for c in text), np.int64, len(text))

    a, b = encode(train), encode(test)
    counts = np.zeros((V, V))
    np.add.at(counts, (a[:-1], a[1:]), 1.0)
    prob = (counts + alpha) / (counts.sum(axis=1, keepdims=True) + alpha * V)
    return float(-np.mean(np.log2(prob[b[:-1], b[1:]])))
