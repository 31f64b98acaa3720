"""What the sequence estimators read: sequences of fixed or variable length, their
targets (one per sequence or one per step) and weights, all checked with messages that
name the argument.

Sequences arrive as

- an array (n, T) (univariate: T steps of one feature) or (n, T, F);
- the same padded array with ``lengths`` (n,): sequence i is its first ``lengths[i]``
  steps, whatever the padding holds (zeros, NaN: it is never read);
- a list of arrays (T_i,) or (T_i, F), of different lengths or not (nested lists of
  numbers of one shape are the array they spell, as scikit-learn passes ``X.tolist()``).

and are held as :class:`~grucy.training.Packed` (the valid steps one after the other),
so padding is neither stored nor read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .._validation import _as_real_array, check_finite, raise_missing
from ..training import Packed

__all__ = ["SequenceInput", "read_sequences", "read_lengths", "per_step_values",
           "sample_weights", "restructure"]


@dataclass
class SequenceInput:
    """Sequences as the estimators hold them."""

    packed: Packed          # float64 steps (N, F)
    form: str               # "array" (no lengths), "padded" (array + lengths), "list"
    array_ndim: int         # 2 for (n, T) / a list of (T_i,), 3 for (n, T, F) / (T_i, F)
    width: int              # T of the array (the longest sequence of a list)

    @property
    def n(self):
        return len(self.packed)

    @property
    def lengths(self):
        return self.packed.lengths

    @property
    def n_features(self):
        return self.packed.values.shape[1]


def _is_sequence_list(X):
    return isinstance(X, (list, tuple)) and len(X) > 0 and not np.isscalar(X[0])


def _spells_array(X, seqs):
    """Whether the list ``X`` (read as ``seqs``) is an array written as nested lists
    (scikit-learn's array-like, e.g. ``X.tolist()``: rows of numbers of one shape)
    rather than a list of sequences.  A list holding arrays is a list of sequences even
    when their lengths happen to be equal: read as an array, predict would return an
    array for it and fit would fix the number of steps."""
    return (all(isinstance(s, (list, tuple)) for s in X)
            and len({s.shape for s in seqs}) == 1)


def read_lengths(lengths, n, width, name="lengths"):
    """``lengths`` as n int64 values in [1, width]."""
    arr = _as_real_array(name, lengths)
    if arr.dtype.kind == "f":
        if not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            raise TypeError(f"{name} must hold integers (the valid steps of each sequence), "
                            f"got {arr.dtype} values that are not whole numbers")
    if arr.shape != (n,):
        raise ValueError(f"{name} must have one entry per sequence, shape ({n},), got "
                         f"{arr.shape}")
    arr = arr.astype(np.int64)
    if n and (arr.min() < 1 or arr.max() > width):
        raise ValueError(f"{name} must lie in [1, {width}] (each sequence has at least one "
                         f"step and at most the array's {width}), got values in "
                         f"[{arr.min()}, {arr.max()}]")
    return arr


def _real_values(name, value):
    arr = np.asarray(value)
    if arr.dtype.kind == "c":
        raise ValueError("Complex data not supported")
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)  # numbers pass
        except (TypeError, ValueError) as exc:
            raise_missing(name, arr)
            raise type(exc)(f"{name} must hold real numbers: {exc}") from None
    elif arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)  # (a float64 array as it is: padding too)


def read_sequences(X, lengths=None, *, owner="the estimator", name="X") -> SequenceInput:
    """Sequences ``X`` (with optional ``lengths``) as a :class:`SequenceInput`."""
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise TypeError(f"{owner} does not accept sparse input; convert {name} to a dense "
                        f"array first")
    if _is_sequence_list(X) and lengths is None:
        seqs = [_real_values(f"{name}[{i}]", s) for i, s in enumerate(X)]
        if not _spells_array(X, seqs):
            return _read_list(seqs, name)
        X = np.stack(seqs)
    elif _is_sequence_list(X):
        if len({np.shape(s) for s in X}) > 1:
            raise ValueError(f"lengths goes with a padded array {name}; a list of "
                             f"sequences of different lengths carries its own lengths "
                             f"(drop lengths=, or pad {name} into one array)")
    arr = _real_values(name, X)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2-D (n_samples, n_steps) or 3-D (n_samples, "
                         f"n_steps, n_features), a padded array with lengths=, or a list "
                         f"of arrays (n_steps_i,) or (n_steps_i, n_features); got a "
                         f"{arr.ndim}-D array of shape {arr.shape}. Reshape your data, "
                         f"e.g. {name}.reshape(-1, 1) for one step per sample.")
    if arr.shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={arr.shape}) while a "
                         f"minimum of 1 is required.")
    if arr.shape[1] == 0 or (arr.ndim == 3 and arr.shape[2] == 0):
        raise ValueError(f"Found array with 0 feature(s) (shape={arr.shape}) while a "
                         f"minimum of 1 is required.")
    arr3 = arr if arr.ndim == 3 else arr[:, :, None]
    if lengths is None:
        check_finite(name, arr, hint="fill or drop missing values first")
        values = arr3.reshape(-1, arr3.shape[2])
        offsets = np.arange(arr3.shape[0] + 1, dtype=np.int64) * arr3.shape[1]
        return SequenceInput(Packed(values, offsets), "array", arr.ndim, arr.shape[1])
    lens = read_lengths(lengths, arr.shape[0], arr.shape[1])
    packed = Packed.from_padded(arr3, lens)
    _check_valid_finite(name, packed)
    return SequenceInput(packed, "padded", arr.ndim, arr.shape[1])


def _check_valid_finite(name, packed, hint="fill or drop missing values first"):
    """NaN/inf in the valid steps (the padding may hold anything) named by (sequence,
    step): the user's positions, not the packed array's."""
    v = packed.values
    if v.dtype.kind != "f" or np.all(np.isfinite(v)):
        return
    row = int(np.argwhere(~np.isfinite(v))[0][0])
    i = int(np.searchsorted(packed.offsets, row, side="right") - 1)
    t = row - int(packed.offsets[i])
    raise ValueError(f"{name} contains NaN or inf within sequence {i} (step {t}); {hint} "
                     f"(padding past lengths may hold anything)")


def _read_list(seqs, name):
    ndims = {s.ndim for s in seqs}
    if not ndims <= {1, 2} or len(ndims) != 1:
        raise ValueError(f"{name} as a list must hold arrays of one kind: all (n_steps_i,) "
                         f"or all (n_steps_i, n_features); got arrays of "
                         f"{sorted(ndims)} dimensions")
    ndim = ndims.pop()
    seqs2 = [s[:, None] if ndim == 1 else s for s in seqs]
    widths = {s.shape[1] for s in seqs2}
    if len(widths) != 1:
        raise ValueError(f"every sequence of {name} must have the same number of features "
                         f"per step, got {sorted(widths)}")
    for i, s in enumerate(seqs2):
        if len(s) == 0:
            raise ValueError(f"{name}[{i}] is empty; every sequence needs at least one step")
    if widths == {0}:
        raise ValueError(f"the sequences of {name} have 0 features per step")
    packed = Packed.from_list(seqs2)
    _check_valid_finite(name, packed)
    return SequenceInput(packed, "list", ndim + 1, int(packed.lengths.max()))


def per_step_values(name, y, seqs: SequenceInput, *, numeric=True):
    """Per-step targets ``y`` for the sequences ``seqs``: a list of (T_i,) / (T_i, k)
    or an array (n, T) / (n, T, k) padded like ``X``.  Returns ``(values, ndim)``:
    the valid steps packed as one array (N,) or (N, k) (padding dropped unread), and
    2 or 3 (the dimensions of the array form)."""
    n, lengths = seqs.n, seqs.lengths
    if y is None:
        raise ValueError(f"{name} is None; per-step targets need one value per valid step")
    if isinstance(y, (list, tuple)) and len(y) and not np.isscalar(y[0]):
        parts = [np.asarray(v) for v in y]
        if len(parts) != n:
            raise ValueError(f"{name} must hold one target sequence per sequence of X, got "
                             f"{len(parts)} for {n}")
        ndims = {p.ndim for p in parts}
        if len(ndims) != 1 or not ndims <= {1, 2}:
            raise ValueError(f"{name} as a list must hold arrays (n_steps_i,) or "
                             f"(n_steps_i, n_targets) alike")
        for i, (p, T) in enumerate(zip(parts, lengths)):
            if len(p) != T:
                raise ValueError(f"{name}[{i}] has {len(p)} steps, but sequence {i} of X "
                                 f"has {T}: per-step targets need one value per step")
        if len({p.shape[1:] for p in parts}) != 1:
            raise ValueError(f"every target sequence of {name} must have the same number "
                             f"of targets per step")
        values = np.concatenate(parts, axis=0)
        ndim = parts[0].ndim + 1
    else:
        arr = np.asarray(y)
        if arr.ndim not in (2, 3) or arr.shape[0] != n:
            raise ValueError(f"{name} must be (n_samples, n_steps) or (n_samples, n_steps, "
                             f"n_targets) with a value per step, or a list of arrays, got "
                             f"shape {arr.shape} for {n} sequences")
        if arr.shape[1] < int(lengths.max()):
            raise ValueError(f"{name} has {arr.shape[1]} steps, but X has sequences of "
                             f"{int(lengths.max())}")
        mask = np.arange(arr.shape[1])[None, :] < lengths[:, None]
        values = arr[mask]
        ndim = arr.ndim
    if numeric:
        values = _real_values(name, values)
        # values are packed as X's steps are: name the bad one by (sequence, step)
        _check_valid_finite(name, Packed(values, seqs.packed.offsets),
                            hint="every valid step needs a finite value")
    return values, ndim


def sample_weights(sample_weight, seqs: Optional[SequenceInput], n, *, per_step=False):
    """``sample_weight`` as float64 (n,), or with ``per_step`` also a list / padded (n, T)
    of per-step weights packed (N,); None stays None.  Finite, >= 0, positive sum."""
    if sample_weight is None:
        return None
    if per_step and seqs is not None and not np.isscalar(sample_weight) and (
            (isinstance(sample_weight, (list, tuple)) and len(sample_weight)
             and not np.isscalar(sample_weight[0])) or np.ndim(sample_weight) == 2):
        w, _ = per_step_values("sample_weight", sample_weight, seqs)
        if w.ndim != 1:
            raise ValueError("per-step sample_weight must hold one weight per step")
    else:
        w = _as_real_array("sample_weight", sample_weight).astype(np.float64)
        if w.shape != (n,):
            raise ValueError(f"sample_weight must have shape (n_samples,) = ({n},)"
                             f"{' or one weight per step' if per_step else ''}, got "
                             f"{w.shape}")
    check_finite("sample_weight", w)
    if np.any(w < 0):
        raise ValueError("sample_weight must be >= 0 (a negative weight is not a weight)")
    if not w.sum() > 0:
        raise ValueError("sample_weight is zero everywhere (or empty): there is nothing to "
                         "fit or score; at least one sample needs a positive weight")
    return _finite_total(w)


def _finite_total(w):
    """Weights whose total overflows float64 (each near 1e308), or so small that their
    products with a loss underflow (all below 1e-150: 5e-324 weights trained nothing),
    divided by the largest: only their ratios matter (weighted means, the loss's
    normaliser), and the training loop and np.average sum them.  Others are returned as
    given (bit for bit)."""
    with np.errstate(over="ignore"):
        total = w.sum()
    top = w.max() if w.size else 0.0
    return w if np.isfinite(total) and not 0 < top < 1e-150 else w / top


def restructure(values, seqs: SequenceInput, fill):
    """Per-step results (N, ...) in the structure of the input: a list of (T_i, ...) for a
    list, (n, T, ...) for an array (``fill`` past each end when padded)."""
    if seqs.form == "list":
        return seqs.packed.split(values)
    n, T = seqs.n, seqs.width
    # (strings: the wider of the labels and the fill, so a fill never gets truncated)
    dtype = (values.dtype if values.dtype.kind == "O"
             else np.result_type(values.dtype, np.asarray(fill).dtype))
    out = np.full((n, T) + values.shape[1:], fill, dtype=dtype)
    mask = np.arange(T)[None, :] < seqs.lengths[:, None]
    out[mask] = values
    return out

