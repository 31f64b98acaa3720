"""What every converter shares: the grucy layer it builds or reads, and the gate order.

grucy (like PyTorch) stacks the gates r, z, n; Keras and ONNX stack z, r, h, so
:func:`_swap_rz` swaps the first two H-blocks, and is its own inverse.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from .._base import GRUBase

#: the layer class a converter builds (``cls=``)
_G = TypeVar("_G", bound=GRUBase)


def _swap_rz(a, axis=0):
    """Swap the first two thirds of ``axis`` (gate order r,z,n <-> z,r,n); a copy."""
    H = a.shape[axis] // 3
    order = np.r_[H:2 * H, 0:H, 2 * H:3 * H]
    return np.take(a, order, axis=axis)


def _layer_class(cls):
    if cls is None:
        from ..layer import GRU
        return GRU
    if not (isinstance(cls, type) and issubclass(cls, GRUBase)):
        raise TypeError(f"cls must be a grucy GRU class (a GRUBase subclass), got {cls!r}")
    return cls


def _check_gru(gru, to):
    from ..quantized import QuantizedGRU

    if isinstance(gru, QuantizedGRU):
        if to == "ONNX":
            gru.to_onnx()  # (refused with its reason: ONNX Runtime has no quantized GRU)
        raise TypeError(f"a QuantizedGRU cannot be exported to {to}: its GRU has no int8 "
                        f"weights with per-row scales, nor states quantized per row "
                        f"inside the recurrence, so it would not reproduce these numbers; "
                        f"export the float layer it was quantized from")
    if not isinstance(gru, GRUBase):
        raise TypeError(f"gru must be a grucy GRU layer (grucy.GRU or grucy.reference.GRU), "
                        f"got {type(gru).__name__}")
    # the check grucy.save makes: a model whose weights became NaN or inf is never
    # written (to_onnx would replace a good file with one from_onnx refuses)
    gru._check_parameters()


def _build(cls, params, **config):
    """A grucy layer of ``config`` holding exactly ``params`` (name -> array)."""
    layer = _layer_class(cls)(**config)
    layer.load_state_dict(params)
    return layer


def _sfx(layer, direction):
    return f"l{layer}" + ("_reverse" if direction else "")
