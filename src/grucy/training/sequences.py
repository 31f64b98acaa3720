"""Variable-length, weighted examples: :class:`Packed` sequences and :class:`SequenceTask`.

A batch of sequences of different lengths is stored *packed* (the valid steps of every
sequence one after the other, ``values`` (N, ...), with ``offsets`` (n + 1,)), so that
no memory goes to padding; a mini-batch is padded to its own longest sequence only when
it is handed to the network, together with its ``lengths``, and the GRU's packed-sequence
semantics make sure the padding is never read.

:class:`SequenceTask` is :class:`~grucy.training.ArrayTask` for such data: inputs of
fixed or variable length, targets per example or per step (one per valid step, packed
like the inputs), and weights per loss term (a sample weight per example, or per step).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from .._base import GRUBase
from .._validation import _as_real_array, check_finite
from ..losses import count_terms
from .tasks import (ArrayTask, _check_loss, _check_net, _digest, _indices,
                    check_metric_names, metric_value, net_output)

__all__ = ["Packed", "SequenceTask"]


class Packed:
    """Sequences of different lengths stored one after the other.

    ``values[offsets[i]:offsets[i + 1]]`` is sequence ``i`` (its steps on the first
    axis; any trailing shape, the same for every sequence).  Build one with
    :meth:`from_list` or :meth:`from_padded`.
    """

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        values = np.asarray(values)
        offsets = np.asarray(offsets, dtype=np.int64)
        if values.ndim == 0:
            raise ValueError("values must have a step axis")
        if (offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0
                or offsets[-1] != len(values) or np.any(np.diff(offsets) < 0)):
            raise ValueError(f"offsets must rise from 0 to len(values) = {len(values)}, "
                             f"got {offsets[:8].tolist()}{'...' if offsets.size > 8 else ''}")
        self.values, self.offsets = values, offsets

    @classmethod
    def from_list(cls, sequences: Sequence[np.ndarray]) -> "Packed":
        """Pack a list of arrays ``(T_i, ...)`` (equal trailing shapes, T_i >= 0)."""
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        if len(sequences) == 0:
            raise ValueError("no sequences to pack")
        return cls(np.concatenate(list(sequences), axis=0), offsets)

    @classmethod
    def from_padded(cls, padded: np.ndarray, lengths: Optional[np.ndarray] = None) -> "Packed":
        """Pack ``padded`` (n, T, ...) keeping the first ``lengths[i]`` steps of row i
        (all T when ``lengths`` is None): n integers in [1, T]."""
        padded = np.asarray(padded)
        if padded.ndim < 2:
            raise ValueError(f"padded must be (n, T, ...), at least 2-D, got shape "
                             f"{padded.shape}")
        n, T = padded.shape[:2]
        # checked as the GRU checks its lengths: a length past T would otherwise show up
        # as a wrong "offsets" complaint, a wrong count as a raw IndexError
        if lengths is None:
            lengths = np.full(n, T, np.int64)
        elif n == 0 and np.size(lengths) == 0:  # no rows: no range to check
            lengths = np.zeros(0, np.int64)
        else:
            lengths = GRUBase._check_lengths(lengths, T, n)
        mask = np.arange(T)[None, :] < lengths[:, None]
        return cls(padded[mask], np.concatenate([[0], np.cumsum(lengths)]))

    def __len__(self):
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def step_shape(self):
        return self.values.shape[1:]

    def rows(self, indices) -> np.ndarray:
        """Indices into ``values`` of the steps of ``indices``, sequence after sequence."""
        lengths = self.lengths[indices]
        starts = self.offsets[:-1][indices]
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, np.int64)
        first = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return first + np.arange(total)

    def padded(self, indices, fill=0, dtype=None):
        """``(batch (B, T_b, ...), lengths (B,))``: the sequences ``indices`` padded with
        ``fill`` to the longest of them, T_b."""
        indices = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[indices]
        T = int(lengths.max()) if lengths.size else 0
        dtype = self.values.dtype if dtype is None else dtype
        out = np.full((len(indices), T) + self.step_shape, fill, dtype=dtype)
        mask = np.arange(T)[None, :] < lengths[:, None]
        out[mask] = self.values[self.rows(indices)]
        return out, lengths

    def split(self, array: np.ndarray) -> list:
        """``array`` (N, ...), one row per packed step, cut back into the sequences."""
        return np.split(array, self.offsets[1:-1])


def _as_packed_or_array(name, value):
    if isinstance(value, Packed):
        return value
    return _as_real_array(name, value)


class SequenceTask(ArrayTask):
    """Supervised examples of fixed or variable length, weighted, with a target per
    example or per step, through a network ``net.forward(X, training, lengths=...)``.

    Parameters
    ----------
    net
        As for :class:`ArrayTask`; its ``forward`` also takes ``lengths`` (B,) when ``X``
        is :class:`Packed` (the batch is padded to its longest sequence).
    X : ndarray (n, T, F) or Packed
        Inputs (scaled, in the net's dtype).  Packed: sequences of different lengths.
    Y : ndarray (n, ...) or Packed
        Targets per example, or (Packed, with the lengths of ``X``) one per step; the
        network's output then has a step axis and the loss terms of padded steps weigh 0.
    loss : callable
        ``loss(out, Y_batch, weight=..., normalizer=...) -> (loss, dout)``.
    train_idx, val_idx : array of int
    metrics : dict, optional
        name -> ``fn(out, Y_batch, w, indices) -> (sum, count)``, ``w`` the batch's term
        weights (float64, the shape of the loss terms; 0 on padded steps), ``indices``
        its example numbers (for names starting with ``rmse``: the root is reported,
        times ``fn.unit`` when the function has that attribute).
    weight : ndarray or Packed, optional
        Weights of the loss terms: (n,) one per example (broadcast to its terms), an array
        of the terms' shape, or (with per-step targets) a Packed of one weight per step.
        None: every term weighs 1.  Zero-weight terms add nothing and are not counted.
    """

    def __init__(self, net: Any, X: Any, Y: Any, loss: Callable, train_idx: Any,
                 val_idx: Any = (), metrics: Optional[Dict[str, Callable]] = None, *,
                 weight: Any = None):
        _check_net(net, ("forward", "backward", "parameters"))
        _check_loss(loss)
        X = _as_packed_or_array("X", X)
        Y = _as_packed_or_array("Y", Y)
        n = len(X)
        if not isinstance(X, Packed) and X.ndim != 3:
            raise ValueError(f"X must be (n, T, F) or Packed, got shape {X.shape}")
        if isinstance(Y, np.ndarray) and (Y.ndim == 0 or len(Y) != n):
            raise ValueError(f"X and Y must hold the same number of examples, got {n} and "
                             f"{0 if Y.ndim == 0 else len(Y)}")
        self.per_step = isinstance(Y, Packed)
        if self.per_step:
            if len(Y) != n or (isinstance(X, Packed)
                               and not np.array_equal(X.lengths, Y.lengths)):
                raise ValueError("per-step targets Y must have one value per step of X")
            if not isinstance(X, Packed):
                raise TypeError("per-step targets need packed inputs X")
        for name, part in (("X", X), ("Y", Y)):
            check_finite(name, part.values if isinstance(part, Packed) else part)
        if isinstance(X, Packed) and len(X) and X.lengths.min() < 1:
            # (Packed.from_list takes one; the GRU refused it mid-epoch, after steps)
            raise ValueError(f"X's sequence {int(np.argmin(X.lengths))} has no steps; "
                             f"every example needs at least one")
        self.net, self.X, self.Y, self.loss = net, X, Y, loss
        self.train_idx = _indices("train_idx", train_idx, n)
        self.val_idx = _indices("val_idx", val_idx, n)
        if self.train_idx.size == 0:
            raise ValueError("no training examples (train_idx is empty)")
        if metrics is not None and not (hasattr(metrics, "items") and all(
                isinstance(k, str) and callable(f) for k, f in metrics.items())):
            raise TypeError(f"metrics must be a dict of name -> fn(out, Y_batch, w, "
                            f"indices) -> (sum, count), got {metrics!r}")
        self._metric_fns = dict(metrics or {})
        check_metric_names(self._metric_fns)
        self.metric_names = tuple(self._metric_fns)
        # one loss term per target value (class indices have no class axis)
        term_shape = Y.step_shape if self.per_step else Y.shape[1:]
        self._term_shape = tuple(term_shape)
        self._terms_per_item = count_terms(term_shape)
        self.weight = self._check_weight(weight, n)
        if self.val_idx.size and not self._total_weight(self.val_idx) > 0:
            # (their loss and metrics would be 0/0 = NaN in every epoch, and early
            # stopping, never seeing an improvement, would end the run after `patience`)
            raise ValueError(f"the {self.val_idx.size} validation examples (val_idx; an "
                             f"estimator's validation_fraction picks them) have total "
                             f"weight 0: nothing to validate on; give some of them a "
                             f"positive weight, or validate on none")

    def _total_weight(self, indices):
        w = self.weight
        if w is None:
            return float(indices.size)
        if isinstance(w, Packed):
            steps = w.values.reshape(len(w.values), -1).sum(axis=1)
            ends = np.concatenate([[0.0], np.cumsum(steps)])
            return float(np.sum(ends[w.offsets[indices + 1]] - ends[w.offsets[indices]]))
        return float(np.sum(w[indices]))

    def _check_weight(self, weight, n):
        if weight is None:
            return None
        if isinstance(weight, Packed):
            if not self.per_step or not np.array_equal(weight.lengths, self.Y.lengths):
                raise ValueError("a Packed weight needs per-step targets of the same lengths")
            w = _as_real_array("weight", weight.values).astype(np.float64)
            if w.shape[1:] not in ((), self._term_shape):
                raise ValueError(f"weight must hold one value per step, got step shape "
                                 f"{w.shape[1:]}")
            packed = Packed(w, weight.offsets)
        else:
            w = _as_real_array("weight", weight).astype(np.float64)
            if w.shape[:1] != (n,) or w.shape[1:] not in ((), () if self.per_step
                                                          else self._term_shape):
                raise ValueError(f"weight must be (n,) = ({n},) or the terms' shape, got "
                                 f"{w.shape}")
            packed = None
        check_finite("weight", w)
        if np.any(w < 0):
            raise ValueError("weight must be >= 0")
        return packed if packed is not None else w

    # -- batches ------------------------------------------------------------------------
    def _inputs(self, indices):
        if isinstance(self.X, Packed):
            return self.X.padded(indices)
        return self.X[indices], None

    def _targets(self, indices):
        """Targets and term weights (float64, the terms' shape; None: all ones)."""
        if self.per_step:
            Yb, lengths = self.Y.padded(indices)
            T = Yb.shape[1]
            mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float64)
            if self.weight is None:
                w = mask
            elif isinstance(self.weight, Packed):
                w, _ = self.weight.padded(indices)
            else:
                w = mask * self.weight[indices][:, None]
            if w.ndim == 2:
                w = w.reshape(w.shape + (1,) * len(self._term_shape))
            return Yb, np.broadcast_to(w, Yb.shape[:2] + self._term_shape)
        Yb = self.Y[indices]
        if self.weight is None:
            return Yb, None
        w = self.weight[indices]
        w = w.reshape(w.shape + (1,) * (1 + len(self._term_shape) - w.ndim))
        return Yb, np.broadcast_to(w, (len(indices),) + self._term_shape)

    def _forward(self, indices, training):
        Xb, lengths = self._inputs(indices)
        if lengths is None:
            return net_output(self.net.forward(Xb, training=training))
        return net_output(self.net.forward(Xb, training=training, lengths=lengths))

    def count(self, indices, key):
        if self.per_step:
            if self.weight is None:
                return float(self.Y.lengths[indices].sum()) * self._terms_per_item
            return float(self._targets(indices)[1].sum())
        if self.weight is None:
            return len(indices) * self._terms_per_item
        return float(self._targets(indices)[1].sum())

    def train_step(self, indices, key, normalizer):
        out = self._forward(indices, True)
        Yb, w = self._targets(indices)
        loss, dout = self.loss(out, Yb, weight=w, normalizer=normalizer)
        self.net.backward(dout)
        return loss

    def evaluate(self, indices, key):
        out = self._forward(indices, False)
        Yb, w = self._targets(indices)
        loss_sum, _ = self.loss(out, Yb, weight=w, normalizer=1.0)
        sums = [loss_sum, self.count(indices, key)]
        if self._metric_fns:
            wm = (np.ones((len(indices),) + self._term_shape) if w is None
                  else np.asarray(w, dtype=np.float64))
            for fn in self._metric_fns.values():
                sums.extend(fn(out, Yb, wm, indices))
        return np.array(sums, dtype=np.float64)

    def metrics(self, sums):
        out = {"loss": sums[0] / sums[1] if sums[1] > 0 else math.nan}
        for i, name in enumerate(self.metric_names):
            total = sums[3 + 2 * i]
            value = sums[2 + 2 * i] / total if total > 0 else math.nan
            out[name] = metric_value(name, self._metric_fns[name], value)
        return out

    def fingerprint(self):
        parts = []
        for part in (self.X, self.Y, self.weight):
            if isinstance(part, Packed):
                parts += [part.values, part.offsets]
            elif part is not None:
                parts.append(part)
        shape = (list(self.X.values.shape) + [len(self.X)] if isinstance(self.X, Packed)
                 else list(self.X.shape))
        return {"task": "SequenceTask", "X_shape": shape, "per_step": self.per_step,
                "n_train": int(self.train_idx.size), "n_val": int(self.val_idx.size),
                "data": _digest(*parts, self.train_idx, self.val_idx)}
