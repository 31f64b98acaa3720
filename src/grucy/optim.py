"""Optimisers, gradient clipping and learning-rate schedules.

Optimisers update parameter arrays in place from matching gradient arrays.

Layers expose ``parameters()`` (the arrays themselves) and ``grads`` (a dict in the same
order), so an optimiser over several layers is built from two parallel lists::

    params = gru.parameters() + head.parameters()
    grads = list(gru.grads.values()) + list(head.grads.values())
    opt = Adam(params, grads, lr=1e-3)

The update rules and hyperparameters are PyTorch's (``torch.optim.SGD``, ``Adam``,
``AdamW``; ``torch.optim.lr_scheduler.StepLR``, ``CosineAnnealingLR``,
``ReduceLROnPlateau``), so settings carry over.  Optimisers and schedules have
``state_dict()`` / ``load_state_dict()`` holding everything a resumed run needs (moments,
step counts, the current learning rate), so a checkpointed run continues bit for bit.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, Dict, Optional, Sequence, Tuple, Type, Union

import numpy as np

from ._validation import (_flag, _integer, _positive_int, _real, as_float_array,
                          check_finite)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm", "Schedule", "StepLR",
           "CosineAnnealingLR", "ReduceLROnPlateau", "OPTIMIZERS", "make_optimizer"]


def _array_list(name, arrays):
    """A list of float ndarrays from a sequence (or the values of a mapping)."""
    if isinstance(arrays, np.ndarray):
        raise TypeError(f"{name} must be a list of arrays, not a single array")
    if isinstance(arrays, Mapping):
        arrays = arrays.values()
    try:
        arrays = list(arrays)
    except TypeError as exc:
        raise TypeError(f"{name} must be a list of arrays, got "
                        f"{type(arrays).__name__}") from exc
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name}[{i}] must be a NumPy array, got {type(a).__name__}")
        if a.dtype.kind != "f":
            raise TypeError(f"{name}[{i}] must have a floating dtype, got {a.dtype}")
    return arrays


def _nonneg(name, value):
    value = _real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _count(name, value):
    """A non-negative integer (an epoch or a counter)."""
    value = _integer(name, value)
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value}")
    return value


class Optimizer:
    """Base of the optimisers: validated parallel lists of parameters and gradients.

    ``params`` are updated in place, so they must be the layers' own arrays (from
    ``parameters()``); ``grads`` are read, never written (except by :meth:`zero_grad`).
    ``lr`` may be changed between steps (that is what the schedules do); every
    assignment is checked (a finite number >= 0), so a NaN learning rate can never reach
    the weights.  Subclasses name their per-parameter state arrays in ``_buffers`` and
    their hyperparameters in ``_hyper``, and check the latter in ``_check_hyper`` (used
    by the constructor and by :meth:`load_state_dict` alike); :meth:`state_dict` and
    :meth:`load_state_dict` handle both.

    Threads: an optimiser updates its parameters in place; step it from one thread.
    """

    _buffers: tuple = ()
    #: the buffers that can never be negative (a sum of squares): a loaded negative
    #: value would reach a square root in the next step and write NaN into the weights
    _nonnegative_buffers: tuple = ()
    _hyper: tuple = ("lr",)

    @property
    def lr(self) -> float:
        """The learning rate (a finite number >= 0; checked on assignment)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _nonneg("lr", value)

    @classmethod
    def _check_hyper(cls, lr: float) -> Dict[str, Any]:
        """The hyperparameters, checked and converted (name -> value)."""
        return {"lr": _nonneg("lr", lr)}

    def __init__(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray],
                 lr: float):
        params = _array_list("params", params)
        grads = _array_list("grads", grads)
        if not params:
            raise ValueError("params must not be empty")
        if len(params) != len(grads):
            raise ValueError(f"params and grads must have the same length, got "
                             f"{len(params)} and {len(grads)}")
        for i, (p, g) in enumerate(zip(params, grads)):
            if p.shape != g.shape:
                raise ValueError(f"grads[{i}] has shape {g.shape}, but params[{i}] has "
                                 f"shape {p.shape}")
            if not p.flags.writeable:
                raise ValueError(f"params[{i}] is read-only; {type(self).__name__} "
                                 f"updates it in place")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("params contains the same array more than once")
        self.params = params
        self.grads = grads
        self.lr = _nonneg("lr", lr)
        self.t = 0

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_grads(self) -> None:
        """Refuse NaN/inf gradients before anything changes (parameters, buffers and
        the step count stay as they were), so a diverged backward cannot poison the
        weights; skip the batch or lower the learning rate."""
        for i, g in enumerate(self.grads):
            try:
                check_finite(f"grads[{i}]", g)
            except ValueError as exc:
                raise ValueError(f"{exc}; {type(self).__name__}.step updated "
                                 f"nothing") from None

    def zero_grad(self) -> None:
        """Set every gradient array to zero (in place)."""
        for g in self.grads:
            g.fill(0)

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue exactly: hyperparameters, step count, buffers.

        Returns a dict: ``"name"`` (the class), ``"step"``, the hyperparameters (plain
        numbers, JSON-safe) and, per buffer name, a list of array copies in parameter
        order.
        """
        state: Dict[str, Any] = {"name": type(self).__name__, "step": self.t}
        for h in self._hyper:
            v = getattr(self, h)
            state[h] = list(v) if isinstance(v, tuple) else v
        for b in self._buffers:
            state[b] = [a.copy() for a in getattr(self, b)]
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (arrays copied in place).

        The class, the number of parameters and every buffer's shape must match; nothing
        changes unless everything does.
        """
        if not hasattr(state, "keys"):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        name = type(self).__name__
        if state.get("name") != name:
            raise ValueError(f"state is of a {state.get('name')!r} optimiser, this is {name!r}")
        missing = [k for k in ("step", *self._hyper, *self._buffers) if k not in state]
        if missing:
            raise ValueError(f"state lacks {missing}")
        new = {}
        for b in self._buffers:
            if isinstance(state[b], (str, bytes, np.ndarray)) or not hasattr(state[b],
                                                                            "__iter__"):
                raise TypeError(f"state[{b!r}] must be a list of arrays, got "
                                f"{type(state[b]).__name__}")
            arrays = list(state[b])
            if len(arrays) != len(self.params):
                raise ValueError(f"state[{b!r}] has {len(arrays)} arrays, expected "
                                 f"{len(self.params)}")
            checked = []
            for i, (a, p) in enumerate(zip(arrays, self.params)):
                a = as_float_array(f"state[{b!r}][{i}]", a, p.dtype)
                if a.shape != p.shape:
                    raise ValueError(f"state[{b!r}][{i}] has shape {a.shape}, expected "
                                     f"{p.shape}")
                check_finite(f"state[{b!r}][{i}]", a)
                if b in self._nonnegative_buffers and np.any(a < 0):
                    raise ValueError(f"state[{b!r}][{i}] holds a negative value ("
                                     f"{a[a < 0].flat[0]}); it is a running mean of "
                                     f"squared gradients, never below 0")
                checked.append(a)
            new[b] = checked
        hyper = self._check_hyper(**{h: state[h] for h in self._hyper})
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"state['step'] must be a non-negative integer, got {step!r}")
        for b, arrays in new.items():
            for dst, src in zip(getattr(self, b), arrays):
                dst[...] = src
        for h, v in hyper.items():
            setattr(self, h, v)
        self.t = int(step)

    def __repr__(self):
        hyper = ", ".join(f"{h}={getattr(self, h)}" for h in self._hyper)
        return f"{type(self).__name__}({len(self.params)} arrays, {hyper})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

    ``torch.optim.SGD``'s rule, per parameter ``p`` with gradient ``g``::

        g = g + weight_decay * p
        b = g                                   (first step)
        b = momentum * b + (1 - dampening) * g  (later steps)
        g = g + momentum * b if nesterov else b      (when momentum > 0)
        p -= lr * g
    """

    _buffers = ("momentum_buffer",)
    _hyper = ("lr", "momentum", "dampening", "weight_decay", "nesterov")
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool

    def __init__(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray],
                 lr: float = 1e-2, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        hyper = self._check_hyper(lr=lr, momentum=momentum, dampening=dampening,
                                  weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, grads, hyper.pop("lr"))
        for k, v in hyper.items():
            setattr(self, k, v)
        self.momentum_buffer = [np.zeros_like(p) for p in self.params]

    @classmethod
    def _check_hyper(cls, lr, momentum, dampening, weight_decay, nesterov):
        hyper = dict(lr=_nonneg("lr", lr), momentum=_nonneg("momentum", momentum),
                     dampening=_real("dampening", dampening),
                     weight_decay=_nonneg("weight_decay", weight_decay),
                     nesterov=_flag("nesterov", nesterov))
        if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            raise ValueError(f"nesterov=True needs momentum > 0 and dampening = 0, got "
                             f"momentum={hyper['momentum']}, "
                             f"dampening={hyper['dampening']}")
        return hyper

    def step(self) -> None:
        """Apply one update to every parameter, in place (ValueError, changing nothing,
        when a gradient holds NaN or inf)."""
        self._check_grads()
        self.t += 1
        for p, g, buf in zip(self.params, self.grads, self.momentum_buffer):
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                if self.t == 1:
                    buf[...] = g
                else:
                    # b = momentum b + (1 - dampening) g
                    buf *= self.momentum
                    buf += (1.0 - self.dampening) * g
                g = g + self.momentum * buf if self.nesterov else buf
            p -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with PyTorch's ``torch.optim.Adam`` semantics.

    For each parameter ``p`` with gradient ``g`` at step ``t`` (1-based)::

        g = g + weight_decay * p                  # L2 penalty (see AdamW for decoupled)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        p -= lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)

    ``params`` are updated in place, so they must be the layers' own arrays (from
    ``parameters()``); ``grads`` are read, never written (except by :meth:`zero_grad`).
    ``lr`` may be changed between steps (a schedule).
    """

    _buffers = ("exp_avg", "exp_avg_sq")
    _nonnegative_buffers = ("exp_avg_sq",)
    _hyper = ("lr", "betas", "eps", "weight_decay")
    betas: Tuple[float, float]
    eps: float
    weight_decay: float
    _decoupled = False

    def __init__(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray],
                 lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        hyper = self._check_hyper(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, grads, hyper.pop("lr"))
        for k, v in hyper.items():
            setattr(self, k, v)
        self.exp_avg = [np.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [np.zeros_like(p) for p in self.params]

    @classmethod
    def _check_hyper(cls, lr, betas, eps, weight_decay):
        if isinstance(betas, (str, bytes)):
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError) as exc:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from exc
        beta1, beta2 = _real("betas[0]", beta1), _real("betas[1]", beta2)
        for i, b in enumerate((beta1, beta2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {b}")
        eps = _nonneg("eps", eps)
        if eps <= 0:
            # eps = 0 divides 0 by 0 wherever a gradient has been exactly 0 so far.
            raise ValueError(f"eps must be > 0, got {eps}")
        return dict(lr=_nonneg("lr", lr), betas=(beta1, beta2), eps=eps,
                    weight_decay=_nonneg("weight_decay", weight_decay))

    def step(self) -> None:
        """Apply one update to every parameter, in place (ValueError, changing nothing,
        when a gradient holds NaN or inf)."""
        self._check_grads()
        self.t += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1.0 - beta1 ** self.t)
        sqrt_bc2 = math.sqrt(1.0 - beta2 ** self.t)
        for p, g, m, v in zip(self.params, self.grads, self.exp_avg, self.exp_avg_sq):
            if self.weight_decay:
                if self._decoupled:
                    # p *= 1 - lr * weight_decay  (AdamW: decay outside the moments)
                    p *= 1.0 - self.lr * self.weight_decay
                else:
                    g = g + self.weight_decay * p
            # m = beta1 m + (1 - beta1) g ; v = beta2 v + (1 - beta2) g^2
            m *= beta1
            m += (1.0 - beta1) * g
            v *= beta2
            v += (1.0 - beta2) * np.square(g)
            # p -= step_size * m / (sqrt(v) / sqrt_bc2 + eps)
            denom = np.sqrt(v)
            denom /= sqrt_bc2
            denom += self.eps
            np.divide(m, denom, out=denom)
            denom *= step_size
            p -= denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), ``torch.optim.AdamW``.

    Each step first shrinks the parameters, ``p *= 1 - lr * weight_decay``, then applies
    the Adam update of the raw gradient (the decay never enters the moments).  PyTorch's
    default ``weight_decay=0.01``.
    """

    _decoupled = True

    def __init__(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray],
                 lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, grads, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay)


#: Optimisers by the names the models' ``optimizer=`` argument accepts.
OPTIMIZERS: Dict[str, Type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def make_optimizer(name: Union[str, Type[Optimizer]], params: Sequence[np.ndarray],
                   grads: Sequence[np.ndarray], lr: float, weight_decay: float = 0.0,
                   **kwargs: Any) -> Optimizer:
    """An optimiser from its name (``"sgd"``, ``"adam"``, ``"adamw"``) or class.

    ``kwargs`` go to the optimiser (``momentum``, ``betas``...).
    """
    if isinstance(name, str):
        try:
            cls: Any = OPTIMIZERS[name.lower()]
        except KeyError:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got "
                             f"{name!r}") from None
    elif isinstance(name, type) and issubclass(name, Optimizer):
        cls = name
    else:
        raise TypeError(f"optimizer must be a name or an Optimizer class, got {name!r}")
    return cls(params, grads, lr=lr, weight_decay=weight_decay, **kwargs)


def clip_grad_norm(grads: Sequence[np.ndarray], max_norm: float) -> float:
    """Scale ``grads`` in place so their global L2 norm is at most ``max_norm``.

    Returns the total norm before clipping (a float, computed in float64), like
    ``torch.nn.utils.clip_grad_norm_``; when it exceeds ``max_norm`` every array is
    multiplied by ``max_norm / (total_norm + 1e-6)``.  A non-finite norm is returned
    and nothing is scaled, so the caller can detect it and skip the step.
    """
    grads = _array_list("grads", grads)
    max_norm = _real("max_norm", max_norm)
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    total = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads))
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total


# -- learning-rate schedules ---------------------------------------------------------------
class Schedule:
    """Base of the learning-rate schedules: ``step()`` once per epoch sets ``optimizer.lr``.

    ``step(metric)`` takes the monitored value (only :class:`ReduceLROnPlateau` uses it).
    ``state_dict()`` / ``load_state_dict()`` are plain JSON-safe dicts; the optimiser's
    own state holds the current ``lr``.
    """

    _state: tuple = ("last_epoch", "base_lr")

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a grucy.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def step(self, metric: Optional[float] = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        """Counters and settings as plain JSON data (infinities as None)."""
        state: Dict[str, Any] = {"name": type(self).__name__}
        for k in self._state:
            v = getattr(self, k)
            state[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        name = type(self).__name__
        if not hasattr(state, "keys") or state.get("name") != name:
            raise ValueError(f"state is not a {name} state: {state!r}")
        missing = [k for k in self._state if k not in state]
        if missing:
            raise ValueError(f"state lacks {missing}")
        # every value checked before any is set: a bad one would otherwise surface
        # later, from step(), as a raw TypeError naming nothing
        restored = {k: self._restore(k, state[k]) for k in self._state}
        for k, v in restored.items():
            setattr(self, k, v)

    def _restore(self, key, value):
        """``state[key]`` checked and converted to what the schedule keeps."""
        if key == "base_lr":
            return _nonneg("state['base_lr']", value)
        return _count(f"state[{key!r}]", value)  # last_epoch and the other counters

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._args)
        return f"{type(self).__name__}({args})"


class StepLR(Schedule):
    """``lr = base_lr * gamma ** (epoch // step_size)`` (``torch``'s ``StepLR``)."""

    _args = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        self.step_size = _positive_int("step_size", step_size)
        self.gamma = _nonneg("gamma", gamma)

    def step(self, metric: Optional[float] = None) -> None:
        """Advance one epoch and set the optimiser's ``lr``."""
        self.last_epoch += 1
        self.optimizer.lr = self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class CosineAnnealingLR(Schedule):
    """``lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2``.

    The closed form of ``torch``'s ``CosineAnnealingLR``: from ``base_lr`` down to
    ``eta_min`` over ``T_max`` epochs (and back up after, periodically).
    """

    _args = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        self.T_max = _positive_int("T_max", T_max)
        self.eta_min = _nonneg("eta_min", eta_min)

    def step(self, metric: Optional[float] = None) -> None:
        """Advance one epoch and set the optimiser's ``lr``."""
        self.last_epoch += 1
        cos = math.cos(math.pi * self.last_epoch / self.T_max)
        self.optimizer.lr = self.eta_min + (self.base_lr - self.eta_min) * (1 + cos) / 2


class ReduceLROnPlateau(Schedule):
    """Multiply ``lr`` by ``factor`` when ``metric`` stopped improving (``torch``'s rule).

    An epoch improves when ``metric < best * (1 - threshold)`` (``mode="min"``,
    ``threshold_mode="rel"``; ``"abs"``: ``metric < best - threshold``; ``mode="max"``
    mirrors both).  After more than ``patience`` epochs without improvement the rate
    drops to ``max(lr * factor, min_lr)`` (ignored if the change is below ``eps``), and
    ``cooldown`` epochs follow in which bad epochs are not counted.
    """

    _args = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown",
             "min_lr")
    patience: int
    cooldown: int
    min_lr: float
    eps: float
    _state = ("last_epoch", "base_lr", "best", "num_bad_epochs", "cooldown_counter")

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float = 0.0, eps: float = 1e-8):
        super().__init__(optimizer)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = _real("factor", factor)
        if not 0.0 <= self.factor < 1.0:
            raise ValueError(f"factor must be in [0, 1), got {factor}")
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) \
                or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        if isinstance(cooldown, bool) or not isinstance(cooldown, numbers.Integral) \
                or cooldown < 0:
            raise ValueError(f"cooldown must be a non-negative integer, got {cooldown!r}")
        self.patience, self.cooldown = int(patience), int(cooldown)
        self.threshold = _nonneg("threshold", threshold)
        self.min_lr = _nonneg("min_lr", min_lr)
        self.eps = _nonneg("eps", eps)
        self.best: float = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs: int = 0
        self.cooldown_counter: int = 0

    def _is_better(self, a):
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return a < (self.best * (1.0 - self.threshold) if rel else self.best - self.threshold)
        return a > (self.best * (1.0 + self.threshold) if rel else self.best + self.threshold)

    def step(self, metric: Optional[float] = None) -> None:
        """Record one epoch's monitored ``metric``; reduce ``lr`` on a plateau."""
        if metric is None:
            raise ValueError("ReduceLROnPlateau.step needs the monitored metric")
        if isinstance(metric, (bool, np.bool_)) or not isinstance(metric, numbers.Real):
            raise TypeError(f"metric must be a real number, got {type(metric).__name__} "
                            f"{metric!r}")
        current = float(metric)  # NaN never counts as an improvement, as in PyTorch
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = self.optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _restore(self, key, value):
        if key != "best":
            return super()._restore(key, value)
        if value is None:  # state_dict() writes the initial infinity as None (JSON)
            return math.inf if self.mode == "min" else -math.inf
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
                or math.isnan(value):
            raise ValueError(f"state['best'] must be a number or None, got {value!r}")
        return float(value)
