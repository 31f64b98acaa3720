"""PyTorch interop: grucy.interop.from_torch / to_torch and the drop-in grucy.torch.GRU.

The oracle is torch.nn.GRU itself (outputs, final states and every gradient, float64 to
1e-9), plus torch.autograd.gradcheck's finite differences for the drop-in module.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import grucy
from grucy import interop
from grucy.reference import GRU as RefGRU

from conftest import importorskip

torch = importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

from grucy.torch import GRU as DropIn  # noqa: E402

CONFIGS = {
    "plain": dict(),
    "two_layers": dict(num_layers=2),
    "bidirectional": dict(bidirectional=True),
    "batch_first_no_bias": dict(batch_first=True, bias=False),
    "everything": dict(num_layers=2, bidirectional=True, batch_first=True, dropout=0.25),
}
TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64}


def _state_equal(a, b):
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
        assert np.asarray(a[k]).dtype == np.asarray(b[k]).dtype, k


# --------------------------------------------------------------------------------------
# grucy.interop: from_torch / to_torch

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_torch_round_trips_are_bitwise(name, dtype):
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    module = torch.nn.GRU(3, 4, dtype=TORCH_DTYPES[dtype], **cfg)
    layer = interop.from_torch(module)
    assert isinstance(layer, grucy.GRU) and layer.dtype == dtype and layer.reset_after
    for key in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                "bidirectional"):
        assert getattr(layer, key) == getattr(module, key), key
    _state_equal(layer.state_dict(), {k: v.numpy() for k, v in module.state_dict().items()})
    back = interop.to_torch(layer)
    assert type(back) is torch.nn.GRU
    _state_equal({k: v.numpy() for k, v in back.state_dict().items()},
                 {k: v.numpy() for k, v in module.state_dict().items()})
    again = interop.from_torch(back, cls=RefGRU)
    assert isinstance(again, RefGRU)
    _state_equal(again.state_dict(), layer.state_dict())


@pytest.mark.parametrize("name", ["two_layers", "everything"])
def test_from_torch_computes_what_torch_computes(name, rng):
    cfg = dict(CONFIGS[name], dropout=0.0)
    torch.manual_seed(1)
    module = torch.nn.GRU(3, 4, dtype=torch.float64, **cfg)
    layer = interop.from_torch(module)
    T, B = 5, 3
    x = rng.standard_normal((B, T, 3) if layer.batch_first else (T, B, 3))
    h0 = rng.standard_normal((layer.num_layers * layer.num_directions, B, 4))
    y, h_n = layer.forward(x, h0, training=False)
    with torch.no_grad():
        y_t, h_t = module(torch.from_numpy(x), torch.from_numpy(h0))
    np.testing.assert_allclose(y, y_t.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h_n, h_t.numpy(), rtol=1e-12, atol=1e-13)


def test_to_torch_can_build_the_drop_in_module():
    layer = grucy.GRU(3, 4, 2, bidirectional=True, seed=0)
    module = interop.to_torch(layer, module_class=DropIn)
    assert isinstance(module, DropIn)
    _state_equal({k: v.numpy() for k, v in module.state_dict().items()}, layer.state_dict())


def test_to_torch_refuses_non_finite_weights():
    g = grucy.GRU(3, 4, seed=0)
    g.parameters()[2][1] = np.inf
    with pytest.raises(ValueError, match="parameter 'bias_ih_l0' contains NaN or inf"):
        interop.to_torch(g)


def test_torch_refusals():
    with pytest.raises(ValueError, match="reset_after=False"):
        interop.to_torch(grucy.GRU(3, 4, reset_after=False))
    with pytest.raises(TypeError, match="torch.nn.GRU"):
        interop.from_torch(torch.nn.LSTM(3, 4))
    with pytest.raises(TypeError, match="float16"):
        interop.from_torch(torch.nn.GRU(3, 4, dtype=torch.float16))
    with pytest.raises(ValueError, match="dropout=1.0"):
        interop.from_torch(torch.nn.GRU(3, 4, 2, dropout=1.0))
    with pytest.raises(TypeError, match="grucy GRU layer"):
        interop.to_torch(torch.nn.GRU(3, 4))
    with pytest.raises(TypeError, match="module_class"):
        interop.to_torch(grucy.GRU(3, 4), module_class=torch.nn.LSTM)


# --------------------------------------------------------------------------------------
# grucy.torch.GRU against torch.nn.GRU

def _pair(dtype=torch.float64, seed=0, **cfg):
    """The drop-in module and torch.nn.GRU with identical weights (torch's own init)."""
    torch.manual_seed(seed)
    ours = DropIn(3, 4, dtype=dtype, **cfg)
    torch.manual_seed(seed)
    ref = torch.nn.GRU(3, 4, dtype=dtype, **cfg)
    _state_equal({k: v.numpy() for k, v in ours.state_dict().items()},
                 {k: v.numpy() for k, v in ref.state_dict().items()})
    return ours, ref


def _step(module, x, h0, weights):
    """Forward, a loss weighting y and h_n, backward; returns outputs and gradients."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    h0 = None if h0 is None else h0.detach().clone().requires_grad_()
    y, h_n = module(x, h0)
    loss = (y * weights[0]).sum() + (h_n * weights[1]).sum()
    loss.backward()
    out = {"y": y, "h_n": h_n, "dx": x.grad}
    if h0 is not None:
        out["dh0"] = h0.grad
    out.update({f"grad {k}": p.grad for k, p in module.named_parameters()})
    return {k: v.detach().numpy().copy() for k, v in out.items()}


def _random_case(module, dtype, T=5, B=3, h0=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = 2 if module.bidirectional else 1
    seq = (B, T) if module.batch_first else (T, B)
    x = torch.randn(*seq, module.input_size, generator=g, dtype=dtype)
    h = torch.randn(module.num_layers * D, B, module.hidden_size, generator=g, dtype=dtype)
    wy = torch.randn(*seq, D * module.hidden_size, generator=g, dtype=dtype)
    wh = torch.randn(module.num_layers * D, B, module.hidden_size, generator=g, dtype=dtype)
    return x, (h if h0 else None), (wy, wh)


def _assert_steps_close(ours, ref, rtol, atol):
    assert ours.keys() == ref.keys()
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize("h0", [True, False])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_drop_in_matches_torch_float64(name, h0):
    cfg = CONFIGS[name]
    ours, ref = _pair(**cfg)
    # Dropout masks cannot match torch's; their effect is tested below.
    ours.eval() if cfg.get("dropout") else None
    ref.eval() if cfg.get("dropout") else None
    x, h, w = _random_case(ours, torch.float64, h0=h0)
    _assert_steps_close(_step(ours, x, h, w), _step(ref, x, h, w), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["plain", "everything"])
def test_drop_in_matches_torch_float32(name):
    ours, ref = _pair(dtype=torch.float32, **dict(CONFIGS[name], dropout=0.0))
    x, h, w = _random_case(ours, torch.float32)
    _assert_steps_close(_step(ours, x, h, w), _step(ref, x, h, w), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("enforce_sorted", [False, True])
@pytest.mark.parametrize("name", ["plain", "everything"])
def test_drop_in_packed_sequences(name, enforce_sorted):
    cfg = dict(CONFIGS[name], dropout=0.0)
    ours, ref = _pair(**cfg)
    T, B = 6, 4
    lengths = torch.tensor([6, 5, 3, 1]) if enforce_sorted else torch.tensor([3, 6, 1, 6])
    results = []
    for module in (ours, ref):
        x, h, _ = _random_case(module, torch.float64, T=T, B=B)
        x.requires_grad_()
        h.requires_grad_()
        packed = pack_padded_sequence(x, lengths, batch_first=module.batch_first,
                                      enforce_sorted=enforce_sorted)
        out, h_n = module(packed, h)
        assert type(out) is type(packed)
        g = torch.Generator().manual_seed(5)
        loss = (out.data * torch.randn(out.data.shape, generator=g, dtype=out.data.dtype)
                ).sum() + (h_n * torch.randn(h_n.shape, generator=g, dtype=h_n.dtype)).sum()
        loss.backward()
        results.append((out, h_n, x.grad, h.grad, [p.grad for p in module.parameters()]))
    (o1, h1, dx1, dh1, g1), (o2, h2, dx2, dh2, g2) = results
    for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
        a, b = getattr(o1, field), getattr(o2, field)
        assert (a is None and b is None) or torch.equal(a, b), field
    for a, b, what in [(o1.data, o2.data, "output"), (h1, h2, "h_n"), (dx1, dx2, "dx"),
                       (dh1, dh2, "dh0")] + [(a, b, "param grad") for a, b in zip(g1, g2)]:
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-9,
                                   atol=1e-9, err_msg=what)


def test_drop_in_unbatched_input():
    ours, ref = _pair(num_layers=2, batch_first=True)
    x = torch.randn(5, 3, dtype=torch.float64)
    h = torch.randn(2, 4, dtype=torch.float64)
    for args in ((x,), (x, h)):
        (y1, h1), (y2, h2) = ours(*args), ref(*args)
        assert y1.shape == y2.shape == (5, 4) and h1.shape == h2.shape == (2, 4)
        torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h1, h2, rtol=1e-12, atol=1e-12)


def test_drop_in_gradcheck_with_dropout():
    """Finite differences (torch.autograd.gradcheck) through dropout between layers.

    Reseeding before every call fixes the masks, so the function is deterministic.
    """
    torch.manual_seed(0)
    module = DropIn(2, 3, num_layers=2, bidirectional=True, dropout=0.5, dtype=torch.float64)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    h = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    params = list(module.parameters())

    def f(x, h, *ps):
        torch.manual_seed(123)
        with torch.nn.utils.stateless._reparametrize_module(
                module, dict(zip([n for n, _ in module.named_parameters()], ps))):
            y, h_n = module(x, h)
        return y, h_n

    assert torch.autograd.gradcheck(f, (x, h, *params), eps=1e-6, atol=1e-7, rtol=1e-6)
    # The masks really are applied: train and eval mode differ, and reseeding repeats.
    torch.manual_seed(7)
    y1, _ = module(x, h)
    torch.manual_seed(7)
    y2, _ = module(x, h)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    module.eval()
    y3, _ = module(x, h)
    assert not torch.allclose(y1, y3)


def test_drop_in_state_dict_and_parameters_are_torch_s():
    torch.manual_seed(3)
    ref = torch.nn.GRU(3, 4, 2, bidirectional=True)
    ours = DropIn(3, 4, 2, bidirectional=True)
    assert isinstance(ours, torch.nn.GRU)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    ours.load_state_dict(ref.state_dict())
    ref2 = torch.nn.GRU(3, 4, 2, bidirectional=True)
    ref2.load_state_dict(ours.state_dict())
    _state_equal({k: v.numpy() for k, v in ref2.state_dict().items()},
                 {k: v.numpy() for k, v in ref.state_dict().items()})
    ours.double()
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    y, _ = ours(torch.randn(2, 1, 3, dtype=torch.float64))
    assert y.dtype == torch.float64


def test_drop_in_sees_optimizer_updates():
    """Three SGD steps on both modules: the weights grucy computes with are never stale."""
    ours, ref = _pair(num_layers=2)
    opts = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (ours, ref)]
    x, h, w = _random_case(ours, torch.float64)
    for _ in range(3):
        steps = [_step(m, x, h, w) for m in (ours, ref)]
        _assert_steps_close(*steps, rtol=1e-9, atol=1e-9)
        for opt in opts:
            opt.step()
    with torch.no_grad():
        ours.weight_hh_l0.mul_(0.5)  # an in-place edit outside autograd is seen too
        ref.weight_hh_l0.mul_(0.5)
    _assert_steps_close(_step(ours, x, h, w), _step(ref, x, h, w), rtol=1e-9, atol=1e-9)


def test_drop_in_retain_graph_and_weight_only_gradients():
    ours, ref = _pair()
    x, h, _ = _random_case(ours, torch.float64)
    grads = []
    for m in (ours, ref):
        y, h_n = m(x, h)  # x and h0 do not require grad: only the weights do
        loss = y.square().sum() + h_n.sum()
        loss.backward(retain_graph=True)
        loss.backward()  # accumulates a second, equal gradient
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_drop_in_buffers_not_reused_while_a_graph_lives():
    """Calls reuse kernel buffers, but never those of a graph that can still backward:
    other calls (larger, smaller, without grad) between a forward and its (repeated)
    backward leave its gradients exactly as without them."""
    ours, _ = _pair(num_layers=2, bidirectional=True)
    x, h, _ = _random_case(ours, torch.float64, T=6, B=4)
    x.requires_grad_(True)

    def grads_of(loss):
        ours.zero_grad()
        x.grad = None
        loss.backward(retain_graph=True)
        return [x.grad.clone()] + [p.grad.clone() for p in ours.parameters()]

    y, h_n = ours(x, h)
    loss = (y.square().sum() + h_n.sum())
    first = grads_of(loss)
    for T, B in [(9, 5), (2, 1), (6, 4)]:  # other calls, some dropped right away
        other, hh, _ = _random_case(ours, torch.float64, T=T, B=B, seed=T)
        ours(other, hh)[0].sum().backward()
        with torch.no_grad():
            ours(other, hh)
        kept = ours(other.requires_grad_(True), hh)  # noqa: F841  a second live graph
    again = grads_of(loss)
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert ours._scratch_free._free  # buffers of finished calls came back for reuse


def test_drop_in_inference_and_in_place_weight_change():
    ours, ref = _pair(bidirectional=True)
    x, h, _ = _random_case(ours, torch.float64)
    with torch.no_grad():
        (y1, h1), (y2, h2) = ours(x, h), ref(x, h)
    assert not y1.requires_grad
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h1, h2, rtol=1e-12, atol=1e-12)
    y, _ = ours(x, h)
    with torch.no_grad():
        ours.weight_hh_l0.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_drop_in_grucy_threads_is_local_to_its_calls():
    ours, _ = _pair(num_layers=2)
    x, h, w = _random_case(ours, torch.float64)
    before = grucy.get_num_threads()
    default = _step(ours, x, h, w)
    ours.grucy_threads = 1
    one = _step(ours, x, h, w)
    assert grucy.get_num_threads() == before  # restored after forward and backward
    _assert_steps_close(one, default, rtol=1e-13, atol=1e-13)
    ours.grucy_threads = 10**6
    with pytest.raises(ValueError, match="at most"):
        ours(x, h)
    assert grucy.get_num_threads() == before


def test_drop_in_refusals():
    with pytest.raises((RuntimeError, ValueError), match="CPU only"):
        DropIn(3, 4, device="meta")
    with pytest.raises(TypeError, match="float16"):
        DropIn(3, 4, dtype=torch.float16)
    module = DropIn(3, 4)
    with pytest.raises(ValueError, match="does not match weight dtype"):  # torch's check
        module(torch.randn(2, 1, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
        module(torch.randn(2, 1, 5))
    with pytest.raises(RuntimeError, match="Expected hidden size"):
        module(torch.randn(2, 1, 3), torch.randn(2, 1, 4))
    with pytest.raises(ValueError, match="NaN"):
        module(torch.full((2, 1, 3), float("nan")))
    with pytest.raises(ValueError, match="2D or 3D"):
        module(torch.randn(2, 1, 1, 3))
    y, _ = module(torch.randn(2, 1, 3, requires_grad=True))
    # dy = 2y depends on the weights, so this needs a second derivative of the kernels:
    # refused when the graph of the gradient is asked for
    with pytest.raises(RuntimeError, match=r"no double backward \(create_graph=True\)"):
        torch.autograd.grad(y.square().sum(), module.weight_hh_l0, create_graph=True)


# --------------------------------------------------------------------------------------
# import hygiene

def test_grucy_imports_no_peer():
    """``import grucy`` and ``import grucy.interop`` load none of torch, onnx, keras."""
    code = ("import sys, grucy, grucy.interop; "
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'keras') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(grucy.__file__), os.pardir)
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_torch_tensors_in_the_layer_api():
    g = grucy.GRU(4, 3, seed=0)
    x = torch.randn(5, 2, 4)
    want = g(x.numpy(), training=False)[0]
    # (a training forward of an x that requires grad failed in torch's .numpy();
    # a bfloat16 tensor failed with torch's "unsupported ScalarType BFloat16")
    np.testing.assert_array_equal(g(x.requires_grad_())[0], want)
    xb = x.detach().to(torch.bfloat16)
    np.testing.assert_array_equal(g(xb, training=False)[0],
                                  g(xb.float().numpy(), training=False)[0])
    sd = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in g.state_dict().items()}
    g.load_state_dict(sd)
    for k, v in g.state_dict().items():
        np.testing.assert_array_equal(v, sd[k].float().numpy())


def test_drop_in_grucy_threads_is_named():
    m = DropIn(4, 3)
    m.grucy_threads = "2"
    with pytest.raises(TypeError, match=r"^grucy_threads must be an integer, got str"):
        m(torch.randn(5, 2, 4))
    m.grucy_threads = 0
    with pytest.raises(ValueError, match=r"^grucy_threads must be a positive integer"):
        m(torch.randn(5, 2, 4))


# -- the drop-in module inside the rest of PyTorch (found by exploratory testing) --------
def test_drop_in_refuses_double_backward_tracing_and_func_transforms_loudly():
    """Each of these ran and gave silently different numbers, or an obscure error: a
    gradient penalty's terms were constants (the weight gradient 4500x too small), a
    trace under no_grad recorded the output as a constant (and so did ONNX export)."""
    import io
    from grucy.torch import GRU
    torch.manual_seed(0)
    m = GRU(4, 6)
    x = torch.randn(5, 2, 4, requires_grad=True)
    y, _ = m(x)
    with pytest.raises(RuntimeError, match=r"no double backward \(create_graph=True\)"):
        torch.autograd.grad(y.sum(), x, create_graph=True)
    m.eval()
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="cannot be traced or exported through torch"
                                               ".*grucy.interop.to_onnx"):
            torch.jit.trace(m, (x.detach(),), check_trace=False)
        with pytest.raises(RuntimeError, match="cannot be traced or exported"):
            torch.onnx.export(m, (x.detach(),), io.BytesIO(), dynamo=False)
    params = dict(m.named_parameters())
    with pytest.raises(RuntimeError, match="torch.func transforms"):
        torch.func.grad(lambda p: torch.func.functional_call(m, p, (x.detach(),))[0].sum())(
            params)


def test_drop_in_under_torch_compile_dropout_one_and_an_empty_batch():
    from grucy.torch import GRU
    torch.manual_seed(0)
    ref = torch.nn.GRU(4, 6, num_layers=2, dropout=1.0)
    m = GRU(4, 6, num_layers=2, dropout=1.0)
    m.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3, 4)
    # p = 1 drops every value between the layers, as torch does (1 / (1 - p) was 0/0)
    torch.testing.assert_close(m(x)[0], ref(x)[0])
    m.eval()
    compiled = torch.compile(m, backend="eager")  # a graph break: run eagerly
    torch.testing.assert_close(compiled(x)[0], m(x)[0], rtol=0, atol=0)
    # 0 sequences: torch.nn.GRU's empty outputs, and a backward through them
    xe = torch.randn(0, 5, 4, requires_grad=True)
    mb, rb = GRU(4, 6, batch_first=True), torch.nn.GRU(4, 6, batch_first=True)
    y, h = mb(xe)
    ye, he = rb(xe)
    assert y.shape == ye.shape == (0, 5, 6) and h.shape == he.shape == (1, 0, 6)
    (y.sum() + h.sum()).backward()
    assert xe.grad.shape == (0, 5, 4) and mb.weight_hh_l0.grad is not None
