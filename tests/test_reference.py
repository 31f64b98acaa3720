"""The NumPy reference GRU against independent oracles.

The reference is itself the oracle of the compiled kernels, so it is checked here against
things that share none of its code: central finite differences (every parameter, x, h0),
torch.nn.GRU (reset-after form), a per-element scalar loop (both forms, notably the
reset-before form torch lacks), and a layer-by-layer recomposition for dropout.
"""

import copy
import math

import numpy as np
import pytest

from grucy.reference import GRU

from conftest import central_difference, importorskip

T, B, I, H = 4, 3, 3, 3
LENGTHS = np.array([2, 4, 1])  # unsorted, one full, one of length 1


def make_inputs(gru, seed=0, T=T, B=B):
    """Random x (in gru's layout), h0 and loss weights Wy, Wh for a scalar loss."""
    rng = np.random.default_rng(seed)
    LD = gru.num_layers * gru.num_directions
    x_shape = (B, T, gru.input_size) if gru.batch_first else (T, B, gru.input_size)
    y_shape = x_shape[:2] + (gru.num_directions * gru.hidden_size,)
    x = rng.standard_normal(x_shape)
    h0 = 0.5 * rng.standard_normal((LD, B, gru.hidden_size))
    Wy = rng.standard_normal(y_shape)
    Wh = rng.standard_normal((LD, B, gru.hidden_size))
    return x, h0, Wy, Wh


def loss(gru, x, h0, lengths, Wy, Wh):
    y, h_n = gru.forward(x, h0, lengths, training=True)
    return float(np.sum(y * Wy) + np.sum(h_n * Wh))


def analytic_grads(gru, x, h0, lengths, Wy, Wh):
    gru.zero_grad()
    gru.forward(x, h0, lengths, training=True)
    dx, dh0 = gru.backward(Wy, Wh)
    grads = {k: v.copy() for k, v in gru.grads.items()}
    grads["x"], grads["h0"] = dx, dh0
    return grads


def numeric_grads(gru, x, h0, lengths, Wy, Wh, eps=1e-6, before_forward=lambda: None):
    """Central differences of the loss w.r.t. every parameter element, x and h0."""
    x, h0 = x.copy(), h0.copy()
    arrays = dict(gru.named_parameters())  # the live parameter arrays, perturbed in place
    arrays["x"], arrays["h0"] = x, h0

    def f():
        before_forward()
        return loss(gru, x, h0, lengths, Wy, Wh)

    return {name: central_difference(f, arr, eps) for name, arr in arrays.items()}


def assert_grads_close(analytic, numeric, rtol=1e-6):
    assert analytic.keys() == numeric.keys()
    for name in numeric:
        a, n = analytic[name], numeric[name]
        assert a.shape == n.shape, name
        # Relative to the array's scale: tiny entries carry the FD rounding (~1e-10).
        scale = max(1.0, np.max(np.abs(n)))
        err = np.max(np.abs(a - n)) / scale
        assert err < rtol, f"{name}: max relative error {err:.2e}"


FD_CONFIGS = [
    dict(),
    dict(reset_after=False),
    dict(lengths=True),
    dict(reset_after=False, lengths=True),
    dict(bidirectional=True, lengths=True),
    dict(bidirectional=True, reset_after=False, lengths=True),
    dict(num_layers=2, lengths=True),
    dict(num_layers=2, bidirectional=True, reset_after=False, lengths=True),
    dict(num_layers=2, bidirectional=True, batch_first=True, lengths=True),
    dict(batch_first=True, reset_after=False),
    dict(bias=False, bidirectional=True, lengths=True),
    dict(bias=False, reset_after=False, num_layers=2),
]


def config_id(cfg):
    return "-".join(f"{k}={v}" for k, v in cfg.items()) or "default"


@pytest.mark.parametrize("cfg", FD_CONFIGS, ids=config_id)
def test_backward_matches_finite_differences(cfg):
    cfg = dict(cfg)
    lengths = LENGTHS if cfg.pop("lengths", False) else None
    gru = GRU(I, H, dtype=np.float64, seed=1, **cfg)
    x, h0, Wy, Wh = make_inputs(gru, seed=2)
    analytic = analytic_grads(gru, x, h0, lengths, Wy, Wh)
    numeric = numeric_grads(gru, x, h0, lengths, Wy, Wh)
    assert_grads_close(analytic, numeric)
    if lengths is not None:
        # Padded inputs have no influence at all.
        dx = analytic["x"] if not gru.batch_first else analytic["x"].transpose(1, 0, 2)
        for b, n in enumerate(lengths):
            assert np.all(dx[n:, b] == 0)


# -- torch ---------------------------------------------------------------------------

TORCH_CONFIGS = [
    dict(),
    dict(lengths=True),
    dict(bidirectional=True),
    dict(bidirectional=True, lengths=True),
    dict(num_layers=2, lengths=True),
    dict(num_layers=2, bidirectional=True, lengths=True),
    dict(num_layers=2, bidirectional=True, batch_first=True, lengths=True),
    dict(batch_first=True),
    dict(bias=False, bidirectional=True, lengths=True),
]


@pytest.mark.parametrize("cfg", TORCH_CONFIGS, ids=config_id)
def test_matches_torch(cfg):
    torch = importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    cfg = dict(cfg)
    lengths = LENGTHS if cfg.pop("lengths", False) else None
    Tl, Bl, Il, Hl = 5, 3, 4, 3
    torch.manual_seed(0)
    tgru = torch.nn.GRU(Il, Hl, dtype=torch.float64, **cfg)
    gru = GRU(Il, Hl, dtype=np.float64, seed=5, **cfg)
    gru.load_state_dict({k: v.detach().numpy() for k, v in tgru.state_dict().items()})
    x, h0, Wy, Wh = make_inputs(gru, seed=3, T=Tl, B=Bl)
    if lengths is not None:
        lengths = np.array([3, 5, 1])

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    bf = gru.batch_first
    if lengths is None:
        yt, hnt = tgru(xt, h0t)
    else:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=bf,
                                      enforce_sorted=False)
        out, hnt = tgru(packed, h0t)
        yt, _ = pad_packed_sequence(out, batch_first=bf, total_length=Tl)
    (yt * torch.tensor(Wy)).sum().add((hnt * torch.tensor(Wh)).sum()).backward()

    gru.zero_grad()
    y, h_n = gru.forward(x, h0, lengths)
    dx, dh0 = gru.backward(Wy, Wh)

    tol = dict(rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(h_n, hnt.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)
    np.testing.assert_allclose(dh0, h0t.grad.numpy(), **tol)
    tparams = dict(tgru.named_parameters())
    assert tparams.keys() == gru.grads.keys()
    for name, g in gru.grads.items():
        np.testing.assert_allclose(g, tparams[name].grad.numpy(), err_msg=name, **tol)


# -- scalar oracle ---------------------------------------------------------------------

def scalar_gru(params, x, h0, lengths, num_layers, D, reset_after, bias=True):
    """Per-element GRU with math.* only: x (T, B, I) time-major, returns y, h_n lists."""
    Tn, Bn = len(x), len(x[0])
    Hn = len(h0[0][0])
    sig = lambda a: 1.0 / (1.0 + math.exp(-a))  # noqa: E731
    lengths = [Tn] * Bn if lengths is None else [int(v) for v in lengths]
    layer_in = [[list(map(float, x[t][b])) for b in range(Bn)] for t in range(Tn)]
    h_n = []
    for layer in range(num_layers):
        out = [[[0.0] * (D * Hn) for _ in range(Bn)] for _ in range(Tn)]
        for d in range(D):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            Wi, Wh = params[f"weight_ih_{sfx}"], params[f"weight_hh_{sfx}"]
            bi = params[f"bias_ih_{sfx}"] if bias else [0.0] * (3 * Hn)
            bh = params[f"bias_hh_{sfx}"] if bias else [0.0] * (3 * Hn)
            for b in range(Bn):
                h = list(map(float, h0[layer * D + d][b]))
                steps = range(lengths[b] - 1, -1, -1) if d else range(lengths[b])
                for t in steps:
                    xt = layer_in[t][b]

                    def pre(row, vec, W):
                        return sum(W[row][k] * vec[k] for k in range(len(vec)))

                    r = [sig(pre(j, xt, Wi) + bi[j] + pre(j, h, Wh) + bh[j])
                         for j in range(Hn)]
                    z = [sig(pre(Hn + j, xt, Wi) + bi[Hn + j] + pre(Hn + j, h, Wh) + bh[Hn + j])
                         for j in range(Hn)]
                    n = []
                    for j in range(Hn):
                        row = 2 * Hn + j
                        if reset_after:
                            a = pre(row, xt, Wi) + bi[row] + r[j] * (pre(row, h, Wh) + bh[row])
                        else:
                            rh = [r[k] * h[k] for k in range(Hn)]
                            a = pre(row, xt, Wi) + bi[row] + pre(row, rh, Wh) + bh[row]
                        n.append(math.tanh(a))
                    h = [(1 - z[j]) * n[j] + z[j] * h[j] for j in range(Hn)]
                    out[t][b][d * Hn:(d + 1) * Hn] = h
                h_n.append((layer * D + d, b, h))
        layer_in = out
    hn = np.zeros((num_layers * D, Bn, Hn))
    for idx, b, h in h_n:
        hn[idx, b] = h
    return np.array(layer_in), hn


@pytest.mark.parametrize("reset_after", [False, True])
@pytest.mark.parametrize("cfg", [dict(), dict(bidirectional=True, num_layers=2),
                                 dict(bias=False, bidirectional=True)], ids=config_id)
def test_matches_scalar_loop(reset_after, cfg):
    gru = GRU(I, H, dtype=np.float64, seed=7, reset_after=reset_after, **cfg)
    x, h0, _, _ = make_inputs(gru, seed=8)
    # Large weights so that r really matters and the two forms differ clearly.
    gru.load_state_dict({k: 3 * v for k, v in gru.state_dict().items()})
    for lengths in (None, LENGTHS):
        y, h_n = gru.forward(x, h0, lengths, training=False)
        y_ref, hn_ref = scalar_gru(gru.state_dict(), x, h0, lengths, gru.num_layers,
                                   gru.num_directions, reset_after, bias=gru.bias)
        np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(h_n, hn_ref, rtol=1e-12, atol=1e-13)


def test_forms_differ():
    a = GRU(I, H, dtype=np.float64, seed=3, reset_after=True)
    b = GRU(I, H, dtype=np.float64, seed=3, reset_after=False)
    x, h0, _, _ = make_inputs(a)
    assert not np.allclose(a(x, h0)[0], b(x, h0)[0])


# -- dropout ---------------------------------------------------------------------------

def single_layer(gru, layer, input_size):
    """A one-layer reference holding ``gru``'s parameters of ``layer``."""
    one = GRU(input_size, gru.hidden_size, bidirectional=gru.bidirectional,
              bias=gru.bias, reset_after=gru.reset_after, dtype=gru.dtype)
    one.load_state_dict({k.replace(f"_l{layer}", "_l0"): v
                         for k, v in gru.state_dict().items() if f"_l{layer}" in k})
    return one


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_dropout_matches_layerwise_composition(lengths):
    L, D = 3, 2
    gru = GRU(I, H, L, dropout=0.5, bidirectional=True, dtype=np.float64, seed=11)
    twin = GRU(I, H, L, dropout=0.5, bidirectional=True, dtype=np.float64, seed=11)
    x, h0, _, _ = make_inputs(gru, seed=12)

    y, h_n = gru.forward(x, h0, lengths, training=True)
    # Masks are drawn for layers 1, 2, ... in that order, one (T, B, D*H) each.
    masks = [twin._dropout_mask((T, B, D * H)) for _ in range(1, L)]
    assert any(np.any(m == 0) for m in masks) and any(np.any(m == 2) for m in masks)
    # Exactly those draws happened: both generators are now in the same state.
    assert gru._dropout_rng.random() == twin._dropout_rng.random()

    inp, hs = x, []
    for layer in range(L):
        if layer > 0:
            inp = inp * masks[layer - 1]
        one = single_layer(gru, layer, I if layer == 0 else D * H)
        inp, hl = one.forward(inp, h0[layer * D:(layer + 1) * D], lengths, training=False)
        hs.append(hl)
    np.testing.assert_allclose(y, inp, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(h_n, np.concatenate(hs), rtol=1e-14, atol=1e-15)


def test_no_dropout_when_not_training():
    gru = GRU(I, H, 2, dropout=0.5, dtype=np.float64, seed=13)
    plain = GRU(I, H, 2, dropout=0.0, dtype=np.float64, seed=13)
    x, h0, _, _ = make_inputs(gru)
    state = copy.deepcopy(gru._dropout_rng.bit_generator.state)
    y, h_n = gru.forward(x, h0, LENGTHS, training=False)
    assert gru._dropout_rng.bit_generator.state == state  # nothing drawn
    assert gru._cache is None
    y0, hn0 = plain.forward(x, h0, LENGTHS, training=True)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(h_n, hn0)
    y_train, _ = gru.forward(x, h0, LENGTHS, training=True)
    assert not np.allclose(y_train, y)


def test_dropout_backward_matches_finite_differences():
    gru = GRU(I, H, 2, dropout=0.5, bidirectional=True, reset_after=False,
              dtype=np.float64, seed=17)
    x, h0, Wy, Wh = make_inputs(gru, seed=18)
    rng_state = copy.deepcopy(gru._dropout_rng)

    def same_mask():
        gru._dropout_rng = copy.deepcopy(rng_state)

    same_mask()
    analytic = analytic_grads(gru, x, h0, LENGTHS, Wy, Wh)
    numeric = numeric_grads(gru, x, h0, LENGTHS, Wy, Wh, before_forward=same_mask)
    assert_grads_close(analytic, numeric)


# -- semantics and API -----------------------------------------------------------------

def test_padding_semantics():
    gru = GRU(I, H, bidirectional=True, dtype=np.float64, seed=19)
    x, h0, _, _ = make_inputs(gru)
    y, h_n = gru.forward(x, h0, LENGTHS)
    for b, n in enumerate(LENGTHS):
        assert np.all(y[n:, b] == 0)
        np.testing.assert_array_equal(h_n[0, b], y[n - 1, b, :H])  # forward ends at len-1
        np.testing.assert_array_equal(h_n[1, b], y[0, b, H:])  # reverse ends at t=0
        # Each sequence alone, truncated to its length, gives the same result.
        ys, hs = gru.forward(x[:n, b:b + 1], h0[:, b:b + 1], training=False)
        np.testing.assert_allclose(y[:n, b:b + 1], ys, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(h_n[:, b:b + 1], hs, rtol=1e-14, atol=1e-15)
    # Full lengths mean no padding.
    y_full, hn_full = gru.forward(x, h0, np.full(B, T))
    y_none, hn_none = gru.forward(x, h0)
    np.testing.assert_array_equal(y_full, y_none)
    np.testing.assert_array_equal(hn_full, hn_none)


def test_dy_past_end_ignored():
    gru = GRU(I, H, 2, bidirectional=True, dtype=np.float64, seed=23)
    x, h0, Wy, Wh = make_inputs(gru)
    g1 = analytic_grads(gru, x, h0, LENGTHS, Wy, Wh)
    Wy_noisy = Wy.copy()
    for b, n in enumerate(LENGTHS):
        Wy_noisy[n:, b] = 1e3
    g2 = analytic_grads(gru, x, h0, LENGTHS, Wy_noisy, Wh)
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])


def test_batch_first_is_a_transpose():
    tm = GRU(I, H, 2, bidirectional=True, dtype=np.float64, seed=29)
    bf = GRU(I, H, 2, bidirectional=True, batch_first=True, dtype=np.float64, seed=29)
    x, h0, Wy, Wh = make_inputs(tm)
    gt = analytic_grads(tm, x, h0, LENGTHS, Wy, Wh)
    yt, hnt = tm.forward(x, h0, LENGTHS)
    xb, Wyb = x.transpose(1, 0, 2), Wy.transpose(1, 0, 2)
    gb = analytic_grads(bf, xb, h0, LENGTHS, Wyb, Wh)
    yb, hnb = bf.forward(xb, h0, LENGTHS)
    np.testing.assert_array_equal(yb, yt.transpose(1, 0, 2))
    np.testing.assert_array_equal(hnb, hnt)
    np.testing.assert_array_equal(gb.pop("x"), gt.pop("x").transpose(1, 0, 2))
    for k in gt:
        np.testing.assert_allclose(gb[k], gt[k], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("reset_after", [True, False])
def test_float32_follows_float64(reset_after):
    g64 = GRU(I, H, 2, bidirectional=True, reset_after=reset_after, dtype=np.float64, seed=31)
    g32 = GRU(I, H, 2, bidirectional=True, reset_after=reset_after, dtype=np.float32, seed=31)
    g32.load_state_dict(g64.state_dict())
    x, h0, Wy, Wh = make_inputs(g64)
    y64, hn64 = g64.forward(x, h0, LENGTHS)
    dx64, dh064 = g64.backward(Wy, Wh)
    y32, hn32 = g32.forward(x.astype(np.float32), h0.astype(np.float32), LENGTHS)
    dx32, dh032 = g32.backward(Wy.astype(np.float32), Wh.astype(np.float32))
    pairs = [(y32, y64), (hn32, hn64), (dx32, dx64), (dh032, dh064)]
    pairs += [(g32.grads[k], g64.grads[k]) for k in g64.grads]
    for a32, a64 in pairs:
        assert a32.dtype == np.float32
        np.testing.assert_allclose(a32, a64, rtol=1e-4, atol=1e-5)


def test_grads_accumulate_and_cache_lifecycle():
    gru = GRU(I, H, dtype=np.float64, seed=37)
    x, h0, Wy, Wh = make_inputs(gru)
    gru.forward(x, h0)
    assert {"T", "B"} <= gru._cache.keys()
    gru.backward(Wy, Wh)
    assert gru._cache is None
    once = {k: v.copy() for k, v in gru.grads.items()}
    with pytest.raises(RuntimeError):
        gru.backward(Wy, Wh)  # one backward per training forward
    gru.forward(x, h0)
    gru.backward(Wy, Wh)
    for k in once:
        np.testing.assert_allclose(gru.grads[k], 2 * once[k], rtol=1e-15)
    gru.forward(x, h0, training=False)
    with pytest.raises(RuntimeError):
        gru.backward(Wy, Wh)


def test_h0_none_and_dh_n_none():
    gru = GRU(I, H, 2, dtype=np.float64, seed=41)
    x, _, Wy, _ = make_inputs(gru)
    y, h_n = gru.forward(x)
    y0, hn0 = gru.forward(x, np.zeros_like(h_n))
    np.testing.assert_array_equal(y, y0)
    dx, dh0 = gru.backward(Wy)
    assert dh0.shape == h_n.shape and np.any(dh0 != 0)
    gru.forward(x)
    dx2, dh02 = gru.backward(Wy, np.zeros_like(h_n))
    np.testing.assert_array_equal(dx, dx2)
    np.testing.assert_array_equal(dh0, dh02)


def test_input_not_mutated_and_not_aliased():
    gru = GRU(I, H, dtype=np.float64, seed=43)
    x, h0, Wy, Wh = make_inputs(gru)
    x_orig, h0_orig = x.copy(), h0.copy()
    g1 = analytic_grads(gru, x, h0, None, Wy, Wh)
    np.testing.assert_array_equal(x, x_orig)
    np.testing.assert_array_equal(h0, h0_orig)
    gru.zero_grad()
    gru.forward(x, h0)
    x += 1.0  # the caller reuses its buffer before backward
    gru.backward(Wy, Wh)
    np.testing.assert_array_equal(gru.grads["weight_ih_l0"], g1["weight_ih_l0"])
