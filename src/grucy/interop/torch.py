"""Exact weight exchange with PyTorch: :func:`from_torch`, :func:`to_torch`.

torch is imported inside the functions (this module imports without it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Type, overload

from .._base import GRUBase
from ._layers import _G, _build, _check_gru

if TYPE_CHECKING:
    import grucy.layer

__all__ = ["from_torch", "to_torch"]

_TORCH_DTYPES = ("float32", "float64")


@overload
def from_torch(module: Any, *, cls: None = None) -> "grucy.layer.GRU": ...


@overload
def from_torch(module: Any, *, cls: Type[_G]) -> _G: ...


def from_torch(module: Any, *, cls: Optional[Type[GRUBase]] = None) -> GRUBase:
    """A grucy GRU computing exactly what ``torch.nn.GRU`` ``module`` computes.

    Parameters
    ----------
    module : torch.nn.GRU
        Any options (layers, bidirectional, bias, batch_first, dropout), float32 or
        float64, on any device (the weights are copied to the host).
        ``grucy.torch.GRU`` is accepted too.
    cls : grucy GRU class, optional
        The layer class to build (default ``grucy.GRU``; ``grucy.reference.GRU`` works).

    Returns
    -------
    grucy.GRU
        Same configuration, parameters equal bitwise to the module's.
    """
    import torch

    if not isinstance(module, torch.nn.GRU):
        raise TypeError(f"module must be a torch.nn.GRU, got {type(module).__name__}")
    if getattr(module, "proj_size", 0):
        raise ValueError(f"module has proj_size={module.proj_size}; grucy has no projections")
    if not 0.0 <= float(module.dropout) < 1.0:
        raise ValueError(f"module has dropout={module.dropout}; grucy needs dropout in [0, 1)")
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    dtypes = {str(v.dtype).replace("torch.", "") for v in state.values()}
    if len(dtypes) != 1 or not dtypes <= set(_TORCH_DTYPES):
        raise TypeError(f"module parameters must all be float32 or float64, got dtypes "
                        f"{sorted(dtypes)}")
    return _build(cls, {k: v.numpy().copy() for k, v in state.items()},
                  input_size=module.input_size, hidden_size=module.hidden_size,
                  num_layers=module.num_layers, bias=module.bias,
                  batch_first=module.batch_first, dropout=float(module.dropout),
                  bidirectional=module.bidirectional, reset_after=True,
                  dtype=dtypes.pop())


def to_torch(gru: GRUBase, *, module_class: Optional[type] = None) -> Any:
    """A ``torch.nn.GRU`` (on the CPU) computing exactly what grucy GRU ``gru`` computes.

    Parameters
    ----------
    gru : grucy.GRU or grucy.reference.GRU
        Must be in the reset-after form (``reset_after=True``): PyTorch has no other.
    module_class : type, optional
        ``torch.nn.GRU`` (default) or a subclass such as ``grucy.torch.GRU``.

    Returns
    -------
    torch.nn.GRU
        Same options and dtype; parameters equal bitwise to ``gru``'s.
    """
    import torch

    _check_gru(gru, "PyTorch")
    if module_class is None:
        module_class = torch.nn.GRU
    if not (isinstance(module_class, type) and issubclass(module_class, torch.nn.GRU)):
        raise TypeError(f"module_class must be torch.nn.GRU or a subclass, got "
                        f"{module_class!r}")
    if not gru.reset_after:
        raise ValueError("gru has reset_after=False (the reset-before form); torch.nn.GRU "
                         "computes only the reset-after form and converting one into the "
                         "other is not exact")
    module = module_class(gru.input_size, gru.hidden_size, gru.num_layers, bias=gru.bias,
                          batch_first=gru.batch_first, dropout=gru.dropout,
                          bidirectional=gru.bidirectional,
                          dtype=getattr(torch, gru.dtype.name))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in gru.state_dict().items()})
    return module
