"""The one training loop every grucy model uses.

:class:`Trainer` runs mini-batch training of a :class:`Task` (what to train and on which
data) with: a validation split evaluated after every epoch, early stopping that restores
the best weights, learning-rate schedules, gradient clipping, a tqdm progress bar
(``verbose=0`` silences it), a ``history`` of per-epoch losses and metrics, exact
reproducibility from a seed, periodic checkpoints and exact resume.

Data parallelism
----------------
The loop is written for data-parallel training; with one process every collective below
is the identity and the loop is ordinary training, bit for bit.  It obtains a
communicator from :func:`grucy.distributed.get_communicator` and, on every rank:

1. ``broadcast_(params)`` once at the start (rank 0's initial weights everywhere);
2. shuffles with the same seeded generator, so every rank walks the same *global*
   mini-batches, and computes only its part, ``comm.shard(batch)``;
3. gets the global number of loss terms of the batch with ``allreduce_sum`` and has the
   task compute *sums* of its local loss terms divided by that global count, so that
4. one ``allreduce_sum_(grads)`` per step yields exactly the gradient of the global mean
   loss on every rank; clipping and the optimiser step then run identically everywhere;
5. validation sums (loss, counts, metrics) are reduced with ``allreduce_sum``;
6. only the root (``comm.is_root``) shows progress and writes checkpoints.

Known non-equivalence: with ``dropout > 0`` each rank draws the masks of its own shard
from its own stream (re-derived at every epoch start from the shuffling state and the
rank, so ranks never repeat each other's masks and resume stays exact), so a run on N
ranks does not draw the masks a single process would draw for the same global batch.
Its weights are statistically equivalent, not equal; without dropout they agree with the
single-process run to rounding (1e-10 after several epochs in float64), and the ranks
hold bit-identical weights at every step.

Checkpoints and resume
----------------------
``checkpoint=path`` writes, every ``checkpoint_every`` epochs and at the end, one grucy
archive of kind ``"grucy.checkpoint"`` (atomically) holding the weights, the optimiser's
moments and step count, the schedule, the epoch and step counters, the early-stopping
state (with the best weights), the history, and the states of every random generator
(the shuffling generator and the dropout streams).  ``{epoch}`` in the path is replaced
by the epoch number, which keeps one file per epoch.  ``resume=path`` restores all of that
into a freshly built task and continues, so a run resumed from the checkpoint of epoch k
ends with the same weights, bit for bit, as the uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from . import io
from ._validation import _as_real_array, _positive_int, _real, _rng, check_finite
from .distributed import common_seed, get_communicator
from .losses import count_terms
from .optim import (CosineAnnealingLR, Optimizer, ReduceLROnPlateau, Schedule, StepLR,
                    clip_grad_norm, make_optimizer)

__all__ = ["Task", "ArrayTask", "StreamTask", "Trainer", "train", "read_checkpoint",
           "CHECKPOINT_KIND"]

CHECKPOINT_KIND = "grucy.checkpoint"
_CHECKPOINT_VERSION = 1


# -- what the loop trains ------------------------------------------------------------------
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

    def generators(self):
        return self.net.generators()


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
        ``rmse``).
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
        out = self.net.forward(self.X[indices], training=True)
        loss, dout = self.loss(out, self.Y[indices], normalizer=normalizer)
        self.net.backward(dout)
        return loss

    def evaluate(self, indices, key):
        out = self.net.forward(self.X[indices], training=False)
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
            out[name] = math.sqrt(value) if name.startswith("rmse") else value
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
        logits = self.net.forward(inputs, indices, training=True)
        loss, dlogits = self.loss(logits, targets, normalizer=normalizer)
        self.net.backward(dlogits)
        return loss

    def evaluate(self, indices, key):
        inputs, targets = self._chunk(indices, key)
        logits = self.net.forward(inputs, indices, training=False)
        loss_sum, _ = self.loss(logits, targets, normalizer=1.0)
        return np.array([loss_sum, self.count(indices, key)], dtype=np.float64)

    def metrics(self, sums):
        nats = sums[0] / sums[1]
        return {"loss": nats, "bits_per_char": nats / math.log(2)}

    def fingerprint(self):
        val = self.val_streams if self.val_streams is not None else np.zeros(0)
        return {"task": "StreamTask", "train_shape": list(self.train_streams.shape),
                "bptt": self.bptt, "data": _digest(self.train_streams, val)}


# -- helpers -------------------------------------------------------------------------------
def make_schedule(spec: Any, optimizer: Optimizer, epochs: int) -> Optional[Schedule]:
    """A schedule from ``None``, a name, a ``(name, kwargs)`` pair or a callable.

    Names: ``"step"`` (StepLR, step_size = epochs // 3, gamma 0.1), ``"cosine"``
    (CosineAnnealingLR over ``epochs``), ``"plateau"`` (ReduceLROnPlateau, patience 5,
    factor 0.5, on the monitored loss).  A callable gets the optimiser.
    """
    if spec is None:
        return None
    kwargs = {}
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[1], dict):
        spec, kwargs = spec
    if isinstance(spec, str):
        if spec == "step":
            return StepLR(optimizer, **{"step_size": max(1, epochs // 3), **kwargs})
        if spec == "cosine":
            return CosineAnnealingLR(optimizer, **{"T_max": epochs, **kwargs})
        if spec == "plateau":
            return ReduceLROnPlateau(optimizer, **{"patience": 5, "factor": 0.5, **kwargs})
        raise ValueError(f"schedule must be None, 'step', 'cosine' or 'plateau', got "
                         f"{spec!r}")
    if callable(spec):
        sched = spec(optimizer)
        if not isinstance(sched, Schedule):
            raise TypeError(f"schedule callable must return a grucy.optim.Schedule, got "
                            f"{type(sched).__name__}")
        return sched
    raise TypeError(f"schedule must be None, a name or a callable, got {spec!r}")


def _json_floats(values):
    """Floats with NaN/inf as None (JSON has no NaN)."""
    return [v if v is None or math.isfinite(v) else None for v in values]


def _from_json_floats(values):
    return [math.nan if v is None else float(v) for v in values]


def read_checkpoint(path: Union[str, "os.PathLike[str]"]) -> Tuple[dict, Dict[str, np.ndarray]]:
    """``(config, arrays)`` of a checkpoint written by :class:`Trainer` (checked kind)."""
    _, config, arrays = io.read_archive(path, kind=CHECKPOINT_KIND)
    if not isinstance(config, dict) or config.get("version") != _CHECKPOINT_VERSION:
        raise io.FileFormatError(f"{os.fspath(path)}: unsupported checkpoint version "
                                 f"{config.get('version') if isinstance(config, dict) else None}")
    return config, arrays


class _Progress:
    """What ``verbose`` shows on the root process.

    With tqdm: one bar over every training batch of the run, advanced after each batch
    (tqdm redraws at most every ``mininterval`` seconds, so a long epoch moves visibly
    and a fast one costs nothing), the last epoch's metrics as its postfix; a task that
    cannot count its batches gets a bar over epochs.  Without tqdm: ``verbose=1`` prints
    an epoch's line only when ``LINE_INTERVAL`` seconds have passed since the last one
    (and always the first and the last epoch), so at most one line per epoch and a few
    lines for a run of many quick epochs; ``verbose=2`` prints every epoch's line.
    """

    LINE_INTERVAL = 10.0  # seconds between lines without tqdm at verbose=1

    def __init__(self, verbose, total, initial, desc, batches_per_epoch=None):
        self.verbose, self.total, self.desc, self.bar = verbose, total, desc, None
        self.per_batch = batches_per_epoch is not None and batches_per_epoch > 0
        self.last_line = None  # time.monotonic() of the last printed line
        if not verbose:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        if self.per_batch:
            self.bar = tqdm(total=total * batches_per_epoch,
                            initial=initial * batches_per_epoch, desc=desc, unit="batch",
                            dynamic_ncols=True, leave=True, mininterval=0.2)
        else:
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="epoch",
                            dynamic_ncols=True, leave=True)

    def batch(self):
        """One training batch done."""
        if self.bar is not None and self.per_batch:
            self.bar.update(1)

    def _line(self, epoch, logs):
        items = "  ".join(f"{k} {v:.5g}" for k, v in logs.items())
        return f"{self.desc}: epoch {epoch}/{self.total}  {items}"

    def epoch(self, epoch, logs, last):
        """Epoch ``epoch`` done with ``logs``; ``last`` when no epoch follows."""
        if not self.verbose:
            return
        if self.bar is not None:
            shown = {"epoch": f"{epoch}/{self.total}"}
            shown.update({k: f"{v:.4g}" for k, v in logs.items() if k != "lr"})
            self.bar.set_postfix(shown, refresh=False)
            if not self.per_batch:
                self.bar.update(1)
            if self.verbose > 1:
                self.bar.write(self._line(epoch, logs))
            return
        now = time.monotonic()
        if (self.verbose > 1 or last or self.last_line is None
                or now - self.last_line >= self.LINE_INTERVAL):
            print(self._line(epoch, logs), file=sys.stderr, flush=True)
            self.last_line = now

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _after_each(items, callback):
    """Yield ``items``, calling ``callback()`` once the loop body of each has finished
    (whichever way it left: normally or by ``continue``)."""
    for item in items:
        yield item
        callback()


# -- the loop -----------------------------------------------------------------------------
class Trainer:
    """Mini-batch training of a :class:`Task` (see the module docstring).

    Parameters
    ----------
    task : Task
    epochs : int
        Total number of epochs (a resumed run continues up to this number).
    batch_size : int
        Examples per *global* mini-batch (all processes together).
    optimizer : {"adam", "adamw", "sgd"} or Optimizer subclass
    lr, weight_decay : float
    optimizer_options : dict, optional
        More keyword arguments for the optimiser (``momentum``, ``betas``...).
    schedule : None, "step", "cosine", "plateau", (name, kwargs) or callable
        Stepped once per epoch; "plateau" watches the monitored loss.
    max_grad_norm : float or None
        Clip the global gradient norm; a step whose norm is NaN/inf is skipped.
    patience : int or None
        Early stopping: stop after this many epochs without improving the monitored loss
        (validation loss when there is validation data, else training loss) by more than
        ``min_delta``, and restore the best weights.  None: train all epochs.
    seed : int, SeedSequence or None
        Seeds the shuffling.
    verbose : int
        0 silent; 1 a progress bar advanced per batch, with the loss and validation
        metrics of the last epoch (tqdm, ``grucy[progress]``; without it a printed line
        per epoch, at most one every 10 s); 2 the bar plus one printed line per epoch.
    distributed : "auto", bool or communicator
        Passed to :func:`grucy.distributed.get_communicator`.
    checkpoint : path or None
        Where to write checkpoints (``{epoch}`` is replaced by the epoch number).
    checkpoint_every : int
        Epochs between checkpoints (the last epoch is always written).
    resume : path or None
        A checkpoint to continue from.
    description : str
        Progress bar label.
    metadata : dict, optional
        JSON stored in checkpoints under ``"metadata"`` (the model's configuration).
    """

    def __init__(self, task: Task, *, epochs: int, batch_size: int = 32,
                 optimizer: Union[str, type] = "adam", lr: float = 1e-3,
                 weight_decay: float = 0.0, optimizer_options: Optional[dict] = None,
                 schedule: Any = None, max_grad_norm: Optional[float] = None,
                 patience: Optional[int] = None, min_delta: float = 0.0,
                 seed: Any = None, verbose: int = 0, distributed: Any = "auto",
                 checkpoint: Optional[Union[str, "os.PathLike[str]"]] = None,
                 checkpoint_every: int = 1,
                 resume: Optional[Union[str, "os.PathLike[str]"]] = None,
                 description: str = "training", metadata: Optional[dict] = None):
        if not isinstance(task, Task):
            raise TypeError(f"task must be a grucy.training.Task, got {type(task).__name__}")
        self.task = task
        self.epochs = _positive_int("epochs", epochs)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.checkpoint_every = _positive_int("checkpoint_every", checkpoint_every)
        if max_grad_norm is not None and not (
                isinstance(max_grad_norm, numbers.Real)
                and not isinstance(max_grad_norm, (bool, np.bool_)) and max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be None or > 0, got {max_grad_norm!r}")
        if patience is not None and (isinstance(patience, bool)
                                     or not isinstance(patience, numbers.Integral)
                                     or patience < 1):
            raise ValueError(f"patience must be None or a positive integer, got {patience!r}")
        if not isinstance(verbose, numbers.Integral) or verbose < 0:
            raise TypeError(f"verbose must be a non-negative integer (0, 1 or 2), got "
                            f"{verbose!r}")
        for name, path in (("checkpoint", checkpoint), ("resume", resume)):
            if path is not None and not isinstance(path, (str, os.PathLike)):
                raise TypeError(f"{name} must be None or a path (str or os.PathLike), got "
                                f"{type(path).__name__} {path!r}")
        if not isinstance(description, str):
            raise TypeError(f"description must be a str, got {type(description).__name__}")
        if metadata is not None:
            try:
                json.dumps(metadata, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"metadata must be plain JSON data (it is stored in "
                                f"checkpoints), got {metadata!r} ({exc})") from None
            if not isinstance(metadata, dict):
                raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        if optimizer_options is not None and not hasattr(optimizer_options, "keys"):
            raise TypeError(f"optimizer_options must be a dict of keyword arguments, got "
                            f"{type(optimizer_options).__name__}")
        self.max_grad_norm = max_grad_norm
        self.patience = patience
        self.min_delta = _real("min_delta", min_delta)
        self.verbose = int(verbose)
        self.checkpoint = checkpoint
        self.resume = resume
        self.description = description
        self.metadata = metadata or {}
        self.comm = get_communicator(distributed)

        self.params = task.parameters()
        self.grads = task.gradients()
        self.optimizer = make_optimizer(optimizer, self.params, self.grads, lr=lr,
                                        weight_decay=weight_decay,
                                        **(optimizer_options or {}))
        self.schedule = make_schedule(schedule, self.optimizer, self.epochs)
        if seed is None and self.comm.size > 1:
            # Fresh entropy differs per process; every rank must walk the same batches.
            seed = common_seed(int(np.random.SeedSequence().entropy % 2**63), self.comm)
        self.seed = seed
        self.rng = _rng(seed)
        self.monitor = "val_loss" if task.has_validation else "loss"
        # counters and state that checkpoints carry
        self.epoch = 0
        self.step = 0
        self.skipped_steps = 0
        self.history: dict = {"loss": [], "lr": []}
        self.best = math.inf
        self.best_epoch = 0
        self.wait = 0
        self.stopped = False
        self.best_params: Optional[List[np.ndarray]] = None

    # -- one epoch ----------------------------------------------------------------------
    def _rank_streams(self):
        """Give each rank its own random streams for this epoch (dropout masks).

        Derived from (the shuffling generator's state, rank): distinct per rank, so ranks
        do not draw the same masks for their shards; and re-derived at every epoch start
        from state that checkpoints hold and every rank shares, so a resumed run on the
        same number of ranks redraws exactly the masks of the uninterrupted one (a
        checkpoint holds only rank 0's generator states).
        """
        key = hashlib.sha256(json.dumps(self.rng.bit_generator.state,
                                        sort_keys=True).encode()).digest()
        entropy = int.from_bytes(key[:16], "little")
        for i, g in enumerate(self.task.generators()):
            seq = np.random.SeedSequence([entropy, self.comm.rank, i])
            g.bit_generator.state = type(g.bit_generator)(seq).state

    def _train_epoch(self, on_batch=None):
        task, comm = self.task, self.comm
        if comm.size > 1:
            self._rank_streams()
        task.start_epoch("train")
        local_loss, terms, steps = 0.0, 0.0, 0
        batches = task.train_batches(self.rng, self.batch_size)
        if on_batch is not None:
            batches = _after_each(batches, on_batch)
        for indices, key in batches:
            local = comm.shard(indices)
            n_local = task.count(local, key) if len(local) else 0.0
            n_global = float(comm.allreduce_sum([n_local])[0])
            if n_global <= 0:
                continue
            for g in self.grads:
                g.fill(0)
            part = task.train_step(local, key, n_global) if len(local) else 0.0
            comm.allreduce_sum_(self.grads)
            if self.max_grad_norm is not None:
                norm = clip_grad_norm(self.grads, self.max_grad_norm)
                if not math.isfinite(norm):
                    self.skipped_steps += 1
                    continue
            self.optimizer.step()
            self.step += 1
            steps += 1
            local_loss += part * n_global
            terms += n_global
        if steps == 0:
            raise RuntimeError("every step of the epoch had a NaN or infinite gradient: "
                               "training diverged (lower lr, or set max_grad_norm)")
        return float(comm.allreduce_sum([local_loss])[0]) / terms

    def _validate(self):
        task, comm = self.task, self.comm
        task.start_epoch("val")
        sums = None
        for indices, key in task.val_batches(self.batch_size):
            local = comm.shard(indices)
            if len(local):
                part = task.evaluate(local, key)
                sums = part if sums is None else sums + part
        if sums is None:  # this rank had no validation examples
            sums = np.zeros(task.n_eval_sums)
        return task.metrics(comm.allreduce_sum(sums))

    # -- checkpoints ----------------------------------------------------------------------
    def _checkpoint_path(self):
        path = os.fspath(self.checkpoint)
        return path.replace("{epoch}", str(self.epoch))

    def save_checkpoint(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write the complete training state to ``path`` (atomically)."""
        opt_state = self.optimizer.state_dict()
        buffers = {k: v for k, v in opt_state.items() if isinstance(v, list)
                   and v and isinstance(v[0], np.ndarray)}
        opt_scalars = {k: v for k, v in opt_state.items() if k not in buffers}
        config = {
            "version": _CHECKPOINT_VERSION,
            "epoch": self.epoch, "step": self.step, "epochs": self.epochs,
            "skipped_steps": self.skipped_steps,
            "rng": self.rng.bit_generator.state,
            "generators": [g.bit_generator.state for g in self.task.generators()],
            "optimizer": opt_scalars,
            "optimizer_buffers": sorted(buffers),
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "early_stopping": {"best": self.best if math.isfinite(self.best) else None,
                               "best_epoch": self.best_epoch, "wait": self.wait,
                               "stopped": self.stopped,
                               "has_best": self.best_params is not None},
            "history": {k: _json_floats(v) for k, v in self.history.items()},
            "param_shapes": [list(p.shape) for p in self.params],
            "task": self.task.fingerprint(),
            "metadata": self.metadata,
        }
        arrays = {f"param/{i}": p for i, p in enumerate(self.params)}
        for name, values in buffers.items():
            arrays.update({f"optimizer/{name}/{i}": a for i, a in enumerate(values)})
        if self.best_params is not None:
            arrays.update({f"best/{i}": a for i, a in enumerate(self.best_params)})
        io.write_archive(path, CHECKPOINT_KIND, config, arrays)

    def load_checkpoint(self, path: Union[str, "os.PathLike[str]"]) -> dict:
        """Restore the complete training state written by :meth:`save_checkpoint`."""
        config, arrays = read_checkpoint(path)
        where = os.fspath(path)
        shapes = [list(p.shape) for p in self.params]
        if config["param_shapes"] != shapes:
            raise ValueError(f"{where}: checkpoint of a model with parameter shapes "
                             f"{config['param_shapes']}, this model has {shapes}")
        if config["task"] != self.task.fingerprint():
            raise ValueError(f"{where}: checkpoint of training on other data or settings "
                             f"({config['task']}); this run: {self.task.fingerprint()}")
        gens = self.task.generators()
        if len(config["generators"]) != len(gens):
            raise ValueError(f"{where}: checkpoint has {len(config['generators'])} random "
                             f"generators, this model {len(gens)}")
        opt_state = dict(config["optimizer"])
        for name in config["optimizer_buffers"]:
            opt_state[name] = [arrays[f"optimizer/{name}/{i}"]
                               for i in range(len(self.params))]
        self.optimizer.load_state_dict(opt_state)
        if (config["schedule"] is None) != (self.schedule is None):
            raise ValueError(f"{where}: checkpoint schedule {config['schedule']} does not "
                             f"match this run's {self.schedule!r}")
        if self.schedule is not None:
            self.schedule.load_state_dict(config["schedule"])
        for i, p in enumerate(self.params):
            p[...] = arrays[f"param/{i}"]
        self.rng.bit_generator.state = config["rng"]
        for g, state in zip(gens, config["generators"]):
            g.bit_generator.state = state
        es = config["early_stopping"]
        self.best = math.inf if es["best"] is None else float(es["best"])
        self.best_epoch, self.wait, self.stopped = es["best_epoch"], es["wait"], es["stopped"]
        self.best_params = ([arrays[f"best/{i}"].copy() for i in range(len(self.params))]
                            if es["has_best"] else None)
        self.history = {k: _from_json_floats(v) for k, v in config["history"].items()}
        self.epoch, self.step = config["epoch"], config["step"]
        self.skipped_steps = config["skipped_steps"]
        return config

    # -- the run --------------------------------------------------------------------------
    def fit(self) -> Dict[str, List[float]]:
        """Train; returns ``history`` (dict of per-epoch lists)."""
        comm = self.comm
        if self.checkpoint is not None and comm.is_root:
            # Fail now rather than after the first epoch's work.
            directory = os.path.dirname(os.path.abspath(self._checkpoint_path()))
            if not os.path.isdir(directory):
                raise FileNotFoundError(f"checkpoint {os.fspath(self.checkpoint)!r}: "
                                        f"directory {directory} does not exist")
        comm.broadcast_(self.params)
        if self.resume is not None:
            self.load_checkpoint(self.resume)
            comm.broadcast_(self.params)
        progress = _Progress(self.verbose if comm.is_root else 0, self.epochs,
                             min(self.epoch, self.epochs), self.description,
                             self.task.n_train_batches(self.batch_size))
        try:
            while self.epoch < self.epochs and not self.stopped:
                logs = self._run_epoch(progress.batch)
                last = self.epoch >= self.epochs or self.stopped
                progress.epoch(self.epoch, logs, last)
                if self.checkpoint is not None and comm.is_root and (
                        self.epoch % self.checkpoint_every == 0 or last):
                    self.save_checkpoint(self._checkpoint_path())
        finally:
            progress.close()
        if self.patience is not None and self.best_params is not None:
            for p, b in zip(self.params, self.best_params):
                p[...] = b
        return self.history

    def _run_epoch(self, on_batch=None):
        lr = self.optimizer.lr
        logs = {"loss": self._train_epoch(on_batch)}
        if self.task.has_validation:
            logs.update({f"val_{k}": v for k, v in self._validate().items()})
        self.epoch += 1
        logs["lr"] = lr
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))
        monitored = logs[self.monitor]
        if self.patience is not None:
            if monitored < self.best - self.min_delta:
                self.best, self.best_epoch, self.wait = monitored, self.epoch, 0
                self.best_params = [p.copy() for p in self.params]
            else:
                self.wait += 1
                if self.wait >= self.patience:
                    self.stopped = True
        if self.schedule is not None:
            self.schedule.step(monitored)
        return logs


def train(task: Task, **options: Any) -> Trainer:
    """Run :class:`Trainer` ``(task, **options)``; returns the finished trainer."""
    trainer = Trainer(task, **options)
    trainer.fit()
    return trainer
