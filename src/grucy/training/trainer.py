"""The training loop, :class:`Trainer` (what it guarantees: :mod:`grucy.training`)."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from typing import Any, Dict, List, Optional, Union

import numpy as np

from .. import io
from .._validation import _positive_int, _real, _rng
from ..distributed import common_seed, get_communicator
from ..optim import (CosineAnnealingLR, Optimizer, ReduceLROnPlateau, Schedule, StepLR,
                     clip_grad_norm, make_optimizer)
from .checkpoint import (_CHECKPOINT_VERSION, CHECKPOINT_KIND, _from_json_floats,
                         _json_floats, read_checkpoint)
from .progress import _Progress
from .tasks import Task

__all__ = ["Trainer", "train", "make_schedule"]


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
