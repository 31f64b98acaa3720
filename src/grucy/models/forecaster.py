"""Forecasting: :class:`Forecaster`, the next values of one series or of many (a global
model), with covariates known in advance, quantiles and prediction intervals, pandas in
and out, and rolling-origin backtests (:mod:`~grucy.models._backtest`)."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, Callable, ClassVar, List, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from .._limits import check_memory
from .._params import run_waiting
from .._validation import (_as_real_array, _flag, _integer, _positive_int, _real,
                           check_finite, check_result)
from ..io import PathLike, register
from ..losses import LOSSES, check_quantiles, monotone_quantiles, quantile_loss
from ..nn import matmul
from ..training import SequenceTask
from ._backtest import interpolate_level, interval_levels, run_backtest
from ._series import (Series, as_pandas, by_name, check_frequency, check_unique_labels,
                      freq_label, is_pandas, json_label, read_covariates, read_series,
                      with_fitted_frequency)
from .base import (GRUModel, _check_fraction, _check_output, _fitted_array, _fitted_check,
                   _fitted_int, _mean_output_gradient, _standardization)
from .nets import ReadoutNet, SequenceNet, net_from_config

__all__ = ["Forecaster"]


def _is_series_list(y):
    """A list of series (arrays, pandas objects, lists) rather than one list of numbers."""
    return (isinstance(y, (list, tuple)) and len(y) > 0
            and all(not np.isscalar(v) for v in y))


@register(kind="grucy.Forecaster")
@dataclass(eq=False, repr=False)
class Forecaster(GRUModel):
    """GRU forecaster of one series or of many, univariate or multivariate, with
    covariates known in advance and quantile forecasts.

    A GRU reads windows of the last ``lookback`` values (each series standardised with
    its own mean and standard deviation); a linear readout of its final state predicts
    the next ``horizon`` values.  With covariates ``X`` (known in advance: calendar,
    planned inputs) the GRU reads the window with its covariates, then the ``horizon``
    future steps' covariates, and a readout at each future step predicts its value (a
    step's forecast never depends on later covariates).  :meth:`predict` extends a
    history by any number of steps, feeding the (median) forecasts back in (recursive
    multi-step forecasting).

    Parameters
    ----------
    lookback : int, default 12
        Steps of history the network reads.
    horizon : int, default 1
        Steps predicted at once (trained jointly); longer forecasts are recursive.
    quantiles : sequence of float or None, default None
        Levels in (0, 1), e.g. ``(0.1, 0.5, 0.9)``: train on the pinball loss for these
        quantiles (0.5 is always added: the point forecast is the median) instead of
        ``loss``; the quantiles never cross.  Intervals within ``horizon`` are direct
        forecasts; beyond it they are conditional on the median path (too narrow), so
        set ``horizon`` to the forecast length you need intervals for.
    temporal_norm : bool, default False
        Subtract each window's mean (in the series' standardised units) from the window
        and its targets: the network sees shapes, not levels, and follows a trend or a
        level beyond the range it was trained on (NeuralForecast's temporal
        normalisation).
    ar_order : int, default 0
        0 < ar_order <= lookback adds a linear forecast to the network's: the next
        ``horizon`` values as a linear function of the window's last ``ar_order`` values
        (after the standardisation and ``temporal_norm``), one coefficient per (lag,
        step ahead, series pair), fitted by least squares on the training windows before
        the network trains; the network then learns what the linear part leaves (a
        direct autoregression with a GRU on its residuals, as LSTNet's linear
        "highway").  For series with strong linear structure (trend, seasonality) the
        GRU starts from the linear forecast instead of learning it.
    hidden_size, num_layers : int, default 32, 1
    dropout : float, default 0
        Between GRU layers and before the readout.
    loss : {"mse", "mae", "huber"}, default "mse"
        The training loss without ``quantiles``.
    epochs, batch_size, lr : int, int, float, default 80, 32, 3e-3
    optimizer : {"adam", "adamw", "sgd"}, default "adam"
    weight_decay : float, default 0
    schedule : None, "step", "cosine" or "plateau"
    max_grad_norm : float or None, default 1.0
    validation_fraction : float in [0, 1), default 0
        The latest windows of each series held out for validation (chronological); the
        ``horizon - 1`` training windows before them, whose targets would overlap the
        first validation window's, are left out of both.
    patience : int or None
        Early stopping patience (restores the best weights).
    dtype : {"float32", "float64"}, default "float32"
    precision : {"fp32", "bf16"}, default "fp32"
        The GRU's products with its weights (``grucy.GRU``'s ``precision``; "bf16"
        needs float32).  ``grucy.quantize(model, "int8")`` gives an int8 copy for
        inference.
    random_state : int, Generator or None
    verbose : int, default 0
        1: progress bar with per-epoch metrics.

    Attributes
    ----------
    n_series_ : int
        Columns of the training series (1 for a 1-D series).
    n_fitted_series_ : int or None
        The number of series of a list fitted on (a global model); None for one series.
    mean_, scale_ : ndarray ``(n_series_,)``, or ``(n_fitted_series_, n_series_)``
        The standardisation of each series.
    n_covariates_ : int
        Covariate columns (0 without ``X``).
    ar_coef_, ar_intercept_ : ndarray ``(ar_order * n_series_, horizon * n_series_)``,
        ``(horizon * n_series_,)``
        The linear forecast (scaled units; rows lag-major, oldest lag first); empty and
        zero without ``ar_order``.
    quantiles_ : ndarray or None
        The quantile levels predicted (with 0.5).
    freq_ : str or None
        The frequency of a pandas series' index (of the first, for many series): the
        period alias of a PeriodIndex, the offset of a DatetimeIndex, the integer step.
        ``predict`` steps a pandas history and its forecast by it.
    freqs_ : list or None
        With many series, each one's ``freq_``.
    history_ : dict of lists
        Per-epoch ``loss`` (scaled units), ``lr`` and, with validation, ``val_loss`` and
        ``val_rmse`` (data units, of the point forecast).

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
    quantiles: Any = None
    temporal_norm: bool = False
    ar_order: int = 0
    loss: str = "mse"
    epochs: int = 80
    lr: float = 3e-3

    input_kind: ClassVar[str] = "series"
    _fitted_private: ClassVar[Tuple[str, ...]] = ("_univariate",)
    _net_class: ClassVar[Any] = staticmethod(net_from_config)

    # -- fitting --------------------------------------------------------------------------
    def fit(self, y: Any, X: Any = None, *, sample_weight: Any = None,
            checkpoint: Optional[PathLike] = None, checkpoint_every: int = 1,
            resume: Optional[PathLike] = None, distributed: Any = "auto") -> "Forecaster":
        """Train on every window of ``y``; returns self.

        Parameters
        ----------
        y : array_like (n,) or (n, k), pandas Series or DataFrame, or a list of them
            Finite values, oldest first.  A list: a global model over many series (each
            standardised on its own; all with the same k).
        X : array_like (n, c), pandas, or a list of them, optional
            Covariates known in advance, one row per step of ``y`` (pandas: aligned by
            the index).  The model then needs them at predict time too.
        sample_weight : array_like (n,) or a list of them, optional
            Weight of each step of ``y`` as a target (0 leaves it out of the loss).
        checkpoint, checkpoint_every, resume, distributed
            See :class:`grucy.training.Trainer`.
        """
        L = self.lookback_ = _positive_int("lookback", self.lookback)
        h = self.horizon_ = _positive_int("horizon", self.horizon)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        frac = _check_fraction("validation_fraction", self.validation_fraction)
        temporal = _temporal_norm(self.temporal_norm)
        ar = _ar_order(self.ar_order, L)
        self.quantiles_ = _with_median(self.quantiles)
        many = _is_series_list(y)
        series, freqs = self._read_all("y", y, many)
        k = series[0].values.shape[1]
        covs = self._fit_covariates(X, series, many)
        weights = self._fit_weights(sample_weight, series, many)
        self._univariate = series[0].univariate
        self.n_series_, self.n_fitted_series_ = k, len(series) if many else None
        self.freq_ = freqs[0]
        # (each series' own: predict steps a history by it, not by what pandas infers
        # from the history's last few labels)
        self.freqs_ = freqs if many else None
        self.columns_ = _json_labels(series[0].columns)
        # each series standardised on its own (overflow-safe: see _standardization)
        stats = [_standardization(f"y[{i}]" if many else "y", s.values, 0)
                 for i, s in enumerate(series)]
        means, scales = np.array([m for m, _, _ in stats]), np.array([sd for _, sd, _ in stats])
        self.mean_: np.ndarray = means if many else means[0]
        self.scale_: np.ndarray = scales if many else scales[0]
        parts = []
        for i, (_, _, scaled) in enumerate(stats):
            name = f"y[{i}]" if many else "y"
            c = None if covs is None else covs[i]
            parts.append(self._windows(name, scaled, c, None if weights is None
                                       else weights[i], temporal))
        # (the windows are lookback times the series: no copy more than needed, and
        # none kept while training; fit's peak was 5x the float32 windows)
        Xw = _joined([p[0] for p in parts])
        Yw = _joined([p[1] for p in parts])
        Ww = None if weights is None else _joined([p[2] for p in parts])
        unit = _joined([np.broadcast_to(np.tile(scales[i], h), p[1].shape)
                        for i, p in enumerate(parts)])
        train_idx, val_idx = _chronological_split([len(p[1]) for p in parts], frac, h - 1)
        del parts
        self.ar_coef_, self.ar_intercept_ = _fit_linear(
            _ar_features(self._window(Xw), k, ar), Yw, Ww, train_idx)
        Yw = Yw - self._linear(Xw)  # the network learns the residual
        dtype = self._dtype()
        seed = self._seed_for_fit(self.random_state, resume, distributed)
        rng = np.random.default_rng(seed)
        Q = 1 if self.quantiles_ is None else len(self.quantiles_)
        hidden = _positive_int("hidden_size", self.hidden_size)
        layers = _positive_int("num_layers", self.num_layers)
        if covs is None:
            net = ReadoutNet(k, hidden, h * k * Q, num_layers=layers, dropout=self.dropout,
                             dtype=dtype, seed=int(rng.integers(2**63)),
                             precision=self.precision)
        else:
            net = SequenceNet(Xw.shape[2], hidden, k * Q, num_layers=layers,
                              dropout=self.dropout, last_steps=h, dtype=dtype,
                              seed=int(rng.integers(2**63)), precision=self.precision)
        loss = self._loss()
        point = self._point

        # (in units of the largest scale, multiplied back after the root: squared in
        # data units, series near 1e160 overflowed and fit called it divergence)
        top = float(np.max(unit))

        def rmse(out, target, wt, indices):
            err = (point(out) - target) * (unit[indices] / top)
            return float(np.sum(wt * np.square(err))), float(wt.sum())
        rmse.unit = top  # type: ignore[attr-defined]

        X_net = Xw.astype(dtype)
        Xw = None
        task = SequenceTask(net, X_net, Yw.astype(dtype), loss, train_idx, val_idx,
                            metrics={"rmse": rmse}, weight=Ww)
        X_net = Yw = None
        self.net_ = net
        self._run(task, seed, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                  resume=resume, distributed=distributed)
        return self

    def _check_fitted_state(self):
        """What ``fit`` makes (see GRUModel._check_fitted_state): sizes, one
        standardisation per series fitted on, the quantile levels with their median,
        the covariates' standardisation and names, and the network those give (a
        unidirectional ReadoutNet of horizon_ * n_series_ * n_quantiles outputs, or
        with covariates a SequenceNet reading the series, a mask and the covariates with
        n_series_ * n_quantiles outputs at its last horizon_ steps)."""
        k, h = _fitted_int(self, "n_series_"), _fitted_int(self, "horizon_")
        _fitted_int(self, "lookback_")
        S = self.n_fitted_series_
        if S is not None:
            S = _fitted_int(self, "n_fitted_series_")
        shape = (k,) if S is None else (S, k)
        _fitted_array(self, "mean_", shape)
        _fitted_check(np.all(_fitted_array(self, "scale_", shape) > 0),
                      "fitted scale_ must be positive")
        _fitted_check(self._univariate in (True, False) and (k == 1 or not self._univariate),
                      f"fitted _univariate is {self._univariate!r} for {k} series")
        Q = 1
        if self.quantiles_ is not None:
            q = self.quantiles_
            _fitted_check(isinstance(q, np.ndarray) and q.ndim == 1 and q.dtype.kind == "f",
                          "fitted quantiles_ must be None or a 1-D float array")
            check_quantiles(q, "fitted quantiles_")
            _fitted_check(bool(np.any(np.isclose(q, 0.5))),
                          "fitted quantiles_ must hold 0.5 (the point forecast)")
            Q = len(q)
        c = _fitted_int(self, "n_covariates_", low=0)
        _fitted_array(self, "covariate_mean_", (c,))
        _fitted_check(np.all(_fitted_array(self, "covariate_scale_", (c,)) > 0),
                      "fitted covariate_scale_ must be positive")
        _check_labels("covariate_names_", self.covariate_names_, c)
        _check_labels("columns_", self.columns_, k)
        _fitted_check(self.freq_ is None or isinstance(self.freq_, str),
                      f"fitted freq_ must be a string or None, got {self.freq_!r}")
        freqs = getattr(self, "freqs_", None)
        _fitted_check(freqs is None or (isinstance(freqs, list)
                                        and len(freqs) == self.n_fitted_series_
                                        and all(f is None or isinstance(f, str)
                                                for f in freqs)),
                      "fitted freqs_ must be None or one frequency (or None) per series")
        _temporal_norm(self.temporal_norm)  # (predict reads the option)
        p = _ar_order(self.ar_order, self.lookback_)
        _fitted_check(np.all(np.isfinite(_fitted_array(self, "ar_coef_", (p * k, h * k))))
                      and np.all(np.isfinite(_fitted_array(self, "ar_intercept_", (h * k,)))),
                      "fitted ar_coef_ and ar_intercept_ must be finite")
        net = self.net_.config
        if c:
            want = dict(input_size=k + 1 + c, output_size=k * Q, last_steps=h,
                        bidirectional=False)
        else:
            want = dict(input_size=k, output_size=h * k * Q, bidirectional=False)
        got = {key: net.get(key) for key in want}
        _fitted_check(got == want and isinstance(self.net_, SequenceNet) == bool(c),
                      f"the network ({type(self.net_).__name__}, {got}) is not the one "
                      f"fit makes for {k} series, horizon_ {h}, {Q} quantile levels and "
                      f"{c} covariates ({want})")

    def _read_all(self, name, y, many) -> Tuple[List[Series], List[Optional[str]]]:
        """The series of ``y`` and each one's frequency (:func:`freq_label`; None for an
        array)."""
        if not many:
            s = read_series(name, y)
            return [s], [freq_label(name, s.index) if s.is_pandas else None]
        # the columns of every DataFrame after the first by the first one's names, as
        # predict takes them (by position, a reordered frame trained on a column as
        # another); each series evenly spaced, as one series is
        first = y[0]
        names = _json_labels(first.columns) if is_pandas(first) and first.ndim == 2 else None
        series = [read_series(f"{name}[{i}]", by_name(f"{name}[{i}]", s, names)
                              if i and names is not None and is_pandas(s) and s.ndim == 2
                              else s) for i, s in enumerate(y)]
        freqs = [freq_label(f"{name}[{i}]", s.index) if s.is_pandas else None
                 for i, s in enumerate(series)]
        shapes = {(s.values.shape[1], s.univariate) for s in series}
        if len(shapes) != 1:
            raise ValueError(f"every series of {name} must have the same columns (all 1-D, "
                             f"or all with the same k), got {sorted(shapes)}")
        if len({s.is_pandas for s in series}) != 1:
            raise ValueError(f"{name} mixes pandas objects and arrays; give one kind")
        return series, freqs

    def _fit_covariates(self, X, series, many):
        """Sets the covariates' fitted attributes; returns each series' covariates
        standardised (over all series together), or None without X."""
        self.covariate_names_ = None
        if X is None:
            self.n_covariates_ = 0
            self.covariate_mean_ = self.covariate_scale_ = np.zeros(0)
            return None
        if many != _is_series_list(X) or (many and len(X) != len(series)):
            what = f"a list of {len(series)} covariate tables" if many else "one table"
            raise ValueError(f"X must match y: {what}, one per series of y")
        Xs = X if many else [X]
        if is_pandas(Xs[0]) and Xs[0].ndim == 2:
            self.covariate_names_ = _json_labels(list(Xs[0].columns))
        # the first table's names: the others' columns are taken by name, as at predict
        covs = [read_covariates(f"X[{i}]" if many else "X", x, s,
                                columns=self.covariate_names_)
                for i, (x, s) in enumerate(zip(Xs, series))]
        if len({c.shape[1] for c in covs}) != 1:
            raise ValueError("every covariate table of X must have the same columns")
        allc = np.concatenate(covs)
        self.n_covariates_ = allc.shape[1]
        self.covariate_mean_, self.covariate_scale_, scaled = _standardization(
            "X", allc, 0)
        return np.split(scaled, np.cumsum([len(c) for c in covs])[:-1])

    @staticmethod
    def _fit_weights(sample_weight, series, many):
        if sample_weight is None:
            return None
        ws = sample_weight if many else [sample_weight]
        if many and (not _is_series_list(sample_weight) or len(ws) != len(series)):
            raise ValueError(f"sample_weight must be a list of {len(series)} arrays, one "
                             f"weight per step of each series of y")
        out = []
        for i, (w, s) in enumerate(zip(ws, series)):
            name = f"sample_weight[{i}]" if many else "sample_weight"
            if is_pandas(w) and s.is_pandas:
                check_unique_labels(name, w.index)
                missing = s.index.difference(w.index)
                if len(missing):  # (reindexed, they read as NaN weights)
                    raise ValueError(f"{name} has no weight for {len(missing)} of y's "
                                     f"steps, first {missing[0]}; a pandas weight is "
                                     f"aligned by y's index labels")
                w = w.reindex(s.index)
            arr = _as_real_array(name, w).astype(np.float64)
            if arr.shape != (len(s.values),):
                raise ValueError(f"{name} must hold one weight per step of y, shape "
                                 f"({len(s.values)},), got {arr.shape}")
            check_finite(name, arr)
            if np.any(arr < 0):
                raise ValueError(f"{name} must be >= 0")
            out.append(arr)
        with np.errstate(over="ignore"):
            total = sum(w.sum() for w in out)
        if not total > 0:
            raise ValueError("sample_weight is zero everywhere: nothing to fit")
        if not np.isfinite(total):  # weights near 1e308: only their ratios matter
            top = max(w.max() for w in out)
            out = [w / top for w in out]
        return out

    def _windows(self, name, scaled, cov, weight, temporal):
        """Inputs, targets (N, horizon * k) and target weights of every window."""
        L, h = self.lookback_, self.horizon_
        n, k = scaled.shape
        N = n - L - h + 1
        if N < 1:
            raise ValueError(f"{name} needs at least lookback + horizon = {L + h} values, "
                             f"got {n}")
        # (from strided views of the series: an index array of N x L int64 doubled the
        # windows' memory; the values, and the bits of every mean, are those of copies)
        steps = np.lib.stride_tricks.sliding_window_view(scaled, L + h, axis=0)[:N]
        hist = np.ascontiguousarray(steps[:, :, :L].transpose(0, 2, 1))
        fut = steps[:, :, L:].transpose(0, 2, 1)
        if temporal:
            base = _window_level(hist, L + h)
            hist -= base[:, :L]
            fut = fut - base[:, L:]
        Y = fut.reshape(N, h * k)
        if cov is None:
            X = hist
        else:
            X = np.zeros((N, L + h, k + 1 + cov.shape[1]))
            X[:, :L, :k] = hist
            X[:, :L, k] = 1.0
            X[:, :, k + 1:] = np.lib.stride_tricks.sliding_window_view(
                cov, L + h, axis=0)[:N].transpose(0, 2, 1)
        W = None if weight is None else np.repeat(
            np.lib.stride_tricks.sliding_window_view(weight, h)[L:L + N], k, axis=1)
        return X, Y, W

    def _loss(self):
        """The training loss on the network's output (point or quantile)."""
        if self.quantiles_ is None:
            base = LOSSES[self.loss]

            def loss(out, target, weight=None, normalizer=None):
                value, grad = base(out.reshape(target.shape), target, weight,
                                   normalizer=normalizer)
                return value, grad.reshape(out.shape)
            return loss
        q, Q = self.quantiles_, len(self.quantiles_)

        def loss(out, target, weight=None, normalizer=None):
            value, grad = quantile_loss(out.reshape(target.shape + (Q,)), target, q, weight,
                                        normalizer=normalizer)
            return value, grad.reshape(out.shape)
        return loss

    def _point(self, out):
        """The point forecast (the median with quantiles), (B, horizon * k)."""
        B = len(out)
        if self.quantiles_ is None:
            return out.reshape(B, -1)
        q = monotone_quantiles(out.reshape(B, -1, len(self.quantiles_)))
        return q[..., self._median_index()]

    def _median_index(self):
        # (exactly 0.5, which _with_median adds; files saved before kept a level near it)
        exact = np.flatnonzero(self.quantiles_ == 0.5)
        return int(exact[0] if exact.size else np.argmin(np.abs(self.quantiles_ - 0.5)))

    # -- forecasting ------------------------------------------------------------------------
    def predict(self, y: Any, horizon: int = 1, X: Any = None) -> Any:
        """The next ``horizon`` values after ``y`` (the median with ``quantiles``;
        recursive beyond ``self.horizon``).

        Parameters
        ----------
        y : array_like, pandas or list
            The history.  For a model fitted on a 1-D series: (m,) one history, or (N, m)
            N histories; for k series: (m, k) or (N, m, k); a pandas Series / DataFrame;
            a list of histories (for a global model: one per series fitted on, in the
            order of fit).  Only the last ``lookback`` steps are read; m >= lookback.
        horizon : int, default 1
        X : covariates, optional
            For a model fitted with covariates: rows for the history and the ``horizon``
            steps ahead (m + horizon rows; pandas: aligned by the index, extra rows
            ignored); a list for a list of histories, (N, m + horizon, c) for N.

        Returns
        -------
        ndarray, pandas or list
            (horizon,) / (N, horizon) for a 1-D series, (horizon, k) / (N, horizon, k)
            otherwise, in data units; a pandas Series / DataFrame indexed by the next
            ``horizon`` periods for pandas input (columns kept); a list for a list.
        """
        q, items, form = self._forecast(y, horizon, X)
        point = [a[..., self._median_index() if self.quantiles_ is not None else 0]
                 for a in q]
        return self._shape(point, items, form, horizon)

    def predict_quantiles(self, y: Any, horizon: int = 1, X: Any = None) -> Any:
        """The ``quantiles_`` of the next ``horizon`` values: (horizon, n_quantiles), or
        (horizon, k, n_quantiles) for k series (a leading N for N histories); pandas:
        a DataFrame with the levels as columns (under each series' column for several).
        Arguments as in :meth:`predict`; the quantiles never cross."""
        self._needs_quantiles("predict_quantiles")
        q, items, form = self._forecast(y, horizon, X)
        return self._shape(q, items, form, horizon, levels=self.quantiles_)

    def predict_interval(self, y: Any, horizon: int = 1, X: Any = None,
                         coverage: float = 0.8) -> Tuple[Any, Any]:
        """``(lower, upper)``: the central prediction interval of probability
        ``coverage``, the ``(1 - coverage) / 2`` and ``(1 + coverage) / 2`` quantiles
        (interpolated linearly between the fitted levels when not among them), each
        shaped as :meth:`predict`'s result."""
        self._needs_quantiles("predict_interval")
        c = _real("coverage", coverage)
        if not 0 < c < 1:
            raise ValueError(f"coverage must lie strictly between 0 and 1, got {c}")
        levels = self.quantiles_
        lo, hi = interval_levels(c, levels, "fit with quantiles that include them")
        q, items, form = self._forecast(y, horizon, X)
        lower = [interpolate_level(a, levels, lo) for a in q]
        upper = [interpolate_level(a, levels, hi) for a in q]
        return (self._shape(lower, items, form, horizon),
                self._shape(upper, items, form, horizon))

    def backtest(self, y: Any, X: Any = None, *, start: Any = 0.8, horizon: int = 1,
                 stride: int = 1, refit: bool = False,
                 coverage: Optional[float] = 0.8) -> Any:
        """Rolling-origin evaluation: forecasts of ``horizon`` steps from every origin
        ``start, start + stride, ...`` of ``y``, each from the history before it.

        Parameters
        ----------
        y : one series (array, pandas), or a list (one per series of a global model)
        X : covariates as for :meth:`fit` (rows for every step of ``y``), optional
        start : int, float or label, default 0.8
            The first forecast step: an index (>= lookback), a fraction of the length,
            or a label of a pandas index (a date, a string such as "2021-03" that names
            one step).  An int is always a position, also on an integer index: for the
            step labelled 150 there, give ``y.index.get_loc(150)``.
        horizon, stride : int, default 1
        refit : bool, default False
            Refit a copy of the model (same options) on the history before each origin
            (expanding window) instead of using this fitted model.
        coverage : float or None, default 0.8
            With ``quantiles``: the interval reported (``lower``, ``upper``, ``covered``).

        Returns
        -------
        dict (a list of them for a list)
            ``origins`` (positions of the first forecast step), ``forecast``,
            ``actual``, ``error`` (forecast - actual), each (n_origins, horizon[, k]);
            ``mae`` and ``rmse`` per origin; with quantiles ``quantiles`` (..., n_levels),
            ``lower``, ``upper`` and ``coverage`` (the share of actual values inside);
            for pandas ``y`` also ``frame``, a long DataFrame (origin, time, ...).
        """
        return run_backtest(self, y, X, start=start, horizon=horizon, stride=stride,
                            refit=refit, coverage=coverage)

    def _needs_quantiles(self, what):
        self._check_is_fitted()
        if self.quantiles_ is None:
            raise ValueError(f"{what} needs a model fitted with quantiles, e.g. "
                             f"Forecaster(quantiles=(0.1, 0.5, 0.9))")

    def _items(self, y, X, horizon):
        """[(Series, stats row, covariates (m + horizon, c) or None)], and the form."""
        many = _is_series_list(y)
        S = self.n_fitted_series_
        if S is not None and (not many or len(y) != S):
            raise ValueError(f"this model was fitted on a list of {S} series: give a list "
                             f"of {S} histories, one per series, in the order of fit (each "
                             f"is standardised as its series was)")
        if many:
            form, ys = "list", list(y)
            Xs = [None] * len(ys) if X is None else X
            if X is not None and (not _is_series_list(X) or len(X) != len(ys)):
                raise ValueError(f"X must be a list of {len(ys)} covariate tables, one "
                                 f"per history")
        else:
            arr = None if is_pandas(y) else np.asarray(y)
            batch_ndim = 2 if self._univariate else 3
            if arr is not None and arr.ndim not in (batch_ndim - 1, batch_ndim):
                k = self.n_series_
                what = ("(m,) or (N, m) for a model fitted on a 1-D series"
                        if self._univariate else
                        f"(m, {k}) or (N, m, {k}) for a model fitted on {k} series")
                raise ValueError(f"y must be {what}, got shape {arr.shape}")
            if arr is not None and arr.ndim == batch_ndim:
                if arr.size == 0:
                    raise ValueError(f"y is empty (shape {arr.shape}); it needs at least "
                                     f"lookback={self.lookback_} steps of at least one "
                                     f"series")
                form, ys = "batch", list(arr)
                Xs = [None] * len(ys) if X is None else list(_batch_covariates(X, len(ys)))
            else:
                form, ys, Xs = "single", [y], [X]
        items = []
        for i, (h, x) in enumerate(zip(ys, Xs)):
            name = f"y[{i}]" if form != "single" else "y"
            s = self._read_history(name, h)
            if s.is_pandas:  # (named here: the forecast's index needs it)
                s = with_fitted_frequency(s, self._fitted_freq(i if S else None))
                check_frequency(name, s.index)
            cov = None
            if self.n_covariates_:
                cov = read_covariates(f"X[{i}]" if form != "single" else "X", x, s,
                                      future=horizon, n_covariates=self.n_covariates_,
                                      columns=self.covariate_names_)
            elif x is not None:
                raise ValueError("X was given, but the model was fitted without covariates")
            items.append((s, i if S is not None else 0, cov))
        return items, form

    def _fitted_freq(self, i):
        """The frequency series ``i`` was fitted at (None: a single series)."""
        if i is None:
            return self.freq_
        freqs = getattr(self, "freqs_", None)  # (None in files saved before it)
        return None if freqs is None else freqs[i]

    def _read_history(self, name, h):
        if is_pandas(h) and h.ndim == 2:
            h = by_name(name, h, self.columns_)
        s = read_series(name, h)
        k = self.n_series_
        if self._univariate and s.values.shape[1] != 1:
            raise ValueError(f"{name} must be (m,) or (N, m) for a model fitted on a 1-D "
                             f"series, got shape {np.shape(h)}")
        if not self._univariate and (s.univariate or s.values.shape[1] != k):
            raise ValueError(f"{name} must be (m, {k}) or (N, m, {k}) for a model fitted on "
                             f"{k} series, got shape {np.shape(h)}")
        if len(s.values) < self.lookback_:
            raise ValueError(f"{name} needs at least lookback={self.lookback_} steps, got "
                             f"{len(s.values)}")
        return s

    def _forecast(self, y, horizon, X):
        """Quantiles (or point forecasts as one level) of the next ``horizon`` steps of
        every history: a list of (horizon, k, Q) arrays in data units."""
        self._check_is_fitted()
        horizon = _positive_int("horizon", horizon)
        # The forecast's size is checked against the memory limit before anything is
        # read or run (horizon=10**9 is refused at once, not after minutes of steps):
        # for one history first (before the future steps' dates or covariates are
        # built), then for all of them.
        self._check_forecast_memory(1, horizon)
        items, form = self._items(y, X, horizon)
        self._check_forecast_memory(len(items), horizon)
        L = self.lookback_
        rows = [row for _, row, _ in items]
        windows = np.stack([s.values[-L:] for s, _, _ in items])
        covs = None
        if self.n_covariates_:
            covs = np.stack([c[len(s.values) - L:] for s, _, c in items])
        q = self._unscaled(self._forecast_scaled(self._scaled_windows(windows, rows),
                                                 self._scaled_covariates(covs), horizon),
                           rows)
        return list(q), items, form

    def _check_forecast_memory(self, n, horizon):
        """SizeLimitError unless forecasting ``horizon`` steps of ``n`` histories fits in
        the memory limit: the forecasts (every level, in scaled and data units, and the
        point forecasts), the histories and covariates they read."""
        L, h, k = self.lookback_, self.horizon_, self.n_series_
        Q = 1 if self.quantiles_ is None else len(self.quantiles_)
        steps = -(-horizon // h) * h
        c = self.n_covariates_
        check_memory(lambda: f"Forecaster.predict of {n} histories with horizon="
                             f"{horizon} ({n} x {steps} x {k} x {Q} float64 values)",
                     8 * n * (steps * k * (2 * Q + 1) + 2 * L * k + (L + steps + h) * c))

    def _scaled_windows(self, windows, rows):
        """History windows (B, L, k) standardised as the series ``rows`` were fitted."""
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = ((windows - np.atleast_2d(self.mean_)[rows][:, None])
                      / np.atleast_2d(self.scale_)[rows][:, None])
            cast = scaled.astype(self.net_.dtype)   # (float32 overflow: refused below)
        check_result("the history standardised (with mean_ and scale_)", cast,
                     hint="rescale y")
        return scaled

    def _scaled_covariates(self, covs):
        if covs is None:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = (covs - self.covariate_mean_) / self.covariate_scale_
            cast = scaled.astype(self.net_.dtype)
        check_result("the covariates standardised (with covariate_mean_ and "
                     "covariate_scale_)", cast, hint="rescale X")
        return scaled

    def _unscaled(self, q, rows):
        """Forecasts (B, horizon, k, Q) in scaled units as data units of the series
        ``rows`` (checked: finite)."""
        means = np.atleast_2d(self.mean_)[rows]
        scales = np.atleast_2d(self.scale_)[rows]
        with np.errstate(over="ignore", invalid="ignore"):
            q = q * scales[:, None, :, None] + means[:, None, :, None]
        return _check_output("Forecaster's forecast", q, "scale_ plus mean_")

    def _forecast_scaled(self, windows, covs, horizon):
        """(B, horizon, k, Q) forecasts in scaled units from windows (B, L, k) and
        covariates (B, L + horizon, c) (scaled)."""
        L, h, k = self.lookback_, self.horizon_, self.n_series_
        Q = 1 if self.quantiles_ is None else len(self.quantiles_)
        med = 0 if self.quantiles_ is None else self._median_index()
        temporal = _temporal_norm(self.temporal_norm)
        B = len(windows)
        window = windows[:, -L:]
        if covs is not None:
            covs = np.concatenate([covs, np.zeros((B, h, covs.shape[2]))], axis=1)
        # One array for the whole forecast, and a window of the last L steps (the history
        # is not grown: a long recursive forecast costs its steps, not their square)
        result = np.empty((B, -(-horizon // h) * h, k, Q))
        done = 0
        while done < horizon:
            take = min(h, horizon - done)
            if temporal:
                base = _window_level(window, L + h)
                inputs = window - base[:, :L]
            else:
                inputs = window
            if covs is not None:
                # the future steps past `take` are fillers: a unidirectional GRU's output
                # at a step never depends on later steps
                full = np.zeros((B, L + h, k + 1 + covs.shape[2]))
                full[:, :L, :k] = inputs
                full[:, :L, k] = 1.0
                full[:, :, k + 1:] = covs[:, done:done + L + h]
                inputs = full
            inputs = inputs.astype(self.net_.dtype)
            check_result("the Forecaster's network input (the standardised history and "
                         "covariates)", inputs, hint="rescale y or X")
            # (threads sharing the model take turns: a layer serves one at a time)
            out = run_waiting(self.net_, self.net_.forward, inputs, training=False)
            block = out.astype(np.float64).reshape(B, h, k, Q)
            if self.quantiles_ is not None:
                block = monotone_quantiles(block)
            # the network forecasts what the linear part leaves (after monotone_quantiles:
            # the raw outputs are a first level and softplus'd gaps, not levels)
            if len(self.ar_coef_):
                block = block + self._linear(inputs).reshape(B, h, k, 1)
            if temporal:
                block = block + base[:, L:, :, None]
            result[:, done:done + take] = block[:, :take]
            window = np.concatenate([window, block[:, :take, :, med]], axis=1)[:, -L:]
            done += take
        return result[:, :horizon]

    def _linear(self, inputs):
        """The linear forecast (B, horizon * k) from network inputs (B, >= L, >= k) whose
        first k columns are the scaled window (its last L steps end at the origin); 0.0
        without ``ar_order`` (no arrays made on every forecast step)."""
        if not len(self.ar_coef_):
            return 0.0
        feats = _ar_features(self._window(inputs), self.n_series_,
                             len(self.ar_coef_) // self.n_series_)
        # (row by row, as the network's readout: a history's forecast is the same in any
        # batch of histories)
        return matmul(feats.astype(np.float64), self.ar_coef_) + self.ar_intercept_

    def _window(self, inputs):
        """The last L steps before the origin in network inputs: with covariates the
        first L of L + horizon steps, without the last L."""
        L = self.lookback_
        return inputs[:, :L] if self.n_covariates_ else inputs[:, -L:]

    def _after_load(self):
        if not hasattr(self, "ar_coef_"):  # saved before ar_order existed
            hk = self.horizon_ * self.n_series_
            self.ar_coef_, self.ar_intercept_ = np.zeros((0, hk)), np.zeros(hk)

    def _shape(self, arrays, items, form, horizon, levels=None):
        """Per-history results (horizon, k[, Q]) in the form of the input."""
        out = []
        for a, (s, _, _) in zip(arrays, items):
            if s.is_pandas:
                out.append(as_pandas(a, s, horizon, levels=levels))
            elif self._univariate:
                out.append(a[:, 0])
            else:
                out.append(a)
        if form == "single":
            return out[0]
        if form == "batch":
            return np.stack(out)
        return out

    def network_inputs(self, x: ArrayLike,
                       y: Optional[ArrayLike] = None) -> Tuple[np.ndarray, Callable]:
        """See :meth:`GRUModel.network_inputs`.

        ``x``: histories as :meth:`predict` takes them (all their steps are read);
        ``y``: the next ``horizon`` values after each history, in data units; the loss is
        the model's training loss (on standardised values).  Models with covariates or
        fitted on a list are not supported.
        """
        self._check_is_fitted()
        if self.n_covariates_ or self.n_fitted_series_ is not None:
            raise ValueError("network_inputs supports forecasters of one series without "
                             "covariates")
        items, _ = self._items(np.asarray(x, dtype=np.float64), None, 1)
        X = self._scaled_windows(np.stack([s.values for s, _, _ in items]),
                                 [0] * len(items))
        temporal = _temporal_norm(self.temporal_norm)
        m = X.shape[1]
        base = (_window_level(X, m + self.horizon_) if temporal
                else np.zeros((X.shape[0], m + self.horizon_, X.shape[2])))
        X = np.ascontiguousarray(X - base[:, :m], dtype=np.float64)
        if y is None:
            return X, _mean_output_gradient
        B, k, hz, loss = len(X), self.n_series_, self.horizon_, self._loss()

        def output_gradient(out):
            target = ((np.asarray(y, dtype=np.float64).reshape(B, hz, k)
                       - self.mean_) / self.scale_ - base[:, m:])
            return loss(out, target.reshape(B, hz * k) - self._linear(X))[1]
        return X, output_gradient


def _temporal_norm(value):
    return _flag("temporal_norm", value)


def _ar_order(value, lookback):
    value = _integer("ar_order", value)
    if not 0 <= value <= lookback:
        raise ValueError(f"ar_order must be from 0 to lookback={lookback}, got {value}")
    return value


def _ar_features(X, k, p):
    """(N, p * k): the last ``p`` steps of windows (N, L, >= k), their first ``k``
    columns (the scaled series), oldest lag first."""
    return np.ascontiguousarray(X[:, X.shape[1] - p:, :k]).reshape(len(X), p * k)


def _fit_linear(F, Y, W, rows):
    """Least-squares coefficients (p*k, h*k) and intercepts (h*k,) of Y (N, h*k) on
    features F (N, p*k) over the training ``rows``; ``W`` (N, h*k) weighs each target
    (one weighted fit per column then).  Without features: zeros."""
    hk = Y.shape[1]
    if F.shape[1] == 0:
        return np.zeros((0, hk)), np.zeros(hk)
    A = np.concatenate([F[rows], np.ones((len(rows), 1))], axis=1)
    if W is None:
        sol = np.linalg.lstsq(A, Y[rows], rcond=None)[0]
    else:
        sol = np.empty((A.shape[1], hk))
        for j in range(hk):
            w = np.sqrt(W[rows, j])[:, None]
            sol[:, j] = np.linalg.lstsq(A * w, Y[rows, j] * w[:, 0], rcond=None)[0]
    check_result("the ar_order linear fit (least squares on the scaled windows)", sol,
                 hint="lower ar_order")
    return sol[:-1], sol[-1]


def _window_level(window, steps):
    """Each window's mean, for its own steps and the ``steps`` after it: (B, steps, k)."""
    return np.broadcast_to(window.mean(axis=1, keepdims=True),
                           (window.shape[0], steps, window.shape[2]))


def _with_median(quantiles):
    if quantiles is None:
        return None
    q = check_quantiles(quantiles)
    # (exactly 0.5, not np.isclose's 1e-5: 0.499999 stood in for the median)
    if not np.any(q == 0.5):
        q = np.sort(np.append(q, 0.5))
    return q


def _chronological_split(counts, fraction, gap=0):
    """(train, val) window indices: the latest ``fraction`` of each series' windows for
    validation, and the windows before them less ``gap`` (horizon - 1: a window's
    targets are its next horizon steps, so the last gap training windows would train on
    targets the first validation window is scored on) for training."""
    train, val, start = [], [], 0
    for n in counts:
        n_val = int(np.floor(n * fraction))
        skip = gap
        if n_val < 1 or n - n_val - gap < 1:
            n_val = skip = 0
        train.append(np.arange(start, start + n - n_val - skip))
        val.append(np.arange(start + n - n_val, start + n))
        start += n
    return np.concatenate(train), np.concatenate(val)


def _batch_covariates(X, n):
    arr = np.asarray(X) if not _is_series_list(X) else None
    if arr is None:
        if len(X) != n:
            raise ValueError(f"X must hold covariates for each of the {n} histories")
        return X
    if arr.ndim != 3 or len(arr) != n:
        raise ValueError(f"X must be (N, m + horizon, n_covariates) = ({n}, ...) for {n} "
                         f"histories, got shape {arr.shape}")
    return list(arr)


def _check_labels(name, labels, n):
    """A fitted list of ``n`` column labels as ``fit`` keeps them (JSON scalars), or
    None."""
    _fitted_check(labels is None or (
        isinstance(labels, list) and len(labels) == n
        and all(v is None or isinstance(v, (str, bool, int, float)) for v in labels)),
        f"fitted {name} must be None or a list of {n} labels (strings or numbers)")


def _joined(arrays):
    """The arrays concatenated (the one array itself when there is one)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _json_labels(labels):
    return None if labels is None else [json_label(c) for c in labels]

