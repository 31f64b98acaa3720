"""Building blocks around the GRU layers: Linear, Embedding, Dropout, Sequential, TBPTT.

Same explicit design as the GRU layers: ``forward`` caches what ``backward`` needs,
``backward`` returns the input gradient and *accumulates* parameter gradients into
``grads`` (call ``zero_grad()`` between steps); there is no autograd.  The losses live in
:mod:`grucy.losses` (``mse_loss`` is re-exported here for older code).
"""

from __future__ import annotations

import numpy as np

import numbers
from typing import Dict, List, Optional, Tuple

from numpy.typing import ArrayLike, DTypeLike

from scipy.linalg import blas as _scipy_blas

from ._base import GRUBase
from ._limits import check_memory
from ._params import ParameterHolder, PerThreadState, exclusive
from ._validation import (_as_real_array, _flag, _positive_int, _rng, as_float_array,
                          check_dtype, check_finite, check_result)
from .losses import mse_loss

__all__ = ["Linear", "Embedding", "Dropout", "Sequential", "TruncatedBPTT", "mse_loss"]


_GEMM = {np.dtype(np.float32): _scipy_blas.sgemm, np.dtype(np.float64): _scipy_blas.dgemm}

try:  # the compiled kernels are optional here: without them the products are BLAS's
    from ._gru import gemm_rows as _gemm_rows, kernel_isa as _kernel_isa
except ImportError:
    _gemm_rows = None  # type: ignore[assignment]


def matmul(a, b, trans_a=False, trans_b=False):
    """``op(a) @ op(b)`` for 2-D float arrays, each row of the result computed on its own:
    on grucy's packed GEMM (``_gru.gemm_rows``), so a row's numbers do not depend on the
    other rows (a readout gives a sequence the same bits in any batch) nor on the CPU's
    instruction set.  Under ``GRUCY_ISA=blas``: scipy's BLAS, the library the GRU
    kernels call then.

    Not numpy's matmul: it would run on numpy's own OpenBLAS, a second BLAS thread pool
    next to scipy's and the kernels' threads.  On 2 cores the three pools spin against
    each other: a CharLM training step (32 x 64 characters, 256 units) took 422 ms with
    numpy's matmul here and 49 ms with numpy's pool limited to one thread.  For BLAS,
    row-major operands are passed as their (column-major) transposes: C^T = op(b)^T
    op(a)^T, so nothing is copied.
    """
    gemm = _GEMM.get(a.dtype)
    if gemm is None or a.dtype != b.dtype or 0 in a.shape or 0 in b.shape:
        return (a.T if trans_a else a) @ (b.T if trans_b else b)
    if _gemm_rows is not None and _kernel_isa() != "blas":
        # grucy's GEMM: a row's result depends on that row only, and not on the CPU
        # (the README's promise; see grucy._gru.gemm_rows)
        a = np.ascontiguousarray(a.T if trans_a else a)
        b = np.ascontiguousarray(b)
        c = np.empty((a.shape[0], b.shape[0] if trans_b else b.shape[1]), a.dtype)
        _gemm_rows(a, b, trans_b, c)
        return c
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    return gemm(1.0, b.T, a.T, trans_a=trans_b, trans_b=trans_a).T


class Linear(ParameterHolder):
    """``y = x @ weight.T + bias`` over the last axis, like ``torch.nn.Linear``.

    ``weight`` is (out_features, in_features) and ``bias`` (out_features,), initialised
    U(-1/sqrt(in_features), 1/sqrt(in_features)) from ``seed``.  ``x`` may have any
    number of leading axes: (..., in_features) -> (..., out_features).

    Threads: the input of the last training forward is kept for backward, so one Linear
    serves one thread at a time (a call while another thread is inside it raises
    RuntimeError; backward() must run in the thread of its forward).
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 dtype: DTypeLike = np.float32, seed: Optional[int] = None):
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        self.dtype = check_dtype(dtype)
        self.bias = _flag("bias", bias)
        what = f"Linear({self.in_features}, {self.out_features})"
        n = self.in_features * self.out_features
        check_memory(what, n * (2 * self.dtype.itemsize + 8))
        rng = _rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        shapes: Dict[str, Tuple[int, ...]] = {"weight": (self.out_features,
                                                          self.in_features)}
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
    def forward(self, x: ArrayLike, training: bool = True) -> np.ndarray:
        """``x @ weight.T + bias``; with ``training`` the input is kept for backward.

        x is cast to the layer's dtype (integers and floats of any width); NaN or inf
        in x is refused with ValueError, as are parameters made non-finite in place.
        """
        self._x = None
        training = _flag("training", training)
        given = x
        xr = _as_real_array("x", x)
        if xr.ndim == 0 or xr.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., in_features={self.in_features}), "
                             f"got {xr.shape}")
        rows = xr.size // self.in_features
        check_memory(lambda: f"Linear.forward of x with shape {xr.shape}",
                     (rows + self.out_features) * (self.in_features + self.out_features)
                     * self.dtype.itemsize)
        xa = as_float_array("x", xr, self.dtype)
        check_finite("x", xa)
        self._check_parameters()
        # y = x @ W^T + b
        y = matmul(xa.reshape(-1, self.in_features), self._params["weight"],
                    trans_b=True).reshape(xa.shape[:-1] + (self.out_features,))
        if self.bias:
            y += self._params["bias"]
        self._check_result("the output", y)
        if training and np.may_share_memory(xa, given):
            xa = xa.copy()  # backward must not see the caller's later edits of x
        # (backward differentiates the weight of this forward, whatever happens to the
        # parameter in between)
        self._x = (xa, self._params["weight"].copy()) if training else None
        return y

    @exclusive
    def backward(self, dy: ArrayLike) -> np.ndarray:
        """Gradient w.r.t. the input of the last training forward; accumulates ``grads``."""
        if self._x is None:
            raise RuntimeError("backward() needs a preceding forward(..., training=True)")
        x, weight = self._x
        out_shape = x.shape[:-1] + (self.out_features,)
        dya = as_float_array("dy", dy, self.dtype)
        if dya.shape != out_shape:
            raise ValueError(f"dy must have the shape of y, {out_shape}, got {dya.shape}")
        check_finite("dy", dya)
        self._check_parameters(grads=True)
        x2 = x.reshape(-1, self.in_features)
        dy2 = dya.reshape(-1, self.out_features)
        # dW += dy^T x ; db += sum_rows dy ; dx = dy @ W
        self.grads["weight"] += matmul(dy2, x2, trans_a=True)
        if self.bias:
            self.grads["bias"] += dy2.sum(axis=0)
        self._x = None
        dx = matmul(dy2, weight).reshape(x.shape)
        for name, arr in (("grads['weight']", self.grads["weight"]),
                          ("grads['bias']", self.grads.get("bias")), ("dx", dx)):
            if arr is not None:  # from finite values: NaN or inf is an overflow
                check_result(f"Linear.backward: {name}", arr)
        return dx

    def __call__(self, x, training=True):
        return self.forward(x, training=training)

    def __repr__(self):
        extra = "" if self.bias else ", bias=False"
        return (f"Linear({self.in_features}, {self.out_features}{extra}, "
                f"dtype={self.dtype.name})")


class Embedding(ParameterHolder):
    """Lookup table ``y = weight[indices]``, like ``torch.nn.Embedding``.

    ``weight`` is (num_embeddings, embedding_dim), initialised N(0, 1) from ``seed``.
    ``indices`` may have any shape (...) of integers in [0, num_embeddings); the output is
    (..., embedding_dim).  ``backward`` adds the gradient rows into ``grads["weight"]``
    (rows of repeated indices are summed) and returns None: integer inputs have no
    gradient.

    Input checks: indices must be integers (floats, bools, strings refused with
    TypeError) inside the table (ValueError); NaN or inf in the rows looked up (a
    weight written in place) or in ``dy`` raises ValueError.

    Threads: like every grucy layer, an embedding keeps what backward needs (the
    indices of the last training forward) per object, so one embedding serves one thread
    at a time: a call while another thread is inside forward/backward of the same object
    raises RuntimeError, and backward() must run in the thread of its forward.
    """

    _indices = PerThreadState()  # the indices of the last training forward

    def __init__(self, num_embeddings: int, embedding_dim: int, *,
                 dtype: DTypeLike = np.float32, seed: Optional[int] = None):
        self.num_embeddings = _positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = _positive_int("embedding_dim", embedding_dim)
        self.dtype = check_dtype(dtype)
        check_memory(f"Embedding({self.num_embeddings}, {self.embedding_dim})",
                     self.num_embeddings * self.embedding_dim * (2 * self.dtype.itemsize + 8))
        rng = _rng(seed)
        self._params = {"weight": rng.standard_normal(
            (self.num_embeddings, self.embedding_dim)).astype(self.dtype)}
        self._init_grads()
        self._indices = None

    @property
    def weight(self):
        return self._params["weight"]

    @exclusive
    def forward(self, indices: ArrayLike, training: bool = True) -> np.ndarray:
        """Rows ``weight[indices]``, shape (..., embedding_dim)."""
        self._indices = None
        training = _flag("training", training)
        idx = _as_real_array("indices", indices)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
        check_memory(lambda: f"Embedding.forward of indices with shape {idx.shape}",
                     idx.size * (self.embedding_dim * self.dtype.itemsize + 8))
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_embeddings):
            raise ValueError(f"indices must lie in [0, num_embeddings={self.num_embeddings}),"
                             f" got values in [{idx.min()}, {idx.max()}]")
        # The table may be large and only a few rows are read: check its layout here and
        # the values of the rows read below.
        self._check_parameters(values=False)
        y = self._params["weight"][idx]
        check_finite("the rows of weight looked up", y)
        self._indices = idx.copy() if training else None
        return y

    @exclusive
    def backward(self, dy: ArrayLike) -> None:
        """Accumulate ``grads["weight"][indices] += dy``; returns None."""
        idx = self._indices
        if idx is None:
            raise RuntimeError("backward() needs a preceding forward(..., training=True)")
        expected = idx.shape + (self.embedding_dim,)
        dya = as_float_array("dy", dy, self.dtype)
        if dya.shape != expected:
            raise ValueError(f"dy must have the shape of y, {expected}, got {dya.shape}")
        check_finite("dy", dya)
        self._check_parameters(grads=True, values=False)
        self._indices = None
        # dW[idx[i]] += dy[i], summing repeated rows
        np.add.at(self.grads["weight"], idx.reshape(-1),
                  dya.reshape(-1, self.embedding_dim))
        check_result("Embedding.backward: the rows of grads['weight'] it added to",
                     self.grads["weight"][np.unique(idx)])
        return None

    def __call__(self, indices, training=True):
        return self.forward(indices, training=training)

    def __repr__(self):
        return (f"Embedding({self.num_embeddings}, {self.embedding_dim}, "
                f"dtype={self.dtype.name})")


class Dropout(ParameterHolder):
    """Inverted dropout: in training, zero each element with probability ``p`` and scale
    the rest by ``1 / (1 - p)``; the identity otherwise (and when ``p == 0``).

    Masks come from a generator seeded by ``seed`` (:meth:`generators` exposes it, so a
    checkpoint can save and restore its state).

    Input checks: ``x`` holds real numbers (bool, complex, strings refused with
    TypeError); floating inputs keep their dtype, integers become float64 (a scaled
    mask is not an integer); NaN or inf in ``x`` or ``dy`` raises ValueError.  Outside
    training the input comes back as it is (no copy), as in PyTorch.

    Threads: the mask of the last training forward is kept for backward, so one Dropout
    serves one thread at a time (a call while another thread is inside it raises
    RuntimeError; backward() must run in the thread of its forward).
    """

    p: float
    rng: np.random.Generator
    _mask = PerThreadState()  # (shape, dtype, mask or None) of the last training forward

    def __init__(self, p: float = 0.5, *, seed: Optional[int] = None):
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
            raise TypeError(f"p must be a number in [0, 1), got {p!r}")
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"p must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = _rng(seed)
        self._params = {}
        self._init_grads()
        self._mask = None

    def generators(self):
        return [self.rng]

    @exclusive
    def forward(self, x: ArrayLike, training: bool = True) -> np.ndarray:
        """``x * mask`` in training (a fresh mask each call), ``x`` otherwise."""
        self._mask = None
        training = _flag("training", training)
        xa = _as_real_array("x", x)
        masked = training and self.p > 0.0
        if masked or xa.dtype.kind != "f":  # a mask, an output, a cast: before allocating
            check_memory(lambda: f"Dropout.forward of x with shape {xa.shape}",
                         xa.size * (8 + 16 if masked else 8))
        if xa.dtype.kind != "f":
            xa = xa.astype(np.float64)
        check_finite("x", xa)
        if not masked:
            self._mask = (xa.shape, xa.dtype, None) if training else None
            return xa
        keep = self.rng.random(xa.shape) >= self.p
        mask = (keep / (1.0 - self.p)).astype(xa.dtype)
        y = xa * mask
        check_result("Dropout.forward: the output", y)  # x near the dtype's limit, scaled
        self._mask = (xa.shape, xa.dtype, mask)
        return y

    @exclusive
    def backward(self, dy: ArrayLike) -> np.ndarray:
        """``dy * mask`` of the last training forward (in the dtype of its input)."""
        entry = self._mask
        if entry is None:
            raise RuntimeError("backward() needs a preceding forward(..., training=True)")
        shape, dtype, mask = entry
        dya = as_float_array("dy", dy, dtype)
        if dya.shape != shape:
            raise ValueError(f"dy must have the shape of y, {shape}, got {dya.shape}")
        check_finite("dy", dya)
        self._mask = None
        if mask is None:
            return dya.copy()
        dx = dya * mask
        check_result("Dropout.backward: dx", dx)
        return dx

    def __call__(self, x, training=True):
        return self.forward(x, training=training)

    def __repr__(self):
        return f"Dropout(p={self.p})"


class Sequential(ParameterHolder):
    """Layers applied in order; ``backward`` runs them in reverse.

    Each layer has ``forward(x, training)`` and ``backward(dy)``, taking and returning
    one array.  Parameters and gradients are the layers' own arrays, named
    ``"{index}.{name}"`` (PyTorch's naming), so ``state_dict()``, ``load_state_dict()``
    and ``zero_grad()`` act on the layers.  An :class:`Embedding` may only come first
    (its input has no gradient); a GRU layer, whose forward returns ``(y, h_n)``, does
    not fit in (use the layers around it, as :mod:`grucy.models` does).

    Threads: a forward or backward of the whole stack runs in one thread at a time (a
    call while another thread is inside raises RuntimeError); each layer also keeps its
    own per-thread state, so backward() must run in the thread of its forward.
    """

    def __init__(self, *layers):
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not (callable(getattr(layer, "forward", None))
                    and callable(getattr(layer, "backward", None))):
                raise TypeError(f"layer {i} ({type(layer).__name__}) has no forward/backward")
            if isinstance(layer, GRUBase):
                raise TypeError(f"layer {i} is a {type(layer).__name__}, whose forward "
                                f"returns (y, h_n) and takes h0/lengths; Sequential chains "
                                f"layers that take and return one array")
            if isinstance(layer, Embedding) and i > 0:
                raise ValueError(f"layer {i} is an Embedding: it may only come first (its "
                                 f"integer input has no gradient to pass back)")
            # A layer caches one forward's input for its backward: used twice, its
            # second forward would overwrite the first one's cache, and backward would
            # fail (or compute a wrong gradient).
            first = next(j for j, other in enumerate(layers) if other is layer)
            if first < i:
                raise ValueError(f"layer {i} is the same object as layer {first}; a layer "
                                 f"keeps the cache of one forward for its backward, so "
                                 f"each may appear in a Sequential only once")
        self.layers = list(layers)
        self._params, self.grads = {}, {}
        dtypes = set()
        for i, layer in enumerate(self.layers):
            for name, arr in getattr(layer, "_params", {}).items():
                self._params[f"{i}.{name}"] = arr
                self.grads[f"{i}.{name}"] = layer.grads[name]
                dtypes.add(arr.dtype)
        if len(dtypes) > 1:
            raise TypeError(f"all layers must have the same dtype, got {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop() if dtypes else None

    def generators(self):
        return [g for layer in self.layers for g in getattr(layer, "generators", list)()]

    @exclusive
    def forward(self, x, training: bool = True):
        """Each layer's forward in order."""
        training = _flag("training", training)
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    @exclusive
    def backward(self, dy):
        """Each layer's backward in reverse order; returns the first layer's result."""
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def __call__(self, x, training=True):
        return self.forward(x, training=training)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __repr__(self):
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"


class TruncatedBPTT:
    """Run a GRU over consecutive chunks of long sequences, carrying its state.

    A long series or text is cut into ``n_streams`` parallel streams
    (:meth:`split_streams`), and the streams into chunks of ``bptt`` steps
    (:meth:`chunk_slices`).  :meth:`forward` of a chunk starts from the state the
    previous chunk ended in, so the model sees an unbroken sequence; :meth:`backward`
    stops at the chunk's start (its initial state is treated as a constant), so memory
    and time per step stay bounded: truncated backpropagation through time.

    Parameters
    ----------
    gru : grucy.GRU or grucy.reference.GRU
        A unidirectional GRU (a reverse direction would need the future).
    n_streams : int
        Number of parallel streams whose states are kept.

    Notes
    -----
    The carried states belong to one sequence of chunks: drive a TruncatedBPTT from one
    thread (its GRU refuses a second thread inside it with RuntimeError).
    """

    def __init__(self, gru, n_streams: int):
        if not isinstance(gru, GRUBase):
            raise TypeError(f"gru must be a grucy GRU layer (grucy.GRU or "
                            f"grucy.reference.GRU), got {type(gru).__name__}")
        if getattr(gru, "bidirectional", False):
            raise ValueError("truncated BPTT needs a unidirectional GRU, got a "
                             "bidirectional one")
        self.gru = gru
        self.n_streams = _positive_int("n_streams", n_streams)
        self.state = np.zeros((gru.num_layers, self.n_streams, gru.hidden_size), gru.dtype)

    def reset(self) -> None:
        """Zero every stream's state (the start of the sequences)."""
        self.state.fill(0)

    def forward(self, x: ArrayLike, rows: Optional[ArrayLike] = None,
                training: bool = True) -> np.ndarray:
        """Run one chunk; returns y and stores the final states for the next chunk.

        ``x`` is (T, B, I) (or (B, T, I) with the GRU's ``batch_first``) for the streams
        ``rows`` (B stream indices; default: all streams in order).
        """
        if rows is None:
            rows = np.arange(self.n_streams)
        else:
            rows = _as_real_array("rows", rows)
            if rows.ndim != 1 or rows.dtype.kind not in "iu":
                raise TypeError(f"rows must be a 1-D array of integer stream indices, got "
                                f"dtype {rows.dtype} and shape {rows.shape}")
            if rows.size and (rows.min() < 0 or rows.max() >= self.n_streams):
                raise ValueError(f"rows must lie in [0, n_streams={self.n_streams}), got "
                                 f"values in [{rows.min()}, {rows.max()}]")
            if np.unique(rows).size != rows.size:
                raise ValueError("rows must not repeat a stream: each stream carries one "
                                 "state")
        xa = _as_real_array("x", x)
        batch_axis = 0 if self.gru.batch_first else 1
        if xa.ndim == 3 and xa.shape[batch_axis] != rows.size:
            raise ValueError(f"x has {xa.shape[batch_axis]} sequences on axis {batch_axis} "
                             f"but rows selects {rows.size} streams")
        y, h_n = self.gru.forward(xa, h0=self.state[:, rows], training=training)
        self.state[:, rows] = h_n
        return y

    def backward(self, dy: ArrayLike) -> np.ndarray:
        """Backpropagate the last chunk; returns dx (the state gradient is dropped)."""
        dx, _ = self.gru.backward(dy)
        return dx

    @staticmethod
    def split_streams(sequence: ArrayLike, n_streams: int) -> np.ndarray:
        """Cut ``sequence`` (N, ...) into ``n_streams`` contiguous streams (n_streams, N // n_streams, ...).

        Stream b holds ``sequence[b*L:(b+1)*L]`` with ``L = N // n_streams``; the last
        ``N % n_streams`` items are dropped.
        """
        seq = np.asarray(sequence)
        n_streams = _positive_int("n_streams", n_streams)
        if seq.ndim == 0:
            raise TypeError(f"sequence must be an array of items (N, ...), got a "
                            f"{type(sequence).__name__} scalar")
        if len(seq) < n_streams:
            raise ValueError(f"sequence needs at least n_streams={n_streams} items, got "
                             f"{0 if seq.ndim == 0 else len(seq)}")
        L = len(seq) // n_streams
        return seq[:n_streams * L].reshape((n_streams, L) + seq.shape[1:])

    @staticmethod
    def chunk_slices(length: int, bptt: int) -> List[slice]:
        """Consecutive slices of at most ``bptt`` steps covering ``range(length)``."""
        length, bptt = _positive_int("length", length), _positive_int("bptt", bptt)
        return [slice(s, min(s + bptt, length)) for s in range(0, length, bptt)]

    def __repr__(self):
        return f"TruncatedBPTT({self.gru!r}, n_streams={self.n_streams})"
