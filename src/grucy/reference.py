"""Plain NumPy GRU (the benchmark's NumPy baseline and the test oracle of the kernels),
and a plain tanh RNN to compare it with.

Written for readability, as a NumPy user would: a Python loop over time steps, one layer
and one direction at a time, one recurrent matmul per step (two for the reset-before
form); the input projection ``X @ W_ih^T`` and the weight gradients, which do not depend
on the recurrence, are single matmuls outside the loop.  The compiled layer must agree with this
module to rounding error; keep the arithmetic here independent of the kernels.

Semantics follow ``torch.nn.GRU`` (packed sequences when ``lengths`` is given); see
docs/design.md, section 1, for the two forms of the cell and the backward pass of one step.

:class:`RNN` is the cell the GRU's gates improve on, ``h' = tanh(W_ih x + b_ih + W_hh h +
b_hh)`` (``torch.nn.RNN`` with ``nonlinearity="tanh"``), for teaching and comparison
only (the tutorial's gradient plots, :mod:`grucy.diagnostics`): exact gradients, checked
against finite differences, but no compiled kernels behind it.
"""

from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit as _sigmoid  # overflow-free logistic, keeps float32

from ._base import Gates, GRUBase, _read_only_zeros
from ._params import exclusive
from .io import register

__all__ = ["GRU", "RNN", "Gates"]


def _step_mask(lengths, T, B):
    """Boolean (T, B): True where step t lies inside sequence b."""
    if lengths is None:
        return np.ones((T, B), dtype=bool)
    return np.arange(T)[:, None] < lengths[None, :]


def _direction_forward(x, h0, valid, W_ih, W_hh, b_ih, b_hh, reset_after, reverse):
    """Run one direction of one layer over all steps.

    x (T, B, I), h0 (B, H), valid (T, B).  Returns y (T, B, H), h_n (B, H) and the
    per-step workspace the backward pass needs.

    Padded steps (valid False) leave the state untouched and output 0.  The reverse
    direction walks t = T-1 .. 0; a sequence of length len therefore starts its reverse
    pass at t = len-1, exactly like PyTorch's packed sequences.
    """
    T, B, _ = x.shape
    H = h0.shape[1]
    dtype = h0.dtype
    # The input side of all three gates for every step in one GEMM: (T, B, 3H).
    gx = x @ W_ih.T + b_ih
    W_hn, b_hn = W_hh[2 * H:], b_hh[2 * H:]
    # Reset-after: one matmul gives the hidden side of all three gates.  Reset-before:
    # r must be known before W_hn (r * h), so only the r and z rows go first.
    W_first = W_hh if reset_after else W_hh[:2 * H]
    b_first = b_hh if reset_after else b_hh[:2 * H]

    y = np.zeros((T, B, H), dtype)
    h_prev = np.zeros((T, B, H), dtype)  # state entering each step
    r = np.zeros((T, B, H), dtype)
    z = np.zeros((T, B, H), dtype)
    n = np.zeros((T, B, H), dtype)
    # reset-after: W_hn h + b_hn (multiplied by r);  reset-before: r * h (fed to W_hn)
    hn_or_rh = np.zeros((T, B, H), dtype)

    h = h0.copy()
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        g = gx[t]
        gh = h @ W_first.T + b_first
        r_t = _sigmoid(g[:, :H] + gh[:, :H])
        z_t = _sigmoid(g[:, H:2 * H] + gh[:, H:2 * H])
        if reset_after:
            extra = gh[:, 2 * H:]  # W_hn h + b_hn
            n_t = np.tanh(g[:, 2 * H:] + r_t * extra)
        else:
            extra = r_t * h
            n_t = np.tanh(g[:, 2 * H:] + extra @ W_hn.T + b_hn)
        h_new = (1 - z_t) * n_t + z_t * h

        h_prev[t], r[t], z[t], n[t], hn_or_rh[t] = h, r_t, z_t, n_t, extra
        keep = valid[t][:, None]
        h = np.where(keep, h_new, h)
        y[t] = np.where(keep, h_new, 0)

    cache = dict(x=x, valid=valid, h_prev=h_prev, r=r, z=z, n=n, hn_or_rh=hn_or_rh,
                 reverse=reverse)
    return y, h, cache


def _direction_backward(dy, dh_n, cache, W_ih, W_hh, grads, reset_after):
    """Exact BPTT through one direction of one layer.

    dy (T, B, H) is the gradient w.r.t. this direction's outputs, dh_n (B, H) w.r.t. its
    final state.  Accumulates into ``grads`` = (dW_ih, dW_hh, db_ih, db_hh) and returns
    (dx (T, B, I), dh0 (B, H)).
    """
    x, valid = cache["x"], cache["valid"]
    h_prev, r, z, n, hn_or_rh = (cache[k] for k in ("h_prev", "r", "z", "n", "hn_or_rh"))
    T, B, H = h_prev.shape
    dW_ih, dW_hh, db_ih, db_hh = grads
    W_rz, W_hn = W_hh[:2 * H], W_hh[2 * H:]

    dGx = np.zeros((T, B, 3 * H), x.dtype)  # gradient w.r.t. gx = x W_ih^T + b_ih
    # Gradient w.r.t. the hidden-side pre-activations W_hh @ (h or r*h) + b_hh; the weight
    # gradients are one matmul each after the loop.
    dGh = np.zeros((T, B, 3 * H), x.dtype)
    dh = dh_n.copy()
    # Walk the steps in the opposite order of the forward pass.
    steps = range(T) if cache["reverse"] else range(T - 1, -1, -1)
    for t in steps:
        keep = valid[t][:, None]
        # Outputs past a sequence's end are constant 0: their gradient is dropped.
        dh_t = dh + np.where(keep, dy[t], 0)
        h, r_t, z_t, n_t = h_prev[t], r[t], z[t], n[t]

        dn = dh_t * (1 - z_t)
        dz = dh_t * (h - n_t)
        dh_back = dh_t * z_t
        da_n = dn * (1 - n_t * n_t)
        da_z = dz * z_t * (1 - z_t)
        if reset_after:
            hn = hn_or_rh[t]  # W_hn h + b_hn
            da_r = da_n * hn * r_t * (1 - r_t)
            dgh = np.concatenate([da_r, da_z, da_n * r_t], axis=1)
            dh_back = dh_back + dgh @ W_hh
        else:
            d_rh = da_n @ W_hn  # gradient w.r.t. r * h
            da_r = d_rh * h * r_t * (1 - r_t)
            dgh = np.concatenate([da_r, da_z, da_n], axis=1)
            dh_back = dh_back + d_rh * r_t + dgh[:, :2 * H] @ W_rz
        dGh[t] = np.where(keep, dgh, 0)
        dGx[t] = np.where(keep, np.concatenate([da_r, da_z, da_n], axis=1), 0)
        # A padded step passed the state through unchanged, so does its gradient.
        dh = np.where(keep, dh_back, dh_t)

    # Weight gradients, hoisted out of the loop like the input projection of the forward.
    TB = T * B
    dGh2 = dGh.reshape(TB, 3 * H)
    h_all = h_prev.reshape(TB, H)
    dW_hh[:2 * H] += dGh2[:, :2 * H].T @ h_all
    # reset-after: W_hn multiplies h; reset-before: it multiplies r * h
    dW_hh[2 * H:] += dGh2[:, 2 * H:].T @ (h_all if reset_after else hn_or_rh.reshape(TB, H))
    db_hh += dGh2.sum(axis=0)
    dW_ih += dGx.reshape(TB, 3 * H).T @ x.reshape(TB, -1)
    db_ih += dGx.reshape(TB, 3 * H).sum(axis=0)
    dx = dGx @ W_ih
    return dx, dh


@register(kind="grucy.reference.GRU")
class GRU(GRUBase):
    """Multi-layer, optionally bidirectional GRU in plain NumPy (same API as ``grucy.GRU``)."""

    @exclusive
    def forward(self, x, h0=None, lengths=None, training=True):
        x, h0, lengths = self._check_inputs(x, h0, lengths, training)
        T, B, _ = x.shape
        D, H = self.num_directions, self.hidden_size
        valid = _step_mask(lengths, T, B)
        use_dropout = training and self.dropout > 0

        # Copy so that a caller mutating x between forward and backward cannot change dW_ih.
        layer_input = x.copy() if training else x
        h_n = np.zeros((self.num_layers * D, B, H), self.dtype)
        masks, caches = [], []
        for layer in range(self.num_layers):
            if layer > 0 and use_dropout:
                # Masks are drawn layer 1, 2, ... so a same-seed compiled layer matches.
                mask = self._dropout_mask((T, B, D * H))
                layer_input = layer_input * mask
                masks.append(mask)
            else:
                masks.append(None)
            outputs = []
            for direction in range(D):
                W_ih, W_hh, b_ih, b_hh = self.layer_params(layer, direction)
                y_d, h_d, cache = _direction_forward(
                    layer_input, h0[layer * D + direction], valid, W_ih, W_hh, b_ih, b_hh,
                    self.reset_after, reverse=bool(direction))
                outputs.append(y_d)
                h_n[layer * D + direction] = h_d
                caches.append(cache)
            layer_input = np.concatenate(outputs, axis=2)
        y = layer_input

        # h_n is NaN whenever any output is (NaN propagates through the recurrence).
        self._check_result("the output", h_n)
        self._cache = (dict(T=T, B=B, masks=masks, caches=caches, valid=valid,
                            weights=self._forward_weights()) if training else None)
        if self.batch_first:
            y = np.ascontiguousarray(y.transpose(1, 0, 2))
        return y, h_n

    @exclusive
    def backward(self, dy=None, dh_n=None):
        """Backpropagate the last training forward; returns ``(dx, dh0)``.

        dy has y's shape (None: zeros, when only ``dh_n`` flows back), dh_n h_n's (None:
        zeros).  Parameter gradients are added to ``grads``.
        """
        dy, dh_n = self._check_backward(dy, dh_n)
        cache = self._cache
        D, H = self.num_directions, self.hidden_size
        dh0 = np.zeros_like(dh_n)

        d_out = dy  # gradient w.r.t. the current layer's output, (T, B, D*H)
        for layer in range(self.num_layers - 1, -1, -1):
            d_in = None
            for direction in range(D):
                idx = layer * D + direction
                W_ih, W_hh = cache["weights"][idx]  # the forward's weights
                dx_d, dh0[idx] = _direction_backward(
                    d_out[:, :, direction * H:(direction + 1) * H], dh_n[idx],
                    cache["caches"][idx], W_ih, W_hh, self.layer_grads(layer, direction),
                    self.reset_after)
                d_in = dx_d if d_in is None else d_in + dx_d
            if cache["masks"][layer] is not None:
                d_in = d_in * cache["masks"][layer]
            self._check_backward_result(layer, d_in, dh0)
            d_out = d_in
        dx = d_out

        self._cache = None
        if self.batch_first:
            dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
        return dx, dh0

    def gates(self, x: ArrayLike, h0: Optional[ArrayLike] = None,
              lengths: Optional[ArrayLike] = None) -> List[List[Gates]]:
        """The gates r, z, n and the new state h of every layer, direction and step.

        Runs an inference forward (no dropout) of ``x`` (arguments as for
        :meth:`forward`) on a copy of the layer, so this layer's pending backward is
        kept.  Returns ``result[layer][direction]``, a :class:`Gates` of arrays laid out
        like y ((T, B, H), or (B, T, H) with ``batch_first``), NaN past each sequence's
        end.  The same numbers the compiled layer's :meth:`grucy.GRU.gates` gives, to
        rounding.
        """
        probe = self._without_dropout()
        probe.forward(x, h0, lengths, training=True)
        cache = probe._cache
        probe._cache = None
        valid = cache["valid"][:, :, None]
        result = []
        for layer in range(self.num_layers):
            directions = []
            for direction in range(self.num_directions):
                c = cache["caches"][layer * self.num_directions + direction]
                h = (1 - c["z"]) * c["n"] + c["z"] * c["h_prev"]
                directions.append(Gates(*(self._steps_layout(np.where(valid, a, np.nan))
                                          for a in (c["r"], c["z"], c["n"], h))))
            result.append(directions)
        return result

    def _steps_layout(self, a):
        """(T, B, H) to the layout of y."""
        return np.ascontiguousarray(a.transpose(1, 0, 2)) if self.batch_first else a


def _rnn_direction_forward(x, h0, valid, W_ih, W_hh, b_ih, b_hh):
    """One layer of the tanh RNN over all steps: y (T, B, H), h_n (B, H), workspace."""
    T, B, _ = x.shape
    gx = x @ W_ih.T + b_ih
    y = np.zeros((T, B, W_hh.shape[0]), h0.dtype)
    h_prev = np.zeros_like(y)  # the state entering each step
    h_new = np.zeros_like(y)   # what each step computed (past the end: not kept)
    h = h0.copy()
    for t in range(T):
        h_prev[t] = h
        h_new[t] = np.tanh(gx[t] + h @ W_hh.T + b_hh)
        keep = valid[t][:, None]
        h = np.where(keep, h_new[t], h)
        y[t] = np.where(keep, h_new[t], 0)
    return y, h, dict(x=x, valid=valid, h_prev=h_prev, h_new=h_new)


def _rnn_direction_backward(dy, dh_n, cache, W_ih, W_hh, grads):
    """Exact BPTT through one layer of the tanh RNN; accumulates ``grads`` = (dW_ih,
    dW_hh, db_ih, db_hh) and returns (dx, dh0).

    With a = W_ih x + b_ih + W_hh h + b_hh and h' = tanh(a):  da = dh' (1 - h'^2),
    dh = da W_hh, and the weight gradients are sums of outer products over the steps.
    """
    x, valid, h_prev, h_new = (cache[k] for k in ("x", "valid", "h_prev", "h_new"))
    T, B, H = h_prev.shape
    dW_ih, dW_hh, db_ih, db_hh = grads
    dA = np.zeros((T, B, H), x.dtype)
    dh = dh_n.copy()
    for t in range(T - 1, -1, -1):
        keep = valid[t][:, None]
        dh_t = dh + np.where(keep, dy[t], 0)
        da = np.where(keep, dh_t * (1 - h_new[t] * h_new[t]), 0)
        dA[t] = da
        # a padded step passed the state through unchanged, so does its gradient
        dh = np.where(keep, da @ W_hh, dh_t)
    dA2 = dA.reshape(T * B, H)
    dW_ih += dA2.T @ x.reshape(T * B, -1)
    dW_hh += dA2.T @ h_prev.reshape(T * B, H)
    db_ih += dA2.sum(axis=0)
    db_hh += dA2.sum(axis=0)
    return dA @ W_ih, dh


@register(kind="grucy.reference.RNN")
class RNN(GRUBase):
    """Plain (Elman) tanh RNN in NumPy, for teaching and comparison with the GRU.

    ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``: ``torch.nn.RNN`` with
    ``nonlinearity="tanh"``, with the same parameter names (``weight_ih_l{k}`` (H, I_k),
    ``weight_hh_l{k}`` (H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (H,)), shapes,
    initialisation (U(-1/sqrt(H), 1/sqrt(H))) and packed-sequence semantics for
    ``lengths``.  Everything else is :class:`GRU`'s API: ``forward`` returns ``(y,
    h_n)``, ``backward`` ``(dx, dh0)`` with exact gradients (checked against finite
    differences) added to ``grads``, ``parameters()``, ``state_dict()``, ``grucy.save``.

    Its gradient through time is a product of ``diag(1 - h_t^2) W_hh`` per step, which
    shrinks or grows geometrically: the vanishing gradient the GRU's gates avoid
    (:func:`grucy.diagnostics.state_jacobian` measures both).  Unidirectional, no
    dropout, no compiled kernels: not meant for production.

    Parameters
    ----------
    input_size, hidden_size : int
    num_layers : int, default 1
    bias : bool, default True
    batch_first : bool, default False
    dtype : float32 or float64, default float32
    seed : int or None
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 bias: bool = True, batch_first: bool = False, dtype: Any = np.float32,
                 seed: Optional[int] = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias=bias,
                         batch_first=batch_first, dtype=dtype, seed=seed)

    def _param_shape(self, name):
        shape = super()._param_shape(name)  # a GRU's: three gates of H rows
        return (shape[0] // 3,) + shape[1:]

    def layer_params(self, layer: int, direction: int = 0
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(W_ih, W_hh, b_ih, b_hh) of one layer; zero biases when bias=False."""
        w_ih, w_hh, b_ih, b_hh = super().layer_params(layer, direction)
        if not self.bias:
            b_ih = b_hh = _read_only_zeros(self.hidden_size, self.dtype)
        return w_ih, w_hh, b_ih, b_hh

    def layer_grads(self, layer: int, direction: int = 0
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Gradient accumulators matching :meth:`layer_params`."""
        grads = super().layer_grads(layer, direction)
        if self.bias:
            return grads
        H = self.hidden_size
        return grads[0], grads[1], np.zeros(H, self.dtype), np.zeros(H, self.dtype)

    def _get_config(self):
        config = super()._get_config()
        for key in ("dropout", "bidirectional", "reset_after"):
            del config[key]
        return config

    @exclusive
    def forward(self, x: ArrayLike, h0: Optional[ArrayLike] = None,
                lengths: Optional[ArrayLike] = None,
                training: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """Run the RNN; returns ``(y, h_n)``, shapes and semantics as :meth:`GRU.forward`."""
        x, h0, lengths = self._check_inputs(x, h0, lengths, training)
        T, B, _ = x.shape
        valid = _step_mask(lengths, T, B)
        layer_input = x.copy() if training else x
        h_n = np.zeros((self.num_layers, B, self.hidden_size), self.dtype)
        caches = []
        for layer in range(self.num_layers):
            layer_input, h_n[layer], cache = _rnn_direction_forward(
                layer_input, h0[layer], valid, *self.layer_params(layer))
            caches.append(cache)
        self._check_result("the output", h_n)
        self._cache = (dict(T=T, B=B, caches=caches, weights=self._forward_weights())
                       if training else None)
        y = layer_input
        if self.batch_first:
            y = np.ascontiguousarray(y.transpose(1, 0, 2))
        return y, h_n

    @exclusive
    def backward(self, dy: Optional[ArrayLike] = None,
                 dh_n: Optional[ArrayLike] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Backpropagate the last training forward; returns ``(dx, dh0)`` (as
        :meth:`GRU.backward`)."""
        dy, dh_n = self._check_backward(dy, dh_n)
        cache, self._cache = self._cache, None
        dh0 = np.zeros_like(dh_n)
        d_out = dy
        for layer in range(self.num_layers - 1, -1, -1):
            W_ih, W_hh = cache["weights"][layer]  # the forward's weights
            d_out, dh0[layer] = _rnn_direction_backward(
                d_out, dh_n[layer], cache["caches"][layer], W_ih, W_hh,
                self.layer_grads(layer))
            self._check_backward_result(layer, d_out, dh0)
        dx = d_out
        if self.batch_first:
            dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
        return dx, dh0

    def states(self, x: ArrayLike, h0: Optional[ArrayLike] = None,
               lengths: Optional[ArrayLike] = None) -> List[np.ndarray]:
        """The new state of every layer at every step (inference): ``result[layer]``
        laid out like y, NaN past each sequence's end.  (The RNN has no gates; this is
        its counterpart of :meth:`GRU.gates`, for :func:`grucy.diagnostics.state_jacobian`.)
        """
        probe = self._without_dropout()
        probe.forward(x, h0, lengths, training=True)
        cache, probe._cache = probe._cache, None
        result = []
        for c in cache["caches"]:
            h = np.where(c["valid"][:, :, None], c["h_new"], np.nan)
            result.append(np.ascontiguousarray(h.transpose(1, 0, 2)) if self.batch_first
                          else h)
        return result
