"""A user's script of grucy's public API, checked by ``mypy --strict`` in CI (it must
report nothing) and run by tests/test_typing.py.

It calls the layer, the stream, save and load, the models, interop, the diagnostics and
set_num_threads the way a user would, with the types a user would write down.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, List, Tuple

import numpy as np
from numpy.typing import NDArray

import grucy
import grucy.interop
from grucy.diagnostics import Gates, StateJacobian, gates, gradient_flow, regimes, state_jacobian
from grucy.reference import RNN


def layer_roundtrip(folder: str) -> Tuple[NDArray[Any], NDArray[Any]]:
    grucy.set_num_threads(1)
    threads: int = grucy.get_num_threads()
    assert threads == 1
    gru = grucy.GRU(3, 8, num_layers=2, batch_first=True, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 10, 3)).astype(np.float32)
    y, h_n = gru(x, lengths=[10, 3, 7, 1])
    dx, dh0 = gru.backward(np.ones_like(y), dh_n=np.zeros_like(h_n))
    params: List[NDArray[Any]] = gru.parameters()
    for p, g in zip(params, gru.grads.values()):
        p -= 1e-3 * g
    gru.zero_grad()
    y_eval, _ = gru.forward(x, training=False)
    state = gru.state_dict()
    gru.load_state_dict(state)

    stream = gru.stream(batch_size=4)
    y_t: NDArray[Any] = stream.step(x[:, 0])
    h: NDArray[Any] = stream.h
    stream.reset()
    stream.refresh()
    y1, h1 = gru.step(x[:, 0], h=h)

    path = os.path.join(folder, "gru.grucy")
    grucy.save(gru, path)
    again: grucy.GRU = grucy.load(path, grucy.GRU)     # typed by the class asked for
    anything = grucy.load(path)                         # any saved grucy object
    assert isinstance(anything, grucy.GRU) and again.hidden_size == gru.hidden_size

    per_layer: List[List[Gates]] = gates(gru, x)
    z: NDArray[Any] = per_layer[0][0].z
    gru.gates(x)
    shares = regimes(per_layer[1][0]).nearest
    jac: List[StateJacobian] = state_jacobian(gru, x)
    flow: NDArray[Any] = gradient_flow(RNN(3, 4, batch_first=True), x)
    return y_eval + 0 * (y_t.sum() + y1.sum() + z.sum() + flow.sum()
                         + sum(shares.values()) + jac[0].product_norm.sum()), dx


def models(folder: str) -> float:
    series = np.sin(np.arange(120) / 5)
    forecaster = grucy.Forecaster(lookback=8, hidden_size=4, epochs=1, random_state=0)
    forecaster = forecaster.fit(series)
    forecast: NDArray[Any] = forecaster.predict(series, horizon=3)
    path = os.path.join(folder, "f.grucy")
    grucy.save(forecaster, path)
    loaded: grucy.Forecaster = grucy.load(path, grucy.Forecaster)

    X = np.random.default_rng(0).standard_normal((30, 6, 2))
    labels = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    clf = grucy.GRUClassifier(hidden_size=4, epochs=1, random_state=0).fit(X, labels)
    proba: NDArray[Any] = clf.predict_proba(X)
    accuracy: float = clf.score(X, labels)
    reg = grucy.GRURegressor(hidden_size=4, epochs=1, random_state=0).fit(X, X[:, 0, 0])
    r2: float = reg.score(X, X[:, 0, 0])

    lm = grucy.CharLM(hidden_size=8, epochs=1, random_state=0).fit("hello world " * 40)
    text: str = lm.generate("he", 10, random_state=0)
    bits: float = lm.bits_per_char("hello world")
    return (float(forecast.sum() + proba.sum()) + accuracy + r2 + bits + len(text)
            + loaded.lookback)


def interop(module: Any, layer: Any, onnx_path: str) -> List[grucy.GRU]:
    """Never run here (it needs torch, keras and onnx); type-checked only."""
    torch_gru: grucy.GRU = grucy.interop.from_torch(module)
    back: Any = grucy.interop.to_torch(torch_gru)
    keras_gru: grucy.GRU = grucy.interop.from_keras(layer)
    keras_layer: Any = grucy.interop.to_keras(keras_gru)
    model: Any = grucy.interop.to_onnx(torch_gru, onnx_path)
    onnx_gru: grucy.GRU = grucy.interop.from_onnx(onnx_path)
    assert back is not None and keras_layer is not None and model is not None
    return [torch_gru, keras_gru, onnx_gru]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        y, dx = layer_roundtrip(folder)
        print(y.shape, dx.shape, models(folder) > 0)


if __name__ == "__main__":
    main()
