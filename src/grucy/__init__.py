"""grucy: fast GRU layers for CPUs (Cython + OpenMP kernels over scipy's BLAS)."""

import os

# OpenMP's default is to spin for a while after each parallel region.  Our fused passes
# alternate with OpenBLAS calls whose own threads need those same two cores, and spinning
# OpenMP workers starve them: measured on a 2-core machine, a training step at
# (B, T, I, H) = (32, 100, 128, 256) took 2.1 s with spinning and 0.08 s with passive
# waiting.  The runtime reads this when the extension first loads it; a user's own
# setting is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Inside a kernel, though, the threads meet at a barrier after every phase of every time
# step, tens of microseconds apart; sleeping there costs a futex wake-up each time.  A
# short spin (GCC's libgomp reads this; it overrides the passive policy's zero) keeps
# them awake across a step without burning a core for long after a kernel returns:
# (16, 100, 64, 128) training went from 14.9 ms to 7.7 ms on 2 cores.
os.environ.setdefault("GOMP_SPINCOUNT", "30000")

try:
    from . import _gru  # noqa: E402,F401  (the compiled kernels)
except ImportError as exc:
    import importlib.util as _util

    if _util.find_spec(f"{__name__}._gru") is not None:
        raise
    # Without this, a source tree put on the path (PYTHONPATH=src) before the extension
    # was built fails with "partially initialized module ... circular import".
    raise ImportError(
        f"grucy's compiled kernels (grucy._gru) are not built in "
        f"{os.path.dirname(__file__)}: this is a source tree without them.  Either use "
        f"the installed grucy (pip install . ; then run without PYTHONPATH=src), or "
        f"build them in place first: python setup.py build_ext --inplace") from exc

from ._base import GRUBase  # noqa: E402
from ._base import SizeLimitError  # noqa: E402
from ._gru import get_num_threads, openmp_enabled, set_num_threads  # noqa: E402
from .io import FileFormatError, load, save  # noqa: E402
from .layer import GRU  # noqa: E402
from ._threads import set_num_threads  # noqa: E402,F811  (validated; replaces _gru's)
from .models import (CharLM, Forecaster, GRUClassifier, GRURegressor,  # noqa: E402
                     NotFittedError)
from .quantized import QuantizedGRU, quantize  # noqa: E402

# Submodules not imported above are imported on first use, so that ``import grucy`` then
# ``grucy.diagnostics.gradient_flow`` works while ``import grucy`` stays as quick as it is
# (and never imports scikit-learn).  grucy.torch is left out: it imports PyTorch, and
# ``import grucy.torch`` says so.  Private modules and __main__ never load this way.
_NOT_LAZY = frozenset({"torch"})


def _is_lazy_submodule(name):
    if name.startswith("_") or name in _NOT_LAZY or not name.isidentifier():
        return False
    import importlib.util

    return importlib.util.find_spec(f"{__name__}.{name}") is not None


def __getattr__(name):
    if _is_lazy_submodule(name):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    import pkgutil

    return sorted(set(globals()) | {m.name for m in pkgutil.iter_modules(__path__)
                                    if _is_lazy_submodule(m.name)})


__version__ = "0.1.0"
__all__ = ["GRU", "GRUBase", "FileFormatError", "SizeLimitError", "get_num_threads",
           "load", "openmp_enabled", "save", "set_num_threads", "__version__",
           "CharLM", "Forecaster", "GRUClassifier", "GRURegressor", "NotFittedError",
           "QuantizedGRU", "quantize"]
