"""What every GRU layer shares: configuration, parameters, validation, dropout masks.

The compiled layer (``grucy.GRU``) and the NumPy reference (``grucy.reference.GRU``) both
derive from :class:`GRUBase`; they differ only in how they compute ``forward`` and
``backward``.  Keeping validation and parameter handling here means the two cannot drift
apart in what they accept, while their arithmetic stays independent (the reference is the
test oracle of the kernels).  Pure NumPy: imports without the compiled kernels.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, List, NamedTuple, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ._limits import check_int32, check_memory
from ._params import ParameterHolder, PerThreadState, _names
from ._validation import (_as_real_array, _finite, _flag, _integer, _positive_int, _rng,
                          as_float_array, check_dtype, check_finite, check_result,
                          state_array)
# (layer.py, the compiled layer, imports exclusive from here too)
from ._params import exclusive  # noqa: F401


@functools.lru_cache(maxsize=64)
def _read_only_zeros(n, dtype):
    """One shared, read-only zero vector per (length, dtype): the biases of a layer built
    with ``bias=False``.  Made once instead of per call, and read-only so that nothing
    (a kernel, a caller) can write into an array every such layer shares."""
    zeros = np.zeros(n, dtype)
    zeros.flags.writeable = False
    return zeros


def param_names(num_layers, bidirectional, bias):
    """Parameter names in PyTorch's order (the order of ``torch.nn.GRU.state_dict()``)."""
    names = []
    for layer in range(num_layers):
        for suffix in ("", "_reverse") if bidirectional else ("",):
            names += [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
            if bias:
                names += [f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"]
    return names


def time_major_x(x, batch_first, input_size):
    """x as a real array (T, B, I) (a view of a batch-first x), checked against a layer:
    3-D, at least one step and one sequence, ``input_size`` features."""
    x = _as_real_array("x", x)
    if x.ndim != 3:
        layout = "(B, T, I)" if batch_first else "(T, B, I)"
        raise ValueError(f"x must be 3-D {layout}, got shape {x.shape}")
    given = x.shape  # (the user's layout in the messages)
    if batch_first:
        x = x.transpose(1, 0, 2)
    T, B, I = x.shape
    if T == 0 or B == 0:
        raise ValueError(f"x must have at least one step and one sequence, got {given}")
    if I != input_size:
        raise ValueError(f"x has {I} features on its last axis, expected input_size="
                         f"{input_size}")
    return x


class GRUBase(ParameterHolder):
    """Configuration, parameters and input checks of a multi-layer GRU.

    Parameters follow ``torch.nn.GRU``: ``weight_ih_l{k}`` (3H, I_k), ``weight_hh_l{k}``
    (3H, H), ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (3H,), ``_reverse`` for the second
    direction, gates stacked in the order r, z, n.

    What every call checks (README, "Guarantees"): inputs of any real dtype are cast to
    ``dtype`` (bool, complex, object and strings are refused with TypeError); any memory
    layout gives bit-identical results and inputs are never modified; NaN or inf in x,
    h0, dy, dh_n or the parameters raises ValueError, as does a result that overflowed;
    sizes beyond memory or the kernels' 32-bit indices raise SizeLimitError before
    anything is allocated.  backward() uses the latest forward() of the same thread,
    which must have been a successful training forward; a call while another thread is
    inside forward/backward of the same layer raises RuntimeError.
    """

    _cache = PerThreadState()

    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    dropout: float
    bidirectional: bool
    reset_after: bool
    dtype: np.dtype
    num_directions: int
    _dropout_rng: np.random.Generator

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, reset_after: bool = True,
                 dtype: DTypeLike = np.float32, seed: Any = None) -> None:
        self._configure(input_size, hidden_size, num_layers, bias=bias,
                        batch_first=batch_first, dropout=dropout,
                        bidirectional=bidirectional, reset_after=reset_after, dtype=dtype)
        self._check_size()
        rng = _rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        self._params = {}
        for name in param_names(self.num_layers, self.bidirectional, self.bias):
            shape = self._param_shape(name)
            self._params[name] = rng.uniform(-bound, bound, size=shape).astype(self.dtype)
        self._init_grads()
        # Dropout masks come from their own stream so that two layers built with the same
        # seed (the compiled one and the reference) draw identical masks.
        self._dropout_rng = np.random.default_rng(rng.integers(2**63))
        self._cache = None

    def _configure(self, input_size: int, hidden_size: int, num_layers: int = 1, *,
                   bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                   bidirectional: bool = False, reset_after: bool = True,
                   dtype: DTypeLike = np.float32) -> None:
        """Validate and store the options (what ``__init__`` and a load share)."""
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        if isinstance(dropout, (bool, np.bool_)) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        dt = check_dtype(dtype)
        self.bias = _flag("bias", bias)
        self.batch_first = _flag("batch_first", batch_first)
        self.dropout = float(dropout)
        self.bidirectional = _flag("bidirectional", bidirectional)
        self.reset_after = _flag("reset_after", reset_after)
        self.dtype = dt
        self.num_directions = 2 if self.bidirectional else 1

    def _param_count(self):
        """Values of all parameters (closed form: no list of names, whatever the size)."""
        H, D, L, I = self.hidden_size, self.num_directions, self.num_layers, self.input_size
        per_direction = 3 * H * H + (6 * H if self.bias else 0)
        return D * (3 * H * I + per_direction) + (L - 1) * D * (3 * H * D * H + per_direction)

    def _check_size(self, loading=False):
        """Refuse, before allocating, parameters the kernels cannot index or memory
        cannot hold: the parameters, their gradients and the float64 draw of the
        initialisation (``loading``: only the gradients, the parameters are a file's
        arrays)."""
        H, D, L = self.hidden_size, self.num_directions, self.num_layers
        what = f"GRU(input_size={self.input_size}, hidden_size={H}, num_layers={L})"
        widest = max(self.input_size, D * H if L > 1 else 1, H)
        check_int32(what, {"3*hidden_size*max(input_size, hidden_size, "
                           "num_directions*hidden_size)": 3 * H * widest})
        values = self._param_count()
        check_memory(what, values * self.dtype.itemsize if loading else
                     values * 2 * self.dtype.itemsize + 8 * 3 * H * widest)

    def _call_bytes(self, T, B, training, cast=True, ordered=True, sorted_rows=False):
        """An upper bound on the bytes one forward (and its backward) allocates, for x
        needing a cast or a C-ordered copy, rows sorted by length or not.  (The NumPy
        reference's own; the compiled layer counts its kernels' buffers exactly, see
        ``grucy.GRU._call_bytes``.)"""
        H, D, L, I = self.hidden_size, self.num_directions, self.num_layers, self.input_size
        N, widest = T * B, max(I, D * H)
        x_copies = int(cast) + int(ordered or sorted_rows) + int(training)
        # per step of one direction: the gates, the candidate, the state and its input
        per_direction = N * (3 * H + 3 * H + 2 * H) + N * widest
        outputs = N * D * H * (3 * L if training else 2)  # outputs, masks, masked inputs
        total = (x_copies + 1) * N * I + outputs + (L * D if training else 1) * per_direction
        if training:  # backward: the gates' gradients, dx of two layers, dy
            total += N * 6 * H + 2 * N * widest + N * D * H + 2 * L * D * B * H
        return (total + 3 * L * D * B * H) * self.dtype.itemsize + self._weight_bytes()

    def _weight_bytes(self):
        """Bytes of the weights (not the biases): what a training forward keeps for its
        backward (:meth:`_forward_weights`)."""
        H, D, L, I = self.hidden_size, self.num_directions, self.num_layers, self.input_size
        return (D * 3 * H * (I + H) + (L - 1) * D * 3 * H * (D * H + H)) * self.dtype.itemsize

    def _forward_weights(self):
        """Copies of (W_ih, W_hh) per layer and direction, for the backward of this
        forward: gradients belong to the weights the forward ran with, even when the
        parameters change in between (load_state_dict, an optimizer step, edits)."""
        # Copied into the same arrays at every training forward (only the pending
        # forward's cache reads them): fresh copies page-faulted 4.7 MB in 2 ms a step
        # at 64x50x256x512, against 0.4 ms into warm memory.
        params = [self.layer_params(layer, direction)[:2]
                  for layer in range(self.num_layers)
                  for direction in range(self.num_directions)]
        snap = self.__dict__.get("_weight_snapshot")
        if snap is None or [[(a.shape, a.dtype) for a in p] for p in snap] != \
                [[(w.shape, w.dtype) for w in p] for p in params]:
            snap = [tuple(np.empty_like(w) for w in p) for p in params]
            self._weight_snapshot = snap
        for dst, src in zip(snap, params):
            for d, w in zip(dst, src):
                np.copyto(d, w)
        return snap

    def _check_stream(self, batch_size):
        """Before a stream allocates its state and buffers: sizes, memory, parameters
        (a stream then reads the parameters in place without checking them per step)."""
        H, L, B = self.hidden_size, self.num_layers, batch_size

        def what():
            return f"a stream of batch_size={B}"
        check_int32(what, {"batch_size*3*hidden_size": B * 3 * H,
                           "num_layers*batch_size*hidden_size": L * B * H,
                           "batch_size*input_size": B * self.input_size})
        check_memory(what, (3 * L * B * H + 6 * B * H + 2 * B * self.input_size)
                     * self.dtype.itemsize)
        self._check_parameters()

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

    def _suffix(self, layer, direction):
        """The parameter names' suffix of ``layer`` and ``direction``, both checked (a
        direction of 2 or -1 read as the reverse one; a layer out of range was a bare
        KeyError)."""
        # (forward, step and stream ask for every layer on every call: plain valid ints
        # go straight through)
        if (type(layer) is int and type(direction) is int and 0 <= layer < self.num_layers
                and 0 <= direction < self.num_directions):
            return f"l{layer}" + ("_reverse" if direction else "")
        layer, direction = _integer("layer", layer), _integer("direction", direction)
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be in 0..{self.num_layers - 1}, got {layer}")
        if not 0 <= direction < self.num_directions:
            raise ValueError(f"direction must be in 0..{self.num_directions - 1} "
                             f"(bidirectional={self.bidirectional}), got {direction}")
        return f"l{layer}" + ("_reverse" if direction else "")

    def layer_params(self, layer: int, direction: int
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(W_ih, W_hh, b_ih, b_hh) of one layer and direction; zero biases when bias=False."""
        sfx = self._suffix(layer, direction)
        p = self._params
        w_ih, w_hh = p[f"weight_ih_{sfx}"], p[f"weight_hh_{sfx}"]
        if self.bias:
            return w_ih, w_hh, p[f"bias_ih_{sfx}"], p[f"bias_hh_{sfx}"]
        zeros = _read_only_zeros(3 * self.hidden_size, self.dtype)
        return w_ih, w_hh, zeros, zeros

    def layer_grads(self, layer: int, direction: int
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Gradient accumulators matching :meth:`layer_params`.

        With ``bias=False`` the kernels still add bias gradients somewhere: into fresh
        scratch arrays (written, so never the shared read-only zeros of layer_params).
        """
        sfx = self._suffix(layer, direction)
        g = self.grads
        if self.bias:
            return (g[f"weight_ih_{sfx}"], g[f"weight_hh_{sfx}"],
                    g[f"bias_ih_{sfx}"], g[f"bias_hh_{sfx}"])
        return (g[f"weight_ih_{sfx}"], g[f"weight_hh_{sfx}"],
                np.zeros(3 * self.hidden_size, self.dtype),
                np.zeros(3 * self.hidden_size, self.dtype))

    # -- input checks -----------------------------------------------------------------
    def _initial_state(self, h0, shape, layout, name="h0"):
        """``h0`` validated as a finite array of ``shape`` in the layer's dtype (zeros
        for None); ``layout`` names the axes in the error message, ``name`` the
        argument."""
        return state_array(name, h0, shape, self.dtype, f"shape {layout} = {shape}")

    def _check_inputs(self, x, h0, lengths, training=True):
        """Validate and convert; returns time-major x (T, B, I), h0 (L*D, B, H), lengths.

        ``lengths`` comes back as an int64 array, or None when every sequence is full.
        Starts by forgetting the previous forward: backward() always refers to the
        latest forward call, and a refused call leaves nothing to backpropagate.
        """
        self._cache = None
        _flag("training", training)
        x = time_major_x(x, self.batch_first, self.input_size)
        T, B, I = x.shape
        H, D = self.hidden_size, self.num_directions
        shape = x.shape

        def what():
            mode = "training" if training else "inference"
            return f"a {mode} forward of x with shape {shape} (T, B, I)"
        check_int32(what, {"T*B": T * B, "B*3*hidden_size": B * 3 * H,
                           "B*max(input_size, num_directions*hidden_size)":
                           B * max(I, D * H)})
        # the copies of x the call makes: a cast, a C-ordered time-major one (or the
        # rows sorted by length)
        check_memory(what, self._call_bytes(T, B, training, cast=x.dtype != self.dtype,
                                            ordered=not x.flags.c_contiguous,
                                            sorted_rows=lengths is not None))
        x = as_float_array("x", x, self.dtype)
        check_finite("x", x)
        h0 = self._initial_state(h0, (self.num_layers * self.num_directions, B,
                                      self.hidden_size), "(num_layers*num_directions, B, H)")
        self._check_parameters()
        if lengths is not None:
            lengths = self._check_lengths(lengths, T, B)
            if np.all(lengths == T):
                lengths = None
        return x, h0, lengths

    @staticmethod
    def _check_lengths(lengths, T, B):
        if hasattr(lengths, "detach"):
            lengths = lengths.detach().cpu().numpy()
        try:
            arr = np.asarray(lengths)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"lengths must be a sequence of B={B} integers ({exc})") from None
        if arr.dtype.kind not in "iu" and not (
                arr.dtype.kind == "f" and np.all(np.isfinite(arr))
                and np.all(arr == np.round(arr))):
            raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
        if arr.shape != (B,):
            raise ValueError(f"lengths must have shape (B,) = ({B},), got {arr.shape}")
        # (the range is checked in the given dtype: a cast first would wrap 1e300 or
        # 2**64-1 around to some other integer)
        if arr.min() < 1 or arr.max() > T:
            raise ValueError(f"lengths must lie in [1, T={T}], got min {arr.min():g}, "
                             f"max {arr.max():g}")
        return arr.astype(np.int64)

    def _check_backward(self, dy, dh_n):
        """Validate gradients against the cached forward; returns time-major dy, dh_n.

        ``dy=None`` (only ``dh_n`` flows back, as for a readout of the final state)
        comes back as zeros of y's time-major shape that occupy no memory: a read-only
        view, every row of it the same shared zero vector (stride 0 on the time and
        batch axes).
        """
        if self._cache is None:
            raise RuntimeError("backward() needs a preceding forward(..., training=True); "
                               "each training forward supports one backward")
        T, B = self._cache["T"], self._cache["B"]
        DH = self.num_directions * self.hidden_size
        if dy is None:
            dy = np.broadcast_to(_read_only_zeros(DH, self.dtype), (T, B, DH))
        else:
            dy = as_float_array("dy", dy, self.dtype)
            expected = (B, T, DH) if self.batch_first else (T, B, DH)
            if dy.shape != expected:
                raise ValueError(f"dy must have the shape of y, {expected}, got "
                                 f"{dy.shape}")
            check_finite("dy", dy)
            if self.batch_first:
                dy = dy.transpose(1, 0, 2)
        state_shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        dh_n = state_array("dh_n", dh_n, state_shape, self.dtype,
                           f"the shape of h_n, {state_shape}")
        self._check_parameters(grads=True)
        return dy, dh_n

    def _check_backward_result(self, layer, dx, dh):
        """After the backward of ``layer`` (its directions, its dropout mask): a NaN or
        inf in the gradients it made is an overflow (its inputs were finite), raised
        naming the layer and the array (NumericOverflowError), never returned.  (Runs on
        every backward: names are made only on failure, nothing else is allocated.)"""
        D = self.num_directions
        bad = None
        for direction in range(D):
            sfx = f"_l{layer}_reverse" if direction else f"_l{layer}"
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                g = self.grads.get(kind + sfx)
                if g is not None and bad is None and not _finite(g):
                    bad = (f"grads[{kind + sfx!r}]", g)
        if bad is None and not _finite(dh[layer * D:(layer + 1) * D]):
            bad = ("the gradient of its initial state", dh[layer * D:(layer + 1) * D])
        if bad is None and not _finite(dx):
            bad = ("the gradient of its input", dx)
        if bad is not None:
            check_result(f"{type(self).__name__}.backward, layer {layer} of "
                         f"{self.num_layers}: {bad[0]}", bad[1],
                         f"dy or dh_n are too large for {self.dtype} (scale the loss "
                         f"down); the gradients accumulated in grads are then not "
                         f"finite: zero_grad() before the next backward")

    def generators(self) -> List[np.random.Generator]:
        return [self._dropout_rng]

    def _dropout_mask(self, shape):
        """Inverted-dropout mask (kept entries scaled by 1/(1-p)) of ``shape``.

        Drawn in blocks of rows of the first axis (the same numbers as one draw of the
        whole shape), so that no float64 array of the whole shape is ever made."""
        mask = np.empty(shape, self.dtype)
        flat = mask.reshape(shape[0], -1)
        scale = self.dtype.type(1.0 / (1.0 - self.dropout))
        rows = max(1, (1 << 18) // max(1, flat.shape[1]))
        for start in range(0, flat.shape[0], rows):
            block = flat[start:start + rows]
            np.greater_equal(self._dropout_rng.random(block.shape), self.dropout, out=block)
            block *= scale
        return mask

    # -- saving (grucy.save / grucy.load) ----------------------------------------------
    def _get_config(self):
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "bias": self.bias,
                "batch_first": self.batch_first, "dropout": self.dropout,
                "bidirectional": self.bidirectional, "reset_after": self.reset_after,
                "dtype": self.dtype.name}

    def _get_arrays(self):
        # A file load_state_dict would refuse is not written in the first place.
        for k, p in self._params.items():
            check_finite(f"parameter {k!r}", p)
        return self.state_dict()

    @classmethod
    def _from_saved(cls, config, arrays):
        """The layer a file holds: the options are checked first (sizes against memory,
        before anything is allocated), then the arrays must be exactly the parameters
        those options give (names, dtypes, shapes, finite values) and become them, with
        no random initialisation and no further copy."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        obj = cls.__new__(cls)
        obj._configure(**config)
        obj._check_size(loading=True)
        names = param_names(obj.num_layers, obj.bidirectional, obj.bias)
        missing = [k for k in names if k not in arrays]
        unexpected = [k for k in arrays if k not in set(names)]
        if missing or unexpected:
            raise ValueError(f"the arrays are not the parameters of {obj!r}: missing "
                             f"{_names(missing)}, unexpected {_names(unexpected)}")
        params = {}
        for k in names:
            a = arrays[k]
            if a.dtype != obj.dtype:  # a file stores the layer's own dtype: no casting
                raise TypeError(f"array {k!r} has dtype {a.dtype}, the layer {obj.dtype}")
            if a.shape != obj._param_shape(k):
                raise ValueError(f"array {k!r} has shape {a.shape}, expected "
                                 f"{obj._param_shape(k)}")
            check_finite(f"array {k!r}", a)
            owned = (a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
                     and a.base is None)
            params[k] = a if owned else np.array(a, order="C")
        obj._params = params
        obj._init_grads()
        obj._dropout_rng = np.random.default_rng()
        obj._cache = None
        return obj

    def _without_dropout(self):
        """A new layer with this one's configuration and parameters but no dropout:
        what ``gates()`` runs, so that it sees the inference numbers and leaves this
        layer's cache (a pending backward) and dropout stream alone."""
        config = self._get_config()
        if "dropout" in config:
            config["dropout"] = 0.0
        probe = type(self)(**config)
        probe.load_state_dict(self._params)
        return probe

    # -- calling ----------------------------------------------------------------------
    def forward(self, x: ArrayLike, h0: Optional[ArrayLike] = None,
                lengths: Optional[ArrayLike] = None,
                training: bool = True) -> Tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def backward(self, dy: Optional[ArrayLike] = None,
                 dh_n: Optional[ArrayLike] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, x: ArrayLike, h0: Optional[ArrayLike] = None,
                 lengths: Optional[ArrayLike] = None,
                 training: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """``forward(x, h0, lengths, training)``."""
        return self.forward(x, h0=h0, lengths=lengths, training=training)

    def __repr__(self) -> str:
        opts = [f"{self.input_size}", f"{self.hidden_size}"]
        if self.num_layers != 1:
            opts.append(f"num_layers={self.num_layers}")
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False), ("reset_after", True)):
            if getattr(self, name) != default:
                opts.append(f"{name}={getattr(self, name)}")
        opts.append(f"dtype={self.dtype.name}")
        return f"{type(self).__name__}({', '.join(opts)})"


class Gates(NamedTuple):
    """The gates and the new state of one layer and direction at every step.

    Returned per layer and direction by ``gates()`` of :class:`grucy.GRU` and
    :class:`grucy.reference.GRU` (and :func:`grucy.diagnostics.gates`).  Each array is
    laid out like the layer's output y: (T, B, H), or (B, T, H) with ``batch_first``,
    in the caller's batch order, and holds NaN at the steps past a sequence's end (where
    the layer computes nothing).  For the reverse direction of a bidirectional layer,
    step t is still time t (the direction reads it after step t + 1).
    """

    #: reset gate, sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    r: np.ndarray
    #: update gate, sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    z: np.ndarray
    #: candidate state, tanh(W_in x + b_in + r * (W_hn h + b_hn)) (reset-after form)
    n: np.ndarray
    #: the new state, (1 - z) * n + z * h_prev: the output of the step
    h: np.ndarray
