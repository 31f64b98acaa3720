"""Shared helpers of the grucy test suite: random data, one forward+backward, tolerances.

Nothing here imports the compiled layer, so a failed build breaks only the tests that need
it (``test_gru.py``), never the reference's own tests.  Helpers take the layer *class* or
*instance* as an argument; torch is imported only by the tests that use it.
"""

from __future__ import annotations

import contextlib
import importlib.util

import numpy as np
import pytest

# The optional peers some tests compare with or need: import name -> what the skip reason
# calls it and how to install it.  A test that needs one skips with that reason when it is
# missing (the bare `pip install ".[test]" && python -m pytest` of the README) and really
# runs when it is there.
PEERS = {
    "torch": "torch (pip install torch==2.13.0)",
    "onnx": "onnx (pip install 'grucy[onnx]')",
    "onnxruntime": "onnxruntime (pip install 'grucy[onnx]')",
    "keras": "keras (pip install 'grucy[keras]')",
    "sklearn": "scikit-learn (pip install 'grucy[sklearn]')",
    "tqdm": "tqdm (pip install 'grucy[progress]')",
    "matplotlib": "matplotlib (pip install 'grucy[plot]')",
    "mpi4py": "mpi4py (pip install 'grucy[mpi]')",
    "pandas": "pandas (pip install 'grucy[pandas]')",
}


def peer_reason(module, why=""):
    """The skip reason of a test that needs the optional package ``module``."""
    return f"needs {PEERS.get(module, module)}, not installed" + (f": {why}" if why else "")


def peer_missing(*modules):
    """The modules among ``modules`` that cannot be found (without importing them)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def requires(*modules, why=""):
    """Marker: skip unless every module in ``modules`` is installed (checked by name at
    collection, so nothing heavy is imported to decide)."""
    missing = peer_missing(*modules)
    return pytest.mark.skipif(bool(missing), reason="; ".join(
        peer_reason(m, why) for m in missing) or "all installed")


def importorskip(module, why=""):
    """``pytest.importorskip(module)`` with the standard reason naming the package."""
    return pytest.importorskip(module, reason=peer_reason(module, why))

# Agreement expected between two correct implementations of the same arithmetic
# (different summation orders, different exp/tanh).  atol is relative to the size of the
# compared array (see assert_close), so large accumulated gradients are judged fairly.
# Measured worst case over test_gru.py's grid (compiled vs reference, atol-scaled):
# float64 ~1e-15, float32 ~6e-7.
TOLERANCES = {
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5),
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-13),
}
# Two code paths that should do the same arithmetic in the same order (layout, strides).
TIGHT_TOLERANCES = {
    np.dtype(np.float32): dict(rtol=1e-6, atol=1e-6),
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-13),
}


@pytest.fixture
def rng():
    """A fresh, fixed-seed generator per test: every test sees reproducible data."""
    return np.random.default_rng(20240611)


def assert_close(actual, desired, dtype=None, *, tolerances=TOLERANCES, err_msg=""):
    """assert_allclose with dtype-dependent rtol and atol scaled by max(1, max|desired|)."""
    desired = np.asarray(desired)
    actual = np.asarray(actual)
    dtype = np.dtype(dtype if dtype is not None else desired.dtype)
    tol = tolerances[dtype]
    scale = max(1.0, float(np.max(np.abs(desired)))) if desired.size else 1.0
    assert actual.shape == desired.shape, (err_msg, actual.shape, desired.shape)
    np.testing.assert_allclose(actual, desired, rtol=tol["rtol"], atol=tol["atol"] * scale,
                               err_msg=err_msg)


def random_lengths(rng, T, B):
    """B lengths in [1, T], unsorted, containing a 1 and a T whenever B allows."""
    lengths = rng.integers(1, T + 1, size=B)
    if B >= 2:
        lengths[0], lengths[-1] = T, 1  # decreasing at the ends ...
    if B >= 3:
        lengths[1] = max(1, T - 1) if T > 1 else 1
        lengths[B // 2] = T  # ... but not sorted overall
    return lengths.astype(np.int64)


def make_inputs(rng, layer, T, B, *, h0=True, dh_n=True, lengths=False):
    """Random x, h0, lengths, dy, dh_n shaped for ``layer`` (its layout and dtype).

    ``lengths`` may be False (none), True (random_lengths) or an explicit sequence.
    dy and dh_n double as the weights Wy, Wh of the scalar loss sum(y*Wy) + sum(h_n*Wh).
    """
    D, H, L, I = layer.num_directions, layer.hidden_size, layer.num_layers, layer.input_size
    dtype = layer.dtype
    seq_shape = (B, T) if layer.batch_first else (T, B)
    if lengths is True:
        lengths = random_lengths(rng, T, B)
    elif lengths is False:
        lengths = None
    else:
        lengths = np.asarray(lengths, dtype=np.int64)
    return dict(
        x=rng.standard_normal(seq_shape + (I,)).astype(dtype),
        h0=rng.standard_normal((L * D, B, H)).astype(dtype) * 0.5 if h0 else None,
        lengths=lengths,
        dy=rng.standard_normal(seq_shape + (D * H,)).astype(dtype),
        dh_n=rng.standard_normal((L * D, B, H)).astype(dtype) if dh_n else None,
    )


def run_layer(layer, inputs, *, training=True, zero_grad=True):
    """One forward and one backward; returns copies of y, h_n, dx, dh0 and every gradient."""
    if zero_grad:
        layer.zero_grad()
    y, h_n = layer.forward(inputs["x"], h0=inputs["h0"], lengths=inputs["lengths"],
                           training=training)
    out = dict(y=np.array(y), h_n=np.array(h_n))
    dx, dh0 = layer.backward(inputs["dy"], dh_n=inputs["dh_n"])
    out.update(dx=np.array(dx), dh0=np.array(dh0))
    out["grads"] = {k: np.array(v) for k, v in layer.grads.items()}
    return out


def assert_results_close(actual, desired, dtype, *, tolerances=TOLERANCES):
    """Compare two run_layer results: outputs, input gradients and every parameter gradient."""
    for key in ("y", "h_n", "dx", "dh0"):
        assert_close(actual[key], desired[key], dtype, tolerances=tolerances, err_msg=key)
    assert actual["grads"].keys() == desired["grads"].keys()
    for name, g in desired["grads"].items():
        assert_close(actual["grads"][name], g, dtype, tolerances=tolerances,
                     err_msg=f"grads[{name!r}]")


def assert_results_equal(actual, desired):
    """Bitwise equality of two run_layer results."""
    for key in ("y", "h_n", "dx", "dh0"):
        np.testing.assert_array_equal(actual[key], desired[key], err_msg=key)
    assert actual["grads"].keys() == desired["grads"].keys()
    for name, g in desired["grads"].items():
        np.testing.assert_array_equal(actual["grads"][name], g, err_msg=f"grads[{name!r}]")


def loss_value(layer, inputs):
    """The scalar loss sum(y*Wy) + sum(h_n*Wh) with Wy = inputs['dy'], Wh = inputs['dh_n']."""
    y, h_n = layer.forward(inputs["x"], h0=inputs["h0"], lengths=inputs["lengths"],
                           training=True)
    loss = np.sum(y * inputs["dy"])
    if inputs["dh_n"] is not None:
        loss += np.sum(h_n * inputs["dh_n"])
    return float(loss)


def central_difference(f, arr, eps=1e-6):
    """d f() / d arr by central differences, perturbing ``arr`` in place (then restoring)."""
    grad = np.zeros(arr.shape, dtype=np.float64)
    flat, gflat = arr.reshape(-1), grad.reshape(-1)
    assert np.shares_memory(flat, arr), "arr must be contiguous to be perturbed in place"
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        f_plus = f()
        flat[i] = orig - eps
        f_minus = f()
        flat[i] = orig
        gflat[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def check_finite_differences(layer, inputs, *, eps=1e-6, rtol=1e-6, atol=1e-8):
    """Analytic gradients of ``layer`` (float64) against central differences of the loss.

    Covers x, h0 (when given) and every parameter (perturbed in place through
    ``named_parameters()``, the arrays the layer computes with).
    """
    assert layer.dtype == np.float64
    analytic = run_layer(layer, inputs)

    def f():
        return loss_value(layer, inputs)

    checked = {"x": (inputs["x"], analytic["dx"])}
    if inputs["h0"] is not None:
        checked["h0"] = (inputs["h0"], analytic["dh0"])
    for name, param in layer.named_parameters():
        checked[name] = (param, analytic["grads"][name])
    assert_gradients_match_fd(f, checked, eps=eps, rtol=rtol, atol=atol)


def assert_gradients_match_fd(f, checked, *, eps=1e-6, rtol=1e-6, atol=1e-8):
    """Each analytic gradient against central differences of the scalar ``f()``.

    ``checked`` maps a name to ``(array, analytic_gradient)``; ``array`` is perturbed in
    place (it must be what ``f`` computes with), float64.
    """
    for name, (arr, grad) in checked.items():
        assert arr.dtype == np.float64, f"{name}: finite differences need float64"
        numeric = central_difference(f, arr, eps)
        np.testing.assert_allclose(grad, numeric, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of {name}")


# --------------------------------------------------------------------------------------
# Kernel choices of the compiled layer (imported lazily: the reference tests never need
# the compiled module).

@contextlib.contextmanager
def forced_plan(groups, chunks, align=16):
    """Run the compiled kernels with ``groups`` row groups x ``chunks`` unit chunks (and
    that many threads), chunk bounds on multiples of ``align`` units, whatever the
    size: the parallel paths on tiny problems.  Results must not change."""
    import grucy
    threads = grucy.get_num_threads()
    old = grucy._gru._force_plan(groups, chunks, align)
    grucy.set_num_threads(max(1, groups * chunks))
    try:
        yield
    finally:
        grucy._gru._force_plan(*old)
        grucy.set_num_threads(threads)


def available_isas():
    """The GEMM kernels this CPU can run (grucy._gru.kernel_isa names), BLAS last."""
    import grucy
    return grucy._gru.available_isas()


@contextlib.contextmanager
def kernels(isa):
    """The compiled layer on the GEMM kernels ``isa`` (None: unchanged)."""
    if isa is None:
        yield
        return
    import grucy
    old = grucy._gru._set_isa(isa)
    try:
        yield
    finally:
        grucy._gru._set_isa(old)
