"""Streaming inference (GRU.stream, GRU.step) against whole-sequence forward."""

import numpy as np
import pytest

import grucy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("layers, B", [(1, 1), (3, 4)])
def test_stream_equals_forward(layers, B, reset_after, dtype):
    rng = np.random.default_rng(0)
    g = grucy.GRU(5, 7, layers, reset_after=reset_after, dtype=dtype, seed=1,
                  bias=reset_after)
    x = rng.standard_normal((12, B, 5)).astype(dtype)
    h0 = rng.standard_normal((layers, B, 7)).astype(dtype)
    y, h_n = g(x, h0, training=False)
    s = g.stream(B, h0)
    steps = np.stack([s.step(x[t]) for t in range(12)])
    # Same arithmetic, but the input projection of one step may go through GEMV where
    # the whole sequence uses GEMM: equal to the last bits, not always bitwise.
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(steps, y, **tol)
    np.testing.assert_allclose(s.h, h_n, **tol)
    assert steps.dtype == dtype


def test_flat_input_for_one_stream_and_functional_step():
    g = grucy.GRU(3, 4, 2, seed=0)
    x = np.arange(3, dtype=np.float32)
    s = g.stream()
    y1 = s.step(x)
    assert y1.shape == (4,)
    y2, h = g.step(x[None], np.zeros((2, 1, 4)))
    np.testing.assert_array_equal(y2[0], y1)
    np.testing.assert_array_equal(h, s.h)
    y3, h3 = g.step(x[None], h)  # carrying the state == a second stream step
    np.testing.assert_array_equal(y3[0], s.step(x))
    np.testing.assert_array_equal(h3, s.h)


def test_stream_uses_a_snapshot_until_refresh_and_reset():
    g = grucy.GRU(2, 3, seed=0)
    s = g.stream()
    x = np.ones(2, np.float32)
    before = s.step(x)
    s.reset()
    assert not s.h.any()
    for p in g.parameters():
        p *= 2  # in place, as an optimizer does
    np.testing.assert_array_equal(s.step(x), before)  # the snapshot's weights
    s.reset()
    s.refresh()
    after = s.step(x)
    g2 = grucy.GRU(2, 3, seed=0)
    g2.load_state_dict({k: 2 * v for k, v in g2.state_dict().items()})
    np.testing.assert_array_equal(after, g2.stream().step(x))
    assert not np.array_equal(before, after)


def test_stream_refuses_non_finite_parameters_at_snapshot():
    g = grucy.GRU(2, 3, 2, seed=0)
    s = g.stream()
    g.parameters()[5][1, 2] = np.inf          # weight_hh_l1
    with pytest.raises(ValueError, match="weight_hh_l1 contains NaN or inf"):
        s.refresh()
    with pytest.raises(ValueError, match="weight_hh_l1"):
        g.stream()
    s.step(np.ones(2, np.float32))            # the old snapshot still works


def test_stream_refuses_bad_input_and_keeps_state():
    g = grucy.GRU(3, 4, seed=0)
    s = g.stream(2)
    s.step(np.ones((2, 3)))
    h = s.h
    with pytest.raises(ValueError, match=r"x must have shape \(batch_size, input_size\)"):
        s.step(np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        s.step(np.array([[1, 2, np.nan], [0, 0, 0]]))
    with pytest.raises(TypeError, match="real numbers"):
        s.step(np.array([["a", "b", "c"]] * 2))
    np.testing.assert_array_equal(s.h, h)
    s.step(np.ones((2, 3), np.int64))  # integers are cast
    with pytest.raises(ValueError, match="shape"):
        s.h = np.zeros((1, 1, 4))
    with pytest.raises(ValueError, match="NaN"):
        s.h = np.full((1, 2, 4), np.inf)
    s.h = np.ones((1, 2, 4))
    np.testing.assert_array_equal(s.h, 1)


@pytest.mark.parametrize("kind", ["float32", "float64", "bf16", "int8"])
def test_stream_reads_either_byte_order(kind):
    # A big-endian array has the same NumPy type number as a native one; the fast path
    # used to take its bytes as they were.
    dtype = np.float64 if kind == "float64" else np.float32
    g = grucy.GRU(5, 4, seed=0, dtype=dtype, precision="bf16" if kind == "bf16" else "fp32")
    layer = grucy.quantize(g, "int8") if kind == "int8" else g
    x = np.random.default_rng(0).standard_normal((2, 3, 5)).astype(dtype)
    native, swapped = layer.stream(batch_size=3), layer.stream(batch_size=3)
    for t in range(2):
        want = native.step(x[t])
        got = swapped.step(x[t].astype(x.dtype.newbyteorder(">")))
        np.testing.assert_array_equal(got, want)
    if grucy.kernel_isa() != "blas":   # (BLAS makes no stream = forward promise)
        np.testing.assert_array_equal(want, layer(x, training=False)[0][-1]
                                      if kind != "int8" else layer(x)[0][-1])


def test_stream_arguments():
    with pytest.raises(ValueError, match="unidirectional"):
        grucy.GRU(3, 4, bidirectional=True).stream()
    g = grucy.GRU(3, 4)
    with pytest.raises(ValueError, match="batch_size"):
        g.stream(0)
    with pytest.raises(ValueError, match="h0 must have shape"):
        g.stream(2, np.zeros((1, 1, 4)))
    with pytest.raises(ValueError, match="2-D"):
        g.step(np.zeros(3))


def test_stream_refuses_scalar_and_ragged_input():
    s = grucy.GRU(1, 2).stream()
    with pytest.raises(ValueError, match="scalar"):
        s.step(1.0)
    s2 = grucy.GRU(2, 2).stream(2)
    with pytest.raises(ValueError, match="x must be an array"):
        s2.step([[1.0, 2.0], [3.0]])


def test_one_stream_refuses_a_second_thread():
    import threading

    g = grucy.GRU(64, 256, 4, seed=0)
    s = g.stream(64)
    x = np.ones((64, 64), np.float32)
    errors, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                s.step(x)
            except RuntimeError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(200):
        if errors:
            break
        threading.Event().wait(0.01)
    stop.set()
    for t in threads:
        t.join()
    # The GIL is released while stepping, so the second thread must have been refused.
    assert errors and "in use by another thread" in errors[0]


# -- GRU.step reuses one stream; bias=False shares one read-only zero bias -----------------
def _fresh_step(layer, x, h):
    """What step returned before it cached anything: a new stream for this one call."""
    s = layer.stream(x.shape[0], h)
    return s.step(x), s.h


@pytest.mark.parametrize("bias", [True, False])
def test_step_reuses_its_stream_and_matches_a_fresh_one(bias):
    rng = np.random.default_rng(3)
    g = grucy.GRU(3, 5, 2, bias=bias, dtype=np.float64, seed=0)
    x = rng.standard_normal((4, 3))
    h = rng.standard_normal((2, 4, 5))
    y, h1 = g.step(x, h)
    cached = g._step_stream[3]
    for _ in range(3):
        want = _fresh_step(g, x, h1)
        got = g.step(x, h1)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        h1 = got[1]
    assert g._step_stream[3] is cached  # with bias=False too: the zero biases are shared
    # h=None starts from zeros even though the cached stream holds a state
    np.testing.assert_array_equal(g.step(x)[0], _fresh_step(g, x, None)[0])
    # another batch size gets another stream
    g.step(x[:2])
    assert g._step_stream[3] is not cached and g._step_stream[0] == 2


def test_step_sees_parameter_updates_and_replaced_parameters():
    rng = np.random.default_rng(4)
    g = grucy.GRU(3, 4, dtype=np.float64, seed=0)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((1, 2, 4))
    before = g.step(x, h)[0]
    for p in g.parameters():
        p *= 0.5  # in place, as an optimizer does
    twin = grucy.GRU(3, 4, dtype=np.float64, seed=0)
    twin.load_state_dict({k: 0.5 * v for k, v in twin.state_dict().items()})
    np.testing.assert_array_equal(g.step(x, h)[0], twin.step(x, h)[0])
    g.load_state_dict(grucy.GRU(3, 4, dtype=np.float64, seed=9).state_dict())
    np.testing.assert_array_equal(g.step(x, h)[0],
                                  grucy.GRU(3, 4, dtype=np.float64, seed=9).step(x, h)[0])
    # a parameter array replaced by another object: the stream must not keep the old one
    g._params["weight_hh_l0"] = g._params["weight_hh_l0"] * 2
    g.grads["weight_hh_l0"] = np.zeros_like(g._params["weight_hh_l0"])
    np.testing.assert_array_equal(g.step(x, h)[0], _fresh_step(g, x, h)[0])
    assert not np.array_equal(g.step(x, h)[0], before)


def test_step_keeps_validating_every_call():
    g = grucy.GRU(3, 4, seed=0)
    x = np.ones((1, 3), np.float32)
    g.step(x)
    g.parameters()[0][0, 0] = np.inf  # saturates a gate: finite, meaningless outputs
    with pytest.raises(ValueError, match="weight_ih_l0"):
        g.step(x)
    g.parameters()[0][0, 0] = 0
    g.step(x)
    with pytest.raises(ValueError, match="^h must have shape"):
        g.step(x, np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match="^h contains NaN"):
        g.step(x, np.full((1, 1, 4), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        g.step(np.full((1, 3), np.nan))
    y, h = g.step(x, np.ones((1, 1, 4)))  # still works after the refusals
    np.testing.assert_array_equal(y, _fresh_step(g, x, np.ones((1, 1, 4)))[0])


def test_step_from_two_threads_is_exact():
    """Two threads stepping one layer at once: each gets exactly its own numbers (the
    thread holding the cached stream owns it; the other builds its own)."""
    import threading

    g = grucy.GRU(16, 64, 2, dtype=np.float64, seed=0)
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((3, 16)) for _ in range(2)]
    expected = []
    for x in xs:
        h, outs = None, []
        for _ in range(50):
            y, h = _fresh_step(g, x, h)
            outs.append(y)
        expected.append(outs)
    problems, start = [], threading.Barrier(2)

    def run(i):
        start.wait()
        h = None
        for t in range(50):
            try:
                y, h = g.step(xs[i], h)
            except BaseException as exc:  # a thread's exception would otherwise vanish
                problems.append(repr(exc))
                return
            if not np.array_equal(y, expected[i][t]):
                problems.append((i, t))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems, problems[:5]


def test_a_thread_inside_step_owns_the_cached_stream():
    """While one thread is inside step (held in the conversion of its h), a second
    thread's step must run on another stream, and both get their exact numbers."""
    import threading

    g = grucy.GRU(3, 4, dtype=np.float64, seed=0)
    rng = np.random.default_rng(6)
    x, h_a, h_b = (rng.standard_normal((2, 3)), rng.standard_normal((1, 2, 4)),
                   rng.standard_normal((1, 2, 4)))
    want_a, want_b = _fresh_step(g, x, h_a), _fresh_step(g, x, h_b)
    g.step(x, h_b)  # a cached stream to fight over
    inside, release = threading.Event(), threading.Event()

    class HeldState:
        def __array__(self, dtype=None, copy=None):
            inside.set()
            assert release.wait(30)
            return h_a

    box = {}

    def thread_a():
        try:
            box["a"] = (g.step(x, HeldState()), g.__dict__.get("_step_stream"))
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=thread_a)
    t.start()
    assert inside.wait(30)
    held = g.__dict__.get("_step_stream")
    y_b, hn_b = g.step(x, h_b)  # this thread, meanwhile
    used_b = g._step_stream[3]
    release.set()
    t.join()
    assert "error" not in box, box
    assert held is None  # thread A took the stream out while inside
    (y_a, hn_a), _ = box["a"]
    assert used_b is not g._step_stream[3]  # B ran on a stream of its own
    np.testing.assert_array_equal(y_a, want_a[0])
    np.testing.assert_array_equal(hn_a, want_a[1])
    np.testing.assert_array_equal(y_b, want_b[0])
    np.testing.assert_array_equal(hn_b, want_b[1])


def test_copies_and_pickles_of_a_stepped_layer_work_on_their_own():
    import copy
    import pickle

    g = grucy.GRU(3, 4, seed=0)
    x = np.ones((1, 3), np.float32)
    y = g.step(x)[0]
    for twin in (copy.deepcopy(g), copy.copy(g), pickle.loads(pickle.dumps(g))):
        assert "_step_stream" not in vars(twin)
        np.testing.assert_array_equal(twin.step(x)[0], y)
        assert twin._step_stream[3] is not g._step_stream[3]


def test_bias_false_shares_one_read_only_zero_bias():
    a = grucy.GRU(3, 4, num_layers=2, bidirectional=True, bias=False, seed=0)
    b = grucy.GRU(5, 4, bias=False, seed=1)
    zeros = a.layer_params(0, 0)[2]
    assert not zeros.flags.writeable and not zeros.any() and zeros.shape == (12,)
    for layer, direction in [(0, 0), (0, 1), (1, 1)]:
        _, _, b_ih, b_hh = a.layer_params(layer, direction)
        assert b_ih is zeros and b_hh is zeros
    assert b.layer_params(0, 0)[2] is zeros  # same dtype and size: the same array
    assert grucy.GRU(3, 4, bias=False, dtype=np.float64).layer_params(0, 0)[2].dtype \
        == np.float64
    with pytest.raises(ValueError, match="read-only"):
        zeros[0] = 1
    # the gradient scratch the kernels write into is never the shared array
    scratch = a.layer_grads(0, 0)[2]
    assert scratch is not zeros and scratch.flags.writeable
    y, _ = a.forward(np.ones((2, 1, 3), np.float32))
    a.backward(np.ones_like(y))
    assert not zeros.any()
