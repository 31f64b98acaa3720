"""Exact weight exchange with Keras 3: :func:`from_keras`, :func:`to_keras`.

keras is imported inside the functions (this module imports without it).
"""

from __future__ import annotations

import numpy as np

from typing import TYPE_CHECKING, Any, Optional, Type, overload

from .._base import GRUBase
from .._validation import _flag
from ._layers import _G, _build, _check_gru, _sfx, _swap_rz

if TYPE_CHECKING:
    import grucy.layer

__all__ = ["from_keras", "to_keras"]


def _keras():
    try:
        import keras
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("grucy.interop's Keras converters need keras 3 "
                          "(pip install 'grucy[keras]')") from exc
    return keras


def _keras_dtype(keras, layer, what):
    dtype, compute = layer.dtype, getattr(layer, "compute_dtype", layer.dtype)
    if dtype not in ("float32", "float64") or compute != dtype:
        raise TypeError(f"{what} has dtype policy {layer.dtype_policy.name!r} (variables "
                        f"{dtype}, compute {compute}); grucy computes in float32 or float64 "
                        f"with variables of the same dtype")
    return dtype


def _keras_gru_spec(keras, layer, what, *, ignore_dropout, backwards=False):
    """Configuration and (W_ih, W_hh, b_ih, b_hh) of one built keras.layers.GRU."""
    if not isinstance(layer, keras.layers.GRU):
        raise TypeError(f"{what} must be a keras.layers.GRU, got {type(layer).__name__}")
    if not layer.built:
        raise ValueError(f"{what} is not built: call it on data or call .build(input_shape) "
                         f"first, so that it has weights")
    cell = layer.cell
    if cell.activation is not keras.activations.tanh:
        raise ValueError(f"{what} has activation={_keras_name(keras, cell.activation)!r}; "
                         f"grucy computes only activation='tanh'")
    if cell.recurrent_activation is not keras.activations.sigmoid:
        raise ValueError(f"{what} has recurrent_activation="
                         f"{_keras_name(keras, cell.recurrent_activation)!r}; grucy computes "
                         f"only recurrent_activation='sigmoid'")
    if bool(layer.go_backwards) != backwards:
        raise ValueError(f"{what} has go_backwards={layer.go_backwards}; grucy runs a reverse "
                         f"pass only as the second direction of a bidirectional layer "
                         f"(keras.layers.Bidirectional)")
    if layer.stateful:
        raise ValueError(f"{what} has stateful=True; grucy layers carry no state between "
                         f"calls (pass h0 explicitly)")
    if not ignore_dropout:
        for name in ("dropout", "recurrent_dropout"):
            if getattr(cell, name):
                raise ValueError(f"{what} has {name}={getattr(cell, name)}, which grucy "
                                 f"cannot reproduce in training; it does not change "
                                 f"inference, pass ignore_dropout=True to convert anyway")
    dtype = _keras_dtype(keras, layer, what)
    to_np = keras.ops.convert_to_numpy
    kernel, recurrent = to_np(cell.kernel), to_np(cell.recurrent_kernel)
    H = cell.units
    w_ih, w_hh = _swap_rz(kernel.T), _swap_rz(recurrent.T)
    if cell.use_bias:
        bias = to_np(cell.bias)
        if cell.reset_after:
            b_ih, b_hh = _swap_rz(bias[0]), _swap_rz(bias[1])
        else:
            # Keras' reset-before form has one bias; every recurrent bias of that form sits
            # outside the reset product, so b_hh = 0 is exact (docs/design.md, 2).
            b_ih, b_hh = _swap_rz(bias), np.zeros_like(bias)
    else:
        b_ih = b_hh = None
    return dict(units=H, input_size=kernel.shape[0], reset_after=bool(cell.reset_after),
                use_bias=bool(cell.use_bias), dtype=dtype,
                return_sequences=bool(layer.return_sequences),
                weights=(w_ih, w_hh, b_ih, b_hh))


def _keras_name(keras, fn):
    try:
        return keras.activations.serialize(fn)
    except Exception:  # noqa: BLE001 - only for the error message
        return getattr(fn, "__name__", repr(fn))


def _keras_layer_spec(keras, layer, what, ignore_dropout):
    """One grucy layer from a keras GRU or Bidirectional(GRU): config + directions."""
    if isinstance(layer, keras.layers.Bidirectional):
        if layer.merge_mode != "concat":
            raise ValueError(f"{what} has merge_mode={layer.merge_mode!r}; grucy "
                             f"concatenates the two directions (merge_mode='concat')")
        fwd = _keras_gru_spec(keras, layer.forward_layer, f"{what}.forward_layer",
                              ignore_dropout=ignore_dropout)
        bwd = _keras_gru_spec(keras, layer.backward_layer, f"{what}.backward_layer",
                              ignore_dropout=ignore_dropout, backwards=True)
        for key in ("units", "input_size", "reset_after", "use_bias", "dtype"):
            if fwd[key] != bwd[key]:
                raise ValueError(f"{what}: forward and backward layers differ in {key} "
                                 f"({fwd[key]} vs {bwd[key]}); grucy needs them equal")
        spec = dict(fwd, directions=[fwd["weights"], bwd["weights"]])
        spec["return_sequences"] = bool(layer.return_sequences)
        return spec
    spec = _keras_gru_spec(keras, layer, what, ignore_dropout=ignore_dropout)
    spec["directions"] = [spec["weights"]]
    return spec


@overload
def from_keras(layer: Any, *, batch_first: bool = True, ignore_dropout: bool = False,
               cls: None = None) -> "grucy.layer.GRU": ...


@overload
def from_keras(layer: Any, *, batch_first: bool = True, ignore_dropout: bool = False,
               cls: Type[_G]) -> _G: ...


def from_keras(layer: Any, *, batch_first: bool = True, ignore_dropout: bool = False,
               cls: Optional[Type[GRUBase]] = None) -> GRUBase:
    """A grucy GRU computing exactly what a Keras GRU (or a stack of them) computes.

    Parameters
    ----------
    layer : keras.layers.GRU, keras.layers.Bidirectional, keras.Sequential or list
        A built ``GRU``, a ``Bidirectional`` around one (``merge_mode='concat'``), or a
        stack of them -- a ``keras.Sequential`` or a list of layers, all with the same
        units, ``reset_after``, ``use_bias``, dtype and directions, every layer but the
        last with ``return_sequences=True``; ``keras.layers.Dropout`` layers of one rate
        between all of them become grucy's ``dropout``.  Refused (the error names the
        setting): activations other than tanh / sigmoid, ``go_backwards`` outside
        ``Bidirectional``, ``stateful``, non-concat ``merge_mode``, mixed precision, and
        ``dropout`` / ``recurrent_dropout`` unless ``ignore_dropout``.
    batch_first : bool, default True
        Layout of the grucy layer; Keras itself is always batch first, so the default lets
        the same ``x`` feed both.  It does not change the weights.
    ignore_dropout : bool, default False
        Convert layers with ``dropout`` / ``recurrent_dropout`` anyway (inference is
        unaffected; training would drop differently).
    cls : grucy GRU class, optional
        Default ``grucy.GRU``.

    Returns
    -------
    grucy.GRU
        ``y`` equals Keras' output with ``return_sequences=True``.  Keras' output when
        False is each direction's final state: ``y[:, -1]`` for a one-directional layer,
        ``np.concatenate(h_n[-2:], axis=-1)`` (the last layer's two final states) for a
        ``Bidirectional`` one, whose backward direction ends at the first step.
        ``h_n`` stacks the final states Keras returns with ``return_state=True``.
        Keras' initial states are grucy's ``h0``.

    Notes
    -----
    A Keras GRU with ``reset_after=False`` has a single bias; it becomes ``bias_ih`` with
    ``bias_hh = 0`` (exact: that form adds the recurrent bias outside the reset product).
    """
    keras = _keras()
    batch_first = _flag("batch_first", batch_first)
    ignore_dropout = _flag("ignore_dropout", ignore_dropout)
    if isinstance(layer, (keras.layers.GRU, keras.layers.Bidirectional)):
        layers = [layer]
    elif isinstance(layer, keras.Sequential):
        layers = list(layer.layers)
    elif isinstance(layer, (list, tuple)):
        layers = list(layer)
    else:
        raise TypeError(f"layer must be a keras.layers.GRU, a keras.layers.Bidirectional, a "
                        f"keras.Sequential or a list of layers, got {type(layer).__name__}")
    specs: list = []
    rates, between = set(), 0
    for i, item in enumerate(layers):
        what = f"layer {i} ({getattr(item, 'name', type(item).__name__)})"
        if isinstance(item, keras.layers.InputLayer):
            continue
        if isinstance(item, keras.layers.Dropout):
            if not specs:
                raise ValueError(f"{what}: a Dropout before the first GRU has no grucy "
                                 f"equivalent (grucy drops the inputs of layers 1 .. L-1)")
            rates.add(float(item.rate))
            between += 1
            continue
        if not isinstance(item, (keras.layers.GRU, keras.layers.Bidirectional)):
            raise TypeError(f"{what} is a {type(item).__name__}; only GRU, Bidirectional(GRU)"
                            f", Dropout and InputLayer can become a grucy GRU")
        specs.append(_keras_layer_spec(keras, item, what, ignore_dropout))
    if not specs:
        raise ValueError("layer contains no GRU")
    first = specs[0]
    for k, spec in enumerate(specs[1:], start=1):
        for key in ("units", "reset_after", "use_bias", "dtype"):
            if spec[key] != first[key]:
                raise ValueError(f"GRU {k} has {key}={spec[key]} but GRU 0 has "
                                 f"{first[key]}; a grucy GRU needs them equal in all layers")
        if len(spec["directions"]) != len(first["directions"]):
            raise ValueError(f"GRU {k} and GRU 0 differ in being Bidirectional; a grucy GRU "
                             f"needs every layer alike")
        if not specs[k - 1]["return_sequences"]:
            raise ValueError(f"GRU {k - 1} has return_sequences=False, so the next GRU does "
                             f"not see its outputs; this is not a stacked GRU")
    if rates and (len(rates) > 1 or between != len(specs) - 1):
        raise ValueError(f"Dropout layers must sit between every two GRUs with one rate to "
                         f"become grucy's dropout; got {between} Dropout layers with rates "
                         f"{sorted(rates)} for {len(specs)} GRUs")
    D = len(first["directions"])
    params = {}
    for k, spec in enumerate(specs):
        for d, (w_ih, w_hh, b_ih, b_hh) in enumerate(spec["directions"]):
            s = _sfx(k, d)
            params[f"weight_ih_{s}"], params[f"weight_hh_{s}"] = w_ih, w_hh
            if first["use_bias"]:
                params[f"bias_ih_{s}"], params[f"bias_hh_{s}"] = b_ih, b_hh
    return _build(cls, params, input_size=first["input_size"], hidden_size=first["units"],
                  num_layers=len(specs), bias=first["use_bias"],
                  batch_first=bool(batch_first), dropout=rates.pop() if rates else 0.0,
                  bidirectional=D == 2, reset_after=first["reset_after"],
                  dtype=first["dtype"])


def _keras_weights(gru, layer, direction):
    """[kernel, recurrent_kernel(, bias)] of one direction, Keras' shapes and gate order."""
    w_ih, w_hh, b_ih, b_hh = (gru._params.get(f"{n}_{_sfx(layer, direction)}")
                              for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    weights = [_swap_rz(w_ih).T, _swap_rz(w_hh).T]
    if gru.bias:
        if gru.reset_after:
            weights.append(np.stack([_swap_rz(b_ih), _swap_rz(b_hh)]))
        else:
            # Exact in the reset-before form, where b_hh sits outside the reset product;
            # bitwise when b_hh is 0 (as from_keras makes it).
            weights.append(_swap_rz(b_ih + b_hh))
    return [np.ascontiguousarray(w) for w in weights]


def to_keras(gru: GRUBase, *, return_sequences: bool = True,
             return_state: bool = False) -> Any:
    """Keras layers computing exactly what grucy GRU ``gru`` computes.

    Parameters
    ----------
    gru : grucy.GRU or grucy.reference.GRU
        Either form (Keras' ``reset_after`` follows ``gru.reset_after``).
    return_sequences, return_state : bool
        Passed to the (last) Keras GRU; inner layers of a stack always return sequences.

    Returns
    -------
    keras.layers.GRU, keras.layers.Bidirectional or keras.Sequential
        A built ``GRU`` (one layer, one direction), ``Bidirectional(GRU)`` (one layer,
        two directions; ``merge_mode='concat'``), or for ``num_layers > 1`` a
        ``keras.Sequential`` of those, with ``keras.layers.Dropout`` between them when
        ``gru.dropout > 0``.  Keras input is batch first: ``(B, T, I)``.
    """
    keras = _keras()
    _check_gru(gru, "Keras")
    return_sequences = _flag("return_sequences", return_sequences)
    return_state = _flag("return_state", return_state)
    if gru.num_layers > 1 and return_state:
        raise ValueError("return_state=True needs num_layers=1: a keras.Sequential passes "
                         "on one output only")
    layers: list = []
    in_size = gru.input_size
    for k in range(gru.num_layers):
        last = k == gru.num_layers - 1
        kwargs = dict(activation="tanh", recurrent_activation="sigmoid", use_bias=gru.bias,
                      reset_after=gru.reset_after, dtype=gru.dtype.name,
                      return_sequences=return_sequences if last else True,
                      return_state=return_state and last)
        if gru.bidirectional:
            layer = keras.layers.Bidirectional(keras.layers.GRU(gru.hidden_size, **kwargs),
                                               merge_mode="concat", dtype=gru.dtype.name)
        else:
            layer = keras.layers.GRU(gru.hidden_size, **kwargs)
        layer.build((None, None, in_size))
        weights = []
        for d in range(gru.num_directions):
            weights += _keras_weights(gru, k, d)
        layer.set_weights(weights)
        if layers and gru.dropout > 0:
            layers.append(keras.layers.Dropout(gru.dropout, dtype=gru.dtype.name))
        layers.append(layer)
        in_size = gru.num_directions * gru.hidden_size
    if len(layers) == 1:
        return layers[0]
    model = keras.Sequential([keras.Input(shape=(None, gru.input_size),
                                          dtype=gru.dtype.name)] + layers)
    return model


# ---------------------------------------------------------------------------------------
