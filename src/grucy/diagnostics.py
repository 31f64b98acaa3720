"""Diagnostics: look inside a GRU, and measure how far back its gradient reaches.

The point of a GRU's gates is that they keep the gradient alive across many steps
(docs/tutorial.rst derives it): the state update ``h_t = (1 - z) * n + z * h_{t-1}`` has
the step Jacobian

    dh_t/dh_{t-1} = diag(z) + diag(h_{t-1} - n) dz/dh + diag(1 - z) dn/dh,

so a unit whose update gate z is near 1 passes its state, and the gradient, through
unchanged; with z and r near 0 it forgets (the Jacobian is near 0: a reset); with z near
0 and r near 1 it is a plain tanh RNN unit, ``diag(1 - n^2) W_hn``, and the recurrent
weights decide.

- :func:`gates`: r, z, n and the new state of every layer, direction and step, exactly
  the numbers the kernels computed (:meth:`grucy.GRU.gates`);
- :func:`regimes`: how much of the time the units spend in each of those three regimes;
- :func:`state_jacobian`: dh_t/dh_{t-1} for every step and the norms of the products
  dh_T/dh_t, for a GRU or the plain RNN :class:`grucy.reference.RNN`;
- :func:`gradient_flow`: the norm of dLoss/dh_t for every step t of an input.

Each takes a layer (:class:`grucy.GRU`, :class:`grucy.reference.GRU`, and for
:func:`state_jacobian` and :func:`gradient_flow` :class:`grucy.reference.RNN`) or a
fitted model (Forecaster, GRUClassifier, GRURegressor, CharLM), read through its public
surface (``network_inputs``, ``net_``).  ``bench/gradient_flow.py`` and the tutorial
plot them over a few hundred weeks of the CO2 series.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from ._base import Gates, time_major_x
from ._validation import _flag, _real, _rng, as_float_array

__all__ = ["Gates", "REGIMES", "Regimes", "StateJacobian", "gates", "gradient_flow",
           "regimes", "state_jacobian"]

#: The tutorial's regimes of a GRU unit at one step, and what its state Jacobian does.
REGIMES: Dict[str, str] = {
    "carry": "z near 1: the state and its gradient pass through unchanged",
    "reset": "z and r near 0: the unit forgets, its gradient is cut",
    "rnn": "z near 0, r near 1: a plain tanh RNN unit, the recurrent weights decide",
    "mixed": "none of the three",
}


# -- what the functions read: a layer, or a model's network ------------------------------
def _is_model(obj):
    return callable(getattr(obj, "network_inputs", None))


def _is_layer(obj):
    return all(hasattr(obj, a) for a in ("forward", "backward", "hidden_size",
                                         "num_layers", "state_dict"))


def _layer_copy(layer, **changes):
    """A new layer of the same class from the public attributes named like its
    constructor's arguments, with ``changes``, and the same parameters."""
    params = inspect.signature(type(layer)).parameters
    kwargs = {name: getattr(layer, name) for name in params
              if name != "seed" and hasattr(layer, name)}
    kwargs.update({k: v for k, v in changes.items() if k in params})
    copy = type(layer)(**kwargs)
    copy.load_state_dict(layer.state_dict())
    return copy


def _network_and_input(model, x):
    """A fitted model's GRU (in a copy of its network, the model's dtype) and the GRU's
    input sequence for ``x`` (batch first)."""
    inputs, output_gradient = model.network_inputs(x, None)
    net = type(model.net_)(**model.net_.config)
    net.load_state_dict(model.net_.state_dict())
    x_gru, _, _ = net.gru_gradients(inputs, output_gradient)
    return net.gru, np.ascontiguousarray(x_gru)


def _layer_and_input(obj, x, what):
    """(layer, x as the layer reads it) for a layer or a fitted model."""
    if _is_model(obj):
        return _network_and_input(obj, x)
    if _is_layer(obj):
        return obj, x
    raise TypeError(f"{what} takes a grucy layer (grucy.GRU, grucy.reference.GRU or "
                    f"RNN) or a fitted Forecaster, GRUClassifier, GRURegressor or "
                    f"CharLM, got {type(obj).__name__}")


# -- gates --------------------------------------------------------------------------------
def gates(layer_or_model: Any, x: Any,
          lengths: Optional[ArrayLike] = None) -> List[List[Gates]]:
    """The gates r, z, n and the new state h of every layer, direction and step.

    Exactly the numbers the compiled kernels computed (they are copied out of the
    kernels' workspace, not recomputed; see :meth:`grucy.GRU.gates`).  Inference
    semantics: no dropout, and the layer or model is not changed.

    Parameters
    ----------
    layer_or_model : grucy.GRU, grucy.reference.GRU or a fitted model
        A model is read through its network: its GRU, fed what ``predict`` would feed
        it (scaled, encoded).
    x
        For a layer its input, (T, B, I) or (B, T, I) with ``batch_first``; for a model
        what :func:`gradient_flow` reads (a Forecaster's history, an estimator's X, a
        CharLM's text).
    lengths : array_like (B,), optional
        Sequence lengths (layers only), packed-sequence semantics.

    Returns
    -------
    list of list of Gates
        ``result[layer][direction]``: a :class:`Gates` ``(r, z, n, h)`` of arrays laid
        out like the layer's output (time-major (T, B, H), batch-first (B, T, H); a
        model's GRU is batch-first), NaN past each sequence's end.

    Examples
    --------
    >>> import numpy as np, grucy
    >>> from grucy.diagnostics import gates
    >>> gru = grucy.GRU(input_size=2, hidden_size=3, num_layers=2, seed=0)
    >>> x = np.ones((5, 4, 2), np.float32)            # T=5 steps, B=4 sequences
    >>> g = gates(gru, x, lengths=[5, 3, 5, 1])
    >>> g[1][0].z.shape                               # layer 1, forward direction
    (5, 4, 3)
    >>> bool(np.isnan(g[0][0].r[3, 1]).all())         # sequence 1 ended after 3 steps
    True
    >>> y, _ = gru(x, lengths=[5, 3, 5, 1], training=False)
    >>> bool((g[1][0].h[:, 0] == y[:, 0]).all())      # the last layer's h is its y
    True
    """
    layer, x = _layer_and_input(layer_or_model, x, "gates")
    if lengths is not None and _is_model(layer_or_model):
        raise ValueError("lengths is for a layer's input; a model's input has none")
    if not callable(getattr(layer, "gates", None)):
        raise TypeError(f"gates needs a GRU layer (grucy.GRU or grucy.reference.GRU), "
                        f"got {type(layer).__name__}, which has no gates")
    return layer.gates(x, lengths=lengths)


class Regimes(NamedTuple):
    """Where a layer's units spend their time, in the regimes of :data:`REGIMES`."""

    #: regime -> fraction of all (sequence, step, unit) entries within ``near`` of it
    #: ("mixed": of none)
    fractions: Dict[str, float]
    #: regime -> fraction of the entries nearest to it (carry: distance 1 - z; reset:
    #: the distance of (z, r) from (0, 0); rnn: from (0, 1)); sums to 1
    nearest: Dict[str, float]
    #: (H,) each unit's regime: the one nearest to it at most of its steps
    units: np.ndarray
    #: regime -> fraction of the units labelled with it
    unit_fractions: Dict[str, float]
    #: (H,) each unit's mean update gate and mean reset gate over all its steps
    mean_z: np.ndarray
    mean_r: np.ndarray


_THREE = ("carry", "reset", "rnn")


def regimes(g: Gates, *, near: float = 0.1) -> Regimes:
    """Classify every unit and step of one layer and direction into the tutorial's
    regimes.

    Strictly (``fractions``): ``carry`` z >= 1 - near; ``reset`` z <= near and
    r <= near; ``rnn`` z <= near and r >= 1 - near; ``mixed`` anything else.  By the
    nearest regime (``nearest``, ``units``): the regime whose corner of the (z, r) square
    is nearest (z = 1 for carry, whatever r; (0, 0) for reset; (0, 1) for rnn).  Steps
    past a sequence's end (NaN) are not counted.

    Parameters
    ----------
    g : Gates
        One layer and direction of :func:`gates`.
    near : float, default 0.1
        How near 0 or 1 a gate must be for the strict classification.

    Returns
    -------
    Regimes

    Raises
    ------
    ValueError
        When ``g`` has no valid step (NaN everywhere): no unit has a regime.

    Examples
    --------
    >>> import numpy as np
    >>> from grucy.diagnostics import Gates, regimes
    >>> z = np.array([[[0.99, 0.02, 0.01, 0.3]]])     # one step, one sequence, 4 units
    >>> r = np.array([[[0.30, 0.05, 0.97, 0.4]]])
    >>> res = regimes(Gates(r=r, z=z, n=0 * z, h=0 * z))
    >>> res.units.tolist()
    ['carry', 'reset', 'rnn', 'reset']
    >>> res.fractions["carry"], res.fractions["mixed"]
    (0.25, 0.25)
    """
    near = _real("near", near)
    if not 0.0 < near < 0.5:
        raise ValueError(f"near must be in (0, 0.5), got {near}")
    if not (hasattr(g, "z") and hasattr(g, "r")):
        raise TypeError(f"g must be one Gates (gates(...)[layer][direction]), got "
                        f"{type(g).__name__}")
    z = np.asarray(g.z, dtype=np.float64)
    r = np.asarray(g.r, dtype=np.float64)
    H = z.shape[-1]
    z2, r2 = z.reshape(-1, H), r.reshape(-1, H)
    valid = ~np.isnan(z2[:, 0])
    if not valid.any():
        # with no step to count every unit would get the argmax of zero counts: 'carry'
        raise ValueError(f"g has no valid step: its gates are NaN everywhere (shape "
                         f"{z.shape}), so there is nothing to classify")
    z2, r2 = z2[valid], r2[valid]
    masks = {"carry": z2 >= 1 - near,
             "reset": (z2 <= near) & (r2 <= near),
             "rnn": (z2 <= near) & (r2 >= 1 - near)}
    masks["mixed"] = ~(masks["carry"] | masks["reset"] | masks["rnn"])
    total = max(z2.size, 1)
    fractions = {k: float(m.sum() / total) for k, m in masks.items()}
    distance = np.stack([1 - z2, np.hypot(z2, r2), np.hypot(z2, 1 - r2)])
    label = np.argmin(distance, axis=0)                      # (steps, H)
    nearest = {k: float(np.sum(label == i) / total) for i, k in enumerate(_THREE)}
    counts = np.stack([(label == i).sum(axis=0) for i in range(3)])   # (3, H)
    units = np.array(_THREE)[np.argmax(counts, axis=0)]
    unit_fractions = {k: float(np.mean(units == k)) for k in _THREE}
    return Regimes(fractions, nearest, units, unit_fractions, z2.mean(axis=0),
                   r2.mean(axis=0))


# -- state Jacobians -----------------------------------------------------------------------
class StateJacobian(NamedTuple):
    """dh_t/dh_{t-1} of one layer at every step, and how the products of them shrink.

    Index t - 1 holds step t = 1..T (h_0 is the initial state); B sequences.
    """

    #: (B, T, H, H): dh_t/dh_{t-1}; None when not kept (large H, ``matrices=False``)
    jacobian: Optional[np.ndarray]
    #: (B, T): the spectral norm (largest singular value) of dh_t/dh_{t-1}
    step_norm: np.ndarray
    #: (B, T): the spectral norm of dh_T/dh_t = J_T ... J_{t+1} (1 at t = T); with
    #: ``matrices=False`` the norm of u^T dh_T/dh_t for a unit vector u instead (the
    #: gradient reaching h_t of a loss whose gradient at h_T is u)
    product_norm: np.ndarray
    #: (B, T, H): the norm of each column of dh_T/dh_t, how much of the gradient at
    #: h_T reaches unit j at step t (None with ``matrices=False``)
    unit_norm: Optional[np.ndarray]


def _sigmoid_grad(a):
    return a * (1 - a)


def _gru_step_jacobians(W_hh, b_hh, reset_after, h_prev, r, z, n):
    """dh_t/dh_{t-1} for one step of every sequence: (B, H, H) in float64."""
    H = h_prev.shape[-1]
    W_hr, W_hz, W_hn = W_hh[:H], W_hh[H:2 * H], W_hh[2 * H:]
    dz = _sigmoid_grad(z)[:, :, None] * W_hz[None]        # dz/dh
    dr = _sigmoid_grad(r)[:, :, None] * W_hr[None]        # dr/dh
    if reset_after:
        a = h_prev @ W_hn.T + b_hh[2 * H:]                # W_hn h + b_hn
        da = a[:, :, None] * dr + r[:, :, None] * W_hn[None]
    else:  # n = tanh(... + W_hn (r * h) + b_hn)
        da = W_hn[None] @ (np.eye(H)[None] * r[:, None, :] + h_prev[:, :, None] * dr)
    dn = (1 - n * n)[:, :, None] * da
    J = (1 - z)[:, :, None] * dn + (h_prev - n)[:, :, None] * dz
    J[:, np.arange(H), np.arange(H)] += z
    return J


def _layer_steps(layer, x, h0):
    """Per layer: (h_prev, step-Jacobian function) for every step, batch-first, float64."""
    D = getattr(layer, "num_directions", 1)
    if D != 1:
        raise ValueError("state_jacobian needs a unidirectional layer (the state of a "
                         "bidirectional one at step t is not one vector)")
    L, H = layer.num_layers, layer.hidden_size
    batch_first = layer.batch_first
    B = np.shape(x)[0 if batch_first else 1]
    h0 = np.zeros((L, B, H)) if h0 is None else as_float_array("h0", h0, np.float64)
    if callable(getattr(layer, "gates", None)):
        per_layer = [g[0] for g in layer.gates(x, h0=h0)]
        news = [g.h for g in per_layer]
    elif callable(getattr(layer, "states", None)):  # grucy.reference.RNN
        per_layer, news = None, layer.states(x, h0=h0)
    else:
        raise TypeError(f"state_jacobian needs a GRU layer or grucy.reference.RNN, got "
                        f"{type(layer).__name__}")
    out = []
    for k in range(L):
        h = np.asarray(news[k], dtype=np.float64)
        if not batch_first:
            h = h.transpose(1, 0, 2)
        h_prev = np.concatenate([h0[k][:, None], h[:, :-1]], axis=1)
        W_ih, W_hh, b_ih, b_hh = (np.asarray(p, dtype=np.float64)
                                  for p in layer.layer_params(k, 0))
        if per_layer is None:
            out.append((h, _rnn_step(h, W_hh)))
        else:
            g = per_layer[k]
            r, z, n = (np.asarray(a, dtype=np.float64) for a in (g.r, g.z, g.n))
            if not batch_first:
                r, z, n = (a.transpose(1, 0, 2) for a in (r, z, n))
            out.append((h, _gru_step(W_hh, b_hh, layer.reset_after, h_prev, r, z, n)))
    return out


def _rnn_step(h, W_hh):
    """Step t's Jacobian of the tanh RNN: diag(1 - h_t^2) W_hh."""
    return lambda t: (1 - h[:, t] ** 2)[:, :, None] * W_hh[None]


def _gru_step(W_hh, b_hh, reset_after, h_prev, r, z, n):
    """Step t's Jacobian of a GRU layer from its gates."""
    return lambda t: _gru_step_jacobians(W_hh, b_hh, reset_after, h_prev[:, t], r[:, t],
                                         z[:, t], n[:, t])


def _spectral_norm(M):
    return np.linalg.svd(M, compute_uv=False)[..., 0]


def state_jacobian(layer_or_model: Any, x: Any, *, h0: Optional[ArrayLike] = None,
                   matrices: Optional[bool] = None,
                   seed: int = 0) -> List[StateJacobian]:
    """The Jacobian dh_t/dh_{t-1} of every step, and the norms of the products dh_T/dh_t.

    For each layer, with its input from the layer below held fixed: the derivative of
    its new state with respect to the state entering the step, computed in float64 from
    the gates the kernels computed (:func:`gates`; for the tanh RNN,
    ``diag(1 - h_t^2) W_hh``), checked against finite differences.  The product
    ``dh_T/dh_t = J_T ... J_{t+1}`` is what backpropagation through time multiplies a
    gradient at h_T by on its way back to step t: its norm says how much of the gradient
    survives T - t steps.

    Parameters
    ----------
    layer_or_model : grucy.GRU, grucy.reference.GRU, grucy.reference.RNN or a fitted model
        Unidirectional.  A model is read through its GRU, fed what ``predict`` would
        feed it, from the zero state.
    x
        As for :func:`gates`; every sequence runs all T steps (no lengths).
    h0 : array_like (num_layers, B, H), optional
        Initial state of a layer (default zeros).
    matrices : bool, optional
        Keep the (B, T, H, H) Jacobians and compute the products' spectral norms exactly
        (O(T B H^3)); default: when H <= 128.  False: per-step norms only, and the
        products' norms along one direction (see :class:`StateJacobian`).
    seed : int, default 0
        Draws the unit vector u of ``matrices=False``.

    Returns
    -------
    list of StateJacobian
        One per layer.

    Examples
    --------
    >>> import numpy as np, grucy
    >>> from grucy.diagnostics import state_jacobian
    >>> from grucy.reference import RNN
    >>> x = np.random.default_rng(0).standard_normal((1, 50, 1))   # B=1, T=50
    >>> gru = grucy.GRU(1, 8, batch_first=True, dtype="float64", seed=0)
    >>> rnn = RNN(1, 8, batch_first=True, dtype="float64", seed=0)
    >>> jg, = state_jacobian(gru, x)
    >>> jr, = state_jacobian(rnn, x)
    >>> jg.jacobian.shape, jg.product_norm.shape
    ((1, 50, 8, 8), (1, 50))
    >>> bool(jg.product_norm[0, 0] > jr.product_norm[0, 0])      # 49 steps back
    True
    """
    layer, x = _layer_and_input(layer_or_model, x, "state_jacobian")
    if _is_model(layer_or_model) and h0 is not None:
        raise ValueError("h0 is for a layer; a model's GRU starts from zeros")
    H = layer.hidden_size
    matrices = H <= 128 if matrices is None else _flag("matrices", matrices)
    rng = _rng(seed)
    results = []
    for h, step in _layer_steps(layer, x, h0):
        B, T = h.shape[:2]
        step_norm = np.empty((B, T))
        product_norm = np.empty((B, T))
        jac = np.empty((B, T, H, H) if matrices else (0, 0, 0, 0))
        unit = np.empty((B, T, H) if matrices else (0, 0, 0))
        if matrices:
            P = np.broadcast_to(np.eye(H), (B, H, H)).copy()      # dh_T/dh_T
        else:
            u = rng.standard_normal((B, H))
            P = u / np.linalg.norm(u, axis=1, keepdims=True)      # u^T dh_T/dh_t
        for t in range(T - 1, -1, -1):
            if matrices:
                product_norm[:, t] = _spectral_norm(P)
                unit[:, t] = np.linalg.norm(P, axis=1)
            else:
                product_norm[:, t] = np.linalg.norm(P, axis=1)
            J = step(t)
            step_norm[:, t] = _spectral_norm(J)
            if matrices:
                jac[:, t] = J
                P = P @ J
            else:
                P = np.einsum("bi,bij->bj", P, J)
        results.append(StateJacobian(jac if matrices else None, step_norm, product_norm,
                                     unit if matrices else None))
    return results


# -- gradient flow --------------------------------------------------------------------------
def _float64_copy(net):
    """The same network in float64, so that tiny gradients are not lost to rounding,
    without dropout (the gradient of the prediction: random masks made every call's
    numbers differ) and in full precision (bf16 needs float32)."""
    changes = {k: v for k, v in (("dropout", 0.0), ("precision", "fp32"))
               if k in net.config}
    copy = type(net)(**dict(net.config, dtype="float64", **changes))
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


def _layer_flow_inputs(layer, x, y, dh_n):
    """A float64, batch-first, dropout-free copy of a bare layer, its input and dh_n."""
    if y is not None:
        raise ValueError("y is a model's target; for a bare layer pass dh_n, the "
                         "gradient reaching h_n")
    gru = _layer_copy(layer, dtype="float64", batch_first=True, dropout=0.0,
                      precision="fp32")
    # checked as the layer's forward checks it (3-D, at least one step and one
    # sequence): an empty x would fail below with raw stacking or division errors
    x = time_major_x(x, layer.batch_first, layer.input_size)
    x = np.ascontiguousarray(x.transpose(1, 0, 2), dtype=np.float64)
    B = x.shape[0]
    D = getattr(layer, "num_directions", 1)
    shape = (layer.num_layers * D, B, layer.hidden_size)
    if dh_n is None:  # the loss: the top layer's final state summed, averaged over B
        dh_n = np.zeros(shape)
        dh_n[-D:] = 1.0 / B
    else:
        dh_n = as_float_array("dh_n", dh_n, np.float64)
        if dh_n.shape != shape:
            raise ValueError(f"dh_n must have the shape of h_n, {shape}, got "
                             f"{dh_n.shape}")
    return gru, x, None, dh_n


def gradient_flow(model: Any, x: Any, y: Optional[ArrayLike] = None, *,
                  dh_n: Optional[ArrayLike] = None) -> np.ndarray:
    """The norm of dLoss/dh_t for every step t = 1..T of ``x``.

    ``h_t`` is the GRU's state after step t (every layer: the state handed to step
    t + 1; after the last step, ``h_n``).  The norm is the Euclidean norm over layers,
    units and the batch.  Computed exactly, in float64 (a float64 copy of the network),
    by backpropagating from each step's state through the steps after it; O(T^2) GRU
    steps, a second or so for a few hundred steps of a small model.

    Parameters
    ----------
    model : a fitted model, or a layer
        A fitted Forecaster, GRUClassifier, GRURegressor or CharLM, or a bare layer
        (grucy.GRU, grucy.reference.GRU, grucy.reference.RNN).  Unidirectional.
    x
        What the model reads: for a Forecaster a history in data units ((m,) / (N, m)
        for a 1-D series, (m, k) / (N, m, k) otherwise), all m steps are read; for the
        estimators an X as for ``predict``; for a CharLM a str; for a layer its input
        (T, B, I), or (B, T, I) with ``batch_first`` (full length).
    y : optional
        The target.  Forecaster: the next ``horizon`` values after each history, loss =
        the model's training loss (scaled units); GRUClassifier: labels (cross-entropy);
        GRURegressor: targets (its loss).  None: the loss is the sum of the network's
        outputs averaged over the batch (the gradient of the prediction itself).  CharLM:
        always its training loss, the mean cross-entropy of predicting each next
        character of ``x``; ``y`` must be None.  A layer: None.
    dh_n : array_like, optional
        A layer only: the gradient of the loss at h_n, (num_layers, B, H).  Default:
        the loss is the top layer's final state summed over units and averaged over the
        batch (dh_n = 1/B there, 0 below).

    Returns
    -------
    ndarray, shape (T,)
        ``result[t - 1] = ||dLoss/dh_t||``.  For a model with an output at every step
        (a CharLM, an estimator with ``return_sequences=True``) the entries count only
        the gradient that flows back through time from the later steps, not the
        readout at step t itself, and the last entry is 0.

    Examples
    --------
    >>> import numpy as np, grucy
    >>> from grucy.diagnostics import gradient_flow
    >>> gru = grucy.GRU(1, 16, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((100, 1, 1))   # T=100, B=1
    >>> flow = gradient_flow(gru, x)
    >>> flow.shape
    (100,)
    >>> bool(flow[0] < flow[-1])        # 99 steps back, less is left
    True
    """
    if _is_model(model):
        if dh_n is not None:
            raise ValueError("dh_n is for a bare layer; a model's loss is given by y")
        inputs, output_gradient = model.network_inputs(x, y)
        if model.net_.gru.bidirectional:
            raise ValueError("gradient_flow needs a unidirectional GRU (the state of a "
                             "bidirectional one at step t is not one vector)")
        net = _float64_copy(model.net_)
        gru = net.gru
        x_gru, dy, dh_n = net.gru_gradients(inputs, output_gradient)
    elif _is_layer(model):
        if getattr(model, "bidirectional", False):
            raise ValueError("gradient_flow needs a unidirectional GRU (the state of a "
                             "bidirectional one at step t is not one vector)")
        gru, x_gru, dy, dh_n = _layer_flow_inputs(model, x, y, dh_n)
    else:
        raise TypeError(f"model must be a grucy Forecaster, GRUClassifier, GRURegressor "
                        f"or CharLM, or a layer (grucy.GRU, grucy.reference.GRU or RNN), "
                        f"got {type(model).__name__}")
    states = _states(gru, x_gru)
    grads = _suffix_gradients(gru, x_gru, states, dy, dh_n)
    # the state after the last step: what reaches h_n (nothing when only outputs are read)
    last = 0.0 if dh_n is None else np.linalg.norm(dh_n)
    return np.array([np.linalg.norm(g) for g in grads] + [last])

