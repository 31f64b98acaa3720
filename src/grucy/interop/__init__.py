"""Exact weight exchange between grucy and PyTorch, Keras and ONNX.

Every converter copies weights bitwise (gate blocks reordered and transposed, nothing
rounded) and refuses, naming the setting, whatever the target cannot compute exactly:
reset-after and reset-before GRUs are different functions and are never converted into
one another.  Layouts and formulas: docs/design.md, section 2.

One module per peer, named after it: :mod:`~grucy.interop.torch` (``from_torch``,
``to_torch``), :mod:`~grucy.interop.keras` (``from_keras``, ``to_keras``),
:mod:`~grucy.interop.onnx` (``from_onnx``, ``to_onnx``); what they share (the gate order,
building the grucy layer) is in ``_layers.py``.  The peers are optional: each is
imported inside the functions that need it, so this package imports without torch,
keras or onnx installed.  (The drop-in ``torch.nn.GRU`` running on grucy's kernels is
``grucy.torch``.)
"""

from .keras import from_keras, to_keras
from .onnx import from_onnx, to_onnx
from .torch import from_torch, to_torch

__all__ = ["from_keras", "from_onnx", "from_torch", "to_keras", "to_onnx", "to_torch"]
