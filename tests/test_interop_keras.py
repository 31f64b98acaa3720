"""Keras interop: grucy.interop.from_keras / to_keras against keras.layers.GRU.

Keras 3 runs here on its torch backend (tensorflow is not installed).  Its numbers are
compared in float32: Keras' type promotion computes float64 matmuls in float32 (it
"aligns with JAX's default"), so a float64 Keras GRU is only float32-accurate.  Weights
are compared bitwise in both dtypes.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import assert_close, importorskip  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = importorskip("keras")

import grucy  # noqa: E402
from grucy import interop  # noqa: E402

# Keras' torch backend converts tensors with np.array(x) (NumPy 2 warns); not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CONFIGS = {
    "after": dict(reset_after=True),
    "before": dict(reset_after=False),
    "bidirectional_after": dict(reset_after=True, bidirectional=True),
    "bidirectional_before_no_bias": dict(reset_after=False, bidirectional=True, bias=False),
    "stack_after": dict(reset_after=True, num_layers=2),
    "stack_bidirectional_before": dict(reset_after=False, num_layers=2, bidirectional=True),
}


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _layer(seed=0, zero_bias_hh=False, **cfg):
    layer = grucy.GRU(4, 3, batch_first=True, seed=seed, **cfg)
    if zero_bias_hh:  # what from_keras makes of a reset-before layer
        for name, p in layer.named_parameters():
            if name.startswith("bias_hh"):
                p[...] = 0
    return layer


def _keras_weights(obj):
    return [np.asarray(w) for w in obj.get_weights()]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_to_keras_computes_what_grucy_computes(name, rng):
    cfg = CONFIGS[name]
    layer = _layer(**cfg)
    single = layer.num_layers == 1
    peer = interop.to_keras(layer, return_state=single)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    y, h_n = layer.forward(x, training=False)
    if single:
        D = layer.num_directions
        h0 = rng.standard_normal((D, 3, 3)).astype(np.float32)
        out = peer(x, initial_state=list(h0))
        y0, h0_n = layer.forward(x, h0, training=False)
        assert_close(_np(out[0]), y0)
        assert_close(np.stack([_np(o) for o in out[1:]]), h0_n)
        out = [_np(o) for o in peer(x)]
        assert_close(np.stack(out[1:]), h_n)
        out = out[0]
    else:
        assert isinstance(peer, keras.Sequential)
        out = _np(peer(x))
    assert_close(out, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_keras_round_trips_are_bitwise(name, dtype):
    layer = _layer(dtype=dtype, zero_bias_hh=True, **CONFIGS[name])
    peer = interop.to_keras(layer)
    back = interop.from_keras(peer)
    assert back.dtype == dtype and back.reset_after == layer.reset_after
    assert back.num_layers == layer.num_layers and back.bidirectional == layer.bidirectional
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v, err_msg=k)
    again = interop.to_keras(back)
    for a, b in zip(_keras_weights(again), _keras_weights(peer)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype == dtype


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_from_keras_computes_what_keras_computes(reset_after, bidirectional, rng):
    keras.utils.set_random_seed(0)
    gru = keras.layers.GRU(3, reset_after=reset_after, return_sequences=True,
                           return_state=True, bias_initializer="random_normal")
    peer = keras.layers.Bidirectional(gru) if bidirectional else gru
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    out = [_np(o) for o in peer(x)]
    layer = interop.from_keras(peer)
    y, h_n = layer.forward(x, training=False)
    assert_close(y, out[0])
    assert_close(h_n, np.stack(out[1:]))


def test_keras_mask_is_grucy_lengths(rng):
    """A right-padded Keras mask gives grucy's h_n; Bidirectional also zeros y past the end."""
    layer = _layer(bidirectional=True)
    peer = interop.to_keras(layer, return_state=True)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    lengths = np.array([5, 2, 4])
    mask = np.arange(5)[None, :] < lengths[:, None]
    out = [_np(o) for o in peer(x, mask=mask)]
    y, h_n = layer.forward(x, lengths=lengths, training=False)
    assert_close(out[0], y)
    assert_close(np.stack(out[1:]), h_n)


def test_reset_before_bias_fold_is_exact_in_function(rng):
    """grucy's reset-before b_hh (outside the reset product) folds into Keras' one bias."""
    layer = _layer(reset_after=False)  # b_hh != 0
    peer = interop.to_keras(layer)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    assert_close(_np(peer(x)), layer.forward(x, training=False)[0])
    back = interop.from_keras(peer)
    assert not np.any(back.state_dict()["bias_hh_l0"])
    assert_close(back.forward(x, training=False)[0], layer.forward(x, training=False)[0])


def test_from_keras_stacks_and_dropout(rng):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((None, 4)),
                              keras.layers.GRU(3, return_sequences=True),
                              keras.layers.Dropout(0.2),
                              keras.layers.GRU(3, return_sequences=True)])
    layer = interop.from_keras(model)
    assert layer.num_layers == 2 and layer.dropout == pytest.approx(0.2)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    assert_close(layer.forward(x, training=False)[0], _np(model(x)))
    same = interop.from_keras([lyr for lyr in model.layers])
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(same.state_dict()[k], v)
    assert interop.from_keras(model.layers[0], batch_first=False).batch_first is False


def _built(layer, I=4):
    layer.build((None, None, I))
    return layer


@pytest.mark.parametrize("make, exc, setting", [
    (lambda: _built(keras.layers.GRU(3, activation="relu")), ValueError, "activation='relu'"),
    (lambda: _built(keras.layers.GRU(3, recurrent_activation="hard_sigmoid")), ValueError,
     "recurrent_activation='hard_sigmoid'"),
    (lambda: _built(keras.layers.GRU(3, go_backwards=True)), ValueError, "go_backwards"),
    (lambda: _built(keras.layers.GRU(3, dropout=0.1)), ValueError, "dropout=0.1"),
    (lambda: _built(keras.layers.GRU(3, recurrent_dropout=0.1)), ValueError,
     "recurrent_dropout=0.1"),
    (lambda: _built(keras.layers.Bidirectional(keras.layers.GRU(3), merge_mode="sum")),
     ValueError, "merge_mode='sum'"),
    (lambda: _built(keras.layers.GRU(3, dtype="mixed_float16")), TypeError, "mixed_float16"),
    (lambda: keras.layers.GRU(3), ValueError, "not built"),
    (lambda: _built(keras.layers.LSTM(3)), TypeError, "LSTM"),
    (lambda: [_built(keras.layers.GRU(3)), _built(keras.layers.GRU(3), I=3)], ValueError,
     "return_sequences=False"),
    (lambda: [_built(keras.layers.GRU(3, return_sequences=True)),
              _built(keras.layers.GRU(5), I=3)], ValueError, "units=5"),
    (lambda: keras.Sequential([keras.Input((None, 4)), keras.layers.GRU(3),
                               keras.layers.Dense(2)]), TypeError, "Dense"),
    (lambda: "gru", TypeError, "keras.layers.GRU"),
])
def test_keras_refusals_name_the_setting(make, exc, setting):
    with pytest.raises(exc, match=setting.replace("(", r"\(").replace(")", r"\)")):
        interop.from_keras(make())


def test_keras_stateful_and_ignore_dropout():
    stateful = keras.layers.GRU(3, stateful=True)
    stateful.build((2, 5, 4))
    with pytest.raises(ValueError, match="stateful"):
        interop.from_keras(stateful)
    layer = interop.from_keras(_built(keras.layers.GRU(3, dropout=0.1, recurrent_dropout=0.2)),
                               ignore_dropout=True)
    assert layer.hidden_size == 3


def test_to_keras_refuses_non_finite_weights():
    g = grucy.GRU(3, 4, seed=0)
    g.parameters()[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="parameter 'weight_ih_l0' contains NaN or inf"):
        interop.to_keras(g)


def test_bidirectional_keras_output_without_sequences_is_the_final_states():
    # (the from_keras docstring: not y[:, -1], whose backward half is the first step's)
    layer = keras.layers.Bidirectional(keras.layers.GRU(5, return_sequences=False))
    layer.build((None, None, 4))
    g = interop.from_keras(layer)
    x = np.random.default_rng(0).standard_normal((3, 6, 4)).astype(np.float32)
    want = keras.ops.convert_to_numpy(layer(x))
    y, h_n = g(x, training=False)
    np.testing.assert_allclose(np.concatenate(h_n[-2:], axis=-1), want, atol=1e-6)
    assert np.abs(y[:, -1] - want).max() > 1e-2


def test_to_keras_refuses_return_state_for_stacks():
    with pytest.raises(ValueError, match="return_state"):
        interop.to_keras(_layer(num_layers=2), return_state=True)
    with pytest.raises(TypeError, match="grucy GRU layer"):
        interop.to_keras(keras.layers.GRU(3))
