"""Argument checks shared by every part of grucy: integers, reals, flags, real arrays,
dtypes, finiteness and seeds.

Pure NumPy: the reference, the losses, the optimizers and the training loop import this
without the compiled kernels.  When they are built, the finiteness check runs as one
vectorized C pass (``grucy._gru.all_finite``); otherwise NumPy does it.
"""

from __future__ import annotations

import numbers

import numpy as np

try:  # the compiled kernels are optional here: NumPy does the same check without them
    from ._gru import all_finite as _compiled_all_finite
except ImportError:
    _compiled_all_finite = None  # type: ignore[assignment]

_DTYPES = (np.float32, np.float64)


def _integer(name, value):
    """``value`` as a Python int (bools, floats and strings refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    return int(value)


def _str_list(name, value, items, item):
    """``value`` as a list of str (``items``: what the list holds, ``item``: one of
    them, for the messages).  A bare str is refused: iterating it would give one item
    per character."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a list of {items}, got a single "
                        f"{type(value).__name__} {value[:40]!r}; wrap it in a list")
    try:
        value = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a list of {items}, got "
                        f"{type(value).__name__}") from None
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise TypeError(f"{name}[{i}] must be {item}, got {type(v).__name__} {v!r}")
    return value


def _positive_int(name, value):
    value = _integer(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


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
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # NumPy has none: widened, exactly
            value = value.float()
        value = value.numpy()
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


def state_array(name, value, shape, dtype, shape_text):
    """``value`` (an initial state, a state's gradient) as a finite array of ``shape`` in
    ``dtype``, zeros for None; ``shape_text`` says the shape expected in the error."""
    if value is None:
        return np.zeros(shape, dtype)
    arr = as_float_array(name, value, dtype)
    if arr.shape != shape:
        raise ValueError(f"{name} must have {shape_text}, got {arr.shape}")
    check_finite(name, arr)
    return arr


def _finite(arr):
    """True when the float array ``arr`` holds no NaN or inf."""
    if _compiled_all_finite is not None and arr.dtype.isnative:
        ok = _compiled_all_finite(arr)  # C-contiguous float32/float64: one C pass
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


class NumericOverflowError(ValueError):
    """A computation from finite inputs and parameters produced NaN or inf: the numbers
    overflowed the dtype (a ValueError, as every refusal of a non-finite value is).
    The message names where (which layer, pass and array).  The training loop turns it
    into :class:`grucy.TrainingDivergedError`."""


def first_missing(arr):
    """``(index, value)`` of the first missing value of an object array (None, NaN,
    pandas' NA or NaT, as a nullable column or a label column with gaps holds them), or
    None."""
    for i, v in enumerate(arr.ravel().tolist()):
        if (v is None or type(v).__name__ in ("NAType", "NaTType")
                or (isinstance(v, (float, np.floating)) and v != v)):
            return tuple(int(j) for j in np.unravel_index(i, arr.shape)), v
    return None


def raise_missing(name, arr):
    """ValueError naming the first missing value of the object array ``arr``, if any."""
    miss = first_missing(arr)
    if miss is not None:
        raise ValueError(f"{name} contains a missing value ({miss[1]!r}, first at index "
                         f"{miss[0]}); fill or drop it first")


def check_int8_range(name, arr, K):
    """NumericOverflowError for values so large that the int8 GEMM's first float32
    product overflows: it scales the exact int32 sum S (|S| <= 255 * 127 * K) by the
    row's scale amax / 127, so |S * scale| <= 255 * K * amax must stay finite.  (Beyond,
    the gate saw inf, and the sigmoid turned it into a plausible, wrong output.)"""
    arr = np.asarray(arr)
    amax = float(np.max(np.abs(arr))) if arr.size else 0.0
    limit = float(np.finfo(np.float32).max) / (255 * K)
    if amax > limit:
        raise NumericOverflowError(
            f"{name} holds values up to {amax:.3g}: the int8 kernels scale their integer "
            f"sums by them and overflow float32 beyond {limit:.3g} (255 x {K} x value); "
            f"rescale {name}, or run the float layer")


def check_result(what, arr, hint=""):
    """NumericOverflowError naming ``what`` unless the float array ``arr`` is finite.

    For results computed from values already checked to be finite: a NaN or inf there
    is an overflow (or inf - inf), never bad input."""
    if arr.dtype.kind != "f" or _finite(arr):
        return
    if arr.ndim == 0:
        # A single number (a loss summed into a Python float): no index to show, and its
        # dtype says nothing of where the overflow happened, often in float32 terms
        # before a float64 sum.
        raise NumericOverflowError(f"{what} overflowed to NaN or inf (value {arr[()]}): "
                                   f"the numbers it was computed from are too large for "
                                   f"their dtype" + (f"; {hint}" if hint else ""))
    bad = np.argwhere(~np.isfinite(arr))
    if not bad.size:
        return
    where = tuple(int(i) for i in bad[0])
    raise NumericOverflowError(f"{what} overflowed to NaN or inf (first at index {where}, "
                               f"value {arr[where]}): the numbers are too large for "
                               f"{arr.dtype}" + (f"; {hint}" if hint else ""))


def check_dtype(dtype):
    """``dtype`` as np.dtype float32 or float64, or a TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt.type not in _DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    if not dt.isnative:
        order = "big" if dt.byteorder == ">" else "little"
        raise TypeError(f"dtype {dt.str!r} is {order}-endian, not this machine's byte "
                        f"order; grucy computes in native float32 or float64 (pass "
                        f"np.float32 or np.float64: arrays of either byte order are "
                        f"converted on input)")
    return dt


def _rng(seed, name="seed"):
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be None, a non-negative integer or a "
                        f"numpy.random.Generator, got {seed!r} ({exc})") from None
