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
    t+1..T; None: the outputs are not read) and ``dh_n`` gives exactly the gradient at
    that state (the returned dh0).
    """
    T = x.shape[1]
    grads = []
    for t in range(1, T):
        gru.forward(x[:, t:], h0=states[t - 1], training=True)
        _, dh0 = gru.backward(None if dy is None else np.ascontiguousarray(dy[:, t:]),
                              dh_n)
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
    if not callable(getattr(model, "network_inputs", None)):
        raise TypeError(f"model must be a grucy Forecaster, GRUClassifier, GRURegressor "
                        f"or CharLM, got {type(model).__name__}")
    inputs, output_gradient = model.network_inputs(x, y)
    if model.net_.gru.bidirectional:
        raise ValueError("gradient_flow needs a unidirectional GRU (the state of a "
                         "bidirectional one at step t is not one vector)")
    net = _float64_copy(model.net_)
    gru = net.gru
    x_gru, dy, dh_n = net.gru_gradients(inputs, output_gradient)
    states = _states(gru, x_gru)
    grads = _suffix_gradients(gru, x_gru, states, dy, dh_n)
    # the state after the last step: what reaches h_n (nothing when only outputs are read)
    last = 0.0 if dh_n is None else np.linalg.norm(dh_n)
    return np.array([np.linalg.norm(g) for g in grads] + [last])
