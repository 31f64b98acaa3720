"""``grucy.torch.GRU``: a drop-in replacement for ``torch.nn.GRU`` running grucy's kernels.

It *is* a ``torch.nn.GRU`` (a subclass), so the constructor, the parameters
(``weight_ih_l0`` ...), ``state_dict``, ``repr``, ``.double()`` and friends are torch's own;
only ``forward`` differs: it runs the compiled layer ``grucy.GRU`` on NumPy views of the
input and of the parameters, inside a ``torch.autograd.Function`` whose backward is
grucy's backward kernel.  A ``torch.nn.GRU`` state dict loads as it is, and vice versa.

Differences from ``torch.nn.GRU`` (all refused loudly, never computed differently):
CPU tensors of float32 or float64 only; input or h0 containing NaN or inf raise a
ValueError; no double backward (``create_graph=True``); no TorchScript, tracing or export
through torch (``torch.jit``, ``torch.onnx.export``: export with
``grucy.interop.to_onnx``), no ``torch.func`` transforms.  ``torch.compile`` runs the
layer eagerly (a graph break: its kernels are not torch operators).  Dropout between
layers draws its masks from torch's generator (``torch.manual_seed`` makes them
reproducible), but not the same masks as torch's own kernel.

Importing this module imports torch; ``import grucy`` never does.
"""

from __future__ import annotations

import contextlib
import copy
import weakref

import numpy as np
import torch
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _gru
from ._limits import check_int32, check_memory
from ._threads import check_threads
from .layer import GRU as _LayerGRU

__all__ = ["GRU"]

_NUMPY_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


class _Engine(_LayerGRU):
    """grucy's layer computing with borrowed parameter arrays; dropout masks from torch."""

    def _dropout_mask(self, shape):
        tdtype = torch.float32 if self.dtype == np.float32 else torch.float64
        if self.dropout >= 1.0:  # torch's p=1: every value dropped (1 / (1 - p) is 0/0)
            return torch.zeros(shape, dtype=tdtype).numpy()
        keep = torch.empty(shape, dtype=tdtype).bernoulli_(1.0 - self.dropout)
        return keep.div_(1.0 - self.dropout).numpy()


def _as_numpy(t):
    """A NumPy view of CPU tensor ``t`` (copied only when not contiguous)."""
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    try:
        return t.numpy()
    except RuntimeError as exc:  # ("Cannot access data pointer of Tensor that doesn't
        raise RuntimeError(      # have storage": a torch.func wrapper)
            "grucy.torch.GRU computes on NumPy views of its tensors, so torch.func "
            "transforms (grad, vmap, functional_call on wrapped tensors) cannot run it; "
            "use torch.autograd, or torch.nn.GRU with the same state_dict") from exc


@contextlib.contextmanager
def _grucy_threads(n):
    """grucy's threads set to ``n`` for the block (None: leave them)."""
    old = _gru.get_num_threads()
    if n is None:
        yield
        return
    n = check_threads("grucy_threads", n)   # (the user's attribute, named as such)
    if n == old:
        yield
        return
    _gru.set_num_threads(n)
    try:
        yield
    finally:
        _gru.set_num_threads(old)


class _ScratchFree:
    """The reusable kernel buffers of one module's calls.

    Each call's engine takes a set (one dict per layer and direction, see
    ``grucy.GRU._scratch_pools``) and gives it back when the engine is gone: the engine
    lives in the autograd context that holds the call's workspace, so a set is never
    reused while a backward (also a repeated one, ``retain_graph=True``) may still read
    it.  Not copied or pickled with the module.
    """

    MAX_FREE = 4

    def __init__(self):
        self._free = []

    def lease(self, engine):
        """Attach a set of buffers to ``engine``, returned here when it is collected."""
        try:
            pools = self._free.pop()
        except IndexError:
            pools = [{} for _ in range(engine.num_layers * engine.num_directions)]
        engine._scratch = pools
        weakref.finalize(engine, self._give, pools)

    def _give(self, pools):
        if len(self._free) < self.MAX_FREE:
            self._free.append(pools)

    def __deepcopy__(self, memo):
        return _ScratchFree()

    def __reduce__(self):
        return (_ScratchFree, ())


class _GRUFunction(torch.autograd.Function):
    """y, h_n = GRU(x, h0; weights) with grucy's forward and backward kernels.

    ``engine`` is a private per-call copy of the layer, already bound to NumPy views of
    ``weights``; it keeps the forward workspace until backward.
    """

    @staticmethod
    def forward(ctx, engine, lengths, x, h0, *weights):
        with _grucy_threads(engine.grucy_threads):
            y, h_n = engine.forward(_as_numpy(x), h0=None if h0 is None else _as_numpy(h0),
                                    lengths=lengths, training=True)
        ctx.engine = engine
        ctx.cache = engine._cache  # kept apart so that retain_graph can backward again
        ctx.has_h0 = h0 is not None
        # Saved only so that autograd's version counters catch a weight changed in place
        # between forward and backward (backward reads the weights again).
        ctx.save_for_backward(*weights)
        return torch.from_numpy(y), torch.from_numpy(h_n)

    @staticmethod
    def backward(ctx, dy, dh_n):
        if torch.is_grad_enabled():
            # create_graph=True: once_differentiable alone refuses it only when an
            # incoming gradient requires grad; y.sum()'s does not, and a gradient
            # penalty's own terms were then silently treated as constants
            raise RuntimeError("grucy.torch.GRU has no double backward "
                               "(create_graph=True): its backward is grucy's kernel, not "
                               "torch operators; use torch.nn.GRU for gradient penalties")
        return _GRUFunction._backward(ctx, dy, dh_n)

    @staticmethod
    @once_differentiable
    def _backward(ctx, dy, dh_n):
        ctx.saved_tensors  # noqa: B018  raises if a weight was modified in place
        engine = ctx.engine
        engine._cache = ctx.cache
        engine.grads = {k: np.zeros_like(v) for k, v in engine._params.items()}
        with _grucy_threads(engine.grucy_threads):
            dx, dh0 = engine.backward(_as_numpy(dy), _as_numpy(dh_n))
        needs = ctx.needs_input_grad
        weight_grads = [torch.from_numpy(g) if need else None
                        for g, need in zip(engine.grads.values(), needs[4:])]
        return (None, None,
                torch.from_numpy(dx) if needs[2] else None,
                torch.from_numpy(dh0) if needs[3] and ctx.has_h0 else None,
                *weight_grads)


class GRU(torch.nn.GRU):
    """``torch.nn.GRU`` computed by grucy's CPU kernels (same arguments, same results).

    Parameters
    ----------
    *args, **kwargs
        Exactly those of ``torch.nn.GRU``: ``input_size, hidden_size, num_layers=1,
        bias=True, batch_first=False, dropout=0.0, bidirectional=False, device=None,
        dtype=None``.  ``device`` must be the CPU and ``dtype`` float32 or float64.

    Notes
    -----
    The parameters are ordinary ``torch.nn.Parameter`` objects, initialised by torch's
    own ``reset_parameters`` (so ``torch.manual_seed(s)`` gives the same weights as
    ``torch.nn.GRU``).  Every forward takes fresh NumPy views of them, so optimizers,
    ``load_state_dict`` and in-place edits are always seen; no copy is made.

    Examples
    --------
    >>> import torch
    >>> from grucy.torch import GRU
    >>> gru = GRU(8, 16, num_layers=2, batch_first=True)
    >>> y, h_n = gru(torch.randn(4, 10, 8))
    >>> y.shape, h_n.shape
    (torch.Size([4, 10, 16]), torch.Size([2, 4, 16]))
    """

    #: Threads of grucy's kernels during this module's calls; None (the default) means
    #: grucy's global setting, ``grucy.set_num_threads``.  Set it on the class or on an
    #: instance.  (torch.set_num_threads is torch's own, for torch's operators.)
    grucy_threads = None

    def __init__(self, *args, **kwargs):
        _check_size(*args, **kwargs)  # before torch allocates (and touches) the weights
        super().__init__(*args, **kwargs)
        for name in self._flat_weights_names:
            _check_tensor(f"parameter {name}", getattr(self, name))
        self._engines = {}
        self._scratch_free = _ScratchFree()

    def _engine(self, dtype, batch_first, weights):
        """A private copy of the layer for one call, bound to views of ``weights``."""
        template = self._engines.get(dtype)
        if template is None:
            template = _Engine(self.input_size, self.hidden_size, self.num_layers,
                               bias=self.bias, bidirectional=self.bidirectional,
                               dtype=dtype)
            self._engines[dtype] = template
        engine = copy.copy(template)
        self._scratch_free.lease(engine)
        engine.grucy_threads = self.grucy_threads
        engine.batch_first = batch_first
        engine.dropout = float(self.dropout) if self.training and self.num_layers > 1 else 0.0
        engine._params = {name: _as_numpy(w)
                          for name, w in zip(self._flat_weights_names, weights)}
        return engine

    def _run(self, x, hx, lengths, batch_first):
        """Forward through grucy; x is padded (lengths given) or full, hx may be None."""
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            # (a trace records the NumPy result as a constant: the traced module and the
            # exported ONNX graph ignored their input)
            raise RuntimeError("grucy.torch.GRU cannot be traced or exported through "
                               "torch (its kernels are not torch operators): export it "
                               "with grucy.interop.to_onnx, or trace a torch.nn.GRU "
                               "loaded with this module's state_dict")
        # Looked up afresh: load_state_dict, .double() or assignment may have replaced them.
        weights = [getattr(self, name) for name in self._flat_weights_names]
        if x.size(0 if batch_first else 1) == 0:
            return self._empty_batch(x, hx, weights, batch_first)
        dtype = _check_tensor("parameter weight_ih_l0", weights[0])
        for name, w in zip(self._flat_weights_names, weights):
            if _check_tensor(f"parameter {name}", w) != dtype:
                raise TypeError(f"all parameters must have one dtype; weight_ih_l0 is "
                                f"{weights[0].dtype}, {name} is {w.dtype}")
        for what, t in (("input", x), ("hx", hx)):
            if t is not None and _check_tensor(what, t) != dtype:
                raise TypeError(f"{what} must have the dtype of the parameters, "
                                f"{weights[0].dtype}, got {t.dtype}")
        engine = self._engine(dtype, batch_first, weights)
        tensors = [x] + ([] if hx is None else [hx]) + weights
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return _GRUFunction.apply(engine, lengths, x, hx, *weights)
        # Nothing to differentiate: no workspace, unless torch's train-mode dropout
        # (which needs grucy's training forward) applies.
        with _grucy_threads(engine.grucy_threads):
            y, h_n = engine.forward(_as_numpy(x), None if hx is None else _as_numpy(hx),
                                    lengths=lengths, training=engine.dropout > 0)
        return torch.from_numpy(y), torch.from_numpy(h_n)

    def _empty_batch(self, x, hx, weights, batch_first):
        """torch.nn.GRU's outputs for a batch of 0 sequences (grucy's layer needs one);
        tied to the inputs so that a backward gives their (empty or zero) gradients."""
        D = 2 if self.bidirectional else 1
        T = x.size(1 if batch_first else 0)
        tie = x.sum() * 0 + sum(w.sum() * 0 for w in weights)
        if hx is not None:
            tie = tie + hx.sum() * 0
        y = x.new_zeros((0, T, D * self.hidden_size) if batch_first
                        else (T, 0, D * self.hidden_size)) + tie
        h_n = x.new_zeros((self.num_layers * D, 0, self.hidden_size)) + tie
        return y, h_n

    @torch.compiler.disable
    def forward(self, input, hx=None):  # noqa: A002  (torch's argument name)
        """Same inputs and outputs as ``torch.nn.GRU.forward``.

        ``input`` is a tensor (T, B, I), (B, T, I) with ``batch_first``, unbatched (T, I),
        or a ``PackedSequence``; ``hx`` (num_layers * num_directions, B, H) or None.
        Returns ``(output, h_n)``; output is a ``PackedSequence`` when input is one.
        """
        if isinstance(input, PackedSequence):
            if hx is not None and not isinstance(hx, torch.Tensor):
                raise TypeError(f"hx must be a torch.Tensor or None, got "
                                f"{type(hx).__name__}")
            hx_check = (_zeros_state(self, int(input.batch_sizes[0]), input.data)
                        if hx is None else _permuted(hx, input.sorted_indices))
            self.check_forward_args(input.data, hx_check, input.batch_sizes)
            # Padded, time-major, in the caller's batch order (as hx is).
            x, lengths = pad_packed_sequence(input)
            y, h_n = self._run(x, hx, lengths.numpy(), batch_first=False)
            if input.sorted_indices is not None:
                y = y.index_select(1, input.sorted_indices)
                lengths = lengths.index_select(0, input.sorted_indices.cpu())
            # Packed in the input's own order, so all four fields match torch's output.
            data = pack_padded_sequence(y, lengths, enforce_sorted=True).data
            return PackedSequence(data, input.batch_sizes, input.sorted_indices,
                                  input.unsorted_indices), h_n
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor or a PackedSequence, got "
                            f"{type(input).__name__}")
        if hx is not None and not isinstance(hx, torch.Tensor):
            raise TypeError(f"hx must be a torch.Tensor or None, got {type(hx).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"GRU: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            if hx is not None and hx.dim() != 2:
                raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got "
                                   f"{hx.dim()}-D tensor")
            input = input.unsqueeze(batch_dim)
            hx = None if hx is None else hx.unsqueeze(1)
        elif hx is not None and hx.dim() != 3:
            raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got "
                               f"{hx.dim()}-D tensor")
        if hx is None:
            hx_check = _zeros_state(self, input.size(0 if self.batch_first else 1), input)
        else:
            hx_check = hx
        self.check_forward_args(input, hx_check, None)
        y, h_n = self._run(input, hx, None, batch_first=self.batch_first)
        if not batched:
            return y.squeeze(batch_dim), h_n.squeeze(1)
        return y, h_n


def _check_size(input_size=None, hidden_size=None, num_layers=1, bias=True,
                batch_first=False, dropout=0.0, bidirectional=False, *args, dtype=None,
                **kwargs):
    """SizeLimitError for a layer too large for memory or for the kernels' 32-bit sizes,
    raised before torch allocates it.  Anything else is left to torch's own checks."""
    sizes = (input_size, hidden_size, num_layers)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        return  # torch refuses these with its own messages
    D = 2 if bidirectional else 1
    I, H, L = sizes
    widest = max(I, D * H if L > 1 else 1, H)
    what = f"grucy.torch.GRU(input_size={I}, hidden_size={H}, num_layers={L})"
    check_int32(what, {"3*hidden_size*max(input_size, hidden_size, "
                       "num_directions*hidden_size)": 3 * H * widest})
    n = sum(D * (3 * H * ((I if k == 0 else D * H) + H) + (6 * H if bias else 0))
            for k in range(L))
    dt = dtype if isinstance(dtype, torch.dtype) else torch.get_default_dtype()
    check_memory(what, n * dt.itemsize)


def _check_tensor(what, t):
    """The NumPy dtype of CPU float32/float64 tensor ``t``, or a clear refusal."""
    if t.device.type != "cpu":
        raise RuntimeError(f"grucy.torch.GRU runs on the CPU only; {what} is on {t.device}")
    dtype = _NUMPY_DTYPES.get(t.dtype)
    if dtype is None:
        raise TypeError(f"grucy.torch.GRU computes in float32 or float64; {what} has dtype "
                        f"{t.dtype}")
    return dtype


def _permuted(hx, indices):
    return hx if hx is None or indices is None else hx.index_select(1, indices)


def _zeros_state(module, batch, x):
    """A zero-strided stand-in for hx, for torch's shape checks only (no allocation)."""
    d = 2 if module.bidirectional else 1
    return x.new_zeros(()).expand(module.num_layers * d, batch, module.hidden_size)
