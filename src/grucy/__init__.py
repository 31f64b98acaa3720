"""grucy: fast GRU layers for CPUs (Cython kernels on grucy's own GEMM and thread team).

The parts (docs/architecture.md): the compiled kernels (``_gru``) and the layer over them
(``grucy.GRU``); the pure-Python core (validation, parameters, the NumPy reference, file
format, losses, optimizers, training loop), which imports without the kernels; the models
(``grucy.models``); interoperability (``grucy.interop``, ``grucy.torch``); the tools (the
``grucy`` command, demos, diagnostics, ``grucy bench``).
"""

import os

from ._version import __version__  # noqa: E402
from ._base import GRUBase  # noqa: E402
from ._limits import SizeLimitError  # noqa: E402
from .io import FileFormatError, load, save  # noqa: E402
from .training import TrainingDivergedError  # noqa: E402


def _kernels_built():
    """Whether the compiled module grucy._gru is there to import (a failed import of a
    module that is there is a broken build, reported as it is)."""
    import importlib.util

    try:
        return importlib.util.find_spec(f"{__name__}._gru") is not None
    except ImportError:  # refused by an import hook: as good as absent
        return False


# What needs the compiled kernels; without them (a source tree that was not built) the
# pure-Python core above still imports, and these names raise _MISSING_KERNELS.
_NEEDS_KERNELS = frozenset({"_gru", "GRU", "get_num_threads", "openmp_enabled",
                            "set_num_threads", "CharLM", "Forecaster", "GRUClassifier",
                            "GRURegressor", "NotFittedError", "QuantizedGRU", "quantize",
                            "kernel_isa", "available_isas"})
# Public names loaded from their module on first use (int8 inference: grucy.quantized).
_LAZY_NAMES = {"QuantizedGRU": "quantized", "quantize": "quantized"}
_MISSING_KERNELS = None
try:
    from . import _gru  # noqa: F401  (the compiled kernels)
except ImportError:
    if _kernels_built():
        raise
    # Without this, a source tree put on the path (PYTHONPATH=src) before the extension
    # was built fails with "partially initialized module ... circular import".
    _MISSING_KERNELS = (
        f"grucy's compiled kernels (grucy._gru) are not built in "
        f"{os.path.dirname(__file__)}: this is a source tree without them.  Either use "
        f"the installed grucy (pip install . ; then run without PYTHONPATH=src), or "
        f"build them in place first: python setup.py build_ext --inplace")
else:
    # kernel_isa(): the GEMM kernel that runs (GRUCY_ISA, else the CPU's best);
    # available_isas(): those this CPU can run, best first
    from ._gru import available_isas, get_num_threads, kernel_isa, openmp_enabled
    from ._threads import set_num_threads  # (validated; wraps _gru's)
    from .layer import GRU
    from .models import CharLM, Forecaster, GRUClassifier, GRURegressor, NotFittedError

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
    if _MISSING_KERNELS is not None and name in _NEEDS_KERNELS:
        raise ImportError(_MISSING_KERNELS)
    if name in _LAZY_NAMES:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
        globals()[name] = value
        return value
    if _is_lazy_submodule(name):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    import pkgutil

    return sorted(set(globals()) | set(_LAZY_NAMES)
                  | {m.name for m in pkgutil.iter_modules(__path__)
                     if _is_lazy_submodule(m.name)})


__all__ = ["GRU", "GRUBase", "FileFormatError", "SizeLimitError", "TrainingDivergedError",
           "get_num_threads",
           "load", "openmp_enabled", "save", "set_num_threads", "__version__",
           "CharLM", "Forecaster", "GRUClassifier", "GRURegressor", "NotFittedError",
           "QuantizedGRU", "quantize", "kernel_isa", "available_isas"]
