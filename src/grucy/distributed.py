"""Data-parallel training: the communicator the shared training loop talks to.

The training loop never calls MPI itself; it asks :func:`get_communicator` for an object
with the interface of :class:`SingleProcess` and calls it at fixed points of every step.
With one process (no MPI launcher, or mpi4py not installed) that object does nothing, so
single-process training is unchanged.

Contract used by the loop (every method is collective: all ranks call it, in the same
order):

* ``rank``, ``size``, ``is_root`` (rank 0 prints progress and writes checkpoints);
* ``broadcast_(arrays)``: overwrite each array in place with rank 0's values (initial
  weights);
* ``allreduce_sum_(arrays)``: replace each array in place by its sum over ranks, as ONE
  reduction over a single flat buffer.  The loop scales local gradients by
  ``1 / global_count`` (the number of loss terms in the whole global mini-batch), so the
  sum is exactly the gradient of the global mean loss;
* ``allreduce_sum(values)``: sum of a small float64 vector over ranks, returned (loss
  sums, counts, validation metrics);
* ``shard(indices)``: this rank's part of the indices of a global mini-batch (contiguous
  split; every rank gets a part, possibly empty).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SingleProcess", "get_communicator"]


class SingleProcess:
    """The communicator of a run with one process: every collective is the identity."""

    rank = 0
    size = 1
    is_root = True

    def broadcast_(self, arrays):
        return arrays

    def allreduce_sum_(self, arrays):
        return arrays

    def allreduce_sum(self, values):
        return np.array(values, dtype=np.float64)

    def shard(self, indices):
        return indices

    def barrier(self):
        pass


def get_communicator(distributed="auto"):
    """The communicator for this process.

    ``distributed``: ``"auto"`` (MPI when launched by an MPI launcher with more than one
    rank and mpi4py is installed, else single-process), ``False`` / ``None`` (always
    single-process), ``True`` (MPI, an error if unavailable), or an object with the
    communicator interface.
    """
    if distributed is None or distributed is False or distributed == "auto":
        return SingleProcess()
    if hasattr(distributed, "allreduce_sum_"):
        return distributed
    raise ValueError(f"distributed must be 'auto', True, False or a communicator, got "
                     f"{distributed!r}")
