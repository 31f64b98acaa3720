"""What every GRU layer shares: configuration, parameters, validation, dropout masks.

The compiled layer (``grucy.GRU``) and the NumPy reference (``grucy.reference.GRU``) both
derive from :class:`GRUBase`; they differ only in how they compute ``forward`` and
``backward``.  Keeping validation and parameter handling here means the two cannot drift
apart in what they accept, while their arithmetic stays independent (the reference is the
test oracle of the kernels).
"""

from __future__ import annotations

import numbers

import numpy as np

_DTYPES = (np.float32, np.float64)


def _positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def as_float_array(name, value, dtype):
    """``value`` as an array of ``dtype``: real numbers are cast, anything else refused."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise TypeError(
            f"{name} must be an array of real numbers, got dtype {arr.dtype}"
        )
    return arr.astype(dtype, copy=False)


def check_dtype(dtype):
    """``dtype`` as np.dtype float32 or float64, or a TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt.type not in _DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


class ParameterHolder:
    """Named parameter arrays with gradient accumulators of the same names.

    Subclasses fill ``self._params`` (name -> array of ``self.dtype``) and then call
    ``_init_grads()``.  Optimizers update the arrays of :meth:`parameters` in place.
    """

    def _init_grads(self):
        self.grads = {k: np.zeros_like(v) for k, v in self._params.items()}

    def parameters(self):
        """The parameter arrays themselves, in the order of ``grads``; update in place."""
        return list(self._params.values())

    def named_parameters(self):
        return list(self._params.items())

    def state_dict(self):
        """Copies of the parameters under PyTorch's names and shapes."""
        return {k: v.copy() for k, v in self._params.items()}

    def load_state_dict(self, state_dict):
        """Copy parameters in (in place, so arrays from :meth:`parameters` stay valid).

        Keys and shapes must match exactly; nothing is changed unless all of them do.
        Values may be NumPy arrays or anything ``np.asarray`` accepts (a detached CPU tensor).
        """
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

    def zero_grad(self):
        for g in self.grads.values():
            g.fill(0)

    def generators(self):
        """The random generators this object draws from while training (dropout masks).

        The training loop saves their states in checkpoints so that a resumed run draws
        exactly the masks the uninterrupted run would have drawn.
        """
        return []


def param_names(num_layers, bidirectional, bias):
    """Parameter names in PyTorch's order (the order of ``torch.nn.GRU.state_dict()``)."""
    names = []
    for layer in range(num_layers):
        for suffix in ("", "_reverse") if bidirectional else ("",):
            names += [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
            if bias:
                names += [f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"]
    return names


class GRUBase(ParameterHolder):
    """Configuration, parameters and input checks of a multi-layer GRU.

    Parameters follow ``torch.nn.GRU``: ``weight_ih_l{k}`` (3H, I_k), ``weight_hh_l{k}``
    (3H, H), ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (3H,), ``_reverse`` for the second
    direction, gates stacked in the order r, z, n.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, *, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, reset_after=True,
                 dtype=np.float32, seed=None):
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        if isinstance(dropout, (bool, np.bool_)) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        dt = check_dtype(dtype)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.reset_after = bool(reset_after)
        self.dtype = dt
        self.num_directions = 2 if self.bidirectional else 1

        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        self._params = {}
        for name in param_names(self.num_layers, self.bidirectional, self.bias):
            shape = self._param_shape(name)
            self._params[name] = rng.uniform(-bound, bound, size=shape).astype(dt)
        self._init_grads()
        # Dropout masks come from their own stream so that two layers built with the same
        # seed (the compiled one and the reference) draw identical masks.
        self._dropout_rng = np.random.default_rng(rng.integers(2**63))
        self._cache = None

    # -- parameters -------------------------------------------------------------------
    def _param_shape(self, name):
        H = self.hidden_size
        layer = int(name.split("_l")[1].split("_")[0])
        in_size = self.input_size if layer == 0 else self.num_directions * H
        if name.startswith("weight_ih"):
            return (3 * H, in_size)
        if name.startswith("weight_hh"):
            return (3 * H, H)
        return (3 * H,)

    def layer_params(self, layer, direction):
        """(W_ih, W_hh, b_ih, b_hh) of one layer and direction; zero biases when bias=False."""
        sfx = f"l{layer}" + ("_reverse" if direction else "")
        p = self._params
        w_ih, w_hh = p[f"weight_ih_{sfx}"], p[f"weight_hh_{sfx}"]
        if self.bias:
            return w_ih, w_hh, p[f"bias_ih_{sfx}"], p[f"bias_hh_{sfx}"]
        zeros = np.zeros(3 * self.hidden_size, self.dtype)
        return w_ih, w_hh, zeros, zeros

    def layer_grads(self, layer, direction):
        """Gradient accumulators matching :meth:`layer_params` (scratch zeros when bias=False)."""
        sfx = f"l{layer}" + ("_reverse" if direction else "")
        g = self.grads
        if self.bias:
            return (g[f"weight_ih_{sfx}"], g[f"weight_hh_{sfx}"],
                    g[f"bias_ih_{sfx}"], g[f"bias_hh_{sfx}"])
        return (g[f"weight_ih_{sfx}"], g[f"weight_hh_{sfx}"],
                np.zeros(3 * self.hidden_size, self.dtype),
                np.zeros(3 * self.hidden_size, self.dtype))

    # -- input checks -----------------------------------------------------------------
    def _check_inputs(self, x, h0, lengths):
        """Validate and convert; returns time-major x (T, B, I), h0 (L*D, B, H), lengths.

        ``lengths`` comes back as an int64 array, or None when every sequence is full.
        """
        x = as_float_array("x", x, self.dtype)
        if x.ndim != 3:
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"x must be 3-D {layout}, got shape {x.shape}")
        if self.batch_first:
            x = x.transpose(1, 0, 2)
        T, B, I = x.shape
        if T == 0 or B == 0:
            raise ValueError(f"x must have at least one step and one sequence, got {x.shape}")
        if I != self.input_size:
            raise ValueError(f"x has {I} features on its last axis, expected input_size="
                             f"{self.input_size}")
        if not np.all(np.isfinite(x)):
            raise ValueError("x contains NaN or inf")
        state_shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        if h0 is None:
            h0 = np.zeros(state_shape, self.dtype)
        else:
            h0 = as_float_array("h0", h0, self.dtype)
            if h0.shape != state_shape:
                raise ValueError(f"h0 must have shape (num_layers*num_directions, B, H) = "
                                 f"{state_shape}, got {h0.shape}")
            if not np.all(np.isfinite(h0)):
                raise ValueError("h0 contains NaN or inf")
        if lengths is not None:
            lengths = self._check_lengths(lengths, T, B)
            if np.all(lengths == T):
                lengths = None
        return x, h0, lengths

    @staticmethod
    def _check_lengths(lengths, T, B):
        if hasattr(lengths, "detach"):
            lengths = lengths.detach().cpu().numpy()
        arr = np.asarray(lengths)
        if arr.dtype.kind not in "iu":
            if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
        if arr.shape != (B,):
            raise ValueError(f"lengths must have shape (B,) = ({B},), got {arr.shape}")
        if arr.min() < 1 or arr.max() > T:
            raise ValueError(f"lengths must lie in [1, T={T}], got min {arr.min()}, "
                             f"max {arr.max()}")
        return arr.astype(np.int64)

    def _check_backward(self, dy, dh_n):
        """Validate gradients against the cached forward; returns time-major dy, dh_n."""
        if self._cache is None:
            raise RuntimeError("backward() needs a preceding forward(..., training=True); "
                               "each training forward supports one backward")
        T, B = self._cache["T"], self._cache["B"]
        DH = self.num_directions * self.hidden_size
        dy = as_float_array("dy", dy, self.dtype)
        expected = (B, T, DH) if self.batch_first else (T, B, DH)
        if dy.shape != expected:
            raise ValueError(f"dy must have the shape of y, {expected}, got {dy.shape}")
        if self.batch_first:
            dy = dy.transpose(1, 0, 2)
        state_shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        if dh_n is None:
            dh_n = np.zeros(state_shape, self.dtype)
        else:
            dh_n = as_float_array("dh_n", dh_n, self.dtype)
            if dh_n.shape != state_shape:
                raise ValueError(f"dh_n must have the shape of h_n, {state_shape}, "
                                 f"got {dh_n.shape}")
        return dy, dh_n

    def generators(self):
        return [self._dropout_rng]

    def _dropout_mask(self, shape):
        """Inverted-dropout mask (kept entries scaled by 1/(1-p)) of ``shape``."""
        keep = self._dropout_rng.random(shape) >= self.dropout
        return (keep / (1.0 - self.dropout)).astype(self.dtype)

    # -- saving (grucy.save / grucy.load) ----------------------------------------------
    def _get_config(self):
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "bias": self.bias,
                "batch_first": self.batch_first, "dropout": self.dropout,
                "bidirectional": self.bidirectional, "reset_after": self.reset_after,
                "dtype": self.dtype.name}

    def _get_arrays(self):
        return self.state_dict()

    @classmethod
    def _from_saved(cls, config, arrays):
        obj = cls(**config)
        obj.load_state_dict(arrays)
        return obj

    # -- calling ----------------------------------------------------------------------
    def forward(self, x, h0=None, lengths=None, training=True):  # pragma: no cover
        raise NotImplementedError

    def backward(self, dy, dh_n=None):  # pragma: no cover
        raise NotImplementedError

    def __call__(self, x, h0=None, lengths=None, training=True):
        return self.forward(x, h0=h0, lengths=lengths, training=training)

    def __repr__(self):
        opts = [f"{self.input_size}", f"{self.hidden_size}"]
        if self.num_layers != 1:
            opts.append(f"num_layers={self.num_layers}")
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False), ("reset_after", True)):
            if getattr(self, name) != default:
                opts.append(f"{name}={getattr(self, name)}")
        opts.append(f"dtype={self.dtype.name}")
        return f"{type(self).__name__}({', '.join(opts)})"
