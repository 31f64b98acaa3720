"""Small building blocks around the GRU layers: a dense layer and a loss.

Same explicit design as the GRU layers: ``forward`` caches what ``backward`` needs,
``backward`` returns the input gradient and *accumulates* parameter gradients into
``grads`` (call ``zero_grad()`` between steps); there is no autograd.
"""

from __future__ import annotations

import numpy as np

from ._base import (ParameterHolder, PerThreadState, _as_real_array, _flag, _positive_int,
                    _rng, as_float_array, check_dtype, check_finite, check_memory,
                    exclusive)

__all__ = ["Linear", "mse_loss"]


class Linear(ParameterHolder):
    """``y = x @ weight.T + bias`` over the last axis, like ``torch.nn.Linear``.

    ``weight`` is (out_features, in_features) and ``bias`` (out_features,), initialised
    U(-1/sqrt(in_features), 1/sqrt(in_features)) from ``seed``.  ``x`` may have any
    number of leading axes: (..., in_features) -> (..., out_features).
    """

    def __init__(self, in_features, out_features, *, bias=True, dtype=np.float32,
                 seed=None):
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        self.dtype = check_dtype(dtype)
        self.bias = _flag("bias", bias)
        what = f"Linear({self.in_features}, {self.out_features})"
        n = self.in_features * self.out_features
        check_memory(what, n * (2 * self.dtype.itemsize + 8))
        rng = _rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        self._params = {k: rng.uniform(-bound, bound, size=s).astype(self.dtype)
                        for k, s in shapes.items()}
        self._init_grads()
        self._x = None

    _x = PerThreadState()  # the input kept for backward

    # -- parameters -------------------------------------------------------------------
    @property
    def weight(self):
        return self._params["weight"]

    # -- calling ----------------------------------------------------------------------
    @exclusive
    def forward(self, x, training=True):
        """``x @ weight.T + bias`` for x (..., in_features); keeps x when ``training``.

        x is cast to the layer's dtype (integers and floats of any width); NaN or inf
        in x is refused with ValueError, as are parameters made non-finite in place.
        """
        self._x = None
        training = _flag("training", training)
        given = x
        x = _as_real_array("x", x)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., in_features={self.in_features}), "
                             f"got {x.shape}")
        rows = x.size // self.in_features
        check_memory(lambda: f"Linear.forward of x with shape {x.shape}",
                     rows * (self.in_features + self.out_features) * self.dtype.itemsize)
        x = as_float_array("x", x, self.dtype)
        check_finite("x", x)
        self._check_parameters()
        # y = x @ W^T + b
        y = x @ self._params["weight"].T
        if self.bias:
            y += self._params["bias"]
        self._check_result("the output", y)
        if training and np.may_share_memory(x, given):
            x = x.copy()  # backward must not see the caller's later edits of x
        self._x = x if training else None
        return y

    @exclusive
    def backward(self, dy):
        """Gradient w.r.t. the input of the last training forward; accumulates ``grads``."""
        if self._x is None:
            raise RuntimeError("backward() needs a preceding forward(..., training=True)")
        x = self._x
        out_shape = x.shape[:-1] + (self.out_features,)
        dy = as_float_array("dy", dy, self.dtype)
        if dy.shape != out_shape:
            raise ValueError(f"dy must have the shape of y, {out_shape}, got {dy.shape}")
        check_finite("dy", dy)
        self._check_parameters(grads=True)
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
    dtype of ``pred`` (``2 * (pred - target) / pred.size``).  NaN or inf in either
    array is refused with ValueError (a missing target value must be dropped, not
    averaged in).
    """
    pred = _as_real_array("pred", pred)
    if pred.dtype.kind != "f":
        pred = pred.astype(np.float64)
    target = as_float_array("target", target, pred.dtype)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} "
                         f"and {target.shape}")
    if pred.size == 0:
        raise ValueError("mse_loss of empty arrays is undefined")
    check_finite("pred", pred)
    check_finite("target", target)
    diff = pred - target
    loss = float(np.mean(np.square(diff, dtype=np.float64)))
    return loss, (2.0 / pred.size) * diff
