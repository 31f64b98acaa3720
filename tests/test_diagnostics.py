"""grucy.diagnostics: gates as the kernels computed them, state Jacobians, gradient flow of
a bare layer, the regimes; and the plain tanh RNN of grucy.reference they are compared
with (exact gradients, PyTorch's numbers)."""

from __future__ import annotations

import numpy as np
import pytest

import grucy
from grucy import reference
from grucy.diagnostics import (Gates, gates, gradient_flow, regimes, state_jacobian)
from grucy.reference import RNN

from conftest import assert_gradients_match_fd, central_difference, importorskip


def _unpack(ws, T, B, H, order):
    """Independent reading of one kernel workspace: G and Hp as (T, B, .) in the caller's
    order, NaN where a sequence has ended."""
    G = np.full((T, B, 3 * H), np.nan, ws["G"].dtype)
    Hp = np.full((T, B, H), np.nan, ws["G"].dtype)
    row = 0
    for t, n in enumerate(ws["bs"]):
        for i in range(n):
            b = i if order is None else order[i]
            G[t, b], Hp[t, b] = ws["G"][row], ws["Hp"][row]
            row += 1
    return G, Hp


CONFIGS = [dict(), dict(reset_after=False), dict(lengths=True),
           dict(bidirectional=True, lengths=True, num_layers=2),
           dict(reset_after=False, bidirectional=True, batch_first=True, lengths=True),
           dict(num_layers=3, dtype="float64", lengths=True, batch_first=True)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(map(str, c.items())) or "default")
def test_gates_are_the_kernels_numbers(cfg):
    cfg = dict(cfg)
    use_lengths = cfg.pop("lengths", False)
    T, B, I, H = 7, 5, 3, 4
    layer = grucy.GRU(I, H, seed=1, **cfg)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I) if layer.batch_first else (T, B, I))
    h0 = 0.5 * rng.standard_normal((layer.num_layers * layer.num_directions, B, H))
    lengths = np.array([4, 7, 1, 7, 6]) if use_lengths else None
    g = gates(layer, x, lengths=lengths)

    # the workspace of the layer's own training forward, read independently
    y, h_n = layer.forward(x, h0=h0, lengths=lengths)
    ws_all = layer._cache
    g = layer.gates(x, h0=h0, lengths=lengths)
    assert layer._cache is ws_all  # the pending backward is kept
    ref = reference.GRU(I, H, seed=1, **cfg).gates(x, h0=h0, lengths=lengths)
    valid = np.ones((T, B), bool) if lengths is None else np.arange(T)[:, None] < lengths
    for l, (_, workspaces) in enumerate(ws_all["layers"]):
        for d, ws in enumerate(workspaces):
            G, Hp = _unpack(ws, T, B, H, ws_all["order"])
            got = g[l][d]
            if layer.batch_first:
                got = Gates(*(a.transpose(1, 0, 2) for a in got))
            np.testing.assert_array_equal(got.r, G[..., :H])
            np.testing.assert_array_equal(got.z, G[..., H:2 * H])
            np.testing.assert_array_equal(got.n, G[..., 2 * H:])
            # the state entering step t of this direction is the one the step before made
            if d == 0:
                np.testing.assert_array_equal(got.h[:-1][valid[1:]], Hp[1:][valid[1:]])
            else:
                np.testing.assert_array_equal(got.h[1:][valid[1:]], Hp[:-1][valid[1:]])
            assert np.isnan(got.h[~valid]).all() and not np.isnan(got.h[valid]).any()
            # and close to the NumPy reference
            tol = 1e-12 if layer.dtype == np.float64 else 2e-5
            for name in "rznh":
                np.testing.assert_allclose(getattr(g[l][d], name), getattr(ref[l][d], name),
                                           atol=tol, rtol=0, err_msg=f"{l} {d} {name}")
    # the last layer's states are y, bit for bit; its last valid ones h_n
    D = layer.num_directions
    top = np.concatenate([g[-1][d].h for d in range(D)], axis=-1)
    pad = np.isnan(top)
    assert np.array_equal(np.where(pad, 0, top), y)
    assert (y[pad] == 0).all()


def test_gates_of_a_model_and_no_side_effects():
    series = np.sin(np.arange(80) / 4)
    model = grucy.Forecaster(6, hidden_size=5, num_layers=2, dropout=0.3, epochs=2,
                             random_state=0).fit(series)
    gru = model.net_.gru
    rng_state = gru.generators()[0].bit_generator.state
    g = gates(model, series[:20])
    assert len(g) == 2 and g[0][0].z.shape == (1, 20, 5)  # batch first, like the model
    assert gru.generators()[0].bit_generator.state == rng_state  # no dropout mask drawn
    X, _ = model.network_inputs(series[:20])
    same = gru.gates(X)
    for a, b in zip(g, same):
        for name in "rznh":
            np.testing.assert_array_equal(getattr(a[0], name), getattr(b[0], name))
    y, _ = gru.forward(X, training=False)  # inference: no dropout between the layers
    np.testing.assert_array_equal(g[1][0].h, y)
    with pytest.raises(ValueError, match="lengths"):
        gates(model, series[:20], lengths=[20])
    with pytest.raises(TypeError, match="gates"):
        gates(RNN(1, 2), np.zeros((3, 1, 1)))
    with pytest.raises(TypeError, match="layer"):
        gates(object(), np.zeros((3, 1, 1)))


def test_regimes():
    z = np.array([0.95, 0.05, 0.02, 0.5, 0.7])
    r = np.array([0.5, 0.08, 0.93, 0.5, 0.1])
    zz = np.tile(z, (3, 2, 1))  # (T=3, B=2, H=5)
    rr = np.tile(r, (3, 2, 1))
    zz[2, 1] = rr[2, 1] = np.nan  # padding is not counted
    res = regimes(Gates(rr, zz, 0 * zz, 0 * zz))
    # (0.5, 0.5) is nearer z = 1 (0.5) than (0, 0) or (0, 1) (0.71)
    assert list(res.units) == ["carry", "reset", "rnn", "carry", "carry"]
    assert res.fractions == pytest.approx({"carry": 0.2, "reset": 0.2, "rnn": 0.2,
                                           "mixed": 0.4})
    assert res.nearest == pytest.approx({"carry": 0.6, "reset": 0.2, "rnn": 0.2})
    assert sum(res.unit_fractions.values()) == pytest.approx(1)
    np.testing.assert_allclose(res.mean_z, z)
    with pytest.raises(ValueError, match="near"):
        regimes(Gates(rr, zz, zz, zz), near=0.6)


def test_regimes_refuses_gates_without_a_valid_step_and_a_near_not_a_number():
    # all NaN: every unit was labelled 'carry' (the argmax of zero counts)
    nan = np.full((2, 3, 4), np.nan)
    with pytest.raises(ValueError, match=r"^g has no valid step: its gates are NaN "
                                         r"everywhere \(shape \(2, 3, 4\)\)"):
        regimes(Gates(nan, nan, nan, nan))
    half = np.full((1, 1, 4), 0.5)
    with pytest.raises(TypeError, match=r"^near must be a real number, got str '0.1'"):
        regimes(Gates(half, half, half, half), near="0.1")
    with pytest.raises(ValueError, match=r"^near must be finite"):
        regimes(Gates(half, half, half, half), near=float("nan"))


def _fd_step_jacobian(layer, x, h0, layer_index, t):
    """d h_t / d h_{t-1} of one layer by central differences (its input held fixed)."""
    single = type(layer)(**{**_config(layer), "num_layers": 1,
                            "input_size": layer.input_size if layer_index == 0
                            else layer.hidden_size})
    single.load_state_dict({k.replace(f"_l{layer_index}", "_l0"): v
                            for k, v in layer.state_dict().items()
                            if k.endswith(f"_l{layer_index}")})
    inp = x
    for k in range(layer_index):  # the input of this layer: the outputs of the one below
        below = type(layer)(**{**_config(layer), "num_layers": 1,
                               "input_size": layer.input_size if k == 0
                               else layer.hidden_size})
        below.load_state_dict({kk.replace(f"_l{k}", "_l0"): v
                               for kk, v in layer.state_dict().items()
                               if kk.endswith(f"_l{k}")})
        inp, _ = below.forward(inp, h0=h0[k:k + 1], training=False)
    y, _ = single.forward(inp, h0=h0[layer_index:layer_index + 1], training=False)
    h_prev = (h0[layer_index] if t == 0 else y[:, t - 1]).copy()

    def new_state():
        return single.forward(inp[:, t:t + 1], h0=h_prev[None], training=False)[1][0]

    B, H = h_prev.shape
    J = np.zeros((B, H, H))
    for j in range(H):
        col = []
        for sign in (1, -1):
            h_prev[:, j] += sign * 1e-6
            col.append(new_state())
            h_prev[:, j] -= sign * 1e-6
        J[:, :, j] = (col[0] - col[1]) / 2e-6
    return J


def _config(layer):
    import inspect
    return {k: getattr(layer, k) for k in inspect.signature(type(layer)).parameters
            if k != "seed" and hasattr(layer, k)}


@pytest.mark.parametrize("make", [
    lambda: grucy.GRU(2, 3, num_layers=2, batch_first=True, dtype="float64", seed=2),
    lambda: grucy.GRU(2, 3, num_layers=2, batch_first=True, reset_after=False,
                      dtype="float64", seed=2),
    lambda: reference.GRU(2, 3, batch_first=True, reset_after=False, dtype="float64",
                          seed=3),
    lambda: RNN(2, 3, num_layers=2, batch_first=True, dtype="float64", seed=2),
], ids=["gru", "gru-reset-before", "reference-gru", "rnn"])
def test_state_jacobian_matches_finite_differences(make):
    layer = make()
    rng = np.random.default_rng(5)
    B, T = 2, 6
    x = rng.standard_normal((B, T, 2))
    h0 = 0.5 * rng.standard_normal((layer.num_layers, B, 3))
    result = state_jacobian(layer, x, h0=h0)
    assert len(result) == layer.num_layers
    for k, res in enumerate(result):
        assert res.jacobian.shape == (B, T, 3, 3)
        for t in (0, 3, T - 1):
            np.testing.assert_allclose(res.jacobian[:, t],
                                       _fd_step_jacobian(layer, x, h0, k, t), atol=1e-8)
        # products and norms from the matrices
        P = np.broadcast_to(np.eye(3), (B, 3, 3))
        for t in range(T - 1, -1, -1):
            np.testing.assert_allclose(res.product_norm[:, t],
                                       np.linalg.norm(P, 2, axis=(1, 2)), rtol=1e-12)
            np.testing.assert_allclose(res.unit_norm[:, t], np.linalg.norm(P, axis=1),
                                       rtol=1e-12)
            P = P @ res.jacobian[:, t]
        np.testing.assert_allclose(res.step_norm,
                                   np.linalg.norm(res.jacobian, 2, axis=(2, 3)), rtol=1e-12)
        # without the matrices: the same step norms, and the products along one direction
        lean = state_jacobian(layer, x, h0=h0, matrices=False)[k]
        assert lean.jacobian is None and lean.unit_norm is None
        np.testing.assert_allclose(lean.step_norm, res.step_norm, rtol=1e-12)
        assert np.all(lean.product_norm <= res.product_norm * (1 + 1e-12))
        assert lean.product_norm[:, -1] == pytest.approx(1.0)


def test_state_jacobian_time_major_model_and_refusals():
    gru = grucy.GRU(1, 4, seed=0)  # time-major, float32: the Jacobian is in float64
    x = np.random.default_rng(0).standard_normal((9, 2, 1))
    tm = state_jacobian(gru, x)[0]
    bf = grucy.GRU(1, 4, batch_first=True, seed=0)
    np.testing.assert_array_equal(state_jacobian(bf, x.transpose(1, 0, 2))[0].jacobian,
                                  tm.jacobian)
    assert tm.jacobian.dtype == np.float64
    series = np.cos(np.arange(50) / 3)
    model = grucy.Forecaster(5, hidden_size=3, epochs=1, random_state=0).fit(series)
    res = state_jacobian(model, series[:12])[0]
    X, _ = model.network_inputs(series[:12])
    np.testing.assert_array_equal(res.jacobian, state_jacobian(model.net_.gru, X)[0].jacobian)
    with pytest.raises(ValueError, match="unidirectional"):
        state_jacobian(grucy.GRU(1, 2, bidirectional=True), x)
    with pytest.raises(ValueError, match="h0"):
        state_jacobian(model, series[:12], h0=np.zeros((1, 1, 3)))


@pytest.mark.parametrize("make", [
    lambda: grucy.GRU(2, 3, num_layers=2, dtype="float64", seed=0),
    lambda: reference.GRU(2, 3, batch_first=True, reset_after=False, seed=0),
    lambda: RNN(2, 3, num_layers=2, dtype="float64", seed=0),
], ids=["gru", "reference-gru-float32", "rnn"])
def test_gradient_flow_of_a_bare_layer(make):
    layer = make()
    rng = np.random.default_rng(1)
    T, B = 6, 2
    x = rng.standard_normal((B, T, 2) if layer.batch_first else (T, B, 2))
    flow = gradient_flow(layer, x)
    assert flow.shape == (T,)
    # by finite differences: loss = sum of the top layer's h_n / B, as a function of the
    # state of every layer after step t
    exact = _layer_copy64(layer)
    xb = np.asarray(x, np.float64)
    if not layer.batch_first:
        xb = xb.transpose(1, 0, 2)
    h = None
    for t in range(1, T + 1):
        _, h = exact.forward(np.ascontiguousarray(xb[:, t - 1:t]), h0=h, training=False)
        state = h.copy()

        def loss(state=state, t=t):
            h_n = state if t == T else exact.forward(np.ascontiguousarray(xb[:, t:]),
                                                     h0=state, training=False)[1]
            return float(h_n[-1].sum() / B)
        numeric = central_difference(loss, state)
        assert flow[t - 1] == pytest.approx(np.linalg.norm(numeric), rel=1e-6), t
    dh_n = rng.standard_normal((layer.num_layers, B, 3))
    assert not np.allclose(gradient_flow(layer, x, dh_n=dh_n), flow)
    with pytest.raises(ValueError, match="dh_n"):
        gradient_flow(layer, x, y=np.zeros(2))
    with pytest.raises(ValueError, match="shape of h_n"):
        gradient_flow(layer, x, dh_n=np.zeros((1, 1, 1)))


@pytest.mark.parametrize("batch_first", [False, True])
def test_gradient_flow_refuses_an_input_without_steps_or_sequences(batch_first):
    # was "need at least one array to stack" (T=0) or ZeroDivisionError (B=0)
    gru = grucy.GRU(3, 4, batch_first=batch_first, seed=0)
    for shape in [(0, 2, 3), (5, 0, 3)]:
        # shape is (T, B, I); the message shows x as given, in the caller's layout
        x = np.zeros((shape[1], shape[0], 3) if batch_first else shape, np.float32)
        with pytest.raises(ValueError, match=rf"^x must have at least one step and one "
                                             rf"sequence, got \({x.shape[0]}, {x.shape[1]}, "
                                             rf"3\)"):
            gradient_flow(gru, x)


def _layer_copy64(layer):
    copy = type(layer)(**{**_config(layer), "dtype": "float64", "batch_first": True})
    copy.load_state_dict(layer.state_dict())
    return copy


# -- the plain tanh RNN -----------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [dict(), dict(num_layers=2, lengths=True),
                                 dict(bias=False, batch_first=True, lengths=True)],
                         ids=["default", "2-layers-lengths", "no-bias-batch-first"])
def test_rnn_gradients_match_finite_differences(cfg):
    cfg = dict(cfg)
    use_lengths = cfg.pop("lengths", False)
    rnn = RNN(3, 4, dtype="float64", seed=0, **cfg)
    rng = np.random.default_rng(0)
    T, B = 5, 3
    shape = (B, T) if rnn.batch_first else (T, B)
    x = rng.standard_normal(shape + (3,))
    h0 = 0.5 * rng.standard_normal((rnn.num_layers, B, 4))
    lengths = np.array([2, 5, 1]) if use_lengths else None
    Wy = rng.standard_normal(shape + (4,))
    Wh = rng.standard_normal((rnn.num_layers, B, 4))

    def f():
        y, h_n = rnn.forward(x, h0, lengths)
        return float(np.sum(y * Wy) + np.sum(h_n * Wh))

    rnn.zero_grad()
    rnn.forward(x, h0, lengths)
    dx, dh0 = rnn.backward(Wy, Wh)
    checked = {"x": (x, dx), "h0": (h0, dh0)}
    checked.update({k: (p, rnn.grads[k].copy()) for k, p in rnn.named_parameters()})
    assert_gradients_match_fd(f, checked)
    if use_lengths:  # packed-sequence semantics: 0 past the end, h_n at the last step
        y, h_n = rnn.forward(x, h0, lengths, training=False)
        yt = y.transpose(1, 0, 2) if rnn.batch_first else y
        assert (yt[2:, 0] == 0).all() and (yt[1:, 2] == 0).all()
        np.testing.assert_array_equal(h_n[-1, 0], yt[1, 0])


def test_rnn_matches_torch_and_saves():
    torch = importorskip("torch", "the RNN against torch.nn.RNN")
    rnn = RNN(3, 5, num_layers=2, dtype="float64", seed=0)
    module = torch.nn.RNN(3, 5, num_layers=2, dtype=torch.float64)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in rnn.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    xt = torch.from_numpy(x).requires_grad_()
    yt, ht = module(xt)
    (yt.sum() + 2 * ht.sum()).backward()
    y, h_n = rnn.forward(x)
    dx, _ = rnn.backward(np.ones_like(y), 2 * np.ones_like(h_n))
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-14)
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-13)
    for name, p in module.named_parameters():
        np.testing.assert_allclose(rnn.grads[name], p.grad.numpy(), atol=1e-13)


def test_rnn_file_and_states(tmp_path):
    rnn = RNN(2, 3, num_layers=2, bias=False, batch_first=True, seed=4)
    assert [k for k, _ in rnn.named_parameters()] == [
        "weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"]
    grucy.save(rnn, tmp_path / "rnn.grucy")
    back = grucy.load(tmp_path / "rnn.grucy")
    assert type(back) is RNN and repr(back) == repr(rnn)
    x = np.random.default_rng(0).standard_normal((2, 4, 2)).astype(np.float32)
    y, _ = rnn(x, lengths=[4, 2], training=False)
    np.testing.assert_array_equal(back(x, lengths=[4, 2], training=False)[0], y)
    states = rnn.states(x, lengths=[4, 2])
    assert np.isnan(states[1][1, 2:]).all()
    np.testing.assert_array_equal(np.nan_to_num(states[1]), y)


def test_gradient_flow_of_models_with_dropout_or_bf16_is_the_predictions_gradient():
    """A model with dropout got random masks in its float64 copy (every call's numbers
    differed, none the gradient of the prediction), and a bf16 layer or model failed
    ("precision='bf16' needs dtype float32")."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 6, 2))
    y = (X[:, -1, 0] > 0).astype(int)
    kw = dict(hidden_size=6, num_layers=2, epochs=1, random_state=0, dtype="float64")
    noisy = grucy.GRUClassifier(dropout=0.5, **kw).fit(X, y)
    plain = grucy.GRUClassifier(**kw).fit(X, y)
    plain.net_.load_state_dict(noisy.net_.state_dict())  # the same weights, no dropout
    first = gradient_flow(noisy, X[:4])
    np.testing.assert_array_equal(gradient_flow(noisy, X[:4]), first)
    np.testing.assert_array_equal(first, gradient_flow(plain, X[:4]))
    layer = grucy.GRU(2, 4, seed=0, precision="bf16")
    full = grucy.GRU(2, 4, seed=0)
    x = rng.normal(size=(5, 3, 2))
    np.testing.assert_array_equal(gradient_flow(layer, x), gradient_flow(full, x))
    model = grucy.GRUClassifier(hidden_size=4, epochs=1, random_state=0,
                                precision="bf16").fit(X, y)
    assert np.all(np.isfinite(gradient_flow(model, X[:3])))


def test_diagnostics_arguments_are_checked_by_name():
    gru = grucy.GRU(2, 3, seed=0)
    x = np.random.default_rng(0).normal(size=(4, 2, 2))
    with pytest.raises(TypeError, match=r"g must be one Gates \(gates\(\.\.\.\)\[layer\]"
                                        r"\[direction\]\), got list"):
        regimes(gates(gru, x))
    with pytest.raises(TypeError, match="matrices must be True or False"):
        state_jacobian(gru, x, matrices="no")
    with pytest.raises(TypeError, match="seed must be None, a non-negative integer"):
        state_jacobian(gru, x, matrices=False, seed=-1)
    with pytest.raises(TypeError, match="h0 must be an array of real numbers"):
        state_jacobian(gru, x, h0=np.zeros((1, 2, 3), complex))
    with pytest.raises(TypeError, match="dh_n must be an array of real numbers"):
        gradient_flow(gru, x, dh_n=np.ones((1, 2, 3), bool))
