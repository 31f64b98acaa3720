"""Forecasting: :class:`Forecaster`, the next values of a univariate or multivariate
series from its last ``lookback`` values."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, Callable, ClassVar, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from .._limits import check_memory
from .._validation import _positive_int, check_finite, check_result
from ..io import register
from ..losses import LOSSES
from ..training import ArrayTask
from .base import (GRUModel, _check_fraction, _check_output, _fitted_array,
                   _fitted_check, _fitted_int, _mean_output_gradient, _standardization,
                   _validation_split)
from .nets import ReadoutNet

__all__ = ["Forecaster"]


@register(kind="grucy.Forecaster")
@dataclass(eq=False, repr=False)
class Forecaster(GRUModel):
    """GRU forecaster of the next values of a univariate or multivariate series.

    A GRU reads windows of the last ``lookback`` values (every series standardised with
    the training series' mean and standard deviation); a linear readout of its final
    state predicts the next ``horizon`` values.  :meth:`predict` extends a history by any
    number of steps, feeding predictions back in (recursive multi-step forecasting).

    Parameters
    ----------
    lookback : int, default 12
        Steps of history the network reads.
    horizon : int, default 1
        Steps predicted at once (trained jointly); longer forecasts are recursive.
    hidden_size, num_layers : int, default 32, 1
    dropout : float, default 0
        Between GRU layers and before the readout.
    loss : {"mse", "mae", "huber"}, default "mse"
    epochs, batch_size, lr : int, int, float, default 80, 32, 3e-3
    optimizer : {"adam", "adamw", "sgd"}, default "adam"
    weight_decay : float, default 0
    schedule : None, "step", "cosine" or "plateau"
    max_grad_norm : float or None, default 1.0
    validation_fraction : float in [0, 1), default 0
        The latest windows held out for validation (chronological split).
    patience : int or None
        Early stopping patience (restores the best weights).
    dtype : {"float32", "float64"}, default "float32"
    random_state : int, Generator or None
    verbose : int, default 0
        1: progress bar with per-epoch metrics.

    Attributes
    ----------
    n_series_ : int
        Columns of the training series (1 for a 1-D series).
    mean_, scale_ : ndarray (n_series_,)
        The standardisation.
    history_ : dict of lists
        Per-epoch ``loss`` (scaled units), ``lr`` and, with validation, ``val_loss`` and
        ``val_rmse`` (data units).

    Examples
    --------
    >>> import grucy
    >>> from grucy.datasets import load_sunspots
    >>> years, spots = load_sunspots()
    >>> model = grucy.Forecaster(lookback=12, random_state=0).fit(spots[years <= 1978])
    >>> next_five = model.predict(spots[years <= 1978], horizon=5)
    """

    lookback: int = 12
    horizon: int = 1
    _: KW_ONLY
    loss: str = "mse"
    epochs: int = 80
    lr: float = 3e-3

    input_kind: ClassVar[str] = "series"
    _fitted_private: ClassVar[Tuple[str, ...]] = ("_univariate",)
    _net_class: ClassVar[Any] = ReadoutNet

    # -- data -------------------------------------------------------------------------
    @staticmethod
    def _as_series(name, series):
        s = np.asarray(series)
        if s.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {s.dtype}")
        s = s.astype(np.float64)
        if s.ndim not in (1, 2):
            raise ValueError(f"{name} must be 1-D (n,) or 2-D (n, k), got shape {s.shape}")
        if s.size == 0:
            raise ValueError(f"{name} is empty (shape {s.shape}); it needs values, oldest "
                             f"first, in at least one column")
        check_finite(name, s, hint="fill or drop missing values first")
        return s

    def _windows(self, scaled):
        """Inputs (N, lookback, k) and targets (N, horizon * k) of every window."""
        L, h = self.lookback, self.horizon
        N = len(scaled) - L - h + 1
        if N < 1:
            raise ValueError(f"series needs at least lookback + horizon = {L + h} values, "
                             f"got {len(scaled)}")
        idx = np.arange(N)[:, None]
        X = scaled[idx + np.arange(L)]
        Y = scaled[idx + L + np.arange(h)].reshape(N, -1)
        return X, Y

    def fit(self, series: ArrayLike, *, checkpoint=None, checkpoint_every: int = 1,
            resume=None, distributed: Any = "auto") -> "Forecaster":
        """Train on every window of ``series``; returns self.

        Parameters
        ----------
        series : array_like, shape (n,) or (n, k)
            Finite values, oldest first.
        checkpoint, checkpoint_every, resume, distributed
            See :class:`grucy.training.Trainer`.
        """
        self.lookback_ = _positive_int("lookback", self.lookback)
        self.horizon_ = _positive_int("horizon", self.horizon)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        frac = _check_fraction("validation_fraction", self.validation_fraction)
        s = self._as_series("series", series)
        self._univariate = s.ndim == 1
        s2 = s.reshape(len(s), -1)
        k = s2.shape[1]
        mean, scale, scaled = _standardization("series", s2, 0)
        dtype = self._dtype()
        X, Y = self._windows(scaled)
        seed = self._seed_for_fit(self.random_state, resume, distributed)
        rng = np.random.default_rng(seed)
        train_idx, val_idx = _validation_split(len(X), frac, rng, chronological=True)
        net = ReadoutNet(k, _positive_int("hidden_size", self.hidden_size), self.horizon_ * k,
                         num_layers=_positive_int("num_layers", self.num_layers),
                         dropout=self.dropout, dtype=dtype,
                         seed=int(rng.integers(2**63)))
        unit_scale = np.tile(scale, self.horizon_)

        def rmse(out, y):
            return float(np.sum(np.square((out - y) * unit_scale))), float(y.size)

        task = ArrayTask(net, X.astype(dtype), Y.astype(dtype), LOSSES[self.loss],
                         train_idx, val_idx, metrics={"rmse": rmse})
        self.n_series_, self.mean_, self.scale_ = k, mean, scale
        self.net_ = net
        self._run(task, seed, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                  resume=resume, distributed=distributed)
        return self

    def _check_fitted_state(self):
        k, h = _fitted_int(self, "n_series_"), _fitted_int(self, "horizon_")
        _fitted_int(self, "lookback_")
        _fitted_array(self, "mean_", (k,))
        _fitted_check(np.all(_fitted_array(self, "scale_", (k,)) > 0),
                      "fitted scale_ must be positive")
        _fitted_check(self._univariate in (True, False) and (k == 1 or not self._univariate),
                      f"fitted _univariate is {self._univariate!r} for {k} series")
        net = self.net_.config
        _fitted_check(net["input_size"] == k and net["output_size"] == h * k,
                      f"the network reads {net['input_size']} and predicts "
                      f"{net['output_size']} values, not {k} and horizon_ * {k}")

    def _histories(self, history):
        """History as (N, m, k) scaled, and whether the input was a single series."""
        h = np.asarray(history)
        if h.dtype.kind not in "biuf":
            raise TypeError(f"history must hold real numbers, got dtype {h.dtype}")
        h = given = h.astype(np.float64)
        if h.size == 0:
            raise ValueError(f"history is empty (shape {h.shape}); it needs at least "
                             f"lookback={self.lookback_} steps of at least one series")
        k = self.n_series_
        if self._univariate:
            single = h.ndim == 1
            if h.ndim not in (1, 2):
                raise ValueError(f"history must be (m,) or (N, m) for a model fitted on a "
                                 f"1-D series, got shape {h.shape}")
            h = h.reshape((1 if single else h.shape[0]), -1, 1)
        else:
            single = h.ndim == 2
            if h.ndim not in (2, 3) or h.shape[-1] != k:
                raise ValueError(f"history must be (m, {k}) or (N, m, {k}) for a model "
                                 f"fitted on {k} series, got shape {h.shape}")
            h = h.reshape((1 if single else h.shape[0]), h.shape[-2], k)
        if h.shape[1] < self.lookback_:
            raise ValueError(f"history needs at least lookback={self.lookback_} steps, got "
                             f"{h.shape[1]}")
        check_finite("history", given, hint="fill or drop missing values first")
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = (h - self.mean_) / self.scale_
            check_result("history standardised (with mean_ and scale_)",
                         scaled.astype(self.net_.dtype))
        return scaled, single

    def predict(self, history: ArrayLike, horizon: int = 1) -> np.ndarray:
        """The next ``horizon`` values after ``history`` (recursive beyond ``self.horizon``).

        Parameters
        ----------
        history : array_like
            For a model fitted on a 1-D series: (m,) one history, or (N, m) N histories;
            for k series: (m, k) or (N, m, k).  Only the last ``lookback`` steps are read;
            m >= lookback.
        horizon : int, default 1

        Returns
        -------
        ndarray
            (horizon,) / (N, horizon) for a 1-D series, (horizon, k) / (N, horizon, k)
            otherwise; in data units.
        """
        self._check_is_fitted()
        horizon = _positive_int("horizon", horizon)
        scaled, single = self._histories(history)
        k, L, h = self.n_series_, self.lookback_, self.horizon_
        N, blocks = len(scaled), -(-horizon // h)
        # The forecast is one array, made before the first step: its size is checked
        # against the memory limit before anything runs (horizon=10**9 is refused at
        # once, not after minutes of steps).
        check_memory(lambda: f"Forecaster.predict of {N} histories with horizon="
                             f"{horizon} ({N} x {blocks * h} x {k} float64 values)",
                     N * (blocks * h + 2 * L) * k * 8)
        pred = np.empty((N, blocks * h, k))
        window = scaled[:, -L:]
        for b in range(blocks):
            out = self.net_.forward(window.astype(self.net_.dtype), training=False)
            block = pred[:, b * h:(b + 1) * h]
            block[...] = out.reshape(N, h, k)
            window = np.concatenate([window[:, h:], block], axis=1)[:, -L:]
        pred = pred[:, :horizon]
        with np.errstate(over="ignore"):
            pred *= self.scale_
            pred += self.mean_
        _check_output("Forecaster.predict's forecast", pred, "scale_ plus mean_")
        if self._univariate:
            pred = pred[..., 0]
        return pred[0] if single else pred

    def network_inputs(self, x: ArrayLike,
                       y: Optional[ArrayLike] = None) -> Tuple[np.ndarray, Callable]:
        """See :meth:`GRUModel.network_inputs`.

        ``x``: histories as :meth:`predict` takes them (all their steps are read);
        ``y``: the next ``horizon`` values after each history, in data units; the loss is
        the model's training loss (on standardised values).
        """
        self._check_is_fitted()
        X, _ = self._histories(x)
        X = np.ascontiguousarray(X, dtype=np.float64)
        if y is None:
            return X, _mean_output_gradient
        B, k, h, loss = len(X), self.n_series_, self.horizon_, LOSSES[self.loss]

        def output_gradient(out):
            target = (np.asarray(y).astype(np.float64).reshape(B, h, k)
                      - self.mean_) / self.scale_
            return loss(out, target.reshape(B, h * k))[1]
        return X, output_gradient
