"""grucy: fast GRU layers for CPUs (Cython + OpenMP kernels over scipy's BLAS)."""

from ._base import GRUBase
from ._gru import get_num_threads, openmp_enabled, set_num_threads
from .layer import GRU

__version__ = "0.1.0"
__all__ = ["GRU", "GRUBase", "get_num_threads", "openmp_enabled", "set_num_threads",
           "__version__"]
