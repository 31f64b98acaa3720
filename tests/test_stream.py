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


def test_stream_sees_parameter_updates_and_reset():
    g = grucy.GRU(2, 3, seed=0)
    s = g.stream()
    x = np.ones(2, np.float32)
    before = s.step(x)
    s.reset()
    assert not s.h.any()
    for p in g.parameters():
        p *= 2  # in place, as an optimizer does
    after = s.step(x)
    g2 = grucy.GRU(2, 3, seed=0)
    g2.load_state_dict({k: 2 * v for k, v in g2.state_dict().items()})
    np.testing.assert_array_equal(after, g2.stream().step(x))
    assert not np.array_equal(before, after)


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
