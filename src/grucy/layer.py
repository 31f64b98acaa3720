"""The GRU layer: validates, allocates and calls the compiled kernels (grucy._gru)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _gru
from ._base import Gates, GRUBase, _positive_int, as_float_array, exclusive
from ._validation import _integer
from .io import register


class ScratchBound:
    """A layer's ``max_scratch_bytes``: None or a non-negative int, checked when it is
    set (a wrong value would otherwise fail only after the next call's work); the class
    attribute reads as the default."""

    def __init__(self, default: Optional[int]) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.key = name, "_" + name

    def __get__(self, obj: Any, owner: Any = None) -> Optional[int]:
        if obj is None:
            return self.default
        value: Optional[int] = obj.__dict__.get(self.key, self.default)
        return value

    def __set__(self, obj: Any, value: Optional[int]) -> None:
        if value is not None:
            value = _integer(self.name, value)
            if value < 0:
                raise ValueError(f"{self.name} must be None or a number of bytes >= 0, "
                                 f"got {value}")
        obj.__dict__[self.key] = value

#: The arithmetic of the products with the weights (README, "Low precision"): "fp32" (the
#: layer's dtype), or "bf16" (bf16 operands, float32 sums; float32 layers only).
PRECISIONS = ("fp32", "bf16")


@register(kind="grucy.GRU")
class GRU(GRUBase):
    """Multi-layer, optionally bidirectional GRU with exact backpropagation through time.

    Same parameters, shapes and semantics as ``torch.nn.GRU`` (packed-sequence semantics
    for ``lengths``), plus the reset-before form (``reset_after=False``, Cho et al. 2014).
    At each step t, from the input x_t and the previous state h_{t-1}::

        r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)        reset gate
        z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)        update gate
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))   candidate
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}                       output y_t = h_t

    ``weight_ih_l{k}`` stacks W_ir, W_iz, W_in; ``weight_hh_l{k}`` W_hr, W_hz, W_hn.
    :meth:`gates` returns r, z, n and h of every step; the tutorial of the documentation
    (``docs/tutorial.rst``) derives the backward pass and why the gates keep the
    gradient alive.

    Parameters
    ----------
    input_size, hidden_size : int
        Features per step of the input and of the state.
    num_layers : int, default 1
        Stacked layers; layer k > 0 reads the (concatenated) outputs of layer k - 1.
    bias : bool, default True
    batch_first : bool, default False
        x and y are (B, T, F) instead of (T, B, F); states stay (L*D, B, H).
    dropout : float in [0, 1), default 0
        Inverted dropout on the inputs of layers 1 .. L-1, in training forwards only.
    bidirectional : bool, default False
    reset_after : bool, default True
        True: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) (PyTorch, cuDNN, Keras 3).
        False: n = tanh(W_in x + b_in + W_hn (r * h) + b_hn).
    dtype : float32 or float64, default float32
    seed : int or None
        Seeds the U(-1/sqrt(H), 1/sqrt(H)) initialisation and the dropout masks.
    precision : "fp32" or "bf16", default "fp32"
        "bf16": every product with a weight (forward and backward, the weight gradients
        too) multiplies bf16 values and sums in float32; parameters, gradients, gates and
        states stay float32 (float32 layers only).  Saved with the layer; may be changed
        between calls (a backward follows the precision of its forward).
        ``grucy.quantize(gru, "int8")`` gives an int8 copy for inference.

    Notes
    -----
    Scratch memory: a call allocates the kernels' buffers (gates, states, packed
    weights; what :func:`grucy._gru.workspace_bytes` counts) in pools the layer reuses
    on its next call, which saves the page faults of fresh memory.  After each call
    that leaves nothing for a backward (an inference forward, a backward), the pools
    are kept only while they hold at most ``max_scratch_bytes`` (512 MiB by default, a
    class attribute; set it on a layer to change that layer); beyond, they are freed
    at once.  (A bound of 64 MiB freed the ~70 MB of a 64x50x256x512 training step after
    every step, and the next step's page faults cost 10% of it.)  :meth:`free_scratch`
    frees them now.  What a call may allocate at most (its pools, its outputs and its
    copies) is checked against the memory limit before it starts
    (:class:`grucy.SizeLimitError`).
    """

    #: Bytes of kernel scratch a layer keeps between calls (None: all of it, 0: none).
    max_scratch_bytes = ScratchBound(512 << 20)

    _precision: str

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, reset_after: bool = True,
                 dtype: DTypeLike = np.float32, seed: Any = None,
                 precision: str = "fp32") -> None:
        super().__init__(input_size, hidden_size, num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, reset_after=reset_after, dtype=dtype,
                         seed=seed)
        self.precision = precision

    def _configure(self, *args: Any, precision: str = "fp32", **kwargs: Any) -> None:
        """GRUBase's options and the precision (a load passes a file's config here, so
        a saved precision is checked as the constructor checks it)."""
        super()._configure(*args, **kwargs)
        self.precision = precision

    @property
    def precision(self) -> str:
        """"fp32" or "bf16" (see the class parameters)."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if not isinstance(value, str) or value not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {value!r}")
        if value != "fp32" and self.dtype != np.float32:
            raise ValueError(f"precision={value!r} needs dtype float32, got {self.dtype}")
        self._precision = value

    def _get_config(self) -> Dict[str, Any]:
        return {**super()._get_config(), "precision": self.precision}

    def __repr__(self) -> str:
        text = super().__repr__()
        return text if self.precision == "fp32" else \
            f"{text[:-1]}, precision={self.precision!r})"

    @exclusive
    def forward(self, x: ArrayLike, h0: Optional[ArrayLike] = None,
                lengths: Optional[ArrayLike] = None,
                training: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """Run the GRU; returns ``(y, h_n)``.

        x: (T, B, I), or (B, T, I) with ``batch_first``.  h0: (L*D, B, H) or None (zeros).
        lengths: (B,) integers in [1, T], any order; y is 0 past each sequence's end and
        h_n holds each sequence's state at its last valid step.  With ``training=True``
        what backward() needs is kept; with False nothing is kept and dropout is off.
        """
        x, h0, lengths = self._check_inputs(x, h0, lengths, training)
        given = x  # (the caller's memory when no copy was made: an array, a tensor's)
        T, B, _ = x.shape
        H, D = self.hidden_size, self.num_directions
        order = None
        pools = self._scratch_pools()
        if not training:  # nothing is kept for a backward: the layers share one pool
            pools = [pools[0]] * len(pools)
        if lengths is None:
            batch_sizes = np.full(T, B, np.intc)
        else:
            # The kernels want the longest sequences first (active rows form a prefix).
            # The sorted copies live in the layer's reusable buffers (see _scratch_pools);
            # only the outputs are new arrays (the kernels write the last layer's y in
            # the caller's order).
            order = np.argsort(-lengths, kind="stable")
            x = np.take(x, order, axis=1, mode="clip",  # (a permutation: unbuffered)
                        out=_gru._buffer(pools[0], "x_sorted", x.shape, self.dtype))
            h0 = h0[:, order]
            batch_sizes = (lengths[order][None, :] > np.arange(T)[:, None]).sum(1)
            batch_sizes = batch_sizes.astype(np.intc)
        layer_in = np.ascontiguousarray(x)
        if training and np.may_share_memory(layer_in, given):
            # backward reads the input again; a caller editing x in between must not
            # change the gradient.
            layer_in = layer_in.copy()
        h_n = np.array(h0, order="C")  # the kernels turn h0 into h_n in place
        saved = []
        for layer in range(self.num_layers):
            mask = None
            if layer > 0 and training and self.dropout > 0:
                # Drawn in the caller's batch order so masks do not depend on sorting.
                mask = self._dropout_mask(layer_in.shape)
                if order is not None:
                    mask = mask[:, order]
                layer_in = layer_in * mask
            last = layer == self.num_layers - 1
            if order is None:
                y = np.empty((T, B, D * H), self.dtype)
            elif last:  # the kernels write each sequence to its row in the caller's order
                y = np.zeros((T, B, D * H), self.dtype)
            else:  # zero past each sequence's end; the kernels write the steps within
                y = _gru._buffer(pools[0], f"y_sorted{layer % 2}", (T, B, D * H),
                                 self.dtype)
                y.fill(0)
            workspaces = []
            for direction in range(D):
                w_ih, w_hh, b_ih, b_hh = self.layer_params(layer, direction)
                workspaces.append(_gru.forward(
                    layer_in, w_ih, w_hh, b_ih, b_hh, h_n[layer * D + direction],
                    y[:, :, direction * H:(direction + 1) * H], batch_sizes,
                    direction == 1, self.reset_after, training, pools[layer * D + direction],
                    order if last else None, PRECISIONS.index(self.precision)))
            saved.append((mask, workspaces))
            layer_in = y
        y = layer_in
        if order is not None:
            inverse = np.argsort(order)
            h_n = np.take(h_n, inverse, axis=1)  # (y is in the caller's order already)
        if not training:
            self._bound_scratch()
        # h_n is NaN whenever any output is (NaN propagates through the recurrence).
        self._check_result("the output", h_n)
        self._cache = ({"T": T, "B": B, "order": order, "layers": saved,
                        "weights": self._forward_weights()} if training else None)
        if self.batch_first:
            y = y.transpose(1, 0, 2)
        return np.ascontiguousarray(y), np.ascontiguousarray(h_n)

    def _call_bytes(self, T, B, training, cast=True, ordered=True, sorted_rows=False):
        """:meth:`_peak_bytes`, remembered for the last few call shapes (a forward of
        one step would otherwise spend a tenth of its time planning its memory)."""
        key = (T, B, training, cast, ordered, sorted_rows, _gru.get_num_threads(),
               _gru.kernel_isa(), self.precision)
        memo = self.__dict__.get("_call_bytes_memo")
        if memo is None or len(memo) > 16:
            memo = self._call_bytes_memo = {}
        nbytes = memo.get(key)
        if nbytes is None:
            nbytes = memo[key] = self._peak_bytes(T, B, training, cast, ordered,
                                                  sorted_rows)
        return nbytes

    def _peak_bytes(self, T, B, training, cast, ordered, sorted_rows):
        """The bytes one forward (and, training, its backward) allocates at its peak,
        for x needing a cast (``cast``) or a C-ordered time-major copy (``ordered``), and
        rows sorted by length (``sorted_rows``): the kernels' pools
        (``_gru.workspace_bytes`` per layer and direction; one pool shared by the layers
        of an inference forward), the layer outputs, the dropout masks and masked inputs
        a training forward keeps, the copies of x, the weights kept for the backward and
        the gradients a backward makes (dy given in the layer's dtype)."""
        H, D, L, I = self.hidden_size, self.num_directions, self.num_layers, self.input_size
        N, DH, bf, it = T * B, D * H, int(self.batch_first), self.dtype.itemsize

        def pool(in_size, T=T, B=B):
            return _gru.workspace_bytes(T, B, in_size, H, training=training,
                                        reset_after=self.reset_after, dtype=self.dtype,
                                        full_lengths=not sorted_rows,
                                        precision=self.precision)
        states = 4 * L * D * B * H                            # h0, h_n and their copies
        if not training:
            # one pool, grown from the smaller layer's buffers to the larger one's
            pools = pool(max(I, DH) if L > 1 else I)
            if L > 1 and I != DH:
                pools += pool(min(I, DH), 1, 1) + sorted_rows * N * min(I, DH) * it
            if sorted_rows:  # x sorted (its cast dropped) and the outputs in reused
                # buffers, kept
                values = N * I + max(cast * N * I, (min(L - 1, 2) + 1 + bf) * N * DH)
            else:  # a cast lives through the call, the contiguous copy of x through
                # layer 0, each output through the next
                values = cast * N * I + max(ordered * N * I + N * DH,
                                            2 * N * DH * (L > 1), (1 + bf) * N * DH)
            return (values + states) * it + pools
        pools = D * (pool(I) + (L - 1) * pool(DH))
        if sorted_rows:  # x sorted into a reused buffer (a cast is dropped then)
            copies = 1
        else:  # a cast, a C-ordered copy, or else the private copy kept for backward
            copies = cast + ordered + (not cast and not ordered)
        dropout = L > 1 and self.dropout > 0
        if sorted_rows:  # the outputs of layers 0 .. L-2 in two reused buffers
            outputs = min(L, 3)
        else:  # every layer's input is kept for the backward (the masked one, dropout)
            outputs = 1 if dropout else L
        values = copies * N * I + (outputs + bf) * N * DH + states
        if dropout:  # per layer > 0: the mask and the masked input (and a sorted mask)
            values += (2 * (L - 1) + sorted_rows) * N * DH
        # backward: dy reordered, the output gradients of two layers (in two reused
        # buffers when sorted), the batch-first copy of dx
        values += (bf or sorted_rows) * N * DH + (L > 1) * N * DH
        values += N * (max(I, DH) if L > 1 else I) + bf * N * I
        values += (sorted_rows and L > 2) * N * DH
        return values * it + pools + self._weight_bytes()

    def _scratch_pools(self):
        """One dict of reusable kernel buffers per layer and direction.

        Safe to reuse on every forward: forward() first drops the previous forward's
        cache (whose workspaces live in these buffers), and the methods using them are
        exclusive to one thread at a time.  Not copied or pickled (``__getstate__``), so
        copies of a layer never share buffers.
        """
        pools = self.__dict__.get("_scratch")
        if pools is None or len(pools) != self.num_layers * self.num_directions:
            pools = self._scratch = [{} for _ in range(self.num_layers * self.num_directions)]
        return pools

    def _scratch_bytes(self) -> int:
        """Bytes the layer's scratch pools hold now."""
        pools = self.__dict__.get("_scratch") or ()
        return sum(buf.nbytes for pool in pools for buf in pool.values())

    def _bound_scratch(self) -> None:
        """The policy after a call (class docstring): keep the pools up to
        ``max_scratch_bytes``, free them beyond."""
        limit = self.max_scratch_bytes
        if limit is not None and self._scratch_bytes() > limit:
            self._scratch = None

    @exclusive
    def free_scratch(self) -> None:
        """Free the kernel buffers the layer keeps for its next call (see the class
        notes), and with them a training forward still waiting for its backward (a
        backward then raises RuntimeError).  The next call allocates afresh."""
        self._cache = None
        self._scratch = None

    def stream(self, batch_size: int = 1,
               h0: Optional[ArrayLike] = None) -> "_gru.GRUStream":
        """A :class:`GRUStream` for online inference, one step per call.

        The stream takes a snapshot of the parameters (checked to be finite, packed for
        the GEMM once); after changing them call ``stream.refresh()``.

        Parameters
        ----------
        batch_size : int, default 1
            Number of independent streams advanced together.
        h0 : array_like (num_layers, batch_size, hidden_size), optional
            Initial state (default zeros).

        Examples
        --------
        >>> s = gru.stream()                  # doctest: +SKIP
        >>> for x_t in signal:                # doctest: +SKIP
        ...     y_t = s.step(x_t)             # x_t (input_size,) -> y_t (hidden_size,)
        """
        if self.bidirectional:
            raise ValueError("stream() needs a unidirectional GRU: a bidirectional layer "
                             "reads the whole sequence (bidirectional=True)")
        batch_size = _positive_int("batch_size", batch_size)
        self._check_stream(batch_size)
        h0 = self._initial_state(h0, (self.num_layers, batch_size, self.hidden_size),
                                 "(num_layers, batch_size, hidden_size)")
        layers = [self.layer_params(layer, 0) for layer in range(self.num_layers)]
        return _gru.GRUStream(layers, batch_size, self.hidden_size, self.reset_after,
                              self.dtype, h0, PRECISIONS.index(self.precision))

    def step(self, x: ArrayLike,
             h: Optional[ArrayLike] = None) -> Tuple[np.ndarray, np.ndarray]:
        """One step with the state carried by the caller: returns ``(y, h_new)``.

        x: (B, input_size); h: (num_layers, B, hidden_size) or None (zeros).  Same numbers
        as ``forward`` on a one-step sequence, with the same checks (x, h and the
        parameters are validated on every call); for a long stream :meth:`stream` is
        faster still.

        The layer keeps one stream for these calls and reuses it while the batch size and
        the parameter arrays stay the same; it compares the parameters with the stream's
        snapshot on every call and takes a new one when they changed (optimizer updates,
        ``load_state_dict``, edits in place are all seen).  A thread takes the stream
        for the length of its call; a second thread stepping the same layer meanwhile
        builds a stream of its own, so concurrent calls are safe and exact.
        """
        if self.bidirectional:
            raise ValueError("step() needs a unidirectional GRU: a bidirectional layer "
                             "reads the whole sequence (bidirectional=True)")
        x = as_float_array("x", x, self.dtype)
        if x.ndim != 2:
            raise ValueError(f"x must be 2-D (B, input_size), got shape {x.shape}")
        B = x.shape[0]
        # dict.pop is atomic: the calling thread owns the cached stream until it puts it
        # back; a thread finding none (another one holds it) builds its own.
        cached = self.__dict__.pop("_step_stream", None)
        if h is not None:   # (checked here, by its name: the stream would call it h0)
            h = self._initial_state(h, (self.num_layers, B, self.hidden_size),
                                    "(num_layers, batch_size, hidden_size)", name="h")
        arrays = [a for layer in range(self.num_layers) for a in self.layer_params(layer, 0)]
        if (cached is not None and cached[0] == B
                and cached[1] == (self.reset_after, self.precision)
                and len(cached[2]) == len(arrays)
                and all(a is b for a, b in zip(cached[2], arrays))):
            s = cached[3]
            self._check_parameters(values=False)
            if s._changed():  # written in place: checked, then a new snapshot
                self._check_parameters()
                s.refresh()
            if h is None:
                s.reset()
            else:
                s.h = h
        else:
            s = self.stream(B, h)
        y = s.step(x)
        h_new = s.h
        self._step_stream = (B, (self.reset_after, self.precision), arrays, s)
        return y, h_new

    @exclusive
    def backward(self, dy: Optional[ArrayLike] = None,
                 dh_n: Optional[ArrayLike] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Backpropagate the last training forward; returns ``(dx, dh0)``.

        dy has y's shape, dh_n h_n's (None: zeros; with ``dy=None`` only dh_n flows back,
        as for a readout of the final state, and no array of y's size is made: the
        kernels read one shared zero row).  Parameter gradients are added to ``grads``.
        Each training forward supports one backward.
        """
        zero_dy = dy is None
        dy, dh_n = self._check_backward(dy, dh_n)
        cache, self._cache = self._cache, None
        try:
            return self._backward(cache, dy, dh_n, zero_dy)
        finally:
            del cache
            self._bound_scratch()

    def _backward(self, cache, dy, dh_n, zero_dy):
        order = cache["order"]
        pools = self._scratch_pools()
        if zero_dy:  # zeros in any order, read in place (stride 0 but on the last axis)
            grad_out = dy
            if order is not None:
                dh_n = dh_n[:, order]
        elif order is not None:  # sorted copies in reusable buffers, as in forward
            grad_out = np.take(dy, order, axis=1, mode="clip",
                               out=_gru._buffer(pools[0], "dy_sorted", dy.shape, self.dtype))
            dh_n = dh_n[:, order]
        else:
            grad_out = np.ascontiguousarray(dy)
        dh = np.array(dh_n, order="C")  # the kernels turn dh_n into dh0 in place
        H, D = self.hidden_size, self.num_directions
        T, B = cache["T"], cache["B"]
        for layer in reversed(range(self.num_layers)):
            mask, workspaces = cache["layers"][layer]
            in_size = self.input_size if layer == 0 else D * H
            if order is None or layer == 0:  # layer 0: rows in the caller's order
                dx = np.empty((T, B, in_size), self.dtype)
            else:
                dx = _gru._buffer(pools[0], f"dx_sorted{layer % 2}", (T, B, in_size),
                                  self.dtype)
            for direction in range(D):
                w_ih, w_hh = cache["weights"][layer * D + direction]  # the forward's
                _gru.backward(workspaces[direction],
                              grad_out[:, :, direction * H:(direction + 1) * H],
                              dh[layer * D + direction], w_ih, w_hh,
                              *self.layer_grads(layer, direction), dx, direction > 0,
                              order if layer == 0 else None)
            if mask is not None:
                dx *= mask
            self._check_backward_result(layer, dx, dh)
            grad_out = dx
        dx = grad_out
        if order is not None:
            inverse = np.argsort(order)
            dh = np.take(dh, inverse, axis=1)  # (dx is in the caller's order already)
        if self.batch_first:
            dx = dx.transpose(1, 0, 2)
        return np.ascontiguousarray(dx), np.ascontiguousarray(dh)

    def gates(self, x: ArrayLike, h0: Optional[ArrayLike] = None,
              lengths: Optional[ArrayLike] = None) -> List[List[Gates]]:
        """The gates r, z, n and the new state h of every layer, direction and step,
        exactly as the kernels computed them.

        Runs an inference forward (no dropout) of ``x`` (arguments as for
        :meth:`forward`) on a copy of the layer, keeping the kernels' workspace, and
        unpacks it: the gates are the ones the kernels stored for backward and the states
        the ones they carried from step to step, copied bit for bit (not recomputed).
        This layer's pending backward, if any, is kept.

        Returns
        -------
        list of list of Gates
            ``result[layer][direction]``: :class:`grucy.reference.Gates` ``(r, z, n, h)``,
            arrays laid out like y ((T, B, H), or (B, T, H) with ``batch_first``) in the
            caller's batch order, NaN past each sequence's end.  ``h`` of the last layer
            equals y (where y is not padding).
        """
        probe = self._without_dropout()
        _, h_n = probe.forward(x, h0, lengths, training=True)
        cache, probe._cache = probe._cache, None
        T, B, order = cache["T"], cache["B"], cache["order"]
        H, D = self.hidden_size, self.num_directions
        result = []
        for layer, (_, workspaces) in enumerate(cache["layers"]):
            directions = []
            for direction, ws in enumerate(workspaces):
                bs, off = ws["bs"], ws["off"]
                # the packed rows of step t are the bs[t] longest sequences
                G = np.full((T, B, 3 * H), np.nan, self.dtype)
                Hp = np.full((T, B, H), np.nan, self.dtype)
                for t in range(T):
                    G[t, :bs[t]] = ws["G"][off[t]:off[t] + bs[t]]
                    Hp[t, :bs[t]] = ws["Hp"][off[t]:off[t] + bs[t]]
                # the state a step made is the one entering the next step of this
                # direction; after a sequence's last step of the direction, h_n
                last_state = h_n[layer * D + direction]
                if order is not None:
                    last_state = last_state[order]
                steps = (bs[:, None] > np.arange(B)[None, :])  # (T, B) in the sorted order
                length = steps.sum(axis=0)
                h = np.full((T, B, H), np.nan, self.dtype)
                if direction == 0:
                    h[:-1] = Hp[1:]
                    h[length - 1, np.arange(B)] = last_state
                else:
                    h[1:] = Hp[:-1]
                    h[0] = last_state
                    h[~steps] = np.nan
                arrays = (G[..., :H], G[..., H:2 * H], G[..., 2 * H:], h)
                if order is not None:  # back to the caller's batch order
                    arrays = tuple(_unsort(a, order) for a in arrays)
                if self.batch_first:
                    arrays = tuple(a.transpose(1, 0, 2) for a in arrays)
                directions.append(Gates(*(np.ascontiguousarray(a) for a in arrays)))
            result.append(directions)
        return result


def _unsort(a, order):
    """(T, B, ...) rows in the kernels' longest-first order back to the caller's."""
    out = np.empty_like(a)
    out[:, order] = a
    return out
