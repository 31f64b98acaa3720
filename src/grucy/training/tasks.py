"""What :class:`~grucy.training.Trainer` trains: a :class:`Task` gives the parameters, the
gradients and the data in global batches; :class:`ArrayTask` (supervised examples
through a network) and :class:`StreamTask` (truncated BPTT over parallel streams) are
the two every grucy model uses.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Callable, Dict, Iterator, Optional

import numpy as np

from .._validation import _as_real_array, _positive_int, check_finite, check_result
from ..losses import count_terms

__all__ = ["Task", "ArrayTask", "StreamTask"]


class Task:
    """What :class:`Trainer` trains: parameters, gradients and data in global batches.

    Subclasses implement the methods below.  "Indices" are example numbers (or stream
    numbers); a batch is ``(indices, key)`` where ``key`` is anything the task needs
    besides the indices (``None`` for ordinary batches, a time slice for truncated BPTT).
    The loop shards ``indices`` between processes and passes each process its part.
    """

    #: names of the validation metrics :meth:`metrics` returns besides ``"loss"``
    metric_names: tuple = ()

    def parameters(self) -> list:
        raise NotImplementedError

    def gradients(self) -> list:
        raise NotImplementedError

    def parameter_names(self) -> list:
        """Names of :meth:`parameters`, in their order (what errors call them)."""
        return [f"parameter {i}" for i in range(len(self.parameters()))]

    def generators(self) -> list:
        """Random generators the task draws from while training (saved in checkpoints)."""
        return []

    @property
    def has_validation(self) -> bool:
        return False

    def start_epoch(self, split: str) -> None:
        """Called before the batches of ``split`` ("train" or "val") are walked."""

    def train_batches(self, rng: np.random.Generator, batch_size: int) -> Iterator:
        raise NotImplementedError

    def val_batches(self, batch_size: int) -> Iterator:
        return iter(())

    def n_train_batches(self, batch_size: int) -> Optional[int]:
        """Batches per training epoch, or None when unknown (the progress bar then
        advances per epoch instead of per batch)."""
        return None

    def count(self, indices, key) -> float:
        """Number of loss terms (sum of their weights) in a local batch."""
        raise NotImplementedError

    def train_step(self, indices, key, normalizer: float) -> float:
        """Forward and backward of a local batch; gradients ACCUMULATE into
        :meth:`gradients`.  Returns the sum of the batch's loss terms / ``normalizer``."""
        raise NotImplementedError

    def evaluate(self, indices, key) -> np.ndarray:
        """Sums over a local validation batch: ``[loss_sum, count, *metric_sums]``."""
        raise NotImplementedError

    def metrics(self, sums) -> dict:
        """Mean loss and metrics from globally reduced :meth:`evaluate` sums."""
        return {"loss": sums[0] / sums[1]}

    @property
    def n_eval_sums(self) -> int:
        """Length of the vector :meth:`evaluate` returns."""
        return 2 + 2 * len(self.metric_names)

    def fingerprint(self) -> dict:
        """JSON description checked on resume (data shapes and checksum)."""
        return {}


def _digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _check_net(net, methods):
    """TypeError unless ``net`` has the callables ``methods`` and a ``grads`` mapping."""
    missing = [m for m in methods if not callable(getattr(net, m, None))]
    if missing or not hasattr(getattr(net, "grads", None), "values"):
        what = missing or ["grads"]
        raise TypeError(f"net must be a network with {', '.join(methods)} and grads, got "
                        f"{type(net).__name__} (missing {', '.join(what)})")


def net_output(out):
    """``out``, a net's output, checked: a float array holding NaN or inf is a
    NumericOverflowError (which the Trainer turns into TrainingDivergedError and
    rewinds); the loss's own "pred contains NaN" ValueError left a custom net's
    diverged run with its steps applied."""
    if isinstance(out, np.ndarray) and out.dtype.kind == "f":
        check_result("the network's output", out)
    return out


def check_metric_names(metrics):
    """ValueError for a metric named "loss": it replaced the validation loss (which
    early stopping and the plateau schedule watch)."""
    if "loss" in metrics:
        raise ValueError('metrics may not be named "loss": that name is the validation '
                         'loss early stopping and schedules watch; name it otherwise')


def _check_loss(loss):
    if not callable(loss):
        raise TypeError(f"loss must be a callable loss(out, target, normalizer=...) -> "
                        f"(loss, grad), such as grucy.losses.mse_loss; got "
                        f"{type(loss).__name__} {loss!r}")


def _indices(name, value, n):
    """``value`` as a 1-D int64 array of example numbers in [0, n)."""
    arr = _as_real_array(name, value)
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be a 1-D array of integer example indices, got dtype "
                        f"{arr.dtype} and shape {arr.shape}")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"{name} must lie in [0, {n}) (the examples of X), got values in "
                         f"[{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


def _streams(name, value):
    """``value`` as a 2-D integer array (S, L) of token streams with L >= 2."""
    arr = _as_real_array(name, value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer token codes, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 2:
        raise ValueError(f"{name} must be (S, L) with S >= 1 and L >= 2, got shape "
                         f"{arr.shape}")
    return arr


class _NetTask(Task):
    """A task whose parameters, gradients and generators are those of ``self.net``."""

    def parameters(self):
        return self.net.parameters()

    def gradients(self):
        return list(self.net.grads.values())

    def parameter_names(self):
        return list(self.net.grads)

    def generators(self):
        return self.net.generators()


def metric_value(name, fn, value):
    """A metric from its summed ``value``: the root, times ``fn.unit`` (default 1), for
    names starting with ``rmse``."""
    if name.startswith("rmse"):
        return math.sqrt(value) * getattr(fn, "unit", 1.0)
    return value


class ArrayTask(_NetTask):
    """Supervised examples ``X[i] -> Y[i]`` through a network with forward/backward.

    Parameters
    ----------
    net
        Has ``forward(X, training) -> out``, ``backward(dout)``, ``parameters()``,
        ``grads`` (dict, same order) and ``generators()``.
    X, Y : ndarray
        Inputs and targets, first axis = examples (already scaled, in the net's dtype).
    loss : callable
        ``loss(out, Y_batch, normalizer=...) -> (loss, dout)``, a :mod:`grucy.losses`
        function.
    train_idx, val_idx : array of int
        Examples used for training and for validation (val may be empty).
    metrics : dict, optional
        Extra validation metrics, name -> ``fn(out, Y_batch) -> (sum, count)``;
        :meth:`metrics` reports ``sum / count`` (the square root for names starting with
        ``rmse``, times ``fn.unit`` when the function has that attribute: its sums can
        then be kept in units whose squares do not overflow).
    """

    def __init__(self, net: Any, X: np.ndarray, Y: np.ndarray, loss: Callable,
                 train_idx: Any, val_idx: Any = (),
                 metrics: Optional[Dict[str, Callable]] = None):
        _check_net(net, ("forward", "backward", "parameters"))
        _check_loss(loss)
        X, Y = _as_real_array("X", X), _as_real_array("Y", Y)
        if X.ndim == 0 or Y.ndim == 0 or len(X) != len(Y):
            raise ValueError(f"X and Y must hold the same number of examples on their first "
                             f"axis, got shapes {X.shape} and {Y.shape}")
        check_finite("X", X)  # named here, not by batch index in the middle of an epoch
        check_finite("Y", Y)
        self.net, self.X, self.Y, self.loss = net, X, Y, loss
        self.train_idx = _indices("train_idx", train_idx, len(X))
        self.val_idx = _indices("val_idx", val_idx, len(X))
        if self.train_idx.size == 0:
            raise ValueError("no training examples (train_idx is empty)")
        if metrics is not None and not (hasattr(metrics, "items") and all(
                isinstance(k, str) and callable(f) for k, f in metrics.items())):
            raise TypeError(f"metrics must be a dict of name -> fn(out, Y_batch) -> (sum, "
                            f"count), got {metrics!r}")
        self._metric_fns = dict(metrics or {})
        check_metric_names(self._metric_fns)
        self.metric_names = tuple(self._metric_fns)
        # one loss term per target element (cross-entropy targets have no class axis)
        self._terms_per_example = count_terms(Y.shape[1:])

    @property
    def has_validation(self):
        return self.val_idx.size > 0

    def train_batches(self, rng, batch_size):
        order = self.train_idx[rng.permutation(self.train_idx.size)]
        for start in range(0, order.size, batch_size):
            yield order[start:start + batch_size], None

    def val_batches(self, batch_size):
        for start in range(0, self.val_idx.size, batch_size):
            yield self.val_idx[start:start + batch_size], None

    def n_train_batches(self, batch_size):
        return -(-self.train_idx.size // batch_size)

    def count(self, indices, key):
        return len(indices) * self._terms_per_example

    def train_step(self, indices, key, normalizer):
        out = net_output(self.net.forward(self.X[indices], training=True))
        loss, dout = self.loss(out, self.Y[indices], normalizer=normalizer)
        self.net.backward(dout)
        return loss

    def evaluate(self, indices, key):
        out = net_output(self.net.forward(self.X[indices], training=False))
        Yb = self.Y[indices]
        loss_sum, _ = self.loss(out, Yb, normalizer=1.0)
        sums = [loss_sum, self.count(indices, key)]
        for fn in self._metric_fns.values():
            sums.extend(fn(out, Yb))
        return np.array(sums, dtype=np.float64)

    def metrics(self, sums):
        out = {"loss": sums[0] / sums[1]}
        for i, name in enumerate(self.metric_names):
            value = sums[2 + 2 * i] / sums[3 + 2 * i]
            out[name] = metric_value(name, self._metric_fns[name], value)
        return out

    def fingerprint(self):
        return {"task": "ArrayTask", "X_shape": list(self.X.shape),
                "Y_shape": list(self.Y.shape), "n_train": int(self.train_idx.size),
                "n_val": int(self.val_idx.size),
                "data": _digest(self.X, self.Y, self.train_idx, self.val_idx)}


class StreamTask(_NetTask):
    """Truncated BPTT over parallel streams of a long sequence (a text, a long series).

    Each epoch walks the streams' time axis in chunks of ``bptt`` steps, in order (the
    state carries from one chunk to the next, so chunks are never shuffled); one chunk of
    all streams is one global mini-batch, and the streams are what data-parallel
    processes split.  The loop's ``batch_size`` is ignored: the number of streams is the
    batch size.

    Parameters
    ----------
    net
        Has ``reset_state(n_streams)``, ``forward(inputs, rows, training) -> logits``
        (carrying the state of streams ``rows``), ``backward(dlogits)``,
        ``parameters()``, ``grads``, ``generators()``.
    train_streams, val_streams : ndarray (S, L) of int
        Token streams; targets are the inputs shifted by one step.
    loss : callable
        ``loss(logits, targets, normalizer=...) -> (loss, dlogits)``.
    bptt : int
        Steps per chunk.
    """

    metric_names = ("bits_per_char",)
    n_eval_sums = 2

    def __init__(self, net: Any, train_streams: np.ndarray,
                 val_streams: Optional[np.ndarray], loss: Callable, bptt: int):
        _check_net(net, ("reset_state", "forward", "backward", "parameters"))
        _check_loss(loss)
        self.net, self.loss = net, loss
        self.train_streams = _streams("train_streams", train_streams)
        self.val_streams = None if val_streams is None else _streams("val_streams",
                                                                     val_streams)
        self.bptt = _positive_int("bptt", bptt)
        self._current = None

    @property
    def has_validation(self):
        return self.val_streams is not None and self.val_streams.shape[1] >= 2

    def start_epoch(self, split):
        self._current = self.train_streams if split == "train" else self.val_streams
        self.net.reset_state(self._current.shape[0])

    def _batches(self):
        streams = np.arange(self._current.shape[0])
        for s in range(0, self._current.shape[1] - 1, self.bptt):
            yield streams, slice(s, min(s + self.bptt, self._current.shape[1] - 1))

    def train_batches(self, rng, batch_size):
        return self._batches()

    def val_batches(self, batch_size):
        return self._batches()

    def n_train_batches(self, batch_size):
        return -(-(self.train_streams.shape[1] - 1) // self.bptt)

    def count(self, indices, key):
        return float(len(indices) * (key.stop - key.start))

    def _chunk(self, indices, key):
        data = self._current[indices]
        return data[:, key], data[:, key.start + 1:key.stop + 1]

    def train_step(self, indices, key, normalizer):
        inputs, targets = self._chunk(indices, key)
        logits = net_output(self.net.forward(inputs, indices, training=True))
        loss, dlogits = self.loss(logits, targets, normalizer=normalizer)
        self.net.backward(dlogits)
        return loss

    def evaluate(self, indices, key):
        inputs, targets = self._chunk(indices, key)
        logits = net_output(self.net.forward(inputs, indices, training=False))
        loss_sum, _ = self.loss(logits, targets, normalizer=1.0)
        return np.array([loss_sum, self.count(indices, key)], dtype=np.float64)

    def metrics(self, sums):
        nats = sums[0] / sums[1]
        return {"loss": nats, "bits_per_char": nats / math.log(2)}

    def fingerprint(self):
        val = self.val_streams if self.val_streams is not None else np.zeros(0)
        return {"task": "StreamTask", "train_shape": list(self.train_streams.shape),
                "bptt": self.bptt, "data": _digest(self.train_streams, val)}
