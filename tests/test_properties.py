"""Property-based tests (hypothesis): over random configurations, the compiled layer
agrees with the NumPy reference, and memory layout never changes a single bit.

Deterministic for CI (``derandomize=True``, no example database); set
``GRUCY_HYPOTHESIS_EXAMPLES`` to explore more examples locally, e.g. 2000.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import grucy
from grucy import reference

from conftest import assert_results_close, assert_results_equal, forced_plan, run_layer

EXAMPLES = int(os.environ.get("GRUCY_HYPOTHESIS_EXAMPLES", "150"))
CI = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

layer_configs = st.fixed_dictionaries({
    "input_size": st.integers(1, 7),
    "hidden_size": st.integers(1, 9),
    "num_layers": st.integers(1, 3),
    "bidirectional": st.booleans(),
    "reset_after": st.booleans(),
    "bias": st.booleans(),
    "batch_first": st.booleans(),
    "dtype": st.sampled_from([np.float32, np.float64]),
    "dropout": st.sampled_from([0.0, 0.0, 0.5]),
    "seed": st.integers(0, 2**32 - 1),
})


@st.composite
def problems(draw):
    """A layer configuration and inputs for one forward and backward."""
    cfg = draw(layer_configs)
    T, B = draw(st.integers(1, 7)), draw(st.integers(1, 5))
    lengths = draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B))
    scale = draw(st.sampled_from([0.1, 1.0, 6.0]))  # 6: gates saturate
    data_seed = draw(st.integers(0, 2**32 - 1))
    with_h0, with_dh_n = draw(st.booleans()), draw(st.booleans())
    rng = np.random.default_rng(data_seed)
    D, H, L, I = (2 if cfg["bidirectional"] else 1), cfg["hidden_size"], cfg["num_layers"], \
        cfg["input_size"]
    seq = (B, T) if cfg["batch_first"] else (T, B)
    dt = cfg["dtype"]
    inputs = dict(
        x=(scale * rng.standard_normal(seq + (I,))).astype(dt),
        h0=(0.9 * np.tanh(rng.standard_normal((L * D, B, H)))).astype(dt) if with_h0 else None,
        lengths=None if lengths is None else np.array(lengths),
        dy=rng.standard_normal(seq + (D * H,)).astype(dt),
        dh_n=rng.standard_normal((L * D, B, H)).astype(dt) if with_dh_n else None,
    )
    return cfg, inputs


@contextlib.contextmanager
def kernels(plan):
    """None: the plan grucy picks by size; (groups, chunks): a split forced for every
    size, with tiny odd chunks."""
    if plan is None:
        yield
        return
    with forced_plan(*plan, align=1):
        yield


chunkings = st.none() | st.tuples(st.integers(1, 5), st.integers(1, 4))


@CI
@given(problems(), chunkings, st.sampled_from([1, 2]))
def test_compiled_layer_matches_reference(problem, chunking, threads):
    cfg, inputs = problem
    before = grucy.get_num_threads()
    grucy.set_num_threads(threads)
    try:
        with kernels(chunking):
            got = run_layer(grucy.GRU(**cfg), inputs)
    finally:
        grucy.set_num_threads(before)
    expected = run_layer(reference.GRU(**cfg), inputs)
    assert_results_close(got, expected, cfg["dtype"])


def _relayout(a, how):
    if a is None or how == "C":
        return a
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "negative":
        return np.flip(np.ascontiguousarray(np.flip(a)))
    if how == "strided":
        big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
        view = big[(slice(None, None, 2),) * a.ndim]
        view[...] = a
        return view
    ro = a.copy()
    ro.flags.writeable = False
    return ro


@CI
@given(problems(), st.sampled_from(["fortran", "negative", "strided", "read-only"]),
       st.sampled_from([np.float32, np.float64, np.int64]))
def test_layout_and_given_dtype_never_change_a_bit(problem, how, given_dtype):
    """The same values in another layout (and, for x, handed over in another dtype that
    holds them exactly) give bitwise identical results; nothing given is modified."""
    cfg, inputs = problem
    if given_dtype is np.int64:
        inputs = dict(inputs, x=np.round(inputs["x"]))
    expected = run_layer(grucy.GRU(**cfg), inputs)
    x = inputs["x"]
    if given_dtype is np.float64 or np.dtype(given_dtype).kind == "i":
        x = x.astype(given_dtype)
    changed = {k: _relayout(v, how) for k, v in dict(inputs, x=x).items()}
    copies = {k: None if v is None else v.copy() for k, v in changed.items()}
    got = run_layer(grucy.GRU(**cfg), changed)
    assert_results_equal(got, expected)
    for k, v in changed.items():
        if v is not None:
            np.testing.assert_array_equal(v, copies[k], err_msg=f"{k} was modified")


@CI
@given(problems(), st.randoms(use_true_random=False))
def test_batch_order_does_not_matter(problem, random):
    """Permuting the sequences of a batch permutes the results (lengths included)."""
    cfg, inputs = problem
    cfg = dict(cfg, dropout=0.0)  # masks are drawn per position in the batch
    B = inputs["dy"].shape[0 if cfg["batch_first"] else 1]
    perm = np.array(random.sample(range(B), B))
    bax = 0 if cfg["batch_first"] else 1

    def permute(name, a):
        if a is None:
            return None
        if name == "lengths":
            return a[perm]
        return np.take(a, perm, axis=bax if name in ("x", "dy") else 1)

    base = run_layer(grucy.GRU(**cfg), inputs)
    moved = run_layer(grucy.GRU(**cfg), {k: permute(k, v) for k, v in inputs.items()})
    for key in ("y", "dx"):
        base[key] = np.take(base[key], perm, axis=bax)
    for key in ("h_n", "dh0"):
        base[key] = np.take(base[key], perm, axis=1)
    assert_results_close(moved, base, cfg["dtype"])
