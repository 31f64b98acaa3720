"""The training loop, :class:`Trainer` (what it guarantees: :mod:`grucy.training`)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import numbers
import os
from typing import Any, Dict, List, Optional, Union

import numpy as np

from .. import io
from .._validation import NumericOverflowError, _finite, _positive_int, _real, _rng
from ..distributed import common_seed, get_communicator
from ..optim import (CosineAnnealingLR, Optimizer, ReduceLROnPlateau, Schedule, StepLR,
                     clip_grad_norm, make_optimizer)
from .checkpoint import (_CHECKPOINT_VERSION, CHECKPOINT_KIND, _from_json_floats,
                         _json_floats, _read_checkpoint)
from .progress import _Progress
from .tasks import Task

__all__ = ["Trainer", "train", "make_schedule", "TrainingDivergedError"]


class TrainingDivergedError(RuntimeError):
    """Training produced a NaN or an infinity: an output, the loss, a gradient or a
    parameter after an optimizer step overflowed (the learning rate is too high, the
    data's scale too large, ...).

    Raised by :meth:`Trainer.fit` (which first puts the parameters back to their values
    when ``fit`` started) and by the models' ``fit`` (which leave the model as it was
    before ``fit``: an unfitted model stays unfitted, a fitted one keeps its previous
    fit).  The message names the epoch, the step and what overflowed.

    Attributes
    ----------
    epoch : int
        The epoch in which it happened (1-based).
    step : int
        Optimizer steps completed before it.
    where : str
        What overflowed.
    checkpoint : str or None
        The last checkpoint written by the run, if any (``resume=`` continues from it).
    """

    def __init__(self, message, *, epoch=None, step=None, where=None, checkpoint=None):
        super().__init__(message)
        self.epoch, self.step, self.where, self.checkpoint = epoch, step, where, checkpoint


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
        Clip the global gradient norm.  A NaN or inf anywhere in a step (an output, the
        loss, a gradient, a parameter after the update) raises
        :class:`TrainingDivergedError`.
    patience : int or None
        Early stopping: stop after this many epochs without improving the monitored loss
        (validation loss when there is validation data, else training loss) by more than
        ``min_delta``, and restore the best weights.  None: train all epochs.
    min_delta : float, default 0.0
        The improvement of the monitored loss that counts for ``patience``.
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
        JSON stored in checkpoints under ``"metadata"`` (the model's configuration).  Its
        ``"options"`` dict (what shapes the training: a model's loss, learning rate...)
        must equal the checkpoint's on resume (the options both hold).
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
                and not isinstance(max_grad_norm, (bool, np.bool_)) and max_grad_norm > 0
                and math.isfinite(max_grad_norm)):  # (clipping to inf fails in a step)
            raise ValueError(f"max_grad_norm must be None or > 0, got {max_grad_norm!r} (a "
                             f"finite norm; None turns clipping off)")
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
        if not self.min_delta >= 0:  # (a negative one let a worse epoch count as better)
            raise ValueError(f"min_delta must be >= 0 (the improvement an epoch must make "
                             f"to count), got {self.min_delta}")
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
        self._last_checkpoint: Optional[str] = None

    # -- divergence -----------------------------------------------------------------------
    def _diverged(self, where):
        """The TrainingDivergedError of the current step."""
        epoch, step = self.epoch + 1, self.step
        return TrainingDivergedError(
            f"training diverged in epoch {epoch}, after {step} optimizer steps: {where}.  "
            f"Lower the learning rate (lr={self.optimizer.lr:g}), set or lower "
            f"max_grad_norm, or rescale the data", epoch=epoch, step=step, where=where,
            checkpoint=self._last_checkpoint)

    def _names(self):
        names = self.task.parameter_names()
        return names if len(names) == len(self.params) else [
            f"parameter {i}" for i in range(len(self.params))]

    def _first_non_finite(self, arrays):
        """The name of the first array of ``arrays`` (parameter order) with a NaN or
        inf, or None."""
        for name, a in zip(self._names(), arrays):
            if not _finite(a):
                return name
        return None

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
            failure = None
            try:
                part = task.train_step(local, key, n_global) if len(local) else 0.0
                if not math.isfinite(part):
                    failure = f"the loss is {part}"
            except NumericOverflowError as exc:
                failure = str(exc)
            if failure is not None:  # NaN gradients: every process sees it in the sum
                part = math.nan
                for g in self.grads:
                    g.fill(np.nan)
            comm.allreduce_sum_(self.grads)
            bad = self._first_non_finite(self.grads)
            if failure is not None or bad is not None:
                raise self._diverged(failure or (
                    f"the gradient of {bad!r} is not finite" + (
                        " (summed over the processes: another one overflowed)"
                        if comm.size > 1 else "")))
            if self.max_grad_norm is not None:
                norm = clip_grad_norm(self.grads, self.max_grad_norm)
                if not math.isfinite(norm):
                    raise self._diverged(f"the gradient norm overflowed ({norm})")
            self.optimizer.step()
            bad = self._first_non_finite(self.params)
            if bad is not None:
                raise self._diverged(f"parameter {bad!r} became NaN or inf in the "
                                     f"{type(self.optimizer).__name__} step")
            self.step += 1
            steps += 1
            local_loss += part * n_global
            terms += n_global
        if steps == 0:  # (every batch of the epoch had no loss terms)
            raise ValueError("no training step was taken in the epoch: every batch has "
                             "no loss terms (all weights zero?)")
        return float(comm.allreduce_sum([local_loss])[0]) / terms

    def _validate(self):
        task, comm = self.task, self.comm
        task.start_epoch("val")
        sums = None
        failure = None
        for indices, key in task.val_batches(self.batch_size):
            local = comm.shard(indices)
            if len(local) and failure is None:
                try:
                    part = task.evaluate(local, key)
                except NumericOverflowError as exc:
                    failure = str(exc)
                    continue
                sums = part if sums is None else sums + part
        if sums is None:  # this rank had no validation examples
            sums = np.zeros(task.n_eval_sums)
        if failure is not None:  # every process sees it in the sum
            sums = np.full(task.n_eval_sums, np.nan)
        sums = comm.allreduce_sum(sums)
        if not np.all(np.isfinite(sums)):
            raise self._diverged(f"on the validation data, {failure}" if failure else
                                 "the validation loss is not finite" + (
                                     " (another process overflowed)"
                                     if comm.size > 1 else ""))
        return task.metrics(sums)

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
        self._last_checkpoint = os.fspath(path)

    def _check_same_task(self):
        """Every rank holds the same data (each trains on its shard of it): ranks given
        other data trained silently into different models, or died in a collective with
        a bare MPI_ERR_TRUNCATE.  The task's digest is compared with the root's."""
        comm = self.comm
        if comm.size <= 1:
            return
        digest = hashlib.sha256(json.dumps(self.task.fingerprint(), sort_keys=True,
                                           default=str).encode()).digest()
        mine = np.frombuffer(digest, np.uint8).astype(np.float64)
        root = mine.copy()
        comm.broadcast_([root])
        differ = comm.allreduce_sum(np.array([float(not np.array_equal(root, mine))]))
        if differ[0]:
            raise ValueError(f"the ranks hold different training data ({int(differ[0])} of "
                             f"{comm.size} differ from rank 0's): every rank must be given "
                             f"the same data (each trains on its share of it)")

    def _write_checkpoint(self):
        """The run's checkpoint for this epoch; an OSError (a full disk, a file system
        gone read-only) says which file and epoch, and what is left to resume from."""
        path = self._checkpoint_path()
        previous = getattr(self, "_last_checkpoint", None) or self.resume
        try:
            self.save_checkpoint(path)
        except OSError as exc:
            left = (f"the last one written, {os.fspath(previous)}, is intact: resume from "
                    f"it" if previous is not None else "no checkpoint of this run exists")
            raise type(exc)(exc.errno, f"cannot write the checkpoint of epoch {self.epoch} "
                            f"({exc.strerror or exc}); {left}", path) from exc

    def load_checkpoint(self, path: Union[str, "os.PathLike[str]"]) -> dict:
        """Restore the complete training state written by :meth:`save_checkpoint`.

        Everything is checked before anything changes: the file (kind, version), every
        field of its configuration, and every array against what it restores
        (parameters, optimizer buffers, best weights: names, shapes, dtypes, finite
        values); a checkpoint of another model, other data or other settings is
        refused too.  All of these raise :class:`grucy.FileFormatError` naming the
        file; nothing is restored then.
        """
        config, arrays, checksum = _read_checkpoint(path)
        where = os.fspath(path)
        self._same_checkpoint_on_every_rank(checksum, config, where)
        try:
            return self._restore(config, arrays, where)
        except io.FileFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise io.FileFormatError(f"{where}: not a checkpoint this run can resume "
                                     f"from: {type(exc).__name__}: {exc}"[:2000]) from None

    def _same_checkpoint_on_every_rank(self, checksum, config, where):
        """Refuse, on every rank, a resume in which the ranks read different checkpoints.

        Each rank reads the file itself; if it changed between the reads (a previous run
        still writing it, node-local copies that differ), the ranks would restore other
        epochs, and one would wait in an allreduce for a rank that has already finished:
        the job would hang instead of failing.  One broadcast of rank 0's digest lets
        every rank compare (the file's own checksum, which the read verified), so all
        raise together.
        """
        if self.comm.size <= 1:
            return
        mine = np.frombuffer(checksum, np.uint8).copy()
        root = mine.copy()
        self.comm.broadcast_([root])
        differs = float(self.comm.allreduce_sum([float(not np.array_equal(mine, root))])[0])
        if differs:
            raise io.FileFormatError(
                f"{where}: {int(differs)} of {self.comm.size} ranks read another "
                f"checkpoint than rank 0 (this rank: epoch {config.get('epoch')}); was a "
                f"previous run still writing it, or does each node see its own copy? "
                f"Nothing was restored")

    def _other_options(self, saved_metadata):
        """{option: (checkpoint's, this run's)} for the ``metadata["options"]`` that
        differ (options only one side holds, from another version, are not compared)."""
        theirs = saved_metadata.get("options") if isinstance(saved_metadata, dict) else None
        mine = self.metadata.get("options")
        if not isinstance(theirs, dict) or not isinstance(mine, dict):
            return {}
        mine = json.loads(json.dumps(mine))  # as the checkpoint holds it (tuples: lists)
        return {k: (theirs[k], mine[k]) for k in sorted(set(theirs) & set(mine), key=str)
                if theirs[k] != mine[k]}

    def _restore(self, config, arrays, where):
        def fail(message):
            raise io.FileFormatError(f"{where}: {message}")

        def field(name, kind, parent=config):
            if not isinstance(parent, dict) or name not in parent:
                fail(f"checkpoint lacks {name!r}")
            value = parent[name]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                fail(f"checkpoint field {name!r} is a {type(value).__name__}")
            return value

        shapes = [list(p.shape) for p in self.params]
        if field("param_shapes", list) != shapes:
            fail(f"checkpoint of a model with parameter shapes "
                 f"{str(config['param_shapes'])[:200]}, this model has {shapes}")
        if config.get("task") != self.task.fingerprint():
            fail(f"checkpoint of training on other data or settings "
                 f"({str(config.get('task'))[:300]}); this run: {self.task.fingerprint()}")
        differ = self._other_options(config.get("metadata"))
        if differ:
            fail("checkpoint of training with other options (a resumed run must continue "
                 "the same training): " + "; ".join(
                     f"{k}={a!r} in the checkpoint, {b!r} now"
                     for k, (a, b) in differ.items())[:2000])
        gens = self.task.generators()
        if len(field("generators", list)) != len(gens):
            fail(f"checkpoint has {len(config['generators'])} random generators, this "
                 f"model {len(gens)}")
        counters = {name: field(name, int) for name in ("epoch", "step", "skipped_steps")}
        if min(counters.values()) < 0:
            fail(f"negative counters {counters}")
        es = field("early_stopping", dict)
        best = es.get("best")
        if best is not None and not isinstance(best, (int, float)) or isinstance(best, bool):
            fail(f"early_stopping.best is {best!r}")
        best_epoch, wait = field("best_epoch", int, es), field("wait", int, es)
        stopped, has_best = field("stopped", bool, es), field("has_best", bool, es)
        history = field("history", dict)
        if not all(isinstance(v, list) and all(x is None or isinstance(x, (int, float))
                                               for x in v) for v in history.values()):
            fail("checkpoint history is not lists of numbers")
        field("rng", dict)

        def exact(name, like):
            """The array ``name``, exactly like ``like`` (shape, dtype), finite."""
            if name not in arrays:
                fail(f"checkpoint lacks the array {name!r}")
            a = arrays[name]
            if a.shape != like.shape or a.dtype != like.dtype:
                fail(f"array {name!r} is {a.dtype} {a.shape}, this model's is "
                     f"{like.dtype} {like.shape}")
            if not _finite(a):
                fail(f"array {name!r} contains NaN or inf")
            return a

        params = [exact(f"param/{i}", p) for i, p in enumerate(self.params)]
        best_params = ([exact(f"best/{i}", p).copy() for i, p in enumerate(self.params)]
                       if has_best else None)
        opt_state = dict(field("optimizer", dict))
        for name in field("optimizer_buffers", list):
            if not isinstance(name, str) or name in opt_state:
                fail(f"optimizer buffer name {name!r}")
            opt_state[name] = [exact(f"optimizer/{name}/{i}", p)
                               for i, p in enumerate(self.params)]
        known = {f"param/{i}" for i in range(len(params))}
        known |= {f"best/{i}" for i in range(len(params))} if has_best else set()
        known |= {f"optimizer/{n}/{i}" for n in config["optimizer_buffers"]
                  for i in range(len(params))}
        unexpected = sorted(set(arrays) - known)
        if unexpected:
            fail(f"unexpected arrays {unexpected[:5]}")
        if (config.get("schedule") is None) != (self.schedule is None):
            fail(f"checkpoint schedule {str(config.get('schedule'))[:200]} does not match "
                 f"this run's {self.schedule!r}")
        # The states that can still refuse (checked by their owners), on copies or
        # before the rest: the optimizer and schedule check everything first and
        # change nothing when they refuse; the generators' states are tried on fresh
        # generators of the same kind.
        for g, state in zip(gens, config["generators"]):
            type(g.bit_generator)().state = state
        type(self.rng.bit_generator)().state = config["rng"]
        self._set_run_state({
            "params": params, "optimizer": opt_state, "schedule": config["schedule"],
            "rng": config["rng"], "generators": list(zip(gens, config["generators"])),
            "counters": (counters["epoch"], counters["step"], counters["skipped_steps"]),
            "early": (math.inf if best is None else float(best), best_epoch, wait,
                      stopped, best_params),
            "history": {k: _from_json_floats(v) for k, v in history.items()}})
        return config

    # -- the run --------------------------------------------------------------------------
    def fit(self) -> Dict[str, List[float]]:
        """Train; returns ``history`` (dict of per-epoch lists).

        Raises :class:`TrainingDivergedError` when a NaN or inf appears (an output, the
        loss, a gradient, a parameter after a step), after putting the run back where
        ``fit`` started (after ``resume``: the checkpoint's): the parameters, the
        optimizer's and schedule's state, the random streams, the counters, early
        stopping and the history, so that ``fit`` again (say with a lower
        ``optimizer.lr``) runs as a fresh start would; the checkpoints written until
        then stay.
        """
        comm = self.comm
        net = getattr(self.task, "net", None)
        if ((self.checkpoint is not None or self.resume is not None) and net is not None
                and not callable(getattr(net, "generators", None))):
            # (a checkpoint keeps the net's random streams: without generators() the
            # first one failed after an epoch's work, with a bare AttributeError)
            raise TypeError(f"checkpoints need the net's generators() (its random "
                            f"streams, [] when it draws none); {type(net).__name__} has "
                            f"none")
        if self.checkpoint is not None and comm.is_root:
            # Fail now rather than after the first epoch's work.
            directory = os.path.dirname(os.path.abspath(self._checkpoint_path()))
            if not os.path.isdir(directory):
                raise FileNotFoundError(f"checkpoint {os.fspath(self.checkpoint)!r}: "
                                        f"directory {directory} does not exist")
        self._check_same_task()
        comm.broadcast_(self.params)
        if self.resume is not None:
            self.load_checkpoint(self.resume)
            comm.broadcast_(self.params)
        progress = _Progress(self.verbose if comm.is_root else 0, self.epochs,
                             min(self.epoch, self.epochs), self.description,
                             self.task.n_train_batches(self.batch_size))
        start = self._run_state()
        try:
            while self.epoch < self.epochs and not self.stopped:
                logs = self._run_epoch(progress.batch)
                last = self.epoch >= self.epochs or self.stopped
                progress.epoch(self.epoch, logs, last)
                if self.checkpoint is not None and comm.is_root and (
                        self.epoch % self.checkpoint_every == 0 or last):
                    self._write_checkpoint()
        except TrainingDivergedError:
            self._set_run_state(start)
            raise
        finally:
            progress.close()
        if self.patience is not None and self.best_params is not None:
            for p, b in zip(self.params, self.best_params):
                p[...] = b
        return self.history

    def _run_state(self):
        """Everything a run changes, as it is now (what a divergence rewinds to)."""
        try:
            gens = list(self.task.generators())
        except AttributeError:  # (a net without generators(): nothing of it to rewind)
            gens = []
        return {"params": [p.copy() for p in self.params],
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "schedule": (None if self.schedule is None
                             else copy.deepcopy(self.schedule.state_dict())),
                "rng": copy.deepcopy(self.rng.bit_generator.state),
                "generators": [(g, copy.deepcopy(g.bit_generator.state)) for g in gens],
                "counters": (self.epoch, self.step, self.skipped_steps),
                "early": (self.best, self.best_epoch, self.wait, self.stopped,
                          None if self.best_params is None
                          else [b.copy() for b in self.best_params]),
                "history": {k: list(v) for k, v in self.history.items()}}

    def _set_run_state(self, snap):
        """The run set to a :meth:`_run_state` (a divergence rewinds to the one taken when
        ``fit`` started, so that fit again, say with a lower lr, starts where this fit
        started; before, only the parameters went back) or to a checkpoint's: the
        parameters, the optimizer's moments, the schedule, the random streams, the
        counters, early stopping and the history.  The optimizer and schedule go first:
        they check everything and change nothing when they refuse, and a refused
        schedule puts the optimizer back, so nothing is set at all."""
        before = self.optimizer.state_dict() if self.schedule is not None else None
        self.optimizer.load_state_dict(snap["optimizer"])
        if self.schedule is not None:
            try:
                self.schedule.load_state_dict(snap["schedule"])
            except BaseException:  # the optimizer goes back: nothing restored at all
                self.optimizer.load_state_dict(before)
                raise
        for p, a in zip(self.params, snap["params"]):
            p[...] = a
        self.rng.bit_generator.state = snap["rng"]
        for g, state in snap["generators"]:
            g.bit_generator.state = state
        self.epoch, self.step, self.skipped_steps = snap["counters"]
        self.best, self.best_epoch, self.wait, self.stopped, self.best_params = snap["early"]
        self.history = snap["history"]

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


def _after_each(items, callback):
    """Yield ``items``, calling ``callback()`` once the loop body of each has finished
    (whichever way it left: normally or by ``continue``)."""
    for item in items:
        yield item
        callback()
