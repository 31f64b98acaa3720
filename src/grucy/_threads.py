"""The validated public ``grucy.set_num_threads``.

The kernels' own setter (``grucy._gru.set_num_threads``) accepts any C int, and a team
asked for tens of thousands of threads would exhaust the process's threads and memory.  More threads than cores never helps these kernels, so the public setter
refuses anything above a generous bound before it reaches the kernels.
"""

from __future__ import annotations

import os

from . import _gru
from ._validation import _positive_int

__all__ = ["MAX_THREADS", "set_num_threads", "check_threads"]

MAX_THREADS = _gru.MAX_THREADS   # (the bound and why: _gru.pyx)


def set_num_threads(n: int) -> None:
    """Threads grucy's kernels may use, 1 .. MAX_THREADS (4 x the cores, at least 64).

    A call uses fewer when its work is small (``grucy._gru.work_plan`` says how many).
    Results are bit-identical for every thread count.  A process forked after a
    multi-threaded call starts with 1 until it calls this.
    """
    _gru.set_num_threads(check_threads("n", n))


def check_threads(name: str, n: int) -> int:
    """``n`` as a thread count for grucy's kernels (1 .. MAX_THREADS), or an error
    naming ``name``."""
    n = _positive_int(name, n)
    if n > MAX_THREADS:
        raise ValueError(f"{name} must be at most {MAX_THREADS} threads (4 x the "
                         f"{os.cpu_count()} cores, at least 64), got {n}")
    return n


# Launcher variables giving the number of ranks on this node (Open MPI, MPICH/Hydra, PMIx,
# Slurm).
_LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE",
                    "SLURM_NTASKS_PER_NODE")


def default_threads_for_local_ranks(environ=None, cpus=None, allowed=None):
    """Threads per process when several MPI ranks share a node and the user set no
    ``OMP_NUM_THREADS``: the cores this process may use (when the launcher bound it to a
    subset) or the node's cores divided among the local ranks, at least 1, so that
    ranks x threads never oversubscribe the cores.  None when no launcher is detected."""
    environ = os.environ if environ is None else environ
    if environ.get("OMP_NUM_THREADS"):
        return None
    cpus = cpus or os.cpu_count() or 1
    if allowed is None:
        allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    for var in _LOCAL_SIZE_VARS:
        try:
            local = int(environ.get(var, ""))
        except ValueError:
            continue
        if local > 1:
            if allowed < cpus:  # bound by the launcher: its share is already ours
                return max(1, allowed)
            return max(1, cpus // local)
    return None


_n = default_threads_for_local_ranks()
if _n is not None:
    _gru.set_num_threads(_n)
del _n
