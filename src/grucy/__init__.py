"""grucy: fast GRU layers for CPUs (Cython + OpenMP kernels over scipy's BLAS)."""

from ._base import GRUBase

__version__ = "0.1.0"
__all__ = ["GRUBase", "__version__"]
