"""Optimisers that update parameter arrays in place from matching gradient arrays.

Layers expose ``parameters()`` (the arrays themselves) and ``grads`` (a dict in the same
order), so an optimiser over several layers is built from two parallel lists::

    params = gru.parameters() + head.parameters()
    grads = list(gru.grads.values()) + list(head.grads.values())
    opt = Adam(params, grads, lr=1e-3)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from ._base import check_finite

__all__ = ["Adam", "clip_grad_norm"]


def _real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


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


class Adam:
    """Adam (Kingma & Ba, 2015) with PyTorch's ``torch.optim.Adam`` semantics.

    For each parameter ``p`` with gradient ``g`` at step ``t`` (1-based)::

        g = g + weight_decay * p                  # L2 penalty (not AdamW)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        p -= lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)

    ``params`` are updated in place, so they must be the layers' own arrays (from
    ``parameters()``); ``grads`` are read, never written (except by :meth:`zero_grad`).
    ``lr`` may be changed between steps (a schedule).
    """

    def __init__(self, params, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0):
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
                raise ValueError(f"params[{i}] is read-only; Adam updates it in place")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("params contains the same array more than once")

        self.lr = _real("lr", lr)
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError) as exc:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from exc
        beta1, beta2 = _real("betas[0]", beta1), _real("betas[1]", beta2)
        for i, b in enumerate((beta1, beta2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {b}")
        self.betas = (beta1, beta2)
        self.eps = _real("eps", eps)
        if self.eps <= 0:
            # eps = 0 divides 0 by 0 wherever a gradient has been exactly 0 so far.
            raise ValueError(f"eps must be > 0, got {eps}")
        self.weight_decay = _real("weight_decay", weight_decay)
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")

        self.params = params
        self.grads = grads
        self.t = 0
        self.exp_avg = [np.zeros_like(p) for p in params]
        self.exp_avg_sq = [np.zeros_like(p) for p in params]

    def step(self):
        """Apply one update to every parameter, in place.

        Refuses (ValueError, before changing anything: parameters, moments and step
        count stay as they were) when a gradient holds NaN or inf, so a diverged
        backward cannot poison the weights; skip the batch or lower the learning rate.
        """
        for i, g in enumerate(self.grads):
            try:
                check_finite(f"grads[{i}]", g)
            except ValueError as exc:
                raise ValueError(f"{exc}; Adam.step updated nothing") from None
        self.t += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1.0 - beta1 ** self.t)
        sqrt_bc2 = math.sqrt(1.0 - beta2 ** self.t)
        for p, g, m, v in zip(self.params, self.grads, self.exp_avg, self.exp_avg_sq):
            if self.weight_decay:
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

    def zero_grad(self):
        """Set every gradient array to zero (in place)."""
        for g in self.grads:
            g.fill(0)

    def __repr__(self):
        return (f"Adam({len(self.params)} arrays, lr={self.lr}, betas={self.betas}, "
                f"eps={self.eps}, weight_decay={self.weight_decay})")


def clip_grad_norm(grads, max_norm):
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
