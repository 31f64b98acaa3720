"""What every grucy model shares: its options, declared once, and the machinery around
them (scikit-learn's parameter protocol, the fitted state, saving, one training run).

A model is a :class:`GRUModel` subclass that is a dataclass: the options every model has
are the fields below (keyword-only), and a model adds its own fields and changes the
defaults it needs by declaring the field again::

    @register(kind="grucy.Forecaster")
    @dataclass(eq=False, repr=False)
    class Forecaster(GRUModel):
        lookback: int = 12            # its own options, positional
        horizon: int = 1
        _: KW_ONLY
        epochs: int = 80              # a shared option with another default

The dataclass writes ``__init__``, which only stores the arguments (scikit-learn's rule);
``fit`` validates them.  Besides ``fit`` and ``predict`` a model sets ``input_kind``
(what it reads: ``"series"``, ``"sequences"`` or ``"text"``; the command line picks its
options by it) and implements :meth:`GRUModel.network_inputs` (what the fitted network
reads and how the loss reaches it; :mod:`grucy.diagnostics` works through it).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, List, Optional, Tuple

import numpy as np

from .._validation import NumericOverflowError, _positive_int, check_dtype, check_result
from ..distributed import common_seed, get_communicator
from ..training import Trainer, read_checkpoint
from ..quantized import _quantize_net, quantized_copy
from ..training.checkpoint import _from_json_floats, _json_floats

__all__ = ["GRUModel", "NotFittedError"]


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


def not_fitted(obj):
    """The error for a method of the unfitted estimator ``obj`` (raise it)."""
    return _not_fitted_error_class()(
        f"This {type(obj).__name__} instance is not fitted yet. Call 'fit' with "
        f"appropriate arguments before using it.")


@dataclass(eq=False, repr=False, kw_only=True)
class GRUModel:
    """Options, training and fitted-state handling shared by every model.

    Constructor arguments are stored unchanged (scikit-learn's rule) and validated at
    ``fit``; :meth:`get_params` / :meth:`set_params` follow scikit-learn's semantics.
    The options below are every model's (keyword-only; documented with
    :class:`grucy.Forecaster`); a model changes a default by declaring the field again.

    ``fit`` is all or nothing: when it raises (bad data, a refused checkpoint, a run
    that diverged: :class:`grucy.TrainingDivergedError`), the model is left exactly as it
    was before the call (unfitted, or with its previous fit and weights), never
    half-fitted.  The checkpoints a diverged run wrote stay on disk (the error's
    ``checkpoint`` names the last one).
    """

    # the network
    hidden_size: int = 32
    num_layers: int = 1
    dropout: float = 0.0
    # the training run (grucy.training.Trainer)
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-2
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: Any = None
    max_grad_norm: Optional[float] = 1.0
    validation_fraction: float = 0.0
    patience: Optional[int] = None
    dtype: str = "float32"
    precision: str = "fp32"
    random_state: Any = None
    verbose: int = 0

    _estimator_type: ClassVar[Optional[str]] = None
    #: what ``fit`` and ``predict`` read: "series", "sequences" or "text"
    input_kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "fit" in cls.__dict__:
            cls.fit = _fit_or_nothing(cls.__dict__["fit"])

    # -- scikit-learn parameter protocol ------------------------------------------------
    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments, name -> value (``deep`` has nothing to descend)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> "GRUModel":
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

    def __sklearn_tags__(self):
        """scikit-learn >= 1.6 reads these in check_is_fitted and the HTML repr (the
        sequence estimators say more); imported here: scikit-learn is optional."""
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type=self._estimator_type,
                    target_tags=TargetTags(required=False))

    def network_inputs(self, x: Any, y: Any = None) -> Tuple[np.ndarray, Callable]:
        """What the fitted network ``net_`` reads for ``x``, and how a loss reaches it.

        Returns ``(inputs, output_gradient)``: ``inputs`` as ``net_`` reads them
        (scaled, encoded; float64), and ``output_gradient(out)``, the gradient of the
        loss with respect to the network's output ``out`` for ``inputs``: the model's
        training loss against the target ``y`` (in the units ``fit`` takes), or, with
        ``y=None``, the sum of the outputs averaged over the batch (a model whose data
        is its own target, CharLM, takes no ``y``).  For diagnostics
        (:func:`grucy.diagnostics.gradient_flow`); the arguments are checked as
        ``predict`` checks them.
        """
        raise NotImplementedError


    def _check_is_fitted(self):
        if not hasattr(self, "net_"):
            raise not_fitted(self)

    def _quantized_copy(self):
        """What ``grucy.quantize(model, "int8")`` returns: a copy whose GRU runs in int8
        for inference (fitting it again trains in float and drops the quantization)."""
        self._check_is_fitted()
        return quantized_copy(self)

    # -- saving (grucy.save / grucy.load) ----------------------------------------------
    #: private attributes set by ``fit`` that a saved model must keep
    _fitted_private: ClassVar[Tuple[str, ...]] = ()
    _net_class: ClassVar[Any] = None

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
        _check_saved_model(cls, config, arrays)
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
        obj._check_fitted_state()
        if config.get("quantized") == "int8":  # quantized again: the same int8 weights
            _quantize_net(obj.net_)
        return obj

    def _after_load(self):
        """Rebuild derived state after :meth:`_from_saved` (default: nothing)."""

    def _check_fitted_state(self):
        """After a load: ValueError unless the fitted attributes are what ``fit``
        makes and agree with the network (a file with a valid checksum can hold
        anything; a loaded model must predict or fail at load, never later)."""

    # -- training ---------------------------------------------------------------------
    def _dtype(self):
        return check_dtype(self.dtype)

    def _training_options(self):
        return dict(epochs=_positive_int("epochs", self.epochs),
                    batch_size=_positive_int("batch_size", self.batch_size),
                    optimizer=self.optimizer, lr=self.lr, weight_decay=self.weight_decay,
                    schedule=self.schedule, max_grad_norm=self.max_grad_norm,
                    patience=self.patience, verbose=self.verbose)

    #: options a run may resume with other values of: epochs (resuming to train longer
    #: is what resume is for), patience (when to stop, not what a step does; the early
    #: stopping state is in the checkpoint), verbose (output only) and random_state (a
    #: resumed run takes its seed from the checkpoint)
    _RESUME_MAY_CHANGE: ClassVar[Tuple[str, ...]] = ("epochs", "patience", "verbose",
                                                     "random_state")

    def _resume_options(self):
        """The options a checkpoint records and a resume must repeat (Trainer refuses
        other values): those of the objective and the trajectory (loss, quantiles, lr,
        optimizer, schedule, ...).  Values JSON cannot hold (a callable schedule) are
        left out: they cannot be compared."""
        out = {}
        for name, value in self.get_params().items():
            if name in self._RESUME_MAY_CHANGE:
                continue
            value = value.tolist() if isinstance(value, np.ndarray) else _plain(value)
            if _is_json(value):
                out[name] = value
        return out

    @staticmethod
    def _seed_for_fit(random_state, resume, distributed):
        """The run's seed: from the checkpoint when resuming (same split, same init)."""
        if resume is not None:
            config, _ = read_checkpoint(resume)
            metadata = config.get("metadata")
            seed = metadata.get("seed") if isinstance(metadata, dict) else None
            if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
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
                          metadata={"model": type(self).__name__, "seed": seed,
                                    "options": self._resume_options()},
                          **self._training_options())
        trainer.fit()
        self.history_ = trainer.history
        self.n_epochs_ = trainer.epoch
        self.n_iter_ = trainer.epoch
        self.best_epoch_ = trainer.best_epoch if trainer.patience is not None else None
        return trainer


def _fitted_int(model, name, low=1):
    value = getattr(model, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"fitted {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _fitted_array(model, name, shape):
    value = getattr(model, name)
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.shape != shape:
        raise ValueError(f"fitted {name} must be a float array of shape {shape}, got "
                         f"{type(value).__name__} {getattr(value, 'shape', '')}")
    return value


def _fitted_check(ok, message):
    if not ok:
        raise ValueError(message)


def _fit_or_nothing(fit):
    """``fit`` made all-or-nothing: when it raises (bad data, a diverged run:
    :class:`grucy.TrainingDivergedError`, Ctrl-C), the model is left as it was before the call
    (unfitted, or with its previous fit), never half-fitted; the error is re-raised."""
    if getattr(fit, "_all_or_nothing", False):
        return fit

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        before = dict(vars(self))
        try:
            return fit(self, *args, **kwargs)
        except BaseException:  # (Ctrl-C too: it left the model half-fitted)
            vars(self).clear()
            vars(self).update(before)
            raise
    wrapper._all_or_nothing = True
    return wrapper


def _standardization(name, values, axis, weights=None):
    """``(mean, scale, standardised values)`` of the finite float64 ``values`` over
    ``axis`` (a scale of 0 becomes 1), weighted by ``weights`` (finite, >= 0, positive
    sum, along ``axis``; None: unweighted).  For values (or weights) so large that the
    plain mean or standard deviation overflows (a std squares 1e308), or so small that
    it underflows (1e-170), both are computed relative to each column's largest
    magnitude (and the weights relative to the largest); standardised values that still overflow raise NumericOverflowError naming
    ``name``, never reach the network as inf."""
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        mean, scale = _moments(values, axis, weights)
        # (and for values so small that the squares underflow: below ~1e-154 the std
        # loses digits, and below ~1e-162 it is 0 for values that are not all equal)
        tiny = scale < 1e-150
        if np.any(tiny):
            spread = np.ptp(values, axis=axis)
            tiny &= spread > 0
        if np.any(tiny) or not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale))):
            unit = np.max(np.abs(values), axis=axis, keepdims=True)
            unit[unit == 0] = 1.0
            w = None if weights is None else weights / np.max(weights)
            mean, scale = _moments(values / unit, axis, w)
            unit = np.squeeze(unit, axis=axis)
            mean, scale = mean * unit, scale * unit
        scale[scale == 0] = 1.0
        scaled = (values - mean) / scale
    check_result(f"the mean or standard deviation of {name}", np.stack([mean, scale]))
    check_result(f"{name} standardised", scaled, hint=f"rescale {name}")
    return mean, scale, scaled


def _moments(values, axis, weights):
    """Mean and standard deviation over ``axis``, weighted as main's estimators weigh
    (np.average) or plain (the unweighted path keeps NumPy's mean and std)."""
    if weights is None:
        return values.mean(axis=axis), values.std(axis=axis)
    mean = np.average(values, axis=axis, weights=weights)
    return mean, np.sqrt(np.average(np.square(values - mean), axis=axis, weights=weights))


def _check_output(what, values, attributes):
    """NumericOverflowError unless the model output ``values`` (data units) is finite;
    ``attributes`` name what scaled it."""
    check_result(what, values, hint=f"the network's outputs times {attributes} exceed "
                                    f"float64")
    return values


def _check_saved_model(cls, config, arrays):
    """What a model file must be before anything is built from it: the structure
    ``_get_config`` / ``_get_arrays`` write, fitted names that are fitted attributes
    (never a method, a dunder or an option of the model); TypeError or ValueError
    otherwise (grucy.load reports them as FileFormatError)."""
    if not isinstance(config, dict) or not isinstance(config.get("params"), dict):
        raise TypeError("config must be an object with the model's params")
    fitted = config.get("fitted")
    if fitted is None:
        if arrays:
            raise ValueError(f"an unfitted {cls.__name__} has no arrays, the file has "
                             f"{len(arrays)}")
        return
    if not isinstance(fitted, dict) or not isinstance(config.get("net"), dict):
        raise TypeError("config['fitted'] and config['net'] must be objects")
    names = list(fitted) + [k[len("fitted/"):] for k in arrays if k.startswith("fitted/")]
    for name in names:
        public = (name.endswith("_") and not name.startswith("_")
                  and not name.endswith("__"))
        if not (name.isidentifier() and (public or name in cls._fitted_private)
                and name != "net_" and not hasattr(cls, name)):
            raise ValueError(f"{name!r} is not a fitted attribute of a {cls.__name__}")
    other = [k for k in arrays if not k.startswith(("fitted/", "net/"))]
    if other:
        raise ValueError(f"unexpected arrays {other[:5]}")
    if config.get("quantized", "int8") != "int8":   # (grucy.quantize: int8 only)
        raise ValueError(f"config['quantized'] must be 'int8', got "
                         f"{config['quantized']!r}")


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


def _check_fraction(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)

def _validation_split(n, fraction, rng, *, chronological=False):
    """(train_idx, val_idx); no validation when the fraction leaves no example for it."""
    n_val = int(math.floor(n * fraction))
    if n_val < 1 or n - n_val < 1:
        return np.arange(n), np.arange(0)
    if chronological:
        return np.arange(n - n_val), np.arange(n - n_val, n)
    order = rng.permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _mean_output_gradient(out):
    """The gradient of the sum of the outputs averaged over the batch (axis 0)."""
    return np.full(out.shape, 1.0 / len(out))
