"""Ready-to-use GRU models: forecasting, sequence classification and regression, and a
character-level language model.

Every model composes the building blocks of :mod:`grucy.nn` into a small network and
trains it with the one training loop of :mod:`grucy.training` (mini-batches, validation
split, early stopping, schedules, progress bar, ``history_``, seeds, checkpoints and
resume, data parallelism).

- :class:`Forecaster`: next values of a univariate or multivariate series.
- :class:`GRUClassifier`, :class:`GRURegressor`: scikit-learn estimators on sequences
  ``X`` of shape (n, T) or (n, T, F).  scikit-learn is optional: the estimators implement
  ``get_params`` / ``set_params`` and scikit-learn's tags themselves, so they work in
  ``Pipeline`` and ``GridSearchCV`` without grucy importing scikit-learn.
- :class:`CharLM`: a character-level language model trained with truncated BPTT.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from typing import Any, List, Optional, Tuple

from numpy.typing import ArrayLike

import numpy as np

from ._base import (ParameterHolder, _as_real_array, _flag, _positive_int, _real, _rng,
                    check_dtype, check_finite)
from .distributed import common_seed, get_communicator
from .layer import GRU
from .losses import LOSSES, cross_entropy_loss
from .nn import Dropout, Embedding, Linear, Sequential, TruncatedBPTT
from .io import register
from .training import (ArrayTask, StreamTask, Trainer, _from_json_floats, _json_floats,
                       read_checkpoint)

__all__ = ["Forecaster", "GRUClassifier", "GRURegressor", "CharLM", "NotFittedError",
           "ReadoutNet", "CharNet"]


class NotFittedError(ValueError, AttributeError):
    """A model was used before ``fit``.

    When scikit-learn is installed the error raised is also an instance of
    ``sklearn.exceptions.NotFittedError``, so code written for scikit-learn catches it.
    """


_NOT_FITTED: List[type] = []


def _not_fitted_error_class():
    """NotFittedError, joined with scikit-learn's when that is installed (imported only
    here, on the error path, so ``import grucy`` never imports scikit-learn)."""
    if not _NOT_FITTED:
        try:
            from sklearn.exceptions import NotFittedError as SkNotFitted
        except ImportError:  # pragma: no cover - depends on the environment
            _NOT_FITTED.append(NotFittedError)
        else:
            _NOT_FITTED.append(type("NotFittedError", (NotFittedError, SkNotFitted),
                                    {"__module__": __name__}))
    return _NOT_FITTED[0]


# -- networks ------------------------------------------------------------------------------
class _Net(ParameterHolder):
    """Parameters and gradients of named child modules, named ``"child.param"``."""

    def _adopt(self, **children):
        self._children = children
        self._params, self.grads = {}, {}
        for cname, child in children.items():
            for pname, arr in child._params.items():
                self._params[f"{cname}.{pname}"] = arr
                self.grads[f"{cname}.{pname}"] = child.grads[pname]

    def generators(self):
        return [g for child in self._children.values() for g in child.generators()]


class ReadoutNet(_Net):
    """GRU over a sequence, then dropout and a linear readout of its final state.

    (B, T, input_size) -> (B, output_size).  The final state is the top layer's ``h_n``
    (both directions concatenated when bidirectional); ``dropout`` applies between GRU
    layers and before the readout.
    """

    def __init__(self, input_size, hidden_size, output_size, *, num_layers=1, dropout=0.0,
                 bidirectional=False, dtype=np.float32, seed=None, precision="fp32"):
        seeds = _rng(seed).integers(2**63, size=3)
        self.dtype = check_dtype(dtype)
        # The layers check the arguments; the config is taken from what they accepted.
        self.gru = GRU(input_size, hidden_size, num_layers, batch_first=True,
                       dropout=dropout, bidirectional=bidirectional, dtype=dtype,
                       seed=seeds[0], precision=precision)
        D = self.gru.num_directions
        self.head = Sequential(Dropout(dropout, seed=seeds[1]),
                               Linear(D * hidden_size, output_size, dtype=dtype,
                                      seed=seeds[2]))
        g = self.gru
        self.config = dict(input_size=g.input_size, hidden_size=g.hidden_size,
                           output_size=self.head[1].out_features, num_layers=g.num_layers,
                           dropout=g.dropout, bidirectional=g.bidirectional,
                           dtype=self.dtype.name)
        if g.precision != "fp32":
            self.config["precision"] = g.precision
        self._adopt(gru=self.gru, head=self.head)
        self._T = None

    def features(self, X, training=True):
        """The readout's input: the final state, (B, D*H)."""
        _, h_n = self.gru.forward(X, training=training)
        self._T = X.shape[1]
        D = self.gru.num_directions
        return np.concatenate(list(h_n[-D:]), axis=1) if D > 1 else h_n[-1]

    def forward(self, X, training=True):
        return self.head.forward(self.features(X, training), training=training)

    def backward(self, dout):
        dfeat = self.head.backward(dout)
        g = self.gru
        B, H, D = dfeat.shape[0], g.hidden_size, g.num_directions
        dh_n = np.zeros((g.num_layers * D, B, H), self.dtype)
        dh_n[-D:] = dfeat.reshape(B, D, H).transpose(1, 0, 2)
        g.backward(np.zeros((B, self._T, D * H), self.dtype), dh_n)


class CharNet(_Net):
    """Embedding -> GRU (state carried across chunks) -> dropout -> linear, per step.

    Integer codes (B, t) -> logits (B, t, vocab_size).  :meth:`reset_state` starts
    ``n_streams`` fresh streams; :meth:`forward` continues the streams ``rows``.
    """

    def __init__(self, vocab_size, embedding_dim, hidden_size, *, num_layers=1,
                 dropout=0.0, dtype=np.float32, seed=None, precision="fp32"):
        seeds = _rng(seed).integers(2**63, size=4)
        self.dtype = check_dtype(dtype)
        self.embedding = Embedding(vocab_size, embedding_dim, dtype=dtype, seed=seeds[0])
        self.gru = GRU(embedding_dim, hidden_size, num_layers, batch_first=True,
                       dropout=dropout, dtype=dtype, seed=seeds[1], precision=precision)
        self.head = Sequential(Dropout(dropout, seed=seeds[2]),
                               Linear(hidden_size, vocab_size, dtype=dtype, seed=seeds[3]))
        g = self.gru
        self.config = dict(vocab_size=self.embedding.num_embeddings,
                           embedding_dim=g.input_size, hidden_size=g.hidden_size,
                           num_layers=g.num_layers, dropout=g.dropout, dtype=self.dtype.name)
        if g.precision != "fp32":
            self.config["precision"] = g.precision
        self._adopt(embedding=self.embedding, gru=self.gru, head=self.head)
        self.tbptt = TruncatedBPTT(self.gru, 1)

    def reset_state(self, n_streams):
        if self.tbptt.n_streams != n_streams:
            self.tbptt = TruncatedBPTT(self.gru, n_streams)
        self.tbptt.reset()

    def forward(self, codes, rows=None, training=True):
        emb = self.embedding.forward(codes, training=training)
        y = self.tbptt.forward(emb, rows, training=training)
        return self.head.forward(y, training=training)

    def backward(self, dlogits):
        dy = self.head.backward(dlogits)
        self.embedding.backward(self.tbptt.backward(dy))


# -- shared estimator machinery ------------------------------------------------------------
def _seed_from(random_state):
    """An int seed from None (fresh entropy), an int, or a NumPy generator."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy % (2**63))
    if isinstance(random_state, (bool, np.bool_)):
        raise TypeError(f"random_state must be None, an int or a generator, got "
                        f"{random_state!r}")
    if isinstance(random_state, numbers.Integral):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31))
    raise TypeError(f"random_state must be None, an int or a generator, got "
                    f"{type(random_state).__name__}")


def _plain(value):
    """NumPy scalars and dtypes as the Python values JSON can hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.dtype, type)) and value is not None:
        try:
            return np.dtype(value).name
        except TypeError:
            return value
    return value


def _is_json(value):
    """Plain JSON data (what a grucy file's config may hold)."""
    if value is None or isinstance(value, (str, bool)):
        return True
    if isinstance(value, numbers.Integral):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _sample_weight(sample_weight, n):
    """``sample_weight`` as n finite non-negative float64 weights (None stays None)."""
    if sample_weight is None:
        return None
    w = _as_real_array("sample_weight", sample_weight).astype(np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape (n_samples,) = ({n},), got "
                         f"{w.shape}")
    check_finite("sample_weight", w)
    if np.any(w < 0) or not w.sum() > 0:
        raise ValueError("sample_weight must be >= 0 with a positive sum")
    return w


def _check_fraction(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


class _GRUModel:
    """Parameters, training and fitted-state handling shared by every model.

    Constructor arguments are stored unchanged (scikit-learn's rule) and validated at
    ``fit``; :meth:`get_params` / :meth:`set_params` follow scikit-learn's semantics.
    """

    _estimator_type: Optional[str] = None

    # -- scikit-learn parameter protocol ------------------------------------------------
    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments, name -> value (``deep`` has nothing to descend)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> "_GRUModel":
        """Set constructor arguments by name; returns self.  Unknown names raise ValueError."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator "
                                 f"{type(self).__name__}. Valid parameters are: {valid!r}.")
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {p.name: p.default for p in
                    inspect.signature(type(self).__init__).parameters.values()}
        shown = []
        for name in self._get_param_names():
            value = getattr(self, name)
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                same = value is default or (type(value) is type(default) and value == default)
            except Exception:  # arrays and other odd values: show them
                same = False
            if not same:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def __sklearn_is_fitted__(self):
        return hasattr(self, "net_")

    def _check_is_fitted(self):
        if not hasattr(self, "net_"):
            raise _not_fitted_error_class()(f"This {type(self).__name__} instance is not fitted yet. "
                                 f"Call 'fit' with appropriate arguments before using it.")

    # -- saving (grucy.save / grucy.load) ----------------------------------------------
    #: private attributes set by ``fit`` that a saved model must keep
    _fitted_private: Tuple[str, ...] = ()
    _net_class: Any = None

    def _fitted_names(self):
        return sorted(k for k in vars(self) if (k.endswith("_") and not k.startswith("_")
                                                and k != "net_")) + list(self._fitted_private)

    def _get_config(self):
        params, unsaved = {}, []
        for name, value in self.get_params().items():
            value = _plain(value)
            if _is_json(value):
                params[name] = list(value) if isinstance(value, tuple) else value
            else:  # a Generator as random_state, a callable schedule...
                params[name], unsaved = None, unsaved + [name]
        config = {"params": params, "unsaved_params": unsaved, "fitted": None}
        if hasattr(self, "net_"):
            fitted = {}
            for name in self._fitted_names():
                value = getattr(self, name)
                if isinstance(value, np.ndarray):
                    if value.dtype.kind in "biuf":
                        continue  # stored as an array
                    value = {"__ndarray__": value.tolist(), "dtype": value.dtype.kind}
                elif name == "history_":
                    value = {k: _json_floats(v) for k, v in value.items()}
                fitted[name] = _plain(value)
            config["fitted"] = fitted
            config["net"] = self.net_.config
            if getattr(self.net_.gru, "precision", None) == "int8":   # grucy.quantize
                config["quantized"] = "int8"
        return config

    def _get_arrays(self):
        if not hasattr(self, "net_"):
            return {}
        arrays = {f"net/{k}": v for k, v in self.net_.state_dict().items()}
        for name in self._fitted_names():
            value = getattr(self, name)
            if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
                arrays[f"fitted/{name}"] = value
        return arrays

    @classmethod
    def _from_saved(cls, config, arrays):
        obj = cls(**config["params"])
        fitted = config["fitted"]
        if fitted is None:
            return obj
        for name, value in fitted.items():
            if isinstance(value, dict) and "__ndarray__" in value:
                value = np.array(value["__ndarray__"],
                                 dtype=object if value["dtype"] == "O" else None)
            elif name == "history_":
                value = {k: _from_json_floats(v) for k, v in value.items()}
            setattr(obj, name, value)
        for key, value in arrays.items():
            if key.startswith("fitted/"):
                setattr(obj, key[len("fitted/"):], value)
        net = cls._net_class(**config["net"])
        net.load_state_dict({k[len("net/"):]: v for k, v in arrays.items()
                             if k.startswith("net/")})
        obj.net_ = net
        obj._after_load()
        if config.get("quantized") == "int8":  # quantized again: the same int8 weights
            from .quantized import _quantize_net
            _quantize_net(obj.net_)
        return obj

    def _after_load(self):
        """Rebuild derived state after :meth:`_from_saved` (default: nothing)."""

    # -- training ---------------------------------------------------------------------
    def _dtype(self):
        return check_dtype(self.dtype)

    def _training_options(self):
        return dict(epochs=_positive_int("epochs", self.epochs),
                    batch_size=_positive_int("batch_size", self.batch_size),
                    optimizer=self.optimizer, lr=self.lr, weight_decay=self.weight_decay,
                    schedule=self.schedule, max_grad_norm=self.max_grad_norm,
                    patience=self.patience, verbose=self.verbose)

    @staticmethod
    def _seed_for_fit(random_state, resume, distributed):
        """The run's seed: from the checkpoint when resuming (same split, same init)."""
        if resume is not None:
            config, _ = read_checkpoint(resume)
            seed = config.get("metadata", {}).get("seed")
            if isinstance(seed, int):
                return seed
        seed = _seed_from(random_state)
        if random_state is None:  # fresh entropy differs per process: take rank 0's
            seed = common_seed(seed, get_communicator(distributed))
        return seed

    def _run(self, task, seed, *, checkpoint, checkpoint_every, resume, distributed):
        trainer = Trainer(task, seed=int(np.random.default_rng(seed).integers(2**63)),
                          distributed=distributed, checkpoint=checkpoint,
                          checkpoint_every=checkpoint_every, resume=resume,
                          description=type(self).__name__,
                          metadata={"model": type(self).__name__, "seed": seed},
                          **self._training_options())
        trainer.fit()
        self.history_ = trainer.history
        self.n_epochs_ = trainer.epoch
        self.n_iter_ = trainer.epoch
        self.best_epoch_ = trainer.best_epoch if trainer.patience is not None else None
        return trainer


def _validation_split(n, fraction, rng, *, chronological=False):
    """(train_idx, val_idx); no validation when the fraction leaves no example for it."""
    n_val = int(math.floor(n * fraction))
    if n_val < 1 or n - n_val < 1:
        return np.arange(n), np.arange(0)
    if chronological:
        return np.arange(n - n_val), np.arange(n - n_val, n)
    order = rng.permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# -- forecasting ---------------------------------------------------------------------------
@register(kind="grucy.Forecaster")
class Forecaster(_GRUModel):
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

    _fitted_private = ("_univariate",)
    _net_class = ReadoutNet

    def __init__(self, lookback: int = 12, horizon: int = 1, *, hidden_size: int = 32,
                 num_layers: int = 1, dropout: float = 0.0, loss: str = "mse",
                 epochs: int = 80, batch_size: int = 32, lr: float = 3e-3,
                 optimizer: str = "adam", weight_decay: float = 0.0, schedule=None,
                 max_grad_norm: Optional[float] = 1.0, validation_fraction: float = 0.0,
                 patience: Optional[int] = None, dtype: str = "float32",
                 random_state=None, verbose: int = 0, precision: str = "fp32"):
        self.precision = precision
        self.lookback = lookback
        self.horizon = horizon
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.loss = loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.max_grad_norm = max_grad_norm
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

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
        mean, scale = s2.mean(axis=0), s2.std(axis=0)
        scale[scale == 0] = 1.0
        dtype = self._dtype()
        X, Y = self._windows((s2 - mean) / scale)
        seed = self._seed_for_fit(self.random_state, resume, distributed)
        rng = np.random.default_rng(seed)
        train_idx, val_idx = _validation_split(len(X), frac, rng, chronological=True)
        net = ReadoutNet(k, _positive_int("hidden_size", self.hidden_size), self.horizon_ * k,
                         num_layers=_positive_int("num_layers", self.num_layers),
                         dropout=self.dropout, dtype=dtype,
                         seed=int(rng.integers(2**63)), precision=self.precision)
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
        return (h - self.mean_) / self.scale_, single

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
        window = scaled[:, -L:]
        steps = []
        done = 0
        while done < horizon:
            out = self.net_.forward(window.astype(self.net_.dtype), training=False)
            block = out.astype(np.float64).reshape(len(window), h, k)
            steps.append(block)
            window = np.concatenate([window, block], axis=1)[:, -L:]
            done += h
        pred = np.concatenate(steps, axis=1)[:, :horizon] * self.scale_ + self.mean_
        if self._univariate:
            pred = pred[..., 0]
        return pred[0] if single else pred


# -- scikit-learn estimators ---------------------------------------------------------------
def _sklearn_warning(category_name):
    """scikit-learn's warning class when it is installed, else UserWarning."""
    try:
        from sklearn import exceptions
    except ImportError:  # pragma: no cover - depends on the environment
        return UserWarning
    return getattr(exceptions, category_name, UserWarning)


class _SequenceEstimator(_GRUModel):
    """What GRUClassifier and GRURegressor share: input checks, scaling, the network."""

    _fitted_private: Tuple[str, ...] = ("_input_ndim",)
    _net_class = ReadoutNet

    def __init__(self, hidden_size: int = 32, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, epochs: int = 60,
                 batch_size: int = 32, lr: float = 1e-2, optimizer: str = "adam",
                 weight_decay: float = 0.0, schedule=None,
                 max_grad_norm: Optional[float] = 1.0, validation_fraction: float = 0.0,
                 patience: Optional[int] = None, dtype: str = "float32", random_state=None,
                 verbose: int = 0, precision: str = "fp32"):
        self.precision = precision
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.max_grad_norm = max_grad_norm
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        from sklearn.utils import (ClassifierTags, InputTags, RegressorTags, Tags,
                                   TargetTags)

        clf = self._estimator_type == "classifier"
        return Tags(
            estimator_type=self._estimator_type,
            target_tags=TargetTags(required=True, multi_output=not clf,
                                   single_output=True),
            classifier_tags=ClassifierTags() if clf else None,
            regressor_tags=None if clf else RegressorTags(),
            input_tags=InputTags(two_d_array=True, three_d_array=True),
        )

    # -- input ------------------------------------------------------------------------
    def _check_X(self, X, *, fitting):
        """X as float64 (n, T, F); sets or checks the fitted shape."""
        name = type(self).__name__
        if hasattr(X, "toarray") or hasattr(X, "tocsr"):
            raise TypeError(f"{name} does not accept sparse input; convert X to a dense "
                            f"array first")
        X = np.asarray(X)
        if X.dtype.kind == "c":
            raise ValueError("Complex data not supported")
        if X.dtype.kind == "O":
            X = X.astype(np.float64)  # numbers pass, anything else raises TypeError
        elif X.dtype.kind not in "biuf":
            raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
        X = X.astype(np.float64)
        if X.ndim not in (2, 3):
            raise ValueError(f"X must be 2-D (n_samples, n_steps) or 3-D (n_samples, "
                             f"n_steps, n_features), got a {X.ndim}-D array of shape "
                             f"{X.shape}. Reshape your data, e.g. X.reshape(-1, 1) for "
                             f"one step per sample.")
        if X.shape[0] == 0:
            raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a "
                             f"minimum of 1 is required.")
        if X.shape[1] == 0 or (X.ndim == 3 and X.shape[2] == 0):
            raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) while a "
                             f"minimum of 1 is required.")
        check_finite("X", X, hint="fill or drop missing values first")
        if fitting:
            self._input_ndim = X.ndim
            self.n_features_in_ = X.shape[1] if X.ndim == 2 else X.shape[2]
            self.n_steps_ = X.shape[1]
        else:
            if X.ndim == 2 and self._input_ndim == 2 and X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting "
                                 f"{self.n_features_in_} features as input")
            F = 1 if X.ndim == 2 else X.shape[2]
            expected_F = 1 if self._input_ndim == 2 else self.n_features_in_
            if F != expected_F:
                raise ValueError(f"X has {F} features per step, but {name} is expecting "
                                 f"{expected_F} features per step as input")
        return X if X.ndim == 3 else X[:, :, None]

    def _check_y_present(self, X, y):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the "
                             f"target y is None")
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(X):
            raise ValueError(f"X and y must have the same number of samples, got "
                             f"{len(X)} and {0 if y.ndim == 0 else len(y)}")
        return y

    def _scaled(self, X3):
        return ((X3 - self.x_mean_) / self.x_scale_).astype(self.net_.dtype)

    def _fit_network(self, X3, Y, output_size, loss, metrics, *, stratify=None,
                     checkpoint, checkpoint_every, resume, distributed):
        frac = _check_fraction("validation_fraction", self.validation_fraction)
        self.x_mean_ = X3.mean(axis=(0, 1))
        scale = X3.std(axis=(0, 1))
        scale[scale == 0] = 1.0
        self.x_scale_ = scale
        dtype = self._dtype()
        seed = self._seed_for_fit(self.random_state, resume, distributed)
        rng = np.random.default_rng(seed)
        train_idx, val_idx = _validation_split(len(X3), frac, rng)
        self.net_ = ReadoutNet(X3.shape[2], _positive_int("hidden_size", self.hidden_size),
                               output_size,
                               num_layers=_positive_int("num_layers", self.num_layers),
                               dropout=self.dropout,
                               bidirectional=_flag("bidirectional", self.bidirectional),
                               dtype=dtype, seed=int(rng.integers(2**63)),
                               precision=self.precision)
        task = ArrayTask(self.net_, self._scaled(X3), Y, loss, train_idx, val_idx,
                         metrics=metrics)
        self._run(task, seed, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                  resume=resume, distributed=distributed)

    def _outputs(self, X):
        """Network outputs (n, output_size) as float64, computed in batches."""
        self._check_is_fitted()
        X3 = self._scaled(self._check_X(X, fitting=False))
        step = 4096
        return np.concatenate([self.net_.forward(X3[i:i + step], training=False)
                               for i in range(0, len(X3), step)]).astype(np.float64)


@register(kind="grucy.GRUClassifier")
class GRUClassifier(_SequenceEstimator):
    """Sequence classifier: a GRU reads each sequence, a linear readout of its final
    state gives the class scores (softmax cross-entropy).

    A scikit-learn estimator (``fit``, ``predict``, ``predict_proba``, ``score``,
    ``get_params`` / ``set_params``); scikit-learn itself is optional.

    Parameters
    ----------
    hidden_size, num_layers : int, default 32, 1
    bidirectional : bool, default False
        Read both directions; the readout sees both final states.
    dropout : float, default 0
    epochs, batch_size, lr : default 60, 32, 1e-2
    optimizer, weight_decay, schedule, max_grad_norm
        As in :class:`Forecaster`.
    validation_fraction : float, default 0
        Random share of the training samples held out for validation; its loss and
        accuracy are in ``history_`` and early stopping watches its loss.
    patience : int or None, default None
        Early stopping: stop after ``patience`` epochs without improvement of the
        validation loss (the training loss without validation data), restoring the best
        weights.  None trains all ``epochs``.
    dtype : {"float32", "float64"}, default "float32"
    random_state : int, Generator or None
    verbose : int, default 0

    Attributes
    ----------
    classes_ : ndarray
        The labels, sorted.
    n_features_in_ : int
        Columns of a 2-D X (its steps), or features per step of a 3-D X.
    n_steps_ : int
        Steps per sequence seen in ``fit``.
    history_ : dict of lists
        Per-epoch ``loss``, ``lr``, ``val_loss`` and ``val_accuracy``.

    Notes
    -----
    X is (n_samples, n_steps) for univariate sequences or (n_samples, n_steps,
    n_features).  Each feature is standardised with its mean and standard deviation over
    the training samples and steps.  With a 2-D X the number of steps is fixed (it is
    scikit-learn's number of features); pass 3-D arrays to predict on other lengths.
    """

    _estimator_type = "classifier"

    def fit(self, X: ArrayLike, y: ArrayLike, *, checkpoint=None,
            checkpoint_every: int = 1, resume=None,
            distributed: Any = "auto") -> "GRUClassifier":
        """Train on sequences ``X`` with labels ``y``; returns self.

        Parameters
        ----------
        X : array_like, (n_samples, n_steps) or (n_samples, n_steps, n_features)
        y : array_like, (n_samples,)
            Labels of any sortable type (at least two distinct).
        checkpoint, checkpoint_every, resume, distributed
            See :class:`grucy.training.Trainer`.
        """
        X3 = self._check_X(X, fitting=True)
        labels = self._check_y_present(X3, y)
        if labels.ndim == 2 and labels.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. "
                          "Please change the shape of y to (n_samples,), for example "
                          "using ravel().", _sklearn_warning("DataConversionWarning"),
                          stacklevel=2)
            labels = labels.ravel()
        if labels.ndim != 1:
            raise ValueError(f"y should be a 1d array of labels, got shape {labels.shape}")
        if labels.dtype.kind == "f":
            check_finite("y", labels, hint="every sample needs a class label")
            if np.any(labels != np.round(labels)):
                raise ValueError("Unknown label type: continuous. GRUClassifier needs "
                                 "discrete class labels; use GRURegressor for continuous "
                                 "targets.")
        classes, y_enc = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"GRUClassifier needs samples of at least 2 classes; got 1 "
                             f"class ({classes[0]!r})")
        self.classes_ = classes

        def accuracy(out, target):
            return float(np.sum(np.argmax(out, axis=1) == target)), float(target.size)

        self._fit_network(X3, y_enc.astype(np.int64), len(classes), cross_entropy_loss,
                          {"accuracy": accuracy}, checkpoint=checkpoint,
                          checkpoint_every=checkpoint_every, resume=resume,
                          distributed=distributed)
        return self

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities, (n_samples, n_classes), columns in ``classes_`` order."""
        logits = self._outputs(X)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """Log of :meth:`predict_proba`, computed stably."""
        logits = self._outputs(X)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The most probable label of each sequence."""
        scores = self._outputs(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, X: ArrayLike, y: ArrayLike,
              sample_weight: Optional[ArrayLike] = None) -> float:
        """Mean accuracy of :meth:`predict` on (X, y) (optionally weighted)."""
        pred = self.predict(X)
        labels = self._check_y_present(pred, y).reshape(len(pred), -1)
        if labels.shape[1] != 1:
            raise ValueError(f"y should be a 1d array of labels, got shape "
                             f"{np.shape(y)}")
        correct = pred == labels[:, 0]
        return float(np.average(correct, weights=_sample_weight(sample_weight, len(pred))))


@register(kind="grucy.GRURegressor")
class GRURegressor(_SequenceEstimator):
    """Sequence regressor: a GRU reads each sequence, a linear readout of its final
    state predicts one or several real targets (MSE by default; ``loss`` "mae", "huber").

    A scikit-learn estimator; parameters and attributes as in :class:`GRUClassifier`,
    plus ``loss`` and the target standardisation ``y_mean_`` and ``y_scale_``.
    ``history_`` has ``val_rmse`` in target units.
    """

    _estimator_type = "regressor"
    _fitted_private = ("_input_ndim", "_y_ndim")

    def __init__(self, hidden_size: int = 32, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, loss: str = "mse",
                 epochs: int = 60, batch_size: int = 32, lr: float = 1e-2,
                 optimizer: str = "adam", weight_decay: float = 0.0, schedule=None,
                 max_grad_norm: Optional[float] = 1.0, validation_fraction: float = 0.0,
                 patience: Optional[int] = None, dtype: str = "float32", random_state=None,
                 verbose: int = 0, precision: str = "fp32"):
        super().__init__(hidden_size=hidden_size, num_layers=num_layers,
                         bidirectional=bidirectional, dropout=dropout, epochs=epochs,
                         batch_size=batch_size, lr=lr, optimizer=optimizer,
                         weight_decay=weight_decay, schedule=schedule,
                         max_grad_norm=max_grad_norm,
                         validation_fraction=validation_fraction, patience=patience,
                         dtype=dtype, random_state=random_state, verbose=verbose,
                         precision=precision)
        self.loss = loss

    def fit(self, X: ArrayLike, y: ArrayLike, *, checkpoint=None,
            checkpoint_every: int = 1, resume=None,
            distributed: Any = "auto") -> "GRURegressor":
        """Train on sequences ``X`` with targets ``y`` (n,) or (n, n_targets); returns self.

        Parameters
        ----------
        X : array_like, (n_samples, n_steps) or (n_samples, n_steps, n_features)
        y : array_like, (n_samples,) or (n_samples, n_targets)
        checkpoint, checkpoint_every, resume, distributed
            See :class:`grucy.training.Trainer`.
        """
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        X3 = self._check_X(X, fitting=True)
        target = self._check_y_present(X3, y)
        if target.dtype.kind not in "biufO":
            raise ValueError(f"y must hold real numbers, got dtype {target.dtype}")
        target = target.astype(np.float64)
        if target.ndim not in (1, 2):
            raise ValueError(f"y must be (n_samples,) or (n_samples, n_targets), got shape "
                             f"{target.shape}")
        check_finite("y", target, hint="every sample needs a finite target")
        if target.ndim == 2 and target.shape[1] == 0:
            raise ValueError(f"y has no targets (shape {target.shape}); it needs at least "
                             f"one column")
        self._y_ndim = target.ndim
        Y = target.reshape(len(target), -1)
        self.y_mean_ = Y.mean(axis=0)
        scale = Y.std(axis=0)
        scale[scale == 0] = 1.0
        self.y_scale_ = scale
        y_scale = scale

        def rmse(out, target):
            return float(np.sum(np.square((out - target) * y_scale))), float(target.size)

        self._fit_network(X3, ((Y - self.y_mean_) / scale).astype(self._dtype()),
                          Y.shape[1], LOSSES[self.loss], {"rmse": rmse},
                          checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                          resume=resume, distributed=distributed)
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted targets, (n_samples,) or (n_samples, n_targets), float64."""
        pred = self._outputs(X) * self.y_scale_ + self.y_mean_
        return pred[:, 0] if self._y_ndim == 1 else pred

    def score(self, X: ArrayLike, y: ArrayLike,
              sample_weight: Optional[ArrayLike] = None) -> float:
        """Coefficient of determination R^2 (averaged uniformly over targets)."""
        pred = self.predict(X)
        target = _as_real_array("y", self._check_y_present(pred, y)).astype(np.float64)
        check_finite("y", target)
        if target.shape != pred.shape:
            raise ValueError(f"y must have the shape of the predictions, {pred.shape}, got "
                             f"{target.shape}")
        pred = pred.reshape(len(target), -1)
        y2 = target.reshape(len(target), -1)
        w = _sample_weight(sample_weight, len(target))
        mean = np.average(y2, axis=0, weights=w)
        ss_res = np.average(np.square(y2 - pred), axis=0, weights=w)
        ss_tot = np.average(np.square(y2 - mean), axis=0, weights=w)
        r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1),
                      np.where(ss_res > 0, 0.0, 1.0))
        return float(np.mean(r2))


# -- character language model --------------------------------------------------------------
@register(kind="grucy.CharLM")
class CharLM(_GRUModel):
    """Character-level GRU language model trained with truncated BPTT.

    The training text is cut into ``batch_size`` parallel streams; every step trains on
    the next ``bptt`` characters of all streams, starting from the state the previous
    chunk ended in.  The last ``validation_fraction`` of the text is held out and its
    bits per character are reported after each epoch.

    Parameters
    ----------
    hidden_size, num_layers : int, default 256, 1
    embedding_dim : int, default 32
    dropout : float, default 0
    bptt : int, default 64
        Characters per truncated-BPTT chunk.
    batch_size : int, default 32
        Parallel streams.
    epochs, lr : default 4, 3e-3
    optimizer, weight_decay, schedule, max_grad_norm, patience, dtype, random_state,
    verbose, precision
        As in :class:`Forecaster`.
    validation_fraction : float, default 0.1

    Attributes
    ----------
    vocab_ : str
        The characters of the training text, sorted; other characters map to one
        "unknown" symbol.
    history_ : dict of lists
        Per-epoch ``loss`` (nats per character), ``lr``, ``val_loss`` and
        ``val_bits_per_char``.
    """

    def __init__(self, hidden_size: int = 256, num_layers: int = 1,
                 embedding_dim: int = 32, dropout: float = 0.0, bptt: int = 64,
                 batch_size: int = 32, epochs: int = 4, lr: float = 3e-3,
                 optimizer: str = "adam", weight_decay: float = 0.0, schedule=None,
                 max_grad_norm: Optional[float] = 1.0, validation_fraction: float = 0.1,
                 patience: Optional[int] = None, dtype: str = "float32",
                 random_state=None, verbose: int = 0, precision: str = "fp32"):
        self.precision = precision
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.bptt = bptt
        self.batch_size = batch_size
        self.epochs = epochs
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.max_grad_norm = max_grad_norm
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    _net_class = CharNet

    def _after_load(self):
        self._set_vocab(self.vocab_)

    def _set_vocab(self, vocab):
        self.vocab_ = vocab
        self._lookup = {c: i for i, c in enumerate(vocab)}
        self._unknown = len(vocab)

    def encode(self, text: str) -> np.ndarray:
        """Character codes of ``text`` (int64); unseen characters get the unknown code."""
        self._check_is_fitted()
        return self._encode(text)

    def _encode(self, text):
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        get, unk = self._lookup.get, self._unknown
        return np.fromiter((get(c, unk) for c in text), dtype=np.int64, count=len(text))

    def fit(self, text: str, *, checkpoint=None, checkpoint_every: int = 1, resume=None,
            distributed: Any = "auto") -> "CharLM":
        """Train on ``text``; returns self.

        Parameters
        ----------
        text : str
        checkpoint, checkpoint_every, resume, distributed
            See :class:`grucy.training.Trainer`.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        frac = _check_fraction("validation_fraction", self.validation_fraction)
        streams = _positive_int("batch_size", self.batch_size)
        bptt = _positive_int("bptt", self.bptt)
        n_val = int(len(text) * frac)
        train_text = text[:len(text) - n_val]
        if len(train_text) < 2 * streams:
            raise ValueError(f"text is too short: {len(train_text)} training characters "
                             f"for batch_size={streams} streams (need >= {2 * streams})")
        self._set_vocab("".join(sorted(set(train_text))))
        dtype = self._dtype()
        codes = self._encode(text)
        train_streams = TruncatedBPTT.split_streams(codes[:len(train_text)], streams)
        val_streams = None
        if n_val >= 2:
            n_val_streams = max(1, min(streams, n_val // max(bptt, 2)))
            val_streams = TruncatedBPTT.split_streams(codes[len(train_text):],
                                                      n_val_streams)
        seed = self._seed_for_fit(self.random_state, resume, distributed)
        rng = np.random.default_rng(seed)
        self.net_ = CharNet(len(self.vocab_) + 1,
                            _positive_int("embedding_dim", self.embedding_dim),
                            _positive_int("hidden_size", self.hidden_size),
                            num_layers=_positive_int("num_layers", self.num_layers),
                            dropout=self.dropout, dtype=dtype,
                            seed=int(rng.integers(2**63)), precision=self.precision)
        task = StreamTask(self.net_, train_streams, val_streams, cross_entropy_loss, bptt)
        self._run(task, seed, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                  resume=resume, distributed=distributed)
        return self

    def bits_per_char(self, text: str, *, chunk: int = 1024) -> float:
        """Average bits per character of ``text`` under the model, read as one stream.

        The first character is predicted from the zero state; every later one from all
        characters before it.
        """
        codes = self.encode(text)
        if len(codes) < 2:
            raise ValueError("text needs at least 2 characters")
        net = self.net_
        net.reset_state(1)
        total = 0.0
        for s in TruncatedBPTT.chunk_slices(len(codes) - 1, _positive_int("chunk", chunk)):
            logits = net.forward(codes[None, s], None, training=False)
            loss, _ = cross_entropy_loss(logits, codes[None, s.start + 1:s.stop + 1],
                                         normalizer=1.0)
            total += loss
        return total / (len(codes) - 1) / math.log(2)

    def generate(self, prompt: str = "\n", n: int = 200, temperature: float = 1.0,
                 random_state: Any = None) -> str:
        """Continue ``prompt`` by ``n`` sampled characters; returns only the new ones.

        ``temperature`` scales the logits (lower: more conservative; 0: always the most
        probable character).  ``random_state`` seeds the sampling.
        """
        self._check_is_fitted()
        n = _positive_int("n", n)
        temperature = _real("temperature", temperature)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty str, got {prompt!r}")
        rng = _rng(random_state, "random_state")
        net = self.net_
        net.reset_state(1)
        codes = self.encode(prompt)
        logits = net.forward(codes[None], None, training=False)[0, -1]
        out = []
        V = len(self.vocab_)
        for _ in range(n):
            z = logits[:V].astype(np.float64)  # never emit the unknown symbol
            if temperature == 0:
                c = int(np.argmax(z))
            else:
                z = z / temperature
                p = np.exp(z - z.max())
                c = int(rng.choice(V, p=p / p.sum()))
            out.append(self.vocab_[c])
            logits = net.forward(np.array([[c]]), None, training=False)[0, -1]
        return "".join(out)
