"""Building blocks: Embedding, Dropout, Sequential, losses, truncated BPTT, optimisers and
schedules.  Gradients against central finite differences (float64); losses, optimisers,
clipping and schedules against PyTorch when it is installed."""

import copy
import math

import numpy as np
import pytest

import grucy
from grucy import losses
from grucy.nn import Dropout, Embedding, Linear, Sequential, TruncatedBPTT
from grucy.optim import (SGD, Adam, AdamW, CosineAnnealingLR, ReduceLROnPlateau, StepLR,
                         clip_grad_norm, make_optimizer)

from conftest import assert_gradients_match_fd, check_finite_differences, importorskip


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# -- Embedding ----------------------------------------------------------------------------
def test_embedding_forward_and_backward_against_finite_differences(rng):
    emb = Embedding(6, 3, dtype=np.float64, seed=0)
    idx = np.array([[0, 5, 5], [2, 0, 1]])  # repeated indices must accumulate
    w = rng.normal(size=(2, 3, 3))
    y = emb(idx)
    np.testing.assert_array_equal(y, emb.weight[idx])
    assert emb.backward(w) is None

    def f():
        return float(np.sum(emb.forward(idx, training=False) * w))

    assert_gradients_match_fd(f, {"weight": (emb.weight, emb.grads["weight"].copy())})
    assert not emb.grads["weight"][[3, 4]].any()  # unused rows get no gradient


def test_embedding_errors_and_seed():
    emb = Embedding(4, 2, seed=1)
    np.testing.assert_array_equal(emb.weight, Embedding(4, 2, seed=1).weight)
    assert emb.weight.dtype == np.float32
    with pytest.raises(ValueError, match=r"\[0, num_embeddings=4\)"):
        emb(np.array([0, 4]))
    with pytest.raises(TypeError, match="integers"):
        emb(np.array([0.5]))
    with pytest.raises(RuntimeError, match="forward"):
        emb.backward(np.zeros((1, 2)))
    emb(np.array([1, 2]))
    with pytest.raises(ValueError, match="shape of y"):
        emb.backward(np.zeros((3, 2)))


# -- Dropout ------------------------------------------------------------------------------
def test_dropout_mask_scaling_backward_and_eval(rng):
    drop = Dropout(0.25, seed=3)
    x = np.ones((400, 50), np.float32)
    y = drop(x)
    assert y.dtype == np.float32
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    dy = rng.normal(size=x.shape).astype(np.float32)
    np.testing.assert_array_equal(drop.backward(dy), dy * y)  # y is the mask here
    np.testing.assert_array_equal(drop(x, training=False), x)
    np.testing.assert_array_equal(Dropout(0.25, seed=3)(x), y)  # seeded
    assert drop.generators() == [drop.rng]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)
    with pytest.raises(RuntimeError, match="forward"):
        Dropout(0.5).backward(dy)


# -- Sequential ---------------------------------------------------------------------------
def test_sequential_gradients_names_and_state(rng):
    net = Sequential(Linear(4, 5, dtype=np.float64, seed=0), Dropout(0.3, seed=1),
                     Linear(5, 2, dtype=np.float64, seed=2))
    assert list(net.grads) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert net.parameters()[0] is net[0].weight
    x = rng.normal(size=(3, 4))
    w = rng.normal(size=(3, 2))
    state = copy.deepcopy(net[1].rng.bit_generator.state)

    def f():  # the same dropout mask at every evaluation
        net[1].rng.bit_generator.state = state
        return float(np.sum(net.forward(x) * w))

    f()
    net.zero_grad()
    dx = net.backward(w)
    checked = {"x": (x, dx)}
    checked.update({k: (p, net.grads[k].copy()) for k, p in net.named_parameters()})
    assert_gradients_match_fd(f, checked)
    other = Sequential(Linear(4, 5, dtype=np.float64), Dropout(0.3),
                       Linear(5, 2, dtype=np.float64))
    other.load_state_dict(net.state_dict())
    np.testing.assert_array_equal(other.forward(x, training=False),
                                  net.forward(x, training=False))
    assert net.generators() == [net[1].rng]
    with pytest.raises(TypeError, match="same dtype"):
        Sequential(Linear(2, 2, dtype=np.float32), Linear(2, 2, dtype=np.float64))
    with pytest.raises(TypeError, match="forward/backward"):
        Sequential(object())


def test_sequential_refuses_the_same_layer_twice():
    # a layer keeps one forward's cache: used twice, backward found it overwritten and
    # said "needs a preceding forward" right after a forward
    lin = Linear(2, 2, dtype=np.float64, seed=0)
    with pytest.raises(ValueError, match=r"layer 2 is the same object as layer 0"):
        Sequential(lin, Dropout(0.1), lin)
    drop = Dropout(0.5)
    with pytest.raises(ValueError, match=r"layer 2 is the same object as layer 1"):
        Sequential(Linear(2, 2, dtype=np.float64), drop, drop)


# -- losses -------------------------------------------------------------------------------
REGRESSION = {"mse": losses.mse_loss, "mae": losses.mae_loss, "huber": losses.huber_loss}


@pytest.mark.parametrize("name", sorted(REGRESSION))
@pytest.mark.parametrize("weighting", ["none", "mask", "weights", "normalizer"])
def test_regression_loss_gradients(rng, name, weighting):
    fn = REGRESSION[name]
    pred = rng.normal(size=(4, 5, 2)) * 2
    target = rng.normal(size=(4, 5, 2))
    kwargs = {}
    if weighting == "mask":  # variable lengths: (B, T, 1) broadcast over features
        kwargs["weight"] = (np.arange(5)[None, :] < np.array([5, 2, 3, 1])[:, None])[..., None]
    elif weighting == "weights":
        kwargs["weight"] = rng.uniform(0, 2, size=(4, 5, 2))
    elif weighting == "normalizer":
        kwargs["normalizer"] = 17.0
    loss, grad = fn(pred, target, **kwargs)
    assert grad.shape == pred.shape and grad.dtype == pred.dtype
    assert_gradients_match_fd(lambda: fn(pred, target, **kwargs)[0], {"pred": (pred, grad)},
                              rtol=1e-6, atol=1e-9)
    # against a direct NumPy expression of the definition
    d = pred - target
    terms = {"mse": d**2, "mae": np.abs(d),
             "huber": np.where(np.abs(d) <= 1, 0.5 * d**2, np.abs(d) - 0.5)}[name]
    w = np.broadcast_to(kwargs.get("weight", 1.0), terms.shape).astype(float)
    expected = np.sum(w * terms) / kwargs.get("normalizer", w.sum())
    assert loss == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("weighting", ["none", "mask", "normalizer"])
def test_cross_entropy_gradients(rng, weighting):
    logits = rng.normal(size=(3, 4, 6)) * 3
    target = rng.integers(0, 6, size=(3, 4))
    kwargs = {}
    if weighting == "mask":
        kwargs["weight"] = np.arange(4)[None, :] < np.array([4, 1, 2])[:, None]
    elif weighting == "normalizer":
        kwargs["normalizer"] = 5.0
    loss, grad = losses.cross_entropy_loss(logits, target, **kwargs)
    assert_gradients_match_fd(lambda: losses.cross_entropy_loss(logits, target, **kwargs)[0],
                              {"logits": (logits, grad)}, rtol=1e-6, atol=1e-9)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, target[..., None], -1)[..., 0]
    w = np.broadcast_to(kwargs.get("weight", 1.0), nll.shape).astype(float)
    assert loss == pytest.approx(np.sum(w * nll) / kwargs.get("normalizer", w.sum()),
                                 rel=1e-13)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    loss, grad = losses.cross_entropy_loss(logits, [1])
    assert loss == pytest.approx(1000.0) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [[1, -1, 0]], atol=1e-6)
    assert grad.dtype == np.float32


def test_masked_loss_equals_loss_of_the_kept_terms(rng):
    pred, target = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    mask = np.array([1, 0, 1, 1, 0, 1], bool)
    loss, grad = losses.mse_loss(pred, target, mask[:, None])
    loss_kept, grad_kept = losses.mse_loss(pred[mask], target[mask])
    assert loss == pytest.approx(loss_kept, rel=1e-14)
    np.testing.assert_allclose(grad[mask], grad_kept, rtol=1e-14)
    assert not grad[~mask].any()
    assert losses.count_terms((6, 3), mask[:, None]) == 12.0
    assert losses.count_terms((6, 3)) == 18.0


def test_losses_match_torch(rng):
    torch = importorskip("torch")
    F = torch.nn.functional
    pred, target = rng.normal(size=(5, 3)) * 2, rng.normal(size=(5, 3))
    tp = torch.tensor(pred, requires_grad=True)
    for fn, tfn in [(losses.mse_loss, F.mse_loss), (losses.mae_loss, F.l1_loss),
                    (lambda p, t: losses.huber_loss(p, t, delta=0.7),
                     lambda p, t: F.huber_loss(p, t, delta=0.7))]:
        loss, grad = fn(pred, target)
        tp.grad = None
        tl = tfn(tp, torch.tensor(target))
        tl.backward()
        assert loss == pytest.approx(tl.item(), rel=1e-12)
        np.testing.assert_allclose(grad, tp.grad.numpy(), rtol=1e-12, atol=1e-15)
    logits, labels = rng.normal(size=(7, 4)), rng.integers(0, 4, 7)
    tl = torch.tensor(logits, requires_grad=True)
    ref = F.cross_entropy(tl, torch.tensor(labels))
    ref.backward()
    loss, grad = losses.cross_entropy_loss(logits, labels)
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, tl.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("weighting", ["none", "mask", "weights", "normalizer"])
def test_pinball_and_quantile_loss_gradients(rng, weighting):
    """The pinball loss and the loss of non-crossing quantiles: exact gradients
    (central differences, float64), values from the definition."""
    q = np.array([0.1, 0.5, 0.9])
    raw = rng.normal(size=(3, 4, 3))
    target = rng.normal(size=(3, 4)) * 2
    kwargs = {}
    if weighting == "mask":
        kwargs["weight"] = np.arange(4)[None, :] < np.array([4, 1, 2])[:, None]
    elif weighting == "weights":
        kwargs["weight"] = rng.uniform(0, 2, size=(3, 4))
    elif weighting == "normalizer":
        kwargs["normalizer"] = 7.0
    loss, grad = losses.quantile_loss(raw, target, q, **kwargs)
    assert grad.shape == raw.shape and grad.dtype == raw.dtype
    assert_gradients_match_fd(lambda: losses.quantile_loss(raw, target, q, **kwargs)[0],
                              {"raw": (raw, grad)}, rtol=1e-6, atol=1e-9)
    pred = losses.monotone_quantiles(raw)
    ploss, pgrad = losses.pinball_loss(pred, target, q, **kwargs)
    assert ploss == loss
    assert_gradients_match_fd(lambda: losses.pinball_loss(pred, target, q, **kwargs)[0],
                              {"pred": (pred, pgrad)}, rtol=1e-6, atol=1e-9)
    d = target[..., None] - pred
    terms = np.mean(np.where(d >= 0, q * d, (q - 1) * d), axis=-1)
    w = np.broadcast_to(kwargs.get("weight", 1.0), terms.shape).astype(float)
    assert loss == pytest.approx(np.sum(w * terms) / kwargs.get("normalizer", w.sum()),
                                 rel=1e-13)


def test_quantiles_never_cross_and_pinball_finds_them(rng):
    raw = rng.normal(size=(1000, 5)) * 20  # any values at all
    qs = losses.monotone_quantiles(raw)
    assert np.all(np.diff(qs, axis=-1) >= 0) and np.all(qs[:, 0] == raw[:, 0])
    # the minimiser of the pinball loss of level q is the q-quantile of the data
    y = rng.standard_exponential(20001)
    levels = [0.1, 0.5, 0.9]
    grid = np.linspace(0, 4, 4001)
    for i, lev in enumerate(levels):
        losses_at = [losses.pinball_loss(np.full((y.size, 1), g), y, [lev])[0]
                     for g in grid[::40]]
        best = grid[::40][int(np.argmin(losses_at))]
        assert abs(best - np.quantile(y, lev)) < 0.05
    # one level 0.5: half the absolute error
    p = rng.normal(size=(6, 1))
    t = rng.normal(size=6)
    assert losses.pinball_loss(p, t, [0.5])[0] == pytest.approx(
        0.5 * np.mean(np.abs(p[:, 0] - t)))


def test_quantile_loss_input_errors():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        losses.pinball_loss(np.zeros((2, 2)), np.zeros(2), [0.0, 0.5])
    with pytest.raises(ValueError, match="increasing and distinct"):
        losses.pinball_loss(np.zeros((2, 2)), np.zeros(2), [0.5, 0.1])
    with pytest.raises(ValueError, match=r"\(\.\.\., n_quantiles=3\)"):
        losses.quantile_loss(np.zeros((2, 2)), np.zeros(2), [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match=r"target must have shape pred.shape\[:-1\]"):
        losses.pinball_loss(np.zeros((2, 1)), np.zeros(3), [0.5])
    with pytest.raises(ValueError, match="NaN"):
        losses.quantile_loss(np.full((2, 1), np.nan), np.zeros(2), [0.5])
    with pytest.raises(TypeError, match="quantiles must be a sequence"):
        losses.pinball_loss(np.zeros((2, 1)), np.zeros(2), ["a"])


def test_loss_input_errors():
    with pytest.raises(ValueError, match="same shape"):
        losses.mse_loss(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="broadcast"):
        losses.mae_loss(np.zeros((2, 3)), np.zeros((2, 3)), weight=np.ones(2))
    with pytest.raises(ValueError, match=">= 0"):
        losses.mse_loss(np.zeros(2), np.zeros(2), weight=[1, -1])
    with pytest.raises(ValueError, match="zero everywhere"):
        losses.mse_loss(np.zeros(2), np.zeros(2), weight=[0, 0])
    with pytest.raises(ValueError, match="normalizer"):
        losses.mse_loss(np.zeros(2), np.zeros(2), normalizer=0)
    with pytest.raises(ValueError, match="delta"):
        losses.huber_loss(np.zeros(2), np.zeros(2), delta=0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        losses.cross_entropy_loss(np.zeros((2, 3)), [0, 3])
    with pytest.raises(TypeError, match="integer class"):
        losses.cross_entropy_loss(np.zeros((2, 3)), [0.5, 1])
    with pytest.raises(ValueError, match="empty"):
        losses.mse_loss(np.zeros(0), np.zeros(0))


# -- truncated BPTT -----------------------------------------------------------------------
def test_tbptt_carries_the_state_across_chunks(rng):
    gru = grucy.GRU(3, 4, num_layers=2, dtype=np.float64, seed=0)
    x = rng.normal(size=(20, 2, 3))
    full, _ = gru.forward(x, training=False)
    tb = TruncatedBPTT(gru, n_streams=2)
    pieces = [tb.forward(x[s], training=False) for s in TruncatedBPTT.chunk_slices(20, 6)]
    assert [p.shape[0] for p in pieces] == [6, 6, 6, 2]
    np.testing.assert_allclose(np.concatenate(pieces), full, rtol=1e-12, atol=1e-14)
    tb.reset()
    assert not tb.state.any()
    # a subset of streams moves only its own state
    tb.forward(x[:5, [1]], rows=np.array([1]), training=False)
    assert not tb.state[:, 0].any() and tb.state[:, 1].any()


def test_tbptt_chunk_gradient_treats_the_carried_state_as_constant(rng):
    gru = grucy.GRU(2, 3, dtype=np.float64, seed=1)
    tb = TruncatedBPTT(gru, n_streams=2)
    x = rng.normal(size=(8, 2, 2))
    tb.forward(x[:5], training=False)  # chunk 1 leaves a non-zero state
    h0 = tb.state.copy()
    inputs = dict(x=np.ascontiguousarray(x[5:]), h0=h0, lengths=None,
                  dy=rng.normal(size=(3, 2, 3)), dh_n=None)
    gru.zero_grad()
    tb.forward(inputs["x"])
    dx = tb.backward(inputs["dy"])
    grads = {k: v.copy() for k, v in gru.grads.items()}
    # the same chunk as an ordinary GRU call starting from the carried state
    check_finite_differences(gru, inputs)
    gru.zero_grad()
    gru.forward(inputs["x"], h0=h0)
    dx_ref, _ = gru.backward(inputs["dy"])
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-13)
    for k in grads:
        np.testing.assert_allclose(grads[k], gru.grads[k], rtol=1e-13)


def test_tbptt_streams_and_errors():
    s = TruncatedBPTT.split_streams(np.arange(11), 3)
    np.testing.assert_array_equal(s, [[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    assert TruncatedBPTT.split_streams(np.zeros((10, 2)), 2).shape == (2, 5, 2)
    with pytest.raises(ValueError, match="unidirectional"):
        TruncatedBPTT(grucy.GRU(2, 2, bidirectional=True), 1)
    with pytest.raises(ValueError, match="n_streams=5"):
        TruncatedBPTT.split_streams(np.zeros(3), 5)


# -- optimisers ---------------------------------------------------------------------------
def _run_against_torch(rng, ours, theirs, steps=6):
    torch = importorskip("torch")
    p_np = [rng.normal(size=(3, 4)), rng.normal(size=5)]
    g_np = [np.zeros_like(p) for p in p_np]
    p_t = [torch.tensor(p.copy(), requires_grad=True) for p in p_np]
    opt, opt_t = ours(p_np, g_np), theirs(p_t)
    for _ in range(steps):
        for g, pt in zip(g_np, p_t):
            g[...] = rng.normal(size=g.shape)
            pt.grad = torch.tensor(g.copy())
        opt.step()
        opt_t.step()
    for p, pt in zip(p_np, p_t):
        np.testing.assert_allclose(p, pt.detach().numpy(), rtol=1e-6, atol=1e-9)
        # float64 agrees far beyond the required 1e-6
        np.testing.assert_allclose(p, pt.detach().numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
])
def test_sgd_matches_torch(rng, kwargs):
    torch = importorskip("torch")
    _run_against_torch(rng, lambda p, g: SGD(p, g, **kwargs),
                       lambda p: torch.optim.SGD(p, **kwargs))


@pytest.mark.parametrize("kwargs", [dict(lr=0.01), dict(lr=0.05, betas=(0.8, 0.99),
                                                         eps=1e-6, weight_decay=0.01)])
def test_adam_matches_torch(rng, kwargs):
    torch = importorskip("torch")
    _run_against_torch(rng, lambda p, g: Adam(p, g, **kwargs),
                       lambda p: torch.optim.Adam(p, **kwargs))


@pytest.mark.parametrize("kwargs", [dict(lr=0.01), dict(lr=0.02, weight_decay=0.1,
                                                         betas=(0.8, 0.95), eps=1e-6)])
def test_adamw_matches_torch(rng, kwargs):
    torch = importorskip("torch")
    _run_against_torch(rng, lambda p, g: AdamW(p, g, **kwargs),
                       lambda p: torch.optim.AdamW(p, **kwargs))


@pytest.mark.parametrize("make", [
    lambda p, g: SGD(p, g, lr=0.1, momentum=0.9, nesterov=True),
    lambda p, g: Adam(p, g, lr=0.01, weight_decay=0.01),
    lambda p, g: AdamW(p, g, lr=0.01),
])
def test_optimizer_state_dict_resumes_exactly(rng, make):
    grads_seq = [[rng.normal(size=(2, 3)), rng.normal(size=4)] for _ in range(6)]
    start = [rng.normal(size=(2, 3)), rng.normal(size=4)]

    def run(opt, params, grads, seq):
        for gs in seq:
            for g, v in zip(grads, gs):
                g[...] = v
            opt.step()

    p_full = [p.copy() for p in start]
    g_full = [np.zeros_like(p) for p in p_full]
    run(make(p_full, g_full), p_full, g_full, grads_seq)

    p_a = [p.copy() for p in start]
    g_a = [np.zeros_like(p) for p in p_a]
    opt_a = make(p_a, g_a)
    run(opt_a, p_a, g_a, grads_seq[:3])
    state = opt_a.state_dict()
    opt_a.lr = 123.0  # the saved state must not alias the live optimiser
    p_b = [p.copy() for p in p_a]
    g_b = [np.zeros_like(p) for p in p_b]
    opt_b = make(p_b, g_b)
    opt_b.load_state_dict(state)
    assert opt_b.t == 3
    run(opt_b, p_b, g_b, grads_seq[3:])
    for a, b in zip(p_full, p_b):
        np.testing.assert_array_equal(a, b)


def test_optimizer_state_dict_errors():
    p, g = [np.zeros(2)], [np.zeros(2)]
    with pytest.raises(ValueError, match="'SGD' optimiser"):
        Adam(p, g).load_state_dict(SGD(p, g).state_dict())
    state = Adam(p, g).state_dict()
    state["exp_avg"] = [np.zeros(3)]
    with pytest.raises(ValueError, match="shape"):
        Adam(p, g).load_state_dict(state)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(p, g, nesterov=True)
    # a negative second moment passed the shape and finiteness checks, and the next
    # step took its square root: NaN in the parameters
    for opt_class in (Adam, AdamW):
        params = [np.ones(2)]
        opt = opt_class(params, [np.full(2, 0.1)])
        state = opt.state_dict()
        state["exp_avg_sq"] = [np.array([0.5, -1.0])]
        with pytest.raises(ValueError, match=r"state\['exp_avg_sq'\]\[0\] holds a "
                                             r"negative value \(-1.0\)"):
            opt.load_state_dict(state)
        opt.step()  # the refused state changed nothing
        assert np.all(np.isfinite(params[0]))
    state = SGD(p, g, momentum=0.9).state_dict()
    state["momentum_buffer"] = [np.array([-1.0, 2.0])]  # any sign is a valid momentum
    SGD(p, g, momentum=0.9).load_state_dict(state)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("lbfgs", p, g, lr=0.1)
    assert isinstance(make_optimizer("AdamW", p, g, lr=0.1), AdamW)


def test_clip_grad_norm_matches_torch(rng):
    torch = importorskip("torch")
    grads = [rng.normal(size=(3, 3)), rng.normal(size=4)]
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g.copy())
    total_t = torch.nn.utils.clip_grad_norm_(tensors, 0.5)
    total = clip_grad_norm(grads, 0.5)
    assert total == pytest.approx(total_t.item(), rel=1e-14)
    for g, t in zip(grads, tensors):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)


# -- schedules ----------------------------------------------------------------------------
def _lr_sequences(make_ours, make_theirs, metrics):
    torch = importorskip("torch")
    p = [np.zeros(2)]
    opt = SGD(p, [np.zeros(2)], lr=0.5)
    ours = make_ours(opt)
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.5)
    theirs = make_theirs(topt)
    got, want = [], []
    for m in metrics:
        topt.step()
        ours.step(m)
        theirs.step(m) if m is not None else theirs.step()
        got.append(opt.lr)
        want.append(topt.param_groups[0]["lr"])
    return np.array(got), np.array(want)


def test_step_and_cosine_schedules_match_torch():
    torch = importorskip("torch")
    sched = torch.optim.lr_scheduler
    got, want = _lr_sequences(lambda o: StepLR(o, 3, gamma=0.5),
                              lambda o: sched.StepLR(o, 3, gamma=0.5), [None] * 10)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    got, want = _lr_sequences(lambda o: CosineAnnealingLR(o, 8, eta_min=0.01),
                              lambda o: sched.CosineAnnealingLR(o, 8, eta_min=0.01),
                              [None] * 8)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[-1] == pytest.approx(0.01)


def test_reduce_on_plateau_matches_torch():
    torch = importorskip("torch")
    metrics = [5, 4, 4, 4, 4, 3.9999, 4, 4, 4, 4, 4, 4, 2, 2, 2, 2, 2, 2]
    for kwargs in [dict(patience=2, factor=0.5),
                   dict(patience=1, factor=0.1, cooldown=2, min_lr=0.004),
                   dict(mode="max", patience=0, threshold=0.1, threshold_mode="abs")]:
        got, want = _lr_sequences(
            lambda o: ReduceLROnPlateau(o, **kwargs),
            lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, **kwargs),
            [float(m) for m in metrics])
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=str(kwargs))


@pytest.mark.parametrize("make", [
    lambda o: StepLR(o, 2, gamma=0.3),
    lambda o: CosineAnnealingLR(o, 5),
    lambda o: ReduceLROnPlateau(o, patience=1, factor=0.5, cooldown=1),
])
def test_schedule_state_dict_resumes_exactly(make):
    import json

    metrics = [3.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0]

    def fresh():
        opt = Adam([np.zeros(1)], [np.zeros(1)], lr=0.1)
        return opt, make(opt)

    opt, s = fresh()
    lrs = []
    for m in metrics:
        s.step(m)
        lrs.append(opt.lr)
    opt_a, a = fresh()
    for m in metrics[:4]:
        a.step(m)
    state = json.loads(json.dumps(a.state_dict(), allow_nan=False))  # JSON-safe
    opt_b, b = fresh()
    b.load_state_dict(state)
    opt_b.load_state_dict(opt_a.state_dict())
    for m in metrics[4:]:
        b.step(m)
    assert opt_b.lr == lrs[-1]
    assert math.isfinite(opt_b.lr)


def test_schedule_load_state_dict_checks_the_values():
    """Bad values were stored as they came, and step() failed later with a raw
    TypeError ("can only concatenate str (not "int") to str")."""
    def opt():
        return SGD([np.zeros(3)], [np.zeros(3)], lr=0.1)

    s = StepLR(opt(), 2)
    for key, value, error, message in [
            ("last_epoch", "3", TypeError, r"state\['last_epoch'\] must be an integer"),
            ("last_epoch", -1, ValueError, r"state\['last_epoch'\] must be a non-negative"),
            ("base_lr", "0.1", TypeError, r"state\['base_lr'\] must be a real number"),
            ("base_lr", float("nan"), ValueError, r"state\['base_lr'\] must be finite")]:
        with pytest.raises(error, match=message):
            s.load_state_dict({**s.state_dict(), key: value})
    assert (s.last_epoch, s.base_lr) == (0, 0.1)  # nothing changed
    r = ReduceLROnPlateau(opt())
    for key, value, error, message in [
            ("best", "abc", ValueError, r"state\['best'\] must be a number or None"),
            ("best", float("nan"), ValueError, r"state\['best'\] must be a number"),
            ("num_bad_epochs", 1.5, TypeError, r"state\['num_bad_epochs'\] must be an "
                                               r"integer"),
            ("cooldown_counter", -2, ValueError, r"state\['cooldown_counter'\]")]:
        with pytest.raises(error, match=message):
            r.load_state_dict({**r.state_dict(), key: value})
    r.load_state_dict({**r.state_dict(), "best": 2, "num_bad_epochs": np.int64(1)})
    assert r.best == 2.0 and r.num_bad_epochs == 1
    r.step(1.0)
    assert r.best == 1.0


# -- Linear: each row on its own (the readout of every model) ----------------------------
def _linear_run(lin, x, dy):
    y = lin.forward(x)
    lin.zero_grad()
    dx = lin.backward(dy)
    return y, dx, lin.grads["weight"].copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 64), (9, 9), (32, 10), (256, 97)])
def test_linear_gives_a_row_the_same_bits_in_any_batch(dtype, shape):
    """Through scipy's BLAS a readout's row differed by up to 9e-8 between a batch of 1
    and one of 16 (OpenBLAS picks its kernel by the number of rows), so a model's
    prediction for a sequence depended on the other sequences in the call."""
    if grucy._gru.kernel_isa() == "blas":
        pytest.skip("GRUCY_ISA=blas: the products are OpenBLAS's, not promised")
    K, N = shape
    lin = Linear(K, N, seed=1, dtype=dtype)
    r = np.random.default_rng(2)
    x = r.standard_normal((70, K)).astype(dtype)
    dy = r.standard_normal((70, N)).astype(dtype)
    y, dx, dw = _linear_run(lin, x, dy)
    np.testing.assert_allclose(y, x.astype(np.float64) @ lin.weight.T
                               + lin.state_dict()["bias"],
                               rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-5)
    np.testing.assert_allclose(dx, dy.astype(np.float64) @ lin.weight,
                               rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-5)
    np.testing.assert_allclose(dw, dy.T.astype(np.float64) @ x,
                               rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-4)
    for rows in ([0], [5, 6, 7], list(range(3, 19)), [69, 0, 33]):
        yb, dxb, _ = _linear_run(lin, x[rows], dy[rows])
        assert np.array_equal(yb, y[rows]) and np.array_equal(dxb, dx[rows]), rows


def test_linear_gives_the_same_bits_on_every_kernel_and_thread_count():
    from conftest import kernels
    from test_invariance import _kernel_fuses
    lin = Linear(300, 130, seed=3)
    r = np.random.default_rng(4)
    x = r.standard_normal((512, 300)).astype(np.float32)  # large enough for the team
    dy = r.standard_normal((512, 130)).astype(np.float32)
    runs = {}
    for isa in [i for i in grucy._gru.available_isas() if i != "blas"]:
        with kernels(isa):
            if not _kernel_fuses():
                continue  # (x86's SSE2 portable build: no FMA, each product rounds)
            for threads in (1, 2, 3):
                old = grucy._gru.get_num_threads()
                grucy._gru.set_num_threads(threads)
                try:
                    runs[isa, threads] = _linear_run(lin, x, dy)
                finally:
                    grucy._gru.set_num_threads(old)
    first = next(iter(runs.values()))
    assert len(runs) >= 3
    for key, got in runs.items():
        assert all(np.array_equal(a, b) for a, b in zip(got, first)), key


def test_models_predict_a_sequence_the_same_alone_or_in_a_batch():
    r = np.random.default_rng(0)
    X = [r.normal(size=(T, 3)) for T in r.integers(2, 12, size=40)]
    y = np.array([int(abs(x[-1, 0]) * 5) % 10 for x in X])
    clf = grucy.GRUClassifier(hidden_size=32, epochs=2, random_state=0).fit(X, y)
    batch = clf.predict_proba(X)
    assert np.array_equal(np.concatenate([clf.predict_proba([x]) for x in X]), batch)
    series = np.sin(np.arange(300.0) / 4) + 0.01 * np.arange(300.0)
    f = grucy.Forecaster(lookback=12, horizon=3, ar_order=6, hidden_size=9, epochs=2,
                         quantiles=(0.1, 0.9), random_state=0).fit(series[:250])
    H = np.stack([series[i:i + 100] for i in range(0, 170, 10)])
    together = np.asarray(f.predict_quantiles(H, horizon=7))
    alone = np.stack([np.asarray(f.predict_quantiles(h, horizon=7)) for h in H])
    assert np.array_equal(together, alone)


def test_monotone_quantiles_that_overflow_are_named():
    """The running sum passed 1.8e308: inf came back with only NumPy's warning, and
    quantile_loss then blamed a "pred" its caller never passed."""
    from grucy._validation import NumericOverflowError
    raw = np.array([[0.0, 1e308, 1e308]])
    for call in (lambda: losses.monotone_quantiles(raw),
                 lambda: losses.quantile_loss(raw, np.zeros(1), [0.1, 0.5, 0.9])):
        with pytest.raises(NumericOverflowError, match=r"the quantiles \(their cumulative "
                                                       r"sum\) overflowed"):
            call()
