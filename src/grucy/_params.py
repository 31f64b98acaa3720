"""The parameter protocol and the thread rules of every object holding parameters.

- :class:`ParameterHolder`: named parameter arrays with gradient accumulators of the same
  names (``parameters``, ``grads``, ``state_dict``, ``load_state_dict``, ``zero_grad``),
  what the optimizers and the training loop work with;
- :func:`exclusive`: one thread at a time inside an object's stateful methods;
- :class:`PerThreadState`: what a forward leaves for its backward, readable only by the
  thread that stored it.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable, Dict, List, Mapping, Tuple, TypeVar, cast

import numpy as np

from ._validation import NumericOverflowError, _finite, as_float_array, check_finite


def _names(names, shown=5):
    """At most ``shown`` names of a list, then how many more: messages stay short
    whatever a file or a caller declares."""
    names = list(names)
    if len(names) <= shown:
        return repr(names)
    return f"{names[:shown]!r} and {len(names) - shown} more"


_F = TypeVar("_F", bound=Callable[..., Any])


def exclusive(method: _F) -> _F:
    """Decorator: refuse to run ``method`` while another thread is inside a method of the
    same object decorated with it (RuntimeError, never blocking, never corrupting state).

    The calling thread may re-enter (a forward calling another forward).
    """
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return _run_owned(self, method.__name__, False, method, (self, *args), kwargs)
    return cast(_F, wrapper)


class ThreadOwner:
    """Which thread is inside an object's exclusive methods (``obj._lock``), and how
    deep.

    Not an RLock taken with ``acquire()``: Python may raise a KeyboardInterrupt right
    after a call returns, before the ``try`` that releases, and the lock then stayed
    taken for good (every other thread refused; reproduced within 7 Ctrl-Cs of a tight
    loop of calls).  The owner and depth here are plain stores, between which Python
    never raises, made under a guard held for those stores only.
    """

    __slots__ = ("guard", "freed", "state")

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.freed = threading.Condition(self.guard)  # (run_waiting's callers wait here)
        self.state: List[Any] = [None, 0]   # owner thread's ident, depth


def run_exclusive(obj: Any, what: str, fn: Callable[..., Any], *args: Any,
                  **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` as ``obj``'s owner (RuntimeError if another thread is
    inside; the same thread may re-enter); :func:`exclusive` runs methods so, and a
    caller that makes a sequence of calls on ``obj`` one use runs the sequence so."""
    return _run_owned(obj, what, False, fn, args, kwargs)


def run_waiting(obj: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` as ``obj``'s owner, as :func:`run_exclusive`, but a call
    while another thread is inside waits for it to leave instead of raising: for the
    uses that threads share and that need no state between calls (a fitted model's
    predict from the threads of a web server or of joblib's threading backend)."""
    return _run_owned(obj, "", True, fn, args, kwargs)


def _run_owned(obj, what, wait, fn, args, kwargs):
    me, owner, entered = threading.get_ident(), obj._lock, False
    try:
        with owner.guard:  # (also the Condition's lock)
            state = owner.state
            while state[0] is not None and state[0] != me:
                if not wait:
                    raise RuntimeError(
                        f"{type(obj).__name__} is in use by another thread ({what} "
                        f"refused): a layer keeps per-call state (the cache backward "
                        f"needs), so one layer serves one thread at a time; give each "
                        f"thread its own layer (copy.deepcopy, or load_state_dict into a "
                        f"new one)")
                # (Ctrl-C interrupts it, with nothing taken; the timeout re-checks in
                # case a leaving thread was interrupted before its notify)
                owner.freed.wait(0.05)
            state[0] = me       # (no call from here to `entered`: nothing interrupts)
            state[1] += 1
            entered = True
        return fn(*args, **kwargs)
    finally:
        if entered:  # (inline, not a helper: a call is where Python checks for Ctrl-C)
            with owner.guard:
                state[1] -= 1
                if state[1] == 0:
                    state[0] = None
                    owner.freed.notify_all()


class PerThreadState:
    """Descriptor for what a forward leaves for its backward (the cache).

    Reading it from a thread other than the one that stored it raises RuntimeError, so
    a backward can never use the cache of a forward another thread ran in between
    (which would silently give the wrong gradients).
    """

    def __set_name__(self, owner, name):
        self.key = f"{name}_per_thread"

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        entry = obj.__dict__.get(self.key)
        if entry is None:
            return None
        thread, value = entry
        if thread != threading.get_ident():
            raise RuntimeError(
                f"{type(obj).__name__}: the latest forward() ran in another thread; "
                f"backward() must run in the thread of its forward (one layer serves one "
                f"thread at a time)")
        return value

    def __set__(self, obj, value):
        obj.__dict__[self.key] = None if value is None else (threading.get_ident(), value)


class ParameterHolder:
    """Named parameter arrays with gradient accumulators of the same names.

    Subclasses fill ``self._params`` (name -> array of ``self.dtype``) and then call
    ``_init_grads()``.  Optimizers update the arrays of :meth:`parameters` in place.

    Every instance carries a lock used by :func:`exclusive` (created in ``__new__`` so
    that subclasses need not remember it; dropped and re-created by copy and pickle).
    """

    _params: Dict[str, np.ndarray]
    grads: Dict[str, np.ndarray]
    dtype: np.dtype

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj._lock = ThreadOwner()
        return obj

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state.pop("_scratch", None)  # reusable kernel buffers (GRU), never shared
        state.pop("_step_stream", None)  # GRU.step's compiled stream, never shared
        state.pop("_weight_snapshot", None)  # reused by the next training forward
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = ThreadOwner()

    def _init_grads(self):
        self.grads = {k: np.zeros_like(v) for k, v in self._params.items()}
        self._shapes = {k: v.shape for k, v in self._params.items()}

    def _param_shapes(self):
        """Each parameter's shape as made (a parameter of another shape was resized or
        replaced); for holders that did not make their own (a Sequential collects its
        layers'), the gradients' shapes."""
        shapes = self.__dict__.get("_shapes")
        if shapes is not None and shapes.keys() == self._params.keys():
            return shapes
        grads = self.grads if isinstance(self.grads, dict) else {}
        return {k: getattr(grads.get(k), "shape", v.shape) for k, v in self._params.items()}

    def parameters(self) -> List[np.ndarray]:
        """The parameter arrays themselves, in the order of ``grads``; update in place."""
        return list(self._params.values())

    def named_parameters(self) -> List[Tuple[str, np.ndarray]]:
        return list(self._params.items())

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of the parameters under PyTorch's names and shapes."""
        return {k: v.copy() for k, v in self._params.items()}

    @exclusive
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Copy parameters in (in place, so arrays from :meth:`parameters` stay valid).

        Keys and shapes must match exactly and values be finite real numbers (cast to
        the layer's dtype); nothing is changed unless all of them are.  Values may be
        NumPy arrays, torch tensors or anything ``np.asarray`` accepts.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        missing = [k for k in self._params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in self._params]
        if missing or unexpected:
            raise ValueError(f"state_dict keys do not match: missing {_names(missing)}, "
                             f"unexpected {_names(unexpected)}")
        new = {}
        for k, target in self._params.items():
            arr = as_float_array(f"state_dict[{k!r}]", state_dict[k], self.dtype)
            if arr.shape != target.shape:
                raise ValueError(
                    f"state_dict[{k!r}] has shape {arr.shape}, expected {target.shape}"
                )
            if not target.flags.writeable:  # (found before any parameter is written)
                raise ValueError(f"parameter {k!r} is read-only (a memory-mapped or frozen "
                                 f"array): load_state_dict copies into the parameters in "
                                 f"place; give the layer writeable parameters first")
            check_finite(f"state_dict[{k!r}]", arr)
            # A copy: values may be views of this object's own parameters.
            new[k] = np.array(arr, copy=True)
        for k, arr in new.items():
            self._params[k][...] = arr

    def _check_parameters(self, grads=False, values=True):
        """ValueError naming the first parameter (or, with ``grads``, gradient array)
        that is no longer what the kernels need.

        ``values=False`` checks only what the arrays are (type, dtype, layout, shape),
        not that every value is finite: for callers that read a few rows of a large
        table and check those rows themselves (:class:`grucy.nn.Embedding`).

        Parameters enter finite and well-formed (initialisation, load_state_dict,
        grucy.load, optimizer steps refusing non-finite gradients); this catches arrays
        changed in place through parameters() or ``grads`` (NaN or inf written in,
        resized, made read-only, replaced by another dtype).  An infinite weight can
        saturate a gate and give finite, meaningless outputs, so checking the outputs
        alone would not do.
        """
        dtype, grad_arrays = self.dtype, self.grads
        if grads and not isinstance(grad_arrays, dict):
            raise ValueError(f"grads must be the dict of gradient arrays the layer made, "
                             f"got {type(grad_arrays).__name__} (replaced?)")
        shapes = self._param_shapes()
        for k, p in self._params.items():
            # (ndarray subclasses are fine: a model unpickled by joblib holds read-only
            # memmaps, which inference reads as they are)
            if (not isinstance(p, np.ndarray) or p.dtype != dtype
                    or not p.flags.c_contiguous or p.shape != shapes[k]):
                raise ValueError(f"parameter {k!r} is no longer a C-contiguous {self.dtype} "
                                 f"array of its original shape (resized or replaced?)")
            if values and not _finite(p):
                try:
                    check_finite(f"parameter {k!r}", p)
                except ValueError as exc:
                    raise ValueError(f"{exc} (written in place through parameters()?)") \
                        from None
            g = grad_arrays.get(k) if grads else None
            if grads and (not isinstance(g, np.ndarray) or g.dtype != self.dtype
                          or g.shape != p.shape or not g.flags.c_contiguous
                          or not g.flags.writeable):
                raise ValueError(f"grads[{k!r}] must be a writeable C-contiguous "
                                 f"{self.dtype} array of shape {p.shape}, got "
                                 f"{type(g).__name__} {getattr(g, 'dtype', '')} "
                                 f"{getattr(g, 'shape', '')} (replaced or made read-only?)")

    def _check_result(self, name, arr):
        """After a computation from finite inputs and parameters: a non-finite result is
        an overflow; raise rather than return it."""
        if not _finite(arr):
            raise NumericOverflowError(f"{name} overflowed to NaN or inf: the inputs are "
                                       f"too large for {self.dtype}")

    @exclusive
    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def generators(self) -> List[np.random.Generator]:
        """The random generators this object draws from while training (dropout masks).

        The training loop saves their states in checkpoints so that a resumed run draws
        exactly the masks the uninterrupted run would have drawn.
        """
        return []
