"""Losses with their gradients: ``(loss, dloss/dinput)``, weighted, for masked sequences.

Every loss is a weighted sum of per-term losses divided by a normalizer::

    loss = sum_i w_i * l_i / normalizer          (default normalizer: sum_i w_i)

A *term* is one element of ``pred`` for the regression losses and one position (a row of
logits) for :func:`cross_entropy_loss`.  ``weight`` broadcasts to the terms: a boolean
mask drops padded steps of variable-length sequences (``mask = arange(T) < lengths``),
real weights reweight them.  With the defaults every loss is the plain mean, like
PyTorch's ``reduction="mean"``.

``normalizer`` exists for data-parallel training: each process sums the terms of its
shard of a global mini-batch and divides by the number of terms in the *whole* global
batch, so that summing the processes' gradients gives exactly the gradient of the global
mean (see :mod:`grucy.training`).  :func:`count_terms` gives that number for one shard.

The loss value is a Python float accumulated in float64; the gradient has the shape and
dtype of the input (float32 stays float32).

Input checks: predictions and targets are arrays of real numbers (bool, complex, object
and strings refused with TypeError; integers cast to float64), NaN or inf in them or in
``weight`` raise ValueError, shapes must match exactly (no silent broadcasting), and an
empty input or an all-zero weight (a mean over no terms) raises ValueError.

Threads: the losses are pure functions (they keep nothing between calls, and the
gradient is returned rather than stored), so any number of threads may call them at
once.
"""

from __future__ import annotations

import operator
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from ._validation import _as_real_array, _real, check_finite, check_result

__all__ = ["mse_loss", "mae_loss", "huber_loss", "cross_entropy_loss", "pinball_loss",
           "quantile_loss", "monotone_quantiles", "check_quantiles", "count_terms",
           "LOSSES"]


def _as_pred(name, pred):
    # grucy's cast policy: integers and floats are taken, bool/complex/object refused;
    # NaN and inf refused (a missing value must be masked out, not averaged in).
    pred = _as_real_array(name, pred)
    if pred.dtype.kind in "iu":
        pred = pred.astype(np.float64)
    if pred.size == 0:
        raise ValueError(f"{name} is empty; a loss of no terms is undefined")
    check_finite(name, pred)
    return pred


def _term_weight(weight, shape):
    """``weight`` broadcast to the terms' ``shape`` as float64 (None: all ones -> None)."""
    if weight is None:
        return None
    try:
        w = np.asarray(weight)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"weight must be a rectangular array (a boolean mask or real "
                         f"numbers), got {type(weight).__name__} ({exc})") from None
    if w.dtype.kind not in "biuf":
        raise TypeError(f"weight must be a boolean mask or real numbers, got dtype {w.dtype}")
    try:
        w = np.broadcast_to(w.astype(np.float64, copy=False), shape)
    except ValueError:
        raise ValueError(f"weight of shape {w.shape} does not broadcast to the loss terms' "
                         f"shape {shape}") from None
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"weight must be finite and >= 0, got {w[where]} at index {where}")
    return w


def count_terms(shape: Tuple[int, ...], weight: Optional[ArrayLike] = None) -> float:
    """The default normalizer of a loss over terms of ``shape``: ``sum(weight)``.

    The number of terms (``prod(shape)``) without a weight.
    """
    try:
        shape = tuple(operator.index(n) for n in shape)
    except (TypeError, ValueError):
        raise TypeError(f"shape must be a tuple of non-negative integers, got "
                        f"{shape!r}") from None
    if any(n < 0 for n in shape):
        raise ValueError(f"shape must be a tuple of non-negative integers, got {shape}")
    w = _term_weight(weight, shape)
    return float(np.prod(shape)) if w is None else float(w.sum())


def _normalize(normalizer, w, shape):
    if normalizer is None:
        normalizer = count_terms(shape) if w is None else float(w.sum())
        if normalizer == 0:
            raise ValueError("weight is zero everywhere; the mean over no terms is undefined")
        return normalizer
    if isinstance(normalizer, (bool, np.bool_)):
        raise TypeError(f"normalizer must be a positive number, got {normalizer!r}")
    try:
        normalizer = float(normalizer)
    except (TypeError, ValueError):
        raise TypeError(f"normalizer must be a positive number, got {normalizer!r}") from None
    if not np.isfinite(normalizer) or normalizer <= 0:
        raise ValueError(f"normalizer must be a positive finite number, got {normalizer}")
    return normalizer


def _reduce(terms, dterms, w, normalizer):
    """Weighted sum of ``terms`` / normalizer and the matching gradient (in place)."""
    if w is None:
        loss = float(np.sum(terms, dtype=np.float64)) / normalizer
        dterms *= dterms.dtype.type(1.0 / normalizer)
    else:
        loss = float(np.sum(w * terms, dtype=np.float64)) / normalizer
        dterms *= (w / normalizer).astype(dterms.dtype, copy=False).reshape(
            w.shape + (1,) * (dterms.ndim - w.ndim))
    # from finite pred and target: a NaN or inf here is an overflow (pred - target
    # beyond the dtype), an error rather than a loss that poisons the training step
    check_result("the loss", np.asarray(loss))
    check_result("the loss gradient", dterms)
    return loss, dterms


def _regression_inputs(pred, target, weight):
    pred = _as_pred("pred", pred)
    target = _as_real_array("target", target).astype(pred.dtype, copy=False)
    check_finite("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} "
                         f"and {target.shape}")
    return pred, target, _term_weight(weight, pred.shape)


def mse_loss(pred: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = None, *,
             normalizer: Optional[float] = None) -> Tuple[float, np.ndarray]:
    """Mean squared error ``l = (pred - target)**2`` and its gradient.

    Parameters
    ----------
    pred, target : array_like of the same shape
        Every element is one term.
    weight : array_like, optional
        Boolean mask or non-negative weights broadcasting to ``pred.shape``.
    normalizer : float, optional
        Divide the weighted sum by this instead of ``sum(weight)`` (the term count).

    Returns
    -------
    loss : float
    grad : ndarray
        ``dloss/dpred``, shape and dtype of ``pred``.
    """
    p, t, w = _regression_inputs(pred, target, weight)
    norm = _normalize(normalizer, w, p.shape)
    diff = p - t
    return _reduce(np.square(diff, dtype=np.float64), 2 * diff, w, norm)


def mae_loss(pred: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = None, *,
             normalizer: Optional[float] = None) -> Tuple[float, np.ndarray]:
    """Mean absolute error ``l = |pred - target|`` (L1) and its (sub)gradient.

    The gradient is ``sign(pred - target)``, 0 where they are equal (as in PyTorch).
    Arguments and return values as in :func:`mse_loss`.
    """
    p, t, w = _regression_inputs(pred, target, weight)
    norm = _normalize(normalizer, w, p.shape)
    diff = p - t
    return _reduce(np.abs(diff, dtype=np.float64), np.sign(diff), w, norm)


def huber_loss(pred: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = None, *,
               delta: float = 1.0,
               normalizer: Optional[float] = None) -> Tuple[float, np.ndarray]:
    """Huber loss (``torch.nn.HuberLoss``): quadratic near 0, linear beyond ``delta``.

    ``l = 0.5 d**2`` for ``|d| <= delta`` and ``delta (|d| - 0.5 delta)`` beyond, with
    ``d = pred - target``; gradient ``clip(d, -delta, delta)``.  Arguments and return
    values as in :func:`mse_loss`; ``delta > 0``.
    """
    delta = _real("delta", delta)
    if delta <= 0:
        raise ValueError(f"delta must be a positive finite number, got {delta}")
    p, t, w = _regression_inputs(pred, target, weight)
    norm = _normalize(normalizer, w, p.shape)
    diff = p - t
    d64 = diff.astype(np.float64)
    ad = np.abs(d64)
    terms = np.where(ad <= delta, 0.5 * np.square(d64), delta * (ad - 0.5 * delta))
    return _reduce(terms, np.clip(diff, -delta, delta), w, norm)


def cross_entropy_loss(logits: ArrayLike, target: ArrayLike,
                       weight: Optional[ArrayLike] = None, *,
                       normalizer: Optional[float] = None) -> Tuple[float, np.ndarray]:
    """Softmax cross-entropy on unnormalised logits and its gradient.

    Parameters
    ----------
    logits : array_like, shape (..., C)
        One row of class scores per term.
    target : array_like of int, shape (...)
        Class indices in ``[0, C)``.
    weight : array_like, optional
        Mask or weights broadcasting to ``target``'s shape (one per term).
    normalizer : float, optional
        As in :func:`mse_loss`.

    Returns
    -------
    loss : float
        ``sum(w * (logsumexp(logits) - logits[target])) / normalizer`` (in nats).
    grad : ndarray
        ``(softmax(logits) - onehot(target)) * w / normalizer``, shape of ``logits``.
    """
    z = _as_pred("logits", logits)
    if z.ndim == 0:
        raise ValueError("logits must have a class axis (..., C)")
    C = z.shape[-1]
    tgt = _as_real_array("target", target)
    if tgt.dtype.kind not in "iu":
        if (tgt.dtype.kind == "f" and np.all(np.isfinite(tgt))
                and np.all(tgt == np.round(tgt))):
            tgt = tgt.astype(np.int64)
        else:
            raise TypeError(f"target must hold integer class indices, got dtype "
                            f"{tgt.dtype}")
    if tgt.shape != z.shape[:-1]:
        raise ValueError(f"target must have shape logits.shape[:-1] = {z.shape[:-1]}, "
                         f"got {tgt.shape}")
    if tgt.size and (tgt.min() < 0 or tgt.max() >= C):
        raise ValueError(f"target must lie in [0, {C}), got values in "
                         f"[{tgt.min()}, {tgt.max()}]")
    w = _term_weight(weight, tgt.shape)
    norm = _normalize(normalizer, w, tgt.shape)
    shifted = z - z.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    sumexp = exp.sum(axis=-1, keepdims=True)
    picked = np.take_along_axis(shifted, tgt[..., None], axis=-1)[..., 0]
    terms = np.log(sumexp[..., 0], dtype=np.float64) - picked
    grad = exp / sumexp  # softmax
    np.put_along_axis(grad, tgt[..., None],
                      np.take_along_axis(grad, tgt[..., None], axis=-1) - 1, axis=-1)
    return _reduce(terms, grad, w, norm)


def check_quantiles(quantiles, name="quantiles") -> np.ndarray:
    """``quantiles`` as a 1-D float64 array of distinct levels in (0, 1), increasing."""
    try:
        q = np.asarray(quantiles, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers in (0, 1), got "
                        f"{quantiles!r}") from None
    if q.ndim != 1 or q.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of levels in (0, 1), "
                         f"got shape {q.shape}")
    if not np.all(np.isfinite(q)) or np.any(q <= 0) or np.any(q >= 1):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {q.tolist()}")
    if np.any(np.diff(q) <= 0):
        raise ValueError(f"{name} must be increasing and distinct, got {q.tolist()}")
    return q


def _quantile_inputs(pred, target, quantiles, weight):
    p = _as_pred("pred", pred)
    q = check_quantiles(quantiles)
    if p.ndim == 0 or p.shape[-1] != q.size:
        raise ValueError(f"pred must have shape (..., n_quantiles={q.size}), got {p.shape}")
    t = _as_real_array("target", target).astype(p.dtype, copy=False)
    check_finite("target", t)
    if t.shape != p.shape[:-1]:
        raise ValueError(f"target must have shape pred.shape[:-1] = {p.shape[:-1]}, got "
                         f"{t.shape}")
    return p, t, q, _term_weight(weight, t.shape)


def pinball_loss(pred: ArrayLike, target: ArrayLike, quantiles: ArrayLike,
                 weight: Optional[ArrayLike] = None, *,
                 normalizer: Optional[float] = None) -> Tuple[float, np.ndarray]:
    """Pinball (quantile) loss of predicted quantiles and its (sub)gradient.

    For a level ``q`` and ``d = target - pred``, ``rho_q(d) = max(q d, (q - 1) d)``; the
    term of one target value is the mean of ``rho`` over the levels (so with the single
    level 0.5 it is half the absolute error).  Minimised by the true conditional
    quantiles.

    Parameters
    ----------
    pred : array_like, shape (..., n_quantiles)
        One predicted value per level for each target value.
    target : array_like, shape (...)
    quantiles : sequence of float
        Increasing levels in (0, 1).
    weight, normalizer
        As in :func:`mse_loss` (one term per target value).

    Returns
    -------
    loss : float
    grad : ndarray
        ``dloss/dpred`` (``-q`` below the target, ``1 - q`` above, 0 where equal; times
        the weight over the normalizer and the number of levels), shape of ``pred``.
    """
    p, t, q, w = _quantile_inputs(pred, target, quantiles, weight)
    norm = _normalize(normalizer, w, t.shape)
    d = t[..., None].astype(np.float64) - p
    terms = np.mean(np.maximum(q * d, (q - 1) * d), axis=-1)
    grad = (np.where(d > 0, -q, np.where(d < 0, 1 - q, 0.0)) / q.size).astype(p.dtype)
    return _reduce(terms, grad, w, norm)


def _softplus(a):
    return np.logaddexp(0.0, a)


def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def monotone_quantiles(raw: ArrayLike) -> np.ndarray:
    """Non-crossing quantiles from unconstrained values: ``q_0 = a_0`` and
    ``q_j = q_{j-1} + softplus(a_j)`` along the last axis.

    A network that outputs ``raw`` (..., n_quantiles) predicts quantiles that increase
    with the level whatever its weights: they never cross.  Returns float64.
    """
    a = _as_pred("raw", raw).astype(np.float64)
    if a.ndim == 0:
        raise ValueError("raw must have a quantile axis (..., n_quantiles)")
    steps = np.concatenate([a[..., :1], _softplus(a[..., 1:])], axis=-1)
    with np.errstate(over="ignore"):
        q = np.cumsum(steps, axis=-1)
    # (finite steps whose running sum passes 1.8e308: inf came back with only NumPy's
    # warning, and quantile_loss then blamed a "pred" its caller never passed)
    check_result("the quantiles (their cumulative sum)", q, hint="rescale the targets")
    return q


def quantile_loss(raw: ArrayLike, target: ArrayLike, quantiles: ArrayLike,
                  weight: Optional[ArrayLike] = None, *,
                  normalizer: Optional[float] = None) -> Tuple[float, np.ndarray]:
    """:func:`pinball_loss` of :func:`monotone_quantiles` ``(raw)``, with the gradient
    with respect to ``raw``: the loss of a network whose quantiles never cross (as
    cross-entropy on logits is the loss of a softmax output).

    Arguments as in :func:`pinball_loss`, with ``raw`` (..., n_quantiles) in place of
    ``pred``; the gradient has ``raw``'s shape and dtype.
    """
    a = _as_pred("raw", raw)
    pred = monotone_quantiles(a)
    loss, dq = pinball_loss(pred, target, quantiles, weight, normalizer=normalizer)
    # q_j = sum_{i<=j} s_i with s_0 = a_0, s_i = softplus(a_i): dL/ds_i = sum_{j>=i} dL/dq_j
    ds = np.cumsum(dq[..., ::-1], axis=-1)[..., ::-1]
    ds[..., 1:] *= _sigmoid(a[..., 1:].astype(np.float64))
    return loss, ds.astype(a.dtype, copy=False)


#: The regression losses by name, as the models' ``loss=`` argument accepts them.
LOSSES: Dict[str, Callable[..., Tuple[float, np.ndarray]]] = {"mse": mse_loss, "mae": mae_loss, "huber": huber_loss}
