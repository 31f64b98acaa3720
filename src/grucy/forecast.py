"""The smallest trainable model: one-step-ahead forecasting of a univariate series.

A single GRU layer reads a window of the last ``lookback`` (scaled) values; a linear
readout of its final hidden state predicts the next value.  Trained with MSE and Adam on
every sliding window of the training series.  Deliberately small: it shows the layers,
``Linear``, ``mse_loss`` and ``Adam`` working together end to end.
"""

from __future__ import annotations

import numpy as np

from ._base import _positive_int
from .layer import GRU
from .nn import Linear, mse_loss
from .optim import Adam, clip_grad_norm

__all__ = ["SequenceForecaster", "sliding_windows"]


def sliding_windows(series, lookback):
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


class SequenceForecaster:
    """GRU(1 -> hidden_size) + Linear(hidden_size -> 1) on windows of ``lookback`` values.

    Values are standardised with the mean and standard deviation of the series given to
    :meth:`fit`; predictions are mapped back to the original units.  float32 (the
    layer's fast path) trains the sunspot demo in about 60% of the float64 time with the
    same held-out RMSE to three digits, so it is the default.
    """

    def __init__(self, lookback=12, hidden_size=32, *, dtype=np.float32, seed=None):
        self.lookback = _positive_int("lookback", lookback)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.seed = seed
        rng = np.random.default_rng(seed)
        gru_seed, head_seed, self._shuffle_seed = rng.integers(2**63, size=3)
        self.gru = GRU(1, self.hidden_size, dtype=dtype, seed=gru_seed)
        self.head = Linear(self.hidden_size, 1, dtype=dtype, seed=head_seed)
        self.dtype = self.gru.dtype
        self.loss_history_ = []
        self._center = self._scale = None

    # -- scaling ----------------------------------------------------------------------
    def _transform(self, values):
        return (np.asarray(values, dtype=np.float64) - self._center) / self._scale

    def _inverse(self, scaled):
        return np.asarray(scaled, dtype=np.float64) * self._scale + self._center

    # -- model ------------------------------------------------------------------------
    def parameters(self):
        return self.gru.parameters() + self.head.parameters()

    def _grads(self):
        return list(self.gru.grads.values()) + list(self.head.grads.values())

    def zero_grad(self):
        self.gru.zero_grad()
        self.head.zero_grad()

    def _forward(self, X, training):
        """Scaled windows (B, L) -> scaled predictions (B,)."""
        x = np.ascontiguousarray(X.T[:, :, None], dtype=self.dtype)  # (L, B, 1)
        _, h_n = self.gru.forward(x, training=training)
        return self.head.forward(h_n[0], training=training)[:, 0]

    def _backward(self, dpred):
        dh = self.head.backward(dpred[:, None])
        self.gru.backward(np.zeros((self.lookback, dh.shape[0], self.hidden_size),
                                   self.dtype), dh[None])

    def fit(self, series, epochs=80, *, batch_size=32, lr=3e-3, max_grad_norm=1.0,
            verbose=False):
        """Train on every window of ``series`` (1-D, no NaN) for ``epochs`` passes.

        Minibatches are shuffled each epoch from the model's seed; ``loss_history_`` gets
        the mean training MSE (in scaled units) of each epoch.  Calling ``fit`` again
        continues from the current weights.  Returns ``self``.
        """
        series = np.asarray(series, dtype=np.float64)
        if series.ndim != 1 or not np.all(np.isfinite(series)):
            raise ValueError("series must be a 1-D array of finite values")
        epochs = _positive_int("epochs", epochs)
        batch_size = _positive_int("batch_size", batch_size)
        self._center, self._scale = float(series.mean()), float(series.std()) or 1.0
        X, y = sliding_windows(self._transform(series), self.lookback)
        n = len(y)
        opt = Adam(self.parameters(), self._grads(), lr=lr)
        rng = np.random.default_rng(self._shuffle_seed)
        for epoch in range(epochs):
            order = rng.permutation(n)
            total = 0.0
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                pred = self._forward(X[idx], training=True)
                loss, dpred = mse_loss(pred, y[idx].astype(self.dtype))
                self.zero_grad()
                self._backward(dpred)
                if max_grad_norm is not None:
                    clip_grad_norm(opt.grads, max_grad_norm)
                opt.step()
                total += loss * len(idx)
            self.loss_history_.append(total / n)
            if verbose and (epoch == 0 or (epoch + 1) % max(1, epochs // 10) == 0):
                print(f"  epoch {epoch + 1:4d}/{epochs}  train mse (scaled) {total / n:.5f}"
                      f"  (rmse {np.sqrt(total / n) * self._scale:.2f} in data units)")
        return self

    def predict_next(self, windows):
        """Next value after each window: (N, lookback) -> (N,), or (lookback,) -> scalar."""
        if self._center is None:
            raise RuntimeError("call fit() before predict_next()")
        windows = np.asarray(windows, dtype=np.float64)
        single = windows.ndim == 1
        X = windows[None] if single else windows
        if X.ndim != 2 or X.shape[1] != self.lookback:
            raise ValueError(f"windows must have shape (N, lookback={self.lookback}) or "
                             f"(lookback,), got {windows.shape}")
        pred = self._inverse(self._forward(self._transform(X), training=False))
        return float(pred[0]) if single else pred
