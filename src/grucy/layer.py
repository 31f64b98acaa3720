"""The GRU layer: validates, allocates and calls the compiled kernels (grucy._gru)."""

from __future__ import annotations

import numpy as np

from . import _gru
from ._base import GRUBase, _positive_int, as_float_array, exclusive
from .io import register

#: The arithmetic of the products with the weights (README, "Low precision"): "fp32" (the
#: layer's dtype), or "bf16" (bf16 operands, float32 sums; float32 layers only).
PRECISIONS = ("fp32", "bf16")


@register(kind="grucy.GRU")
class GRU(GRUBase):
    """Multi-layer, optionally bidirectional GRU with exact backpropagation through time.

    Same parameters, shapes and semantics as ``torch.nn.GRU`` (packed-sequence semantics
    for ``lengths``), plus the reset-before form (``reset_after=False``, Cho et al. 2014).

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
        between calls.
    """

    def __init__(self, *args, precision="fp32", **kwargs):
        super().__init__(*args, **kwargs)
        self.precision = precision

    @property
    def precision(self):
        return self._precision

    @precision.setter
    def precision(self, value):
        if value not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {value!r}")
        if value != "fp32" and self.dtype != np.float32:
            raise ValueError(f"precision={value!r} needs dtype float32, got {self.dtype}")
        self._precision = value

    def _get_config(self):
        return {**super()._get_config(), "precision": self.precision}

    def __repr__(self):
        text = super().__repr__()
        return text if self.precision == "fp32" else \
            f"{text[:-1]}, precision={self.precision!r})"

    @exclusive
    def forward(self, x, h0=None, lengths=None, training=True):
        """Run the GRU; returns ``(y, h_n)``.

        x: (T, B, I), or (B, T, I) with ``batch_first``.  h0: (L*D, B, H) or None (zeros).
        lengths: (B,) integers in [1, T], any order; y is 0 past each sequence's end and
        h_n holds each sequence's state at its last valid step.  With ``training=True``
        what backward() needs is kept; with False nothing is kept and dropout is off.
        """
        given = x
        x, h0, lengths = self._check_inputs(x, h0, lengths, training)
        T, B, _ = x.shape
        H, D = self.hidden_size, self.num_directions
        order = None
        pools = self._scratch_pools()
        if lengths is None:
            batch_sizes = np.full(T, B, np.intc)
        else:
            # The kernels want the longest sequences first (active rows form a prefix).
            # The sorted copies live in the layer's reusable buffers (see _scratch_pools);
            # only the outputs are new arrays (the kernels write the last layer's y in
            # the caller's order).
            order = np.argsort(-lengths, kind="stable")
            x = np.take(x, order, axis=1,
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
        # h_n is NaN whenever any output is (NaN propagates through the recurrence).
        self._check_result("the output", h_n)
        self._cache = ({"T": T, "B": B, "order": order, "layers": saved}
                       if training else None)
        if self.batch_first:
            y = y.transpose(1, 0, 2)
        return np.ascontiguousarray(y), np.ascontiguousarray(h_n)

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

    def stream(self, batch_size=1, h0=None):
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
        >>> for x_t in signal:                # x_t: (input_size,)
        ...     y_t = s.step(x_t)             # (hidden_size,); state kept in s.h
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

    def step(self, x, h=None):
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
        x = as_float_array("x", x, self.dtype)
        if x.ndim != 2:
            raise ValueError(f"x must be 2-D (B, input_size), got shape {x.shape}")
        B = x.shape[0]
        # dict.pop is atomic: the calling thread owns the cached stream until it puts it
        # back; a thread finding none (another one holds it) builds its own.
        cached = self.__dict__.pop("_step_stream", None)
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
                s.h = self._initial_state(h, (self.num_layers, B, self.hidden_size),
                                          "(num_layers, batch_size, hidden_size)")
        else:
            s = self.stream(B, h)
        y = s.step(x)
        h_new = s.h
        self._step_stream = (B, (self.reset_after, self.precision), arrays, s)
        return y, h_new

    @exclusive
    def backward(self, dy, dh_n=None):
        """Backpropagate the last training forward; returns ``(dx, dh0)``.

        dy has y's shape, dh_n h_n's (None: zeros).  Parameter gradients are added to
        ``grads``.  Each training forward supports one backward.
        """
        dy, dh_n = self._check_backward(dy, dh_n)
        cache, self._cache = self._cache, None
        order = cache["order"]
        pools = self._scratch_pools()
        if order is not None:  # sorted copies in reusable buffers, as in forward
            grad_out = np.take(dy, order, axis=1,
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
                w_ih, w_hh, _, _ = self.layer_params(layer, direction)
                _gru.backward(workspaces[direction],
                              grad_out[:, :, direction * H:(direction + 1) * H],
                              dh[layer * D + direction], w_ih, w_hh,
                              *self.layer_grads(layer, direction), dx, direction > 0,
                              order if layer == 0 else None)
            if mask is not None:
                dx *= mask
            grad_out = dx
        dx = grad_out
        if order is not None:
            inverse = np.argsort(order)
            dh = np.take(dh, inverse, axis=1)  # (dx is in the caller's order already)
        if self.batch_first:
            dx = dx.transpose(1, 0, 2)
        return np.ascontiguousarray(dx), np.ascontiguousarray(dh)
