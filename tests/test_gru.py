"""Tests of the compiled layer grucy.GRU.

Oracles, in order of independence: central finite differences (float64), the NumPy
reference grucy.reference.GRU (float32 and float64), and torch.nn.GRU when installed.

``GRUCY_TEST_LAYER=reference`` runs this whole file against the reference instead (a check
of the tests themselves; the tests needing the compiled module's thread API then skip).
``GRUCY_TEST_PLAN=GxC`` runs every kernel call with G row groups x C unit chunks (and
G*C threads) whatever its size, so the whole file checks the parallel paths too;
``GRUCY_ISA=avx2|portable|blas`` (read at import) picks the GEMM kernels.  CI runs the
file under each.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

import grucy
from grucy.reference import GRU as RefGRU

from conftest import (
    TIGHT_TOLERANCES,
    available_isas,
    forced_plan,
    kernels,
    assert_close,
    assert_results_close,
    assert_results_equal,
    check_finite_differences,
    importorskip,
    make_inputs,
    run_layer,
)

if os.environ.get("GRUCY_TEST_LAYER") == "reference":
    GRU = RefGRU
    _needs_compiled = pytest.mark.skip(reason="GRUCY_TEST_LAYER=reference")
else:
    GRU = grucy.GRU
    _needs_compiled = pytest.mark.skipif(False, reason="")

DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True, scope="module")
def _plan_choice():
    plan = os.environ.get("GRUCY_TEST_PLAN", "")
    if GRU is RefGRU or not plan:
        yield
        return
    groups, chunks = (int(v) for v in plan.lower().split("x"))
    with forced_plan(groups, chunks, align=1):
        yield


def make_pair(*args, **kwargs):
    """The layer under test and the reference, built with the same seed (same weights)."""
    kwargs.setdefault("seed", 0)
    return GRU(*args, **kwargs), RefGRU(*args, **kwargs)


# --------------------------------------------------------------------------------------
# 1. finite differences (float64)

FD_CONFIGS = {
    "plain": dict(),
    "lengths": dict(lengths=[3, 1, 4]),  # unsorted, with a length-1 sequence (T=4)
    "bidirectional": dict(bidirectional=True),
    "two_layers": dict(num_layers=2),
    "batch_first": dict(batch_first=True),
    "no_bias": dict(bias=False),
    "all_together": dict(num_layers=2, bidirectional=True, batch_first=True,
                         lengths=[2, 4, 1]),
}


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("config", list(FD_CONFIGS), ids=list(FD_CONFIGS))
def test_gradients_match_finite_differences(config, reset_after, rng):
    opts = dict(FD_CONFIGS[config])
    lengths = opts.pop("lengths", False)
    layer = GRU(3, 2, reset_after=reset_after, dtype=np.float64, seed=1, **opts)
    inputs = make_inputs(rng, layer, T=4, B=3, lengths=lengths)
    check_finite_differences(layer, inputs)


@_needs_compiled
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("config", ["lengths", "all_together"])
def test_split_plans_match_finite_differences(config, reset_after, rng,
                                              restore_num_threads):
    opts = dict(FD_CONFIGS[config])
    lengths = opts.pop("lengths", False)
    # Three row groups of one row and four chunks of one unit: every step of every
    # forward and backward crosses threads.
    layer = GRU(3, 4, reset_after=reset_after, dtype=np.float64, seed=1, **opts)
    inputs = make_inputs(rng, layer, T=4, B=3, lengths=lengths)
    with forced_plan(3, 4, align=1):
        check_finite_differences(layer, inputs)


# --------------------------------------------------------------------------------------
# 2. against the NumPy reference

# (T, B, I, H): every one of 1, 3, 17, 33, 65 as I and as H; B=1 and T=1 both appear.
SHAPES = [
    (1, 1, 1, 1),
    (3, 1, 3, 17),
    (1, 4, 17, 3),
    (5, 2, 33, 65),
    (4, 3, 65, 33),
    (6, 17, 1, 33),
    (2, 5, 3, 1),
]
VARIANTS = {
    # layer options, make_inputs options
    "plain": (dict(), dict(h0=False, dh_n=False)),
    "bidir_lengths_bf": (dict(bidirectional=True, batch_first=True), dict(lengths=True)),
    "stacked_bidir_lengths": (dict(num_layers=2, bidirectional=True), dict(lengths=True)),
    "stacked_nobias_bf": (dict(num_layers=2, bias=False, batch_first=True), dict()),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
@pytest.mark.parametrize("shape", SHAPES, ids=["T{}-B{}-I{}-H{}".format(*s) for s in SHAPES])
def test_matches_reference(shape, variant, reset_after, dtype, rng):
    T, B, I, H = shape
    layer_opts, input_opts = VARIANTS[variant]
    layer, ref = make_pair(I, H, reset_after=reset_after, dtype=dtype, **layer_opts)
    inputs = make_inputs(rng, layer, T, B, **input_opts)
    got = run_layer(layer, inputs)
    expected = run_layer(ref, inputs)
    for key in ("y", "h_n", "dx", "dh0"):
        assert got[key].dtype == dtype, key
    assert_results_close(got, expected, dtype)


@_needs_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
@pytest.mark.parametrize("H, groups, chunks, align",
                         [(1, 3, 1, 1), (17, 2, 8, 1), (33, 3, 4, 16), (100, 2, 3, 16)])
def test_split_plans_match_reference(H, groups, chunks, align, variant, reset_after,
                                     dtype, rng):
    # 17 units in 8 ragged chunks; 100 units on 16-unit bounds: 32, 32, 36; 7 rows in
    # 2 or 3 groups, with variable lengths some groups idle for some steps.
    layer_opts, input_opts = VARIANTS[variant]
    layer, ref = make_pair(5, H, reset_after=reset_after, dtype=dtype, **layer_opts)
    inputs = make_inputs(rng, layer, 4, 7, **input_opts)
    with forced_plan(groups, chunks, align):
        got = run_layer(layer, inputs)
    assert_results_close(got, run_layer(ref, inputs), dtype)


@_needs_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("plan", [(1, 1), (3, 2)], ids=["one_thread", "3x2"])
@pytest.mark.parametrize("isa", ["avx512", "avx2", "portable", "blas"])
def test_every_gemm_kernel_matches_reference(isa, plan, reset_after, dtype, rng):
    # B = 19: two full 8-row register blocks and a 3-row rest; H = 70: panels of 32 (16
    # in float64) columns with a ragged last one, in every gate block.
    if isa not in available_isas():
        pytest.skip(f"this CPU cannot run the {isa} kernels")
    layer, ref = make_pair(5, 70, bidirectional=True, reset_after=reset_after, dtype=dtype)
    inputs = make_inputs(rng, layer, 6, 19, lengths=True)
    with kernels(isa), forced_plan(*plan, align=1):
        got = run_layer(layer, inputs)
    assert_results_close(got, run_layer(ref, inputs), dtype)


@_needs_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("transposed", [True, False], ids=["a_wT", "a_w"])
@pytest.mark.parametrize("isa", ["avx512", "avx2", "portable"])
def test_packed_kernel_matches_numpy(isa, transposed, dtype, rng):
    """The GEMM (_pgemm.h) on its own, on every kernel: every row-block remainder
    (M = 1 .. 9, 17) and ragged panels (N around multiples of 8, 16 and 32)."""
    if isa not in available_isas():
        pytest.skip(f"this CPU cannot run the {isa} kernels")
    with kernels(isa):
        for M in [1, 2, 3, 4, 5, 6, 7, 8, 9, 17]:
            for N in [1, 7, 8, 9, 15, 16, 17, 31, 33, 64]:
                for K in [1, 3, 64]:
                    a = rng.standard_normal((M, K)).astype(dtype)
                    w = rng.standard_normal((N, K) if transposed else (K, N)).astype(dtype)
                    c = np.full((M, N), np.nan, dtype)
                    grucy._gru._pgemm_probe(a, w, transposed, c, 1)
                    want = a.astype(np.float64) @ (w.T if transposed else w).astype(np.float64)
                    assert_close(c, want, dtype, err_msg=f"M={M} N={N} K={K}")


@_needs_compiled
def test_kernel_row_maps_are_checked_permutations(rng):
    """The kernels write y (forward) and dX (backward) through a caller's row map; one
    that is not a permutation of the batch rows is refused before anything is written."""
    from grucy import _gru
    T, B, I, H = 3, 4, 2, 5
    w_ih, w_hh = rng.standard_normal((3 * H, I)), rng.standard_normal((3 * H, H))
    b = np.zeros(3 * H)
    x = rng.standard_normal((T, B, I))
    bs = np.full(T, B, np.intc)
    for bad in ([0, 1, 2], [0, 1, 1, 3], [0, 1, 2, 4], [-1, 0, 1, 2]):
        y = np.zeros((T, B, H))
        with pytest.raises(ValueError, match="row map"):
            _gru.forward(x, w_ih, w_hh, b, b, np.zeros((B, H)), y, bs, False, True, False,
                         None, np.array(bad, np.intp))
        assert not y.any()
    # a valid map only moves rows
    y0, y1 = np.zeros((T, B, H)), np.zeros((T, B, H))
    perm = np.array([2, 0, 3, 1], np.intp)
    _gru.forward(x, w_ih, w_hh, b, b, np.zeros((B, H)), y0, bs, False, True, False)
    _gru.forward(x, w_ih, w_hh, b, b, np.zeros((B, H)), y1, bs, False, True, False,
                 None, perm)
    np.testing.assert_array_equal(y1[:, perm], y0)


def test_outputs_past_length_are_zero(rng):
    layer = GRU(3, 4, bidirectional=True, num_layers=2, dtype=np.float64, seed=0)
    inputs = make_inputs(rng, layer, T=5, B=3, lengths=[5, 2, 1])
    res = run_layer(layer, inputs)
    assert np.all(res["y"][2:, 1] == 0) and np.all(res["y"][1:, 2] == 0)
    assert np.all(res["dx"][2:, 1] == 0) and np.all(res["dx"][1:, 2] == 0)
    assert np.all(res["y"][:2, 1] != 0)


def test_lengths_equal_to_truncated_sequences(rng):
    """A sequence of length l gives what the same sequence cut to l steps gives."""
    layer = GRU(3, 4, bidirectional=True, num_layers=2, dtype=np.float64, seed=0)
    inputs = make_inputs(rng, layer, T=5, B=3, lengths=[5, 2, 1])
    res = run_layer(layer, inputs)
    for b, length in enumerate(inputs["lengths"]):
        single = dict(x=inputs["x"][:length, b:b + 1], h0=inputs["h0"][:, b:b + 1],
                      lengths=None, dy=inputs["dy"][:length, b:b + 1],
                      dh_n=inputs["dh_n"][:, b:b + 1])
        one = run_layer(layer, single)
        assert_close(res["y"][:length, b:b + 1], one["y"], np.float64)
        assert_close(res["h_n"][:, b:b + 1], one["h_n"], np.float64)
        assert_close(res["dx"][:length, b:b + 1], one["dx"], np.float64)
        assert_close(res["dh0"][:, b:b + 1], one["dh0"], np.float64)


# --------------------------------------------------------------------------------------
# 3. against torch.nn.GRU

def _torch_run(torch, layer, inputs):
    """The same forward+backward in torch, with the layer's weights; returns numpy results."""
    tdtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[
        layer.dtype]
    net = torch.nn.GRU(layer.input_size, layer.hidden_size, layer.num_layers,
                       bias=layer.bias, batch_first=layer.batch_first,
                       bidirectional=layer.bidirectional, dtype=tdtype)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    x = torch.tensor(inputs["x"], requires_grad=True)
    h0 = None if inputs["h0"] is None else torch.tensor(inputs["h0"], requires_grad=True)
    T = x.shape[1] if layer.batch_first else x.shape[0]
    if inputs["lengths"] is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.as_tensor(inputs["lengths"]), batch_first=layer.batch_first,
            enforce_sorted=False)
        out, h_n = net(packed, h0)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out, batch_first=layer.batch_first, total_length=T)
    else:
        y, h_n = net(x, h0)
    loss = (y * torch.from_numpy(inputs["dy"])).sum()
    if inputs["dh_n"] is not None:
        loss = loss + (h_n * torch.from_numpy(inputs["dh_n"])).sum()
    loss.backward()
    return dict(
        y=y.detach().numpy(), h_n=h_n.detach().numpy(), dx=x.grad.numpy(),
        dh0=None if h0 is None else h0.grad.numpy(),
        grads={k: p.grad.numpy() for k, p in net.named_parameters()},
    )


TORCH_CONFIGS = {
    "plain": (dict(), dict()),
    "lengths": (dict(), dict(lengths=True)),
    "bidir_lengths": (dict(bidirectional=True), dict(lengths=True)),
    "stacked_lengths_bf": (dict(num_layers=2, batch_first=True), dict(lengths=True)),
    "stacked_bidir_lengths_bf": (dict(num_layers=2, bidirectional=True, batch_first=True),
                                 dict(lengths=True)),
    "stacked_bidir_no_h0": (dict(num_layers=2, bidirectional=True), dict(h0=False)),
    "no_bias": (dict(bias=False, bidirectional=True), dict(lengths=True)),
}


@pytest.mark.parametrize("config", list(TORCH_CONFIGS), ids=list(TORCH_CONFIGS))
def test_matches_torch_float64(config, rng):
    torch = importorskip("torch")
    layer_opts, input_opts = TORCH_CONFIGS[config]
    layer = GRU(5, 7, dtype=np.float64, seed=3, **layer_opts)
    inputs = make_inputs(rng, layer, T=6, B=4, **input_opts)
    got = run_layer(layer, inputs)
    expected = _torch_run(torch, layer, inputs)
    tol = {np.dtype(np.float64): dict(rtol=1e-9, atol=1e-12)}
    for key in ("y", "h_n", "dx"):
        assert_close(got[key], expected[key], np.float64, tolerances=tol, err_msg=key)
    if expected["dh0"] is not None:
        assert_close(got["dh0"], expected["dh0"], np.float64, tolerances=tol, err_msg="dh0")
    assert got["grads"].keys() == expected["grads"].keys()
    for name, g in expected["grads"].items():
        assert_close(got["grads"][name], g, np.float64, tolerances=tol, err_msg=name)


def test_matches_torch_float32(rng):
    torch = importorskip("torch")
    layer = GRU(9, 17, num_layers=2, bidirectional=True, dtype=np.float32, seed=4)
    inputs = make_inputs(rng, layer, T=7, B=5, lengths=True)
    got = run_layer(layer, inputs)
    expected = _torch_run(torch, layer, inputs)
    assert_results_close(got, expected, np.float32)


# --------------------------------------------------------------------------------------
# 4. layouts: time-major and batch-first are the same computation

@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
def test_batch_first_equals_time_major(dtype, lengths, rng):
    opts = dict(num_layers=2, bidirectional=True, dtype=dtype, seed=5)
    tm, bf = GRU(4, 6, **opts), GRU(4, 6, batch_first=True, **opts)
    inputs = make_inputs(rng, tm, T=5, B=3, lengths=lengths)
    res_tm = run_layer(tm, inputs)
    inputs_bf = dict(inputs, x=np.ascontiguousarray(inputs["x"].transpose(1, 0, 2)),
                     dy=np.ascontiguousarray(inputs["dy"].transpose(1, 0, 2)))
    res_bf = run_layer(bf, inputs_bf)
    assert res_bf["y"].shape == (3, 5, 12) and res_bf["dx"].shape == (3, 5, 4)
    res_bf["y"] = res_bf["y"].transpose(1, 0, 2)
    res_bf["dx"] = res_bf["dx"].transpose(1, 0, 2)
    assert_results_close(res_bf, res_tm, dtype, tolerances=TIGHT_TOLERANCES)


@pytest.mark.parametrize("layer_class", [GRU, RefGRU], ids=["layer", "reference"])
@pytest.mark.parametrize("config", ["plain", "lengths", "all_together"])
def test_backward_without_dy_is_backward_with_zero_dy(layer_class, config, rng):
    """``backward(dh_n=...)``, for readouts of the final state only, gives what a zero dy
    gives, bit for bit, and makes no dy array (the layer's own gradients and dx only)."""
    opts = {k: v for k, v in FD_CONFIGS[config].items() if k != "lengths"}
    layer = layer_class(3, 4, dtype=np.float32, seed=1, **opts)
    inputs = make_inputs(rng, layer, T=4, B=3, lengths=bool(FD_CONFIGS[config].get(
        "lengths")))
    results = []
    for dy in (np.zeros_like(inputs["dy"]), None):
        layer.zero_grad()
        y, h_n = layer.forward(inputs["x"], h0=inputs["h0"], lengths=inputs["lengths"])
        dx, dh0 = layer.backward(dy, dh_n=inputs["dh_n"])
        results.append(dict(y=y, h_n=h_n, dx=dx, dh0=dh0,
                            grads={k: g.copy() for k, g in layer.grads.items()}))
    assert_results_equal(results[1], results[0])
    layer.forward(inputs["x"], h0=inputs["h0"], lengths=inputs["lengths"])
    layer.backward()  # no gradient at all: zeros, and the cache is used up
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(dh_n=inputs["dh_n"])


# --------------------------------------------------------------------------------------
# 5. threads

@pytest.fixture
def restore_num_threads():
    before = grucy.get_num_threads()
    yield
    grucy.set_num_threads(before)


@_needs_compiled
def test_thread_api(restore_num_threads):
    grucy.set_num_threads(1)
    assert grucy.get_num_threads() == 1
    with pytest.raises(ValueError):
        grucy.set_num_threads(0)
    grucy.set_num_threads(2)  # grucy's own thread team: no OpenMP needed
    assert grucy.get_num_threads() == 2


@_needs_compiled
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("T, B, I, H", [(5, 64, 32, 256), (60, 1, 40, 64)],
                         ids=["chunked", "serial_threaded_gemms"])
def test_one_and_two_threads_bitwise_equal(T, B, I, H, dtype, reset_after, rng,
                                           restore_num_threads):
    if grucy._gru.kernel_isa() == "blas":
        pytest.skip("GRUCY_ISA=blas: BLAS's sums depend on the rows of each call")
    # chunked: the one-team kernels; serial: one thread in the time loop, but its GEMMs
    # before and after the loop large enough to run on the team
    layer = GRU(I, H, bidirectional=True, reset_after=reset_after, dtype=dtype, seed=6)
    inputs = make_inputs(rng, layer, T=T, B=B, lengths=B > 1)
    grucy.set_num_threads(1)
    one = run_layer(layer, inputs)
    grucy.set_num_threads(2)
    two = run_layer(layer, inputs)
    assert_results_equal(two, one)


# --------------------------------------------------------------------------------------
# 6. dropout

@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_dropout_matches_reference(dtype, rng):
    layer, ref = make_pair(4, 8, num_layers=3, bidirectional=True, dropout=0.5, dtype=dtype,
                           seed=7)
    inputs = make_inputs(rng, layer, T=5, B=3, lengths=True)
    for _ in range(2):  # the second call checks that both mask streams advance alike
        got = run_layer(layer, inputs)
        expected = run_layer(ref, inputs)
        assert_results_close(got, expected, dtype)


@_needs_compiled
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_reused_buffers_give_fresh_results(reset_after, rng):
    """A layer reuses its kernel buffers from call to call; every call must still give
    bit for bit what a fresh copy of the layer gives, whatever came before (larger or
    smaller batches, other lengths, inference in between)."""
    import copy
    layer = GRU(5, 40, num_layers=2, bidirectional=True, reset_after=reset_after,
                dtype=np.float64, seed=3)
    pristine = copy.deepcopy(layer)
    calls = [(6, 4, True, True), (3, 2, False, True), (7, 5, True, False),
             (7, 5, True, True), (2, 3, False, False), (6, 4, True, True)]
    buffers = None
    for T, B, lengths, training in calls:  # the largest, 7x5, comes third
        inputs = make_inputs(rng, layer, T, B, lengths=lengths)
        fresh = copy.deepcopy(pristine)
        if training:
            assert_results_equal(run_layer(layer, inputs), run_layer(fresh, inputs))
        else:
            got = layer.forward(inputs["x"], inputs["h0"], inputs["lengths"], training=False)
            want = fresh.forward(inputs["x"], inputs["h0"], inputs["lengths"], training=False)
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)
        if (T, B) == (7, 5) and buffers is None:
            buffers = layer._scratch[0]["G"]
    # the gate buffer of the largest call served every later (smaller) call
    assert layer._scratch[0]["G"] is buffers
    # copies never share buffers
    assert "_scratch" not in copy.copy(layer).__dict__


def test_dropout_changes_training_output_only(rng):
    drop = GRU(4, 8, num_layers=2, dropout=0.5, dtype=np.float64, seed=8)
    plain = GRU(4, 8, num_layers=2, dtype=np.float64, seed=8)
    inputs = make_inputs(rng, drop, T=5, B=3)
    y_plain, h_plain = plain.forward(inputs["x"], inputs["h0"], training=False)
    y_eval, h_eval = drop.forward(inputs["x"], inputs["h0"], training=False)
    np.testing.assert_array_equal(y_eval, y_plain)
    np.testing.assert_array_equal(h_eval, h_plain)
    y_train, _ = drop.forward(inputs["x"], inputs["h0"], training=True)
    assert not np.allclose(y_train, y_plain)


def test_dropout_masks_drawn_in_training_only(rng):
    """Evaluation forwards do not consume dropout masks."""
    layer, ref = make_pair(4, 8, num_layers=2, dropout=0.5, dtype=np.float64, seed=9)
    inputs = make_inputs(rng, layer, T=5, B=3)
    run_layer(layer, inputs)
    run_layer(ref, inputs)
    layer.forward(inputs["x"], inputs["h0"], training=False)
    assert_results_close(run_layer(layer, inputs), run_layer(ref, inputs), np.float64)


def test_single_layer_dropout_is_inactive(rng):
    """Dropout acts between layers only: one layer with dropout computes without it."""
    drop = GRU(4, 8, dropout=0.5, dtype=np.float64, seed=10)
    plain = GRU(4, 8, dtype=np.float64, seed=10)
    inputs = make_inputs(rng, drop, T=5, B=3)
    assert_results_close(run_layer(drop, inputs), run_layer(plain, inputs), np.float64,
                         tolerances=TIGHT_TOLERANCES)


# --------------------------------------------------------------------------------------
# 7. bad arguments

@pytest.mark.parametrize("name", ["input_size", "hidden_size", "num_layers"])
@pytest.mark.parametrize("value, exc", [(0, ValueError), (-2, ValueError), (2.5, TypeError),
                                        ("3", TypeError), (True, TypeError)])
def test_bad_sizes(name, value, exc):
    kwargs = dict(input_size=3, hidden_size=4, num_layers=1)
    kwargs[name] = value
    with pytest.raises(exc, match=name):
        GRU(**kwargs)


@pytest.mark.parametrize("value, exc", [(-0.1, ValueError), (1.0, ValueError),
                                        (1.5, ValueError), ("0.5", TypeError),
                                        (None, TypeError)])
def test_bad_dropout(value, exc):
    with pytest.raises(exc, match="dropout"):
        GRU(3, 4, num_layers=2, dropout=value)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex128, "not a dtype"])
def test_bad_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        GRU(3, 4, dtype=dtype)


@pytest.fixture
def small_layer():
    return GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)


@pytest.fixture
def small_inputs(rng, small_layer):
    return make_inputs(rng, small_layer, T=5, B=2)


def test_bad_x(small_layer, small_inputs):
    x = small_inputs["x"]
    with pytest.raises(ValueError, match=r"\bx\b"):
        small_layer.forward(x[0])  # 2-D
    with pytest.raises(ValueError, match=r"\bx\b"):
        small_layer.forward(x[None])  # 4-D
    with pytest.raises(ValueError, match="input_size"):
        small_layer.forward(x[:, :, :2])
    with pytest.raises(ValueError, match=r"\bx\b"):
        small_layer.forward(x[:0])  # no steps
    bad = x.copy()
    bad[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"\bx\b"):
        small_layer.forward(bad)
    with pytest.raises(TypeError, match=r"\bx\b"):
        small_layer.forward(x.astype(np.complex128))


def test_bad_h0(small_layer, small_inputs):
    x, h0 = small_inputs["x"], small_inputs["h0"]
    for bad in (h0[:2], h0[:, :1], h0[..., :3], h0[0]):
        with pytest.raises(ValueError, match="h0"):
            small_layer.forward(x, h0=bad)


def test_bad_lengths(small_layer, small_inputs):
    x = small_inputs["x"]  # T=5, B=2
    for bad in ([5], [5, 5, 5], [[5, 5]]):
        with pytest.raises(ValueError, match="lengths"):
            small_layer.forward(x, lengths=bad)
    for bad in ([0, 5], [5, 6], [-1, 2]):
        with pytest.raises(ValueError, match="lengths"):
            small_layer.forward(x, lengths=bad)
    for bad in ([1.5, 2.0], ["a", "b"]):
        with pytest.raises(TypeError, match="lengths"):
            small_layer.forward(x, lengths=bad)


def test_backward_without_forward(small_layer, small_inputs):
    with pytest.raises(RuntimeError, match="forward"):
        small_layer.backward(small_inputs["dy"])


def test_backward_after_eval_forward(small_layer, small_inputs):
    small_layer.forward(small_inputs["x"], training=False)
    with pytest.raises(RuntimeError, match="forward"):
        small_layer.backward(small_inputs["dy"])


def test_second_backward(small_layer, small_inputs):
    small_layer.forward(small_inputs["x"])
    small_layer.backward(small_inputs["dy"])
    with pytest.raises(RuntimeError, match="forward"):
        small_layer.backward(small_inputs["dy"])


def test_bad_dy_and_dh_n(small_layer, small_inputs):
    dy, dh_n = small_inputs["dy"], small_inputs["dh_n"]
    small_layer.forward(small_inputs["x"])
    for bad in (dy[:4], dy[:, :1], dy[..., :7], dy.transpose(1, 0, 2), dy[0]):
        with pytest.raises(ValueError, match=r"\bdy\b"):
            small_layer.backward(bad)
    for bad in (dh_n[:1], dh_n[..., :3]):
        with pytest.raises(ValueError, match="dh_n"):
            small_layer.backward(dy, dh_n=bad)


def test_failed_backward_keeps_forward(small_layer, small_inputs, rng):
    """A backward refused for a bad dy leaves the forward usable and the grads untouched."""
    inputs = small_inputs
    expected = run_layer(small_layer, inputs)
    small_layer.zero_grad()
    small_layer.forward(inputs["x"], inputs["h0"])
    with pytest.raises(ValueError, match=r"\bdy\b"):
        small_layer.backward(inputs["dy"][:3], inputs["dh_n"])
    for g in small_layer.grads.values():
        assert not g.any()
    dx, dh0 = small_layer.backward(inputs["dy"], inputs["dh_n"])
    np.testing.assert_array_equal(dx, expected["dx"])
    np.testing.assert_array_equal(dh0, expected["dh0"])


def test_load_state_dict_refuses_and_keeps_parameters(small_layer):
    before = small_layer.state_dict()
    sd = GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=99).state_dict()

    missing = dict(sd)
    del missing["bias_hh_l1_reverse"]
    with pytest.raises(ValueError, match="bias_hh_l1_reverse"):
        small_layer.load_state_dict(missing)

    extra = dict(sd, weight_ih_l2=np.zeros((12, 8)))
    with pytest.raises(ValueError, match="weight_ih_l2"):
        small_layer.load_state_dict(extra)

    wrong = dict(sd)
    wrong["weight_hh_l1_reverse"] = np.zeros((12, 5))  # the last weight: all others valid
    with pytest.raises(ValueError, match="weight_hh_l1_reverse"):
        small_layer.load_state_dict(wrong)

    after = small_layer.state_dict()
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)


# --------------------------------------------------------------------------------------
# 8. gradient accumulation

def test_gradients_accumulate_until_zero_grad(rng):
    layer = GRU(3, 5, num_layers=2, bidirectional=True, dtype=np.float64, seed=11)
    first = make_inputs(rng, layer, T=4, B=3, lengths=True)
    second = make_inputs(rng, layer, T=6, B=2)
    g1 = run_layer(layer, first)["grads"]
    g2 = run_layer(layer, second)["grads"]
    layer.zero_grad()
    run_layer(layer, first, zero_grad=False)
    summed = run_layer(layer, second, zero_grad=False)["grads"]
    for k in g1:
        assert_close(summed[k], g1[k] + g2[k], np.float64, tolerances=TIGHT_TOLERANCES,
                     err_msg=k)
    grads_arrays = dict(layer.grads)
    layer.zero_grad()
    for k, g in layer.grads.items():
        assert not g.any(), k
        assert g is grads_arrays[k], "zero_grad should reset in place"


# --------------------------------------------------------------------------------------
# 9. state_dict and parameters

def test_state_dict_round_trip(rng):
    opts = dict(num_layers=2, bidirectional=True, dtype=np.float64)
    a, b = GRU(3, 4, seed=1, **opts), GRU(3, 4, seed=2, **opts)
    sd = a.state_dict()
    assert list(sd) == list(a.grads)
    b.load_state_dict(sd)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    inputs = make_inputs(rng, a, T=4, B=2)
    assert_results_equal(run_layer(b, inputs), run_layer(a, inputs))
    sd["weight_ih_l0"][...] = 0  # state_dict() returns copies
    assert a.state_dict()["weight_ih_l0"].any()


def test_parameters_are_updated_in_place(rng):
    layer = GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    params = layer.parameters()
    new = GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=2).state_dict()
    layer.load_state_dict(new)
    for p, q, (name, value) in zip(params, layer.parameters(), new.items()):
        assert p is q, name
        np.testing.assert_array_equal(p, value, err_msg=name)
    # ... and the layer computes with exactly these arrays.
    inputs = make_inputs(rng, layer, T=4, B=2)
    y0, _ = layer.forward(inputs["x"], training=False)
    params[0][...] = 0
    y1, _ = layer.forward(inputs["x"], training=False)
    assert not np.allclose(y0, y1)


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_matches_torch(bias):
    torch = importorskip("torch")
    layer = GRU(3, 4, num_layers=2, bidirectional=True, bias=bias, dtype=np.float64)
    net = torch.nn.GRU(3, 4, 2, bidirectional=True, bias=bias)
    ours, theirs = layer.state_dict(), net.state_dict()
    assert list(ours) == list(theirs)
    for k, v in theirs.items():
        assert ours[k].shape == tuple(v.shape), k
    assert [p.shape for p in layer.parameters()] == [tuple(p.shape) for p in net.parameters()]
    layer.load_state_dict(theirs)  # torch tensors are accepted as values
    for k, v in theirs.items():
        np.testing.assert_array_equal(layer.state_dict()[k], v.double().numpy())


# --------------------------------------------------------------------------------------
# 10. inputs untouched; strides

@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_inputs_not_modified(batch_first, rng):
    layer = GRU(3, 4, num_layers=2, bidirectional=True, batch_first=batch_first,
                dropout=0.3, dtype=np.float32, seed=0)
    inputs = make_inputs(rng, layer, T=5, B=3, lengths=True)
    copies = {k: v.copy() for k, v in inputs.items()}
    run_layer(layer, inputs)
    for k, v in inputs.items():
        np.testing.assert_array_equal(v, copies[k], err_msg=k)


def test_results_do_not_alias_workspace(rng):
    """Arrays returned by one call are not overwritten by the next one."""
    layer = GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    first = make_inputs(rng, layer, T=5, B=3)
    y, h_n = layer.forward(first["x"], first["h0"])
    dx, dh0 = layer.backward(first["dy"], first["dh_n"])
    kept = [a.copy() for a in (y, h_n, dx, dh0)]
    run_layer(layer, make_inputs(rng, layer, T=5, B=3))
    for a, b in zip((y, h_n, dx, dh0), kept):
        np.testing.assert_array_equal(a, b)


def test_mutating_x_after_forward_does_not_change_backward(rng):
    layer = GRU(3, 4, dtype=np.float64, seed=0)
    inputs = make_inputs(rng, layer, T=5, B=3)
    expected = run_layer(layer, inputs)
    layer.zero_grad()
    x = inputs["x"].copy()
    layer.forward(x, inputs["h0"])
    x[...] = 7.0
    layer.backward(inputs["dy"], inputs["dh_n"])
    for k, g in expected["grads"].items():
        np.testing.assert_array_equal(layer.grads[k], g, err_msg=k)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_non_contiguous_inputs(dtype, batch_first, rng):
    layer = GRU(3, 4, num_layers=2, bidirectional=True, batch_first=batch_first, dtype=dtype,
                seed=0)
    inputs = make_inputs(rng, layer, T=5, B=3, lengths=True)
    expected = run_layer(layer, inputs)

    def strided(a, axis):
        """The same values as a view with a step of 2 on ``axis``."""
        shape = list(a.shape)
        shape[axis] *= 2
        big = np.full(shape, 99, dtype=a.dtype)
        index = [slice(None)] * a.ndim
        index[axis] = slice(None, None, 2)
        big[tuple(index)] = a
        view = big[tuple(index)]
        assert not view.flags.c_contiguous
        return view

    variants = {
        "x strided features": dict(x=strided(inputs["x"], 2)),
        "x strided batch": dict(x=strided(inputs["x"], 1 if not batch_first else 0)),
        "x fortran": dict(x=np.asfortranarray(inputs["x"])),
        "x transposed view": dict(x=np.ascontiguousarray(
            inputs["x"].transpose(1, 0, 2)).transpose(1, 0, 2)),
        "h0, dy, dh_n strided": dict(h0=strided(inputs["h0"], 1), dy=strided(inputs["dy"], 2),
                                     dh_n=strided(inputs["dh_n"], 2)),
    }
    for name, change in variants.items():
        got = run_layer(layer, dict(inputs, **change))
        try:
            assert_results_close(got, expected, dtype, tolerances=TIGHT_TOLERANCES)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


# --------------------------------------------------------------------------------------
# misc API

def test_defaults_and_call(rng):
    layer = GRU(3, 4, num_layers=2, dtype=np.float64, seed=0)
    inputs = make_inputs(rng, layer, T=5, B=3)
    zeros = np.zeros_like(inputs["h0"])
    y1, h1 = layer.forward(inputs["x"], training=False)
    y2, h2 = layer.forward(inputs["x"], h0=zeros, training=False)
    y3, h3 = layer(inputs["x"], training=False)
    y4, h4 = layer.forward(inputs["x"], lengths=[5, 5, 5], training=False)
    for y, h in ((y2, h2), (y3, h3), (y4, h4)):
        np.testing.assert_array_equal(y, y1)
        np.testing.assert_array_equal(h, h1)
    # backward without dh_n is backward with dh_n = 0
    layer.forward(inputs["x"])
    dx1, dh01 = layer.backward(inputs["dy"])
    layer.forward(inputs["x"])
    dx2, dh02 = layer.backward(inputs["dy"], dh_n=np.zeros_like(zeros))
    np.testing.assert_array_equal(dx1, dx2)
    np.testing.assert_array_equal(dh01, dh02)


def test_casts_inputs_to_layer_dtype(rng):
    layer = GRU(3, 4, dtype=np.float32, seed=0)
    inputs = make_inputs(rng, layer, T=4, B=2)
    y32, h32 = layer.forward(inputs["x"], training=False)
    y64, h64 = layer.forward(inputs["x"].astype(np.float64), training=False)
    assert y64.dtype == np.float32 and h64.dtype == np.float32
    np.testing.assert_array_equal(y64, y32)


def test_same_seed_same_weights():
    a, b = GRU(3, 4, num_layers=2, seed=123), RefGRU(3, 4, num_layers=2, seed=123)
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(v, v2)
    bound = 1 / np.sqrt(4)
    assert all(np.all(np.abs(p) <= bound) for p in a.parameters())
