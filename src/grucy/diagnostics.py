"""Diagnostics: how far back in time does the gradient reach?

The point of a GRU's gates is that they keep the gradient alive across many steps (the
update gate z can carry the state, and its gradient, through unchanged).
:func:`gradient_flow` measures it: the norm of dLoss/dh_t for every step t of an input.
``bench/gradient_flow.py`` plots it over a few hundred weeks of the CO2 series
(``docs/gradient_flow.md``).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from numpy.typing import ArrayLike

from .losses import LOSSES, cross_entropy_loss
from .models import CharLM, CharNet, Forecaster, GRUClassifier, GRURegressor, ReadoutNet

__all__ = ["gradient_flow"]


def _float64_copy(net):
    """The same network in float64, so that tiny gradients are not lost to rounding."""
    copy = type(net)(**dict(net.config, dtype="float64"))
    copy.load_state_dict(net.state_dict())
    return copy


def _states(gru, x):
    """States of every layer after each step: (T, L, B, H), from one-step GRU calls."""
    T = x.shape[1]
    h = None
    states = []
    for t in range(T):
        _, h = gru.forward(x[:, t:t + 1], h0=h, training=False)
        states.append(h)
    return np.stack(states)


def _suffix_gradients(gru, x, states, dy, dh_n):
    """dLoss/d(state after step t) for t = 1..T-1, from the steps after t.

    The state after step t only influences steps t+1..T, so rerunning those steps from
    that state and backpropagating ``dy`` (the loss gradient of the outputs of steps
    t+1..T) and ``dh_n`` gives exactly the gradient at that state (the returned dh0).
    """
    T = x.shape[1]
    grads = []
    for t in range(1, T):
        gru.forward(x[:, t:], h0=states[t - 1], training=True)
        _, dh0 = gru.backward(np.ascontiguousarray(dy[:, t:]), dh_n)
        grads.append(dh0)
    gru.zero_grad()
    return grads


def gradient_flow(model: Any, x: Any, y: Optional[ArrayLike] = None) -> np.ndarray:
    """The norm of dLoss/dh_t for every step t = 1..T of ``x``.

    ``h_t`` is the GRU's state after step t (every layer: the state handed to step
    t + 1; after the last step, ``h_n``).  The norm is the Euclidean norm over layers,
    units and the batch.  Computed exactly, in float64 (a float64 copy of the network),
    by backpropagating from each step's state through the steps after it; O(T^2) GRU
    steps, a second or so for a few hundred steps of a small model.

    Parameters
    ----------
    model : Forecaster, GRUClassifier, GRURegressor or CharLM (fitted)
        A unidirectional GRU.
    x
        What the model reads: for a Forecaster a history in data units ((m,) / (N, m)
        for a 1-D series, (m, k) / (N, m, k) otherwise), all m steps are read; for the
        estimators an X as for ``predict``; for a CharLM a str.
    y : optional
        The target.  Forecaster: the next ``horizon`` values after each history, loss =
        the model's training loss (scaled units); GRUClassifier: labels (cross-entropy);
        GRURegressor: targets (its loss).  None: the loss is the sum of the network's
        outputs averaged over the batch (the gradient of the prediction itself).  CharLM:
        always its training loss, the mean cross-entropy of predicting each next
        character of ``x``; ``y`` must be None.

    Returns
    -------
    ndarray, shape (T,)
        ``result[t - 1] = ||dLoss/dh_t||``.  For a CharLM the last entry is 0 (the state
        after the last character feeds nothing); its entries count only the gradient that
        flows back through time, not the readout at step t itself.
    """
    if isinstance(model, CharLM):
        return _charlm_flow(model, x, y)
    if not isinstance(model, (Forecaster, GRUClassifier, GRURegressor)):
        raise TypeError(f"model must be a grucy Forecaster, GRUClassifier, GRURegressor "
                        f"or CharLM, got {type(model).__name__}")
    model._check_is_fitted()
    net = model.net_
    if not isinstance(net, ReadoutNet) or net.gru.bidirectional:
        raise ValueError("gradient_flow needs a unidirectional GRU (the state of a "
                         "bidirectional one at step t is not one vector)")
    if isinstance(model, Forecaster):
        X, _ = model._histories(x)
    else:
        X = (model._check_X(x, fitting=False) - model.x_mean_) / model.x_scale_
    X = np.ascontiguousarray(X, dtype=np.float64)
    net = _float64_copy(net)
    B = X.shape[0]
    out = net.forward(X, training=True)
    dout = _output_gradient(model, out, y, B)
    dfeat = net.head.backward(dout)
    gru = net.gru
    L, H = gru.num_layers, gru.hidden_size
    dh_n = np.zeros((L, B, H))
    dh_n[-1] = dfeat
    states = _states(gru, X)
    dy = np.zeros(X.shape[:2] + (H,))
    grads = _suffix_gradients(gru, X, states, dy, dh_n) + [dh_n]
    return np.array([np.linalg.norm(g) for g in grads])


def _output_gradient(model, out, y, B):
    """dLoss/d(network output) for the loss gradient_flow documents."""
    if y is None:
        return np.full(out.shape, 1.0 / B)
    y = np.asarray(y)
    if isinstance(model, GRUClassifier):
        idx = np.searchsorted(model.classes_, y.reshape(-1))
        if np.any(idx >= len(model.classes_)) or np.any(model.classes_[
                np.minimum(idx, len(model.classes_) - 1)] != y.reshape(-1)):
            raise ValueError("y holds labels the classifier was not trained on")
        return cross_entropy_loss(out, idx)[1]
    if isinstance(model, GRURegressor):
        target = (y.reshape(B, -1).astype(np.float64) - model.y_mean_) / model.y_scale_
        return LOSSES[model.loss](out, target)[1]
    # Forecaster: y holds the next horizon values after each history (data units)
    k, h = model.n_series_, model.horizon_
    target = (y.astype(np.float64).reshape(B, h, k) - model.mean_) / model.scale_
    return LOSSES[model.loss](out, target.reshape(B, h * k))[1]


def _charlm_flow(model, text, y):
    if y is not None:
        raise ValueError("a CharLM's loss is predicting the next characters of x; pass "
                         "y=None")
    codes = model.encode(text)
    if len(codes) < 2:
        raise ValueError("text needs at least 2 characters")
    net: CharNet = _float64_copy(model.net_)
    inputs, targets = codes[None, :-1], codes[None, 1:]
    emb = net.embedding.forward(inputs, training=False)
    gru = net.gru
    y_all, _ = gru.forward(emb, training=False)
    logits = net.head.forward(y_all, training=True)
    _, dlogits = cross_entropy_loss(logits, targets)
    dy = net.head.backward(dlogits)
    states = _states(gru, emb)
    grads = _suffix_gradients(gru, emb, states, dy, None)
    norms = [np.linalg.norm(g) for g in grads]
    return np.array(norms + [0.0])
