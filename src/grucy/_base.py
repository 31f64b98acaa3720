"""What every GRU layer shares: configuration, parameters, validation, dropout masks.

The compiled layer (``grucy.GRU``) and the NumPy reference (``grucy.reference.GRU``) both
derive from :class:`GRUBase`; they differ only in how they compute ``forward`` and
``backward``.  Keeping validation and parameter handling here means the two cannot drift
apart in what they accept, while their arithmetic stays independent (the reference is the
test oracle of the kernels).
"""

from __future__ import annotations

import functools
import numbers
import os
import threading

import numpy as np

from . import _gru

_DTYPES = (np.float32, np.float64)
# The kernels index with C ints and call BLAS with 32-bit integer sizes.
INT32_MAX = 2**31 - 1


class SizeLimitError(ValueError, MemoryError):
    """A size too large to compute: over the memory grucy may use, or over what the
    kernels' 32-bit BLAS sizes can index.  Raised before anything is allocated; it is
    both a ValueError (a bad argument) and a MemoryError (code handling out-of-memory
    generically catches it)."""


def _positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def _real(name, value):
    """``value`` as a finite Python float (bools, strings, None, NaN and inf refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} "
                        f"{value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _flag(name, value):
    """A boolean option: True/False (or NumPy bools, or the integers 0 and 1)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def _as_real_array(name, value):
    """``value`` as an ndarray of real numbers (no cast, no copy when already one).

    Integers and floats of any width pass; bool, complex, object, string and datetime
    arrays are refused with TypeError (a cast would silently invent or drop numbers).
    Torch tensors are detached and moved to the CPU first.
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a rectangular array of real numbers, "
                         f"got {type(value).__name__} ({exc})") from None
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be an array of real numbers (floats or integers), "
                        f"got dtype {arr.dtype}")
    return arr


def as_float_array(name, value, dtype):
    """``value`` as an array of ``dtype``: integers and floats of any width are cast,
    anything else (bool, complex, object, strings) refused with TypeError."""
    arr = _as_real_array(name, value)
    if arr.dtype == dtype:
        return arr
    with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf: check_finite
        return arr.astype(dtype)


def _finite(arr):
    """True when the float array ``arr`` holds no NaN or inf."""
    ok = _gru.all_finite(arr)  # C-contiguous float32/float64: one vectorized C pass
    if ok is not None:
        return ok
    if arr.size > 65536:
        # No boolean temporary: any NaN or inf makes the sum non-finite (a finite sum
        # that overflows only sends us to the exact check below).
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.add.reduce(arr, axis=None)):
                return True
    return bool(np.isfinite(arr).all())


def check_finite(name, arr, hint="grucy refuses non-finite values"):
    """Raise ValueError naming ``name`` and the first bad index if ``arr`` has NaN/inf;
    ``hint`` ends the message (what to do about it)."""
    if arr.dtype.kind != "f" or _finite(arr):
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} contains NaN or inf (first at index {where}, value "
                         f"{arr[where]}); {hint}")


def check_dtype(dtype):
    """``dtype`` as np.dtype float32 or float64, or a TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt.type not in _DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _rng(seed, name="seed"):
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be None, a non-negative integer or a "
                        f"numpy.random.Generator, got {seed!r} ({exc})") from None


# -- how much memory grucy may use -------------------------------------------------------
def _parse_bytes(text):
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in units and t[-1:] else ""
    number = t[:-1] if unit else t
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"GRUCY_MAX_MEMORY must be a number of bytes such as 8e9 or "
                         f"16G, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise ValueError(f"GRUCY_MAX_MEMORY must be positive and finite, got {text!r}")
    return int(value)


@functools.lru_cache(maxsize=1)
def _machine_memory():
    """Physical memory, lowered to a cgroup (container) limit when there is one."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        pass
    for path in ("/sys/fs/cgroup/memory.max",
                 "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else 2**63


@functools.lru_cache(maxsize=1)
def _address_space_limit():
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def memory_limit():
    """Bytes one grucy call may plan to allocate.

    ``GRUCY_MAX_MEMORY`` (bytes, or with a K/M/G/T/P suffix) when set; otherwise the
    smaller of physical memory, the container (cgroup) limit and the address-space limit
    (``ulimit -v``; these three are read once per process).  Asking for more could only
    end in a MemoryError or, with memory overcommit, in the kernel's OOM killer ending
    the process, so it is refused up front.
    """
    env = os.environ.get("GRUCY_MAX_MEMORY")
    if env:
        return _parse_bytes(env)
    limit = _machine_memory()
    rlimit = _address_space_limit()
    return limit if rlimit is None else min(limit, rlimit)


def _gib(nbytes):
    return f"{nbytes / 2**30:.3g} GiB"


def _describe(what):
    return what() if callable(what) else what


def check_memory(what, nbytes):
    """SizeLimitError unless ``nbytes`` fits in :func:`memory_limit`.

    ``what`` names the request: a string, or a callable returning one (built only when
    the check fails, to keep small calls fast).
    """
    limit = memory_limit()
    if nbytes > limit:
        raise SizeLimitError(f"{_describe(what)} needs about {_gib(nbytes)}, more than the "
                             f"{_gib(limit)} grucy may use (physical memory, container "
                             f"and ulimit -v limits; set GRUCY_MAX_MEMORY to change)")


def check_int32(what, products):
    """SizeLimitError when a size the kernels index with a 32-bit int overflows it.

    ``products`` maps a readable formula ("T*B") to its value.
    """
    for label, value in products.items():
        if value > INT32_MAX:
            raise SizeLimitError(f"{_describe(what)}: {label} = {value} "
                                 f"exceeds 2**31-1, the largest size the 32-bit BLAS calls "
                                 f"and kernel indices accept")


# -- one thread at a time ------------------------------------------------------------------
def exclusive(method):
    """Decorator: refuse to run ``method`` while another thread is inside a method of the
    same object decorated with it (RuntimeError, never blocking, never corrupting state).

    The calling thread may re-enter (a forward calling another forward).
    """
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        lock = self._lock
        if not lock.acquire(blocking=False):
            raise RuntimeError(
                f"{type(self).__name__} is in use by another thread ({method.__name__} "
                f"refused): a layer keeps per-call state (the cache backward needs), so "
                f"one layer serves one thread at a time; give each thread its own layer "
                f"(copy.deepcopy, or load_state_dict into a new one)")
        try:
            return method(self, *args, **kwargs)
        finally:
            lock.release()
    return wrapper


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

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj._lock = threading.RLock()
        return obj

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state.pop("_scratch", None)  # reusable kernel buffers (GRU), never shared
        state.pop("_step_stream", None)  # GRU.step's compiled stream, never shared
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

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

    @exclusive
    def load_state_dict(self, state_dict):
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
            raise ValueError(
                f"state_dict keys do not match: missing {missing}, unexpected {unexpected}"
            )
        new = {}
        for k, target in self._params.items():
            arr = as_float_array(f"state_dict[{k!r}]", state_dict[k], self.dtype)
            if arr.shape != target.shape:
                raise ValueError(
                    f"state_dict[{k!r}] has shape {arr.shape}, expected {target.shape}"
                )
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
        for k, p in self._params.items():
            g = grad_arrays.get(k)
            # (ndarray subclasses are fine: a model unpickled by joblib holds read-only
            # memmaps, which inference reads as they are)
            if (not isinstance(p, np.ndarray) or p.dtype != dtype
                    or not p.flags.c_contiguous or g is None or p.shape != g.shape):
                raise ValueError(f"parameter {k!r} is no longer a C-contiguous {self.dtype} "
                                 f"array of its original shape (resized or replaced?)")
            if values and not _finite(p):
                try:
                    check_finite(f"parameter {k!r}", p)
                except ValueError as exc:
                    raise ValueError(f"{exc} (written in place through parameters()?)") \
                        from None
            if grads and (not isinstance(g, np.ndarray) or g.dtype != self.dtype
                          or not g.flags.c_contiguous or not g.flags.writeable):
                raise ValueError(f"grads[{k!r}] must be a writeable C-contiguous "
                                 f"{self.dtype} array of shape {p.shape}, got "
                                 f"{type(g).__name__} {getattr(g, 'dtype', '')} "
                                 f"(replaced or made read-only?)")

    def _check_result(self, name, arr):
        """After a computation from finite inputs and parameters: a non-finite result is
        an overflow; raise rather than return it."""
        if not _finite(arr):
            raise ValueError(f"{name} overflowed to NaN or inf: the inputs are too large "
                             f"for {self.dtype}")

    @exclusive
    def zero_grad(self):
        for g in self.grads.values():
            g.fill(0)

    def generators(self):
        """The random generators this object draws from while training (dropout masks).

        The training loop saves their states in checkpoints so that a resumed run draws
        exactly the masks the uninterrupted run would have drawn.
        """
        return []


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
        self.bias = _flag("bias", bias)
        self.batch_first = _flag("batch_first", batch_first)
        self.dropout = float(dropout)
        self.bidirectional = _flag("bidirectional", bidirectional)
        self.reset_after = _flag("reset_after", reset_after)
        self.dtype = dt
        self.num_directions = 2 if self.bidirectional else 1
        self._check_size()

        rng = _rng(seed)
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

    def _check_size(self):
        """Refuse, before allocating, parameters the kernels cannot index or memory
        cannot hold."""
        H, D, L = self.hidden_size, self.num_directions, self.num_layers
        what = f"GRU(input_size={self.input_size}, hidden_size={H}, num_layers={L})"
        widest = max(self.input_size, D * H if L > 1 else 1, H)
        check_int32(what, {"3*hidden_size*max(input_size, hidden_size, "
                           "num_directions*hidden_size)": 3 * H * widest})
        n = sum(int(np.prod(self._param_shape(k)))
                for k in param_names(L, self.bidirectional, self.bias))
        # parameters and gradients, plus the float64 draw of the initialisation
        check_memory(what, n * (2 * self.dtype.itemsize) + 8 * 3 * H * widest)

    def _call_bytes(self, T, B, training):
        """An upper bound on the bytes one forward (and its backward) allocates."""
        H, D, L, I = self.hidden_size, self.num_directions, self.num_layers, self.input_size
        N, widest = T * B, max(I, D * H)
        per_direction = N * 3 * H + (2 * N * H if training else B * H) + B * 3 * H + N * widest
        outputs = N * D * H * (2 * L if training else 2)  # layer outputs (+ dropout masks)
        total = 2 * N * I + outputs + (L * D if training else 1) * per_direction
        if training:  # backward: dG, dGxn, dX and its packed twin, dh
            total += N * 4 * H + 2 * N * widest + 2 * L * D * B * H
        return total * self.dtype.itemsize

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

    def layer_params(self, layer, direction):
        """(W_ih, W_hh, b_ih, b_hh) of one layer and direction; zero biases when bias=False."""
        sfx = f"l{layer}" + ("_reverse" if direction else "")
        p = self._params
        w_ih, w_hh = p[f"weight_ih_{sfx}"], p[f"weight_hh_{sfx}"]
        if self.bias:
            return w_ih, w_hh, p[f"bias_ih_{sfx}"], p[f"bias_hh_{sfx}"]
        zeros = _read_only_zeros(3 * self.hidden_size, self.dtype)
        return w_ih, w_hh, zeros, zeros

    def layer_grads(self, layer, direction):
        """Gradient accumulators matching :meth:`layer_params`.

        With ``bias=False`` the kernels still add bias gradients somewhere: into fresh
        scratch arrays (written, so never the shared read-only zeros of layer_params).
        """
        sfx = f"l{layer}" + ("_reverse" if direction else "")
        g = self.grads
        if self.bias:
            return (g[f"weight_ih_{sfx}"], g[f"weight_hh_{sfx}"],
                    g[f"bias_ih_{sfx}"], g[f"bias_hh_{sfx}"])
        return (g[f"weight_ih_{sfx}"], g[f"weight_hh_{sfx}"],
                np.zeros(3 * self.hidden_size, self.dtype),
                np.zeros(3 * self.hidden_size, self.dtype))

    # -- input checks -----------------------------------------------------------------
    def _initial_state(self, h0, shape, layout):
        """``h0`` validated as a finite array of ``shape`` in the layer's dtype (zeros
        for None); ``layout`` names the axes in the error message."""
        if h0 is None:
            return np.zeros(shape, self.dtype)
        h0 = as_float_array("h0", h0, self.dtype)
        if h0.shape != shape:
            raise ValueError(f"h0 must have shape {layout} = {shape}, got {h0.shape}")
        check_finite("h0", h0)
        return h0

    def _check_inputs(self, x, h0, lengths, training=True):
        """Validate and convert; returns time-major x (T, B, I), h0 (L*D, B, H), lengths.

        ``lengths`` comes back as an int64 array, or None when every sequence is full.
        Starts by forgetting the previous forward: backward() always refers to the
        latest forward call, and a refused call leaves nothing to backpropagate.
        """
        self._cache = None
        _flag("training", training)
        x = _as_real_array("x", x)
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
        H, D = self.hidden_size, self.num_directions
        shape = x.shape

        def what():
            mode = "training" if training else "inference"
            return f"a {mode} forward of x with shape {shape} (T, B, I)"
        check_int32(what, {"T*B": T * B, "B*3*hidden_size": B * 3 * H,
                           "B*max(input_size, num_directions*hidden_size)":
                           B * max(I, D * H)})
        check_memory(what, self._call_bytes(T, B, training))
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
        check_finite("dy", dy)
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
            check_finite("dh_n", dh_n)
        self._check_parameters(grads=True)
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
        # A file load_state_dict would refuse is not written in the first place.
        for k, p in self._params.items():
            check_finite(f"parameter {k!r}", p)
        return self.state_dict()

    @classmethod
    def _from_saved(cls, config, arrays):
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        obj = cls(**config)
        for k, a in arrays.items():  # a file stores the layer's own dtype: no casting
            if a.dtype != obj.dtype:
                raise TypeError(f"array {k!r} has dtype {a.dtype}, the layer {obj.dtype}")
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
