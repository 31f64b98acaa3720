"""Small building blocks around the GRU layers: a dense layer and a loss.

Same explicit design as the GRU layers: ``forward`` caches what ``backward`` needs,
``backward`` returns the input gradient and *accumulates* parameter gradients into
``grads`` (call ``zero_grad()`` between steps); there is no autograd.
"""

from __future__ import annotations

import numpy as np

from ._base import _DTYPES, _positive_int, as_float_array

__all__ = ["Linear", "mse_loss"]


def _check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt.type not in _DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


class Linear:
    """``y = x @ weight.T + bias`` over the last axis, like ``torch.nn.Linear``.

    ``weight`` is (out_features, in_features) and ``bias`` (out_features,), initialised
    U(-1/sqrt(in_features), 1/sqrt(in_features)) from ``seed``.  ``x`` may have any
    number of leading axes: (..., in_features) -> (..., out_features).
    """

    def __init__(self, in_features, out_features, *, bias=True, dtype=np.float32,
                 seed=None):
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        self.dtype = _check_dtype(dtype)
        self.bias = bool(bias)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        self._params = {k: rng.uniform(-bound, bound, size=s).astype(self.dtype)
                        for k, s in shapes.items()}
        self.grads = {k: np.zeros_like(v) for k, v in self._params.items()}
        self._x = None

    # -- parameters -------------------------------------------------------------------
    @property
    def weight(self):
        return self._params["weight"]

    def parameters(self):
        """The parameter arrays themselves, in the order of ``grads``; update in place."""
        return list(self._params.values())

    def named_parameters(self):
        return list(self._params.items())

    def zero_grad(self):
        for g in self.grads.values():
            g.fill(0)

    def state_dict(self):
        """Copies of the parameters (``weight``, ``bias``), as in PyTorch."""
        return {k: v.copy() for k, v in self._params.items()}

    def load_state_dict(self, state_dict):
        """Copy parameters in place; keys and shapes must match, else nothing changes."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        missing = [k for k in self._params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in self._params]
        if missing or unexpected:
            raise ValueError(
                f"state_dict keys do not match: missing {missing}, unexpected {unexpected}"
            )
        new = {}
        for k, target in self._params.items():
            value = state_dict[k]
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            arr = as_float_array(f"state_dict[{k!r}]", value, self.dtype)
            if arr.shape != target.shape:
                raise ValueError(
                    f"state_dict[{k!r}] has shape {arr.shape}, expected {target.shape}"
                )
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"state_dict[{k!r}] contains NaN or inf")
            new[k] = arr
        for k, arr in new.items():
            self._params[k][...] = arr

    # -- calling ----------------------------------------------------------------------
    def forward(self, x, training=True):
        x = as_float_array("x", x, self.dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., in_features={self.in_features}), "
                             f"got {x.shape}")
        # y = x @ W^T + b
        y = x @ self._params["weight"].T
        if self.bias:
            y += self._params["bias"]
        self._x = x if training else None
        return y

    def backward(self, dy):
        """Gradient w.r.t. the input of the last training forward; accumulates ``grads``."""
        if self._x is None:
            raise RuntimeError("backward() needs a preceding forward(..., training=True)")
        x = self._x
        out_shape = x.shape[:-1] + (self.out_features,)
        dy = as_float_array("dy", dy, self.dtype)
        if dy.shape != out_shape:
            raise ValueError(f"dy must have the shape of y, {out_shape}, got {dy.shape}")
        x2 = x.reshape(-1, self.in_features)
        dy2 = dy.reshape(-1, self.out_features)
        # dW += dy^T x ; db += sum_rows dy ; dx = dy @ W
        self.grads["weight"] += dy2.T @ x2
        if self.bias:
            self.grads["bias"] += dy2.sum(axis=0)
        self._x = None
        return dy @ self._params["weight"]

    def __call__(self, x, training=True):
        return self.forward(x, training=training)

    def __repr__(self):
        extra = "" if self.bias else ", bias=False"
        return (f"Linear({self.in_features}, {self.out_features}{extra}, "
                f"dtype={self.dtype.name})")


def mse_loss(pred, target):
    """Mean squared error over all elements and its gradient: ``(loss, dloss/dpred)``.

    ``loss = mean((pred - target)**2)`` as a Python float; the gradient has the shape and
    dtype of ``pred`` (``2 * (pred - target) / pred.size``).
    """
    pred = np.asarray(pred)
    if pred.dtype.kind != "f":
        pred = pred.astype(np.float64)
    target = as_float_array("target", target, pred.dtype)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} "
                         f"and {target.shape}")
    if pred.size == 0:
        raise ValueError("mse_loss of empty arrays is undefined")
    diff = pred - target
    loss = float(np.mean(np.square(diff, dtype=np.float64)))
    return loss, (2.0 / pred.size) * diff
