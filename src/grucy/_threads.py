"""The validated public ``grucy.set_num_threads``.

The kernels' own setter (``grucy._gru.set_num_threads``) accepts any C int, and OpenMP
asked for tens of thousands of threads aborts or crashes the process when it cannot
create them.  More threads than cores never helps these kernels, so the public setter
refuses anything above a generous bound before it reaches the kernels.
"""

from __future__ import annotations

import os

from . import _gru
from ._base import _positive_int

__all__ = ["MAX_THREADS", "set_num_threads"]

# Four times the cores, and never less than 64 (oversubscription stays possible for
# experiments; thousands of threads are not).
MAX_THREADS = max(64, 4 * (os.cpu_count() or 1))


def set_num_threads(n):
    """Threads for grucy's OpenMP loops, 1 .. MAX_THREADS (4 x the cores, at least 64).

    Without OpenMP only 1 is meaningful (any valid n is accepted and 1 is used).
    Results are bit-identical for every thread count.
    """
    n = _positive_int("n", n)
    if n > MAX_THREADS:
        raise ValueError(f"n must be at most {MAX_THREADS} threads (4 x the "
                         f"{os.cpu_count()} cores, at least 64), got {n}")
    _gru.set_num_threads(n)
