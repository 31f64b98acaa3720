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

Divergence
----------
A NaN or an infinity anywhere in a step (a layer's output or gradient, the loss, a
gradient summed over the processes, a parameter after the optimizer step) stops the
run with :class:`TrainingDivergedError`, naming the epoch, the step and what
overflowed, on every process at once; :meth:`Trainer.fit` first puts the parameters
back to their values when it started.

The package, top down: :mod:`~grucy.training.trainer` (the loop: :class:`Trainer`,
:func:`train`, :func:`make_schedule`), :mod:`~grucy.training.tasks` (what it trains:
:class:`Task`, :class:`ArrayTask`, :class:`StreamTask`),
:mod:`~grucy.training.sequences` (variable-length, weighted examples:
:class:`SequenceTask`, :class:`Packed`),
:mod:`~grucy.training.checkpoint` (:func:`read_checkpoint`) and
:mod:`~grucy.training.progress` (what ``verbose`` shows).
"""

from .checkpoint import CHECKPOINT_KIND, read_checkpoint
from .sequences import Packed, SequenceTask
from .tasks import ArrayTask, StreamTask, Task
from .trainer import Trainer, TrainingDivergedError, make_schedule, train

__all__ = ["Task", "ArrayTask", "StreamTask", "SequenceTask", "Packed", "Trainer", "train",
           "read_checkpoint", "CHECKPOINT_KIND", "make_schedule", "TrainingDivergedError"]
