"""Low precision: the bf16 and int8 GEMM kernels against a NumPy emulation of their
arithmetic (tests/lowp_emulation.py), bit for bit, on every kernel this CPU can run (the
native VDPBF16PS / VPDPBUSD kernels where it has them, and the exact emulations at every
vector width), on every row and panel remainder; then the layers built on them.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import grucy

from conftest import available_isas
from lowp_emulation import (bf16_bits, bf16_matmul, bf16_round, int8_matmul,
                            int8_quantize_rows, int8_quantize_weights)

_gru = grucy._gru

# Rows: every remainder of the 8-row register block, the one- and two-row paths, a few
# blocks.  Columns: around multiples of 8, 16 and 32 (the panel widths of the portable,
# AVX2 and AVX-512 kernels) and of the four-panel path.  K: odd and even, around the
# pair (bf16) and quad (int8) boundaries.
ROWS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 17]
COLS = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 95, 96, 129, 130]
DEPTHS = [1, 2, 3, 4, 5, 8, 31, 64]


def kernel_choices():
    """(isa, lowp mode) pairs this CPU runs, each a distinct low-precision kernel set."""
    out = [(isa, "native") for isa in ("avx512", "avx2", "portable")
           if isa in available_isas()]
    if "avx512" in available_isas():
        out.append(("avx512", "emulated"))
    return out


@contextlib.contextmanager
def lowp_kernels(isa, mode):
    old_isa = _gru._set_isa(isa)
    old_mode = _gru._set_lowp(mode)
    try:
        yield _gru.lowp_kernels()
    finally:
        _gru._set_lowp(old_mode)
        _gru._set_isa(old_isa)


CHOICES = kernel_choices()
IDS = [f"{isa}-{mode}" for isa, mode in CHOICES]


def _same(got, want, what):
    assert got.shape == want.shape and got.tobytes() == want.tobytes(), (
        f"{what}: {np.sum(got.view(np.uint32) != want.view(np.uint32))} values differ, "
        f"max |diff| {np.nanmax(np.abs(got.astype(np.float64) - want)):.3g}")


def test_kernel_names_and_selection():
    names = _gru.lowp_kernels()
    assert set(names) == {"bf16", "int8"}
    info = _gru.kernel_info()
    assert info["bf16"] == names["bf16"] and info["int8"] == names["int8"]
    with lowp_kernels("portable", "native") as k:
        assert k == {"bf16": "portable-emulated", "int8": "portable-emulated"}
    if "avx512" in available_isas():
        with lowp_kernels("avx512", "emulated") as k:
            assert k == {"bf16": "avx512-emulated", "int8": "avx512-emulated"}
    with pytest.raises(ValueError, match="native"):
        _gru._set_lowp("fast")


@pytest.mark.parametrize("env, want", [
    ({"GRUCY_LOWP": "emulated"}, "emulated"),
    ({"GRUCY_ISA": "portable"}, "portable-emulated"),
    ({"GRUCY_ISA": "avx2"}, "avx2-emulated"),
    ({}, None),
])
def test_kernels_are_chosen_when_grucy_loads(env, want):
    """GRUCY_LOWP and GRUCY_ISA at import: what a CPU without the instructions gets."""
    import os
    import subprocess
    import sys
    if env.get("GRUCY_ISA") == "avx2" and "avx2" not in available_isas():
        pytest.skip("this CPU has no AVX2")
    root = os.path.dirname(os.path.dirname(grucy.__file__))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRUCY_")}
    environ.update(env, PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", "import grucy; k = grucy._gru.lowp_kernels();"
                          " print(k['bf16'], k['int8'])"], env=environ, capture_output=True,
                         text=True, check=True).stdout.split()
    if want is None:      # the best this CPU has, native or not
        with lowp_kernels(available_isas()[0], "native") as best:
            assert out == [best["bf16"], best["int8"]]
    elif want == "emulated":
        assert all(k.endswith("-emulated") for k in out), out
    else:
        assert out == [want, want], out
    bad = subprocess.run([sys.executable, "-c", "import grucy"], capture_output=True,
                         text=True, env={**environ, "GRUCY_LOWP": "fp8"})
    assert bad.returncode != 0 and "GRUCY_LOWP must be one of" in bad.stderr


def test_bf16_conversion_matches_the_definition(rng):
    bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0, 0x80000000, 1, 0x807FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF,
                        0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0x3F808000,
                        0x3F818000, 0x3F80FFFF], np.uint32)
    x = np.concatenate([bits, special]).view(np.float32)
    got = _gru._bf16_round(x).view(np.uint32)
    assert np.array_equal(got >> 16, bf16_bits(x))
    # round half to even, flush of denormals, overflow to inf
    f = np.float32
    assert _gru._bf16_round(np.array([1 + 2**-8, 1 + 3 * 2**-8], f)).tolist() == \
        [1.0, 1 + 2**-6]
    assert _gru._bf16_round(np.array([1e-40, -1e-40, 3.4e38], f)).tolist() == \
        [0.0, -0.0, np.inf]


@pytest.mark.parametrize("isa, mode", CHOICES, ids=IDS)
def test_bf16_gemm_is_exactly_the_emulation(isa, mode, rng):
    with lowp_kernels(isa, mode):
        for M in ROWS:
            for N in COLS:
                K = DEPTHS[(M + N) % len(DEPTHS)]
                a = rng.standard_normal((M, K)).astype(np.float32)
                w = rng.standard_normal((N, K)).astype(np.float32)
                want = bf16_matmul(a, w.T)
                c = np.full((M, N), np.nan, np.float32)
                _gru._bf16_gemm_probe(a, w, True, c)                       # W^T packed
                _same(c, want, f"{M}x{N}x{K} W^T")
                c[:] = np.nan
                _gru._bf16_gemm_probe(a, np.ascontiguousarray(w.T), False, c)  # W packed
                _same(c, want, f"{M}x{N}x{K} W")
                c[:] = np.nan
                _gru._bf16_gemm_probe(np.ascontiguousarray(a.T), w, True, c,
                                      a_transposed=True)
                _same(c, want, f"{M}x{N}x{K} A^T")
                c0 = rng.standard_normal((M, N)).astype(np.float32)
                c = c0.copy()
                _gru._bf16_gemm_probe(a, w, True, c, beta=True)
                _same(c, bf16_matmul(a, w.T, c0), f"{M}x{N}x{K} accumulating")


@pytest.mark.parametrize("isa, mode", CHOICES, ids=IDS)
def test_bf16_gemm_every_depth(isa, mode, rng):
    with lowp_kernels(isa, mode):
        for K in range(1, 20):
            for M, N in ((1, 33), (2, 130), (9, 40)):
                a = rng.standard_normal((M, K)).astype(np.float32)
                w = rng.standard_normal((N, K)).astype(np.float32)
                c = np.empty((M, N), np.float32)
                _gru._bf16_gemm_probe(a, w, True, c)
                _same(c, bf16_matmul(a, w.T), f"K={K}")


@pytest.mark.parametrize("isa, mode", CHOICES, ids=IDS)
def test_bf16_gemm_flushes_tiny_sums_and_keeps_signed_zeros(isa, mode, rng):
    # values whose products and partial sums cross 2^-126: the flush-to-zero of every
    # step, denormal inputs (flushed by the conversion), zeros of both signs
    M, N, K = 9, 40, 12
    scale = np.float32(2.0 ** -63)
    a = (rng.standard_normal((M, K)) * scale).astype(np.float32)
    w = (rng.standard_normal((N, K)) * scale).astype(np.float32)
    a[0] = -0.0
    a[1, ::2] = np.float32(1e-40)
    w[3] = 0.0
    a[2] = np.float32(2.0 ** -70)
    w[5] = -np.float32(2.0 ** -60)
    want = bf16_matmul(a, w.T)
    assert np.any(want == 0) and np.any((want != 0) & (np.abs(want) < 1e-36))
    with lowp_kernels(isa, mode):
        c = np.empty((M, N), np.float32)
        _gru._bf16_gemm_probe(a, w, True, c)
        _same(c, want, "tiny values")


@pytest.mark.parametrize("isa, mode", CHOICES, ids=IDS)
def test_int8_gemm_is_exactly_the_emulation(isa, mode, rng):
    with lowp_kernels(isa, mode):
        for M in ROWS:
            for N in COLS:
                K = DEPTHS[(M * 3 + N) % len(DEPTHS)] + (M % 3)
                a = rng.standard_normal((M, K)).astype(np.float32)
                if M > 2:
                    a[1] = 0.0                         # a zero row: scale 0
                    a[2] *= np.float32(1e3)
                wq, sw = int8_quantize_weights(rng.standard_normal((N, K)).astype(np.float32))
                c = np.full((M, N), np.nan, np.float32)
                _gru._i8_gemm_probe(a, wq, sw, c)
                _same(c, int8_matmul(a, wq, sw), f"{M}x{N}x{K}")


@pytest.mark.parametrize("isa, mode", CHOICES, ids=IDS)
def test_int8_quantization_is_exactly_the_definition(isa, mode, rng):
    a = rng.standard_normal((40, 37)).astype(np.float32)
    a[0] = 0.0
    a[1] = 1e-39                        # 127 / amax overflows: quantized to zero
    a[2, 5] = 7.0                       # one large value
    a[3] = np.arange(37) - 18.0          # halves: round to even
    a[3] *= np.float32(127 / 18) / np.float32(2)
    with lowp_kernels(isa, mode):
        u8, sa = _gru._i8_quant_probe(a)
    q, want_sa = int8_quantize_rows(a)
    assert np.array_equal(u8.astype(np.int32) - 128, q)
    assert sa.tobytes() == want_sa.tobytes()
    assert sa[0] == 0 and sa[1] == 0 and np.all(u8[:2] == 128)
    assert q.min() >= -127 and q.max() <= 127


@pytest.mark.parametrize("isa, mode", CHOICES, ids=IDS)
def test_int8_gemm_large_depth_stays_exact(isa, mode, rng):
    # K = 2051: sums up to ~2^25 in int32, float conversion rounding included
    a = np.abs(rng.standard_normal((5, 2051))).astype(np.float32)
    wq = np.full((40, 2051), 127, np.int8)
    wq[::2] = -127
    sw = np.full(40, 0.01, np.float32)
    with lowp_kernels(isa, mode):
        c = np.empty((5, 40), np.float32)
        _gru._i8_gemm_probe(a, wq, sw, c)
    _same(c, int8_matmul(a, wq, sw), "K=2051")


def test_all_kernels_agree_on_one_problem(rng):
    """The same bits from every bf16 and every int8 kernel of this CPU."""
    a = rng.standard_normal((19, 101)).astype(np.float32)
    w = rng.standard_normal((75, 101)).astype(np.float32)
    wq, sw = int8_quantize_weights(w)
    outs = {}
    for isa, mode in CHOICES:
        with lowp_kernels(isa, mode) as names:
            c = np.empty((19, 75), np.float32)
            _gru._bf16_gemm_probe(a, w, True, c)
            c8 = np.empty((19, 75), np.float32)
            _gru._i8_gemm_probe(a, wq, sw, c8)
            outs[f"{names['bf16']}/{names['int8']}"] = (c, c8)
    first = next(iter(outs.values()))
    for name, (c, c8) in outs.items():
        _same(c, first[0], f"bf16 {name}")
        _same(c8, first[1], f"int8 {name}")
    # and they really are low precision: bf16 differs from float32 by ~2^-9 relative
    exact = a.astype(np.float64) @ w.T.astype(np.float64)
    rel = np.abs(first[0] - exact).max() / np.abs(exact).max()
    assert 1e-5 < rel < 2e-2
    assert np.array_equal(first[0], bf16_matmul(a, w.T))
    assert np.array_equal(bf16_round(first[0]), bf16_round(bf16_matmul(a, w.T)))


# --------------------------------------------------------------------------------------
# bf16 layers

from conftest import forced_plan, make_inputs, run_layer  # noqa: E402

FORMS = [True, False]


def _bits_equal(a, b, what):
    pairs = [(k, a[k], b[k]) for k in ("y", "h_n", "dx", "dh0")]
    pairs += [(f"grads[{k}]", a["grads"][k], b["grads"][k]) for k in b["grads"]]
    for key, x, y in pairs:
        assert x.shape == y.shape and x.tobytes() == y.tobytes(), f"{what}: {key} differs"


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture
def restore_threads():
    before = grucy.get_num_threads()
    old = _gru._force_plan(0, 0)
    _gru._force_plan(*old)
    yield
    grucy.set_num_threads(before)
    _gru._force_plan(*old)


def test_precision_option_is_validated():
    g = grucy.GRU(3, 4, precision="bf16")
    assert g.precision == "bf16" and "precision='bf16'" in repr(g)
    with pytest.raises(ValueError, match="precision"):
        grucy.GRU(3, 4, precision="fp16")
    with pytest.raises(ValueError, match="float32"):
        grucy.GRU(3, 4, precision="bf16", dtype=np.float64)
    g.precision = "fp32"
    assert "precision" not in repr(g)


# The error of a bf16 layer against float64, relative to the largest value of each
# result (README, "Low precision"): bf16 keeps 8 significant bits (2^-9 = 0.002 relative
# per operand), sums in float32; measured 2e-3 .. 5e-3 on these shapes, never more than
# 1e-2 in any test here.
BF16_TOL = 1.5e-2


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("isa, mode", CHOICES, ids=IDS)
def test_bf16_layer_is_close_to_float64_forward_and_backward(isa, mode, reset_after, rng):
    layer = grucy.GRU(13, 70, num_layers=2, bidirectional=True, reset_after=reset_after,
                      seed=7, precision="bf16")
    ref = grucy.GRU(13, 70, num_layers=2, bidirectional=True, reset_after=reset_after,
                    seed=7, dtype=np.float64)
    ref.load_state_dict(layer.state_dict())
    inputs = make_inputs(rng, layer, T=6, B=11, lengths=True)
    with lowp_kernels(isa, mode):
        got = run_layer(layer, inputs)
    want = run_layer(ref, {k: (v.astype(np.float64) if v is not None and v.dtype.kind == "f"
                               else v) for k, v in inputs.items()})
    for key in ("y", "h_n", "dx", "dh0"):
        assert _rel(got[key], want[key]) < BF16_TOL, key
    for name, g in want["grads"].items():
        assert _rel(got["grads"][name], g) < BF16_TOL, name
    # ... and bf16 really is used (float32 agrees with float64 to ~1e-6)
    assert _rel(got["y"], want["y"]) > 1e-5


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
def test_bf16_same_bits_on_every_kernel(reset_after, rng):
    layer = grucy.GRU(13, 70, num_layers=2, bidirectional=True, reset_after=reset_after,
                      seed=6, precision="bf16")
    inputs = make_inputs(rng, layer, 6, 19, lengths=True)
    results = {}
    for isa, mode in CHOICES:
        with lowp_kernels(isa, mode) as names:
            results[names["bf16"]] = run_layer(layer, inputs)
    first = next(iter(results))
    for name, r in results.items():
        _bits_equal(r, results[first], f"{name} vs {first}")


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
def test_bf16_bit_identical_for_any_thread_count(lengths, reset_after, rng,
                                                 restore_threads):
    layer = grucy.GRU(24, 96, num_layers=2, bidirectional=True, reset_after=reset_after,
                      seed=3, precision="bf16")
    inputs = make_inputs(rng, layer, T=9, B=37, lengths=lengths)
    grucy.set_num_threads(1)
    want = run_layer(layer, inputs)
    for threads in (2, 3, 16):
        grucy.set_num_threads(threads)
        _bits_equal(run_layer(layer, inputs), want, f"{threads} threads")
    for groups, chunks in ((2, 1), (1, 3), (3, 5), (4, 4), (1, 6)):
        with forced_plan(groups, chunks, align=1):
            _bits_equal(run_layer(layer, inputs), want, f"plan {groups}x{chunks}")


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
def test_bf16_sequence_does_not_depend_on_its_batch(reset_after, rng, restore_threads):
    grucy.set_num_threads(3)
    T, B, I, H = 7, 19, 5, 97
    layer = grucy.GRU(I, H, num_layers=2, bidirectional=True, reset_after=reset_after,
                      seed=4, precision="bf16")
    inputs = make_inputs(rng, layer, T, B, lengths=True)
    batch = run_layer(layer, inputs)
    lengths = inputs["lengths"]
    for b in (0, 1, B // 2, B - 1):
        L = int(lengths[b])
        alone = run_layer(layer, dict(x=inputs["x"][:L, b:b + 1], h0=inputs["h0"][:, b:b + 1],
                                      lengths=None, dy=inputs["dy"][:L, b:b + 1],
                                      dh_n=inputs["dh_n"][:, b:b + 1]))
        for key in ("y", "dx"):
            assert batch[key][:L, b:b + 1].tobytes() == alone[key].tobytes(), (b, key)
        for key in ("h_n", "dh0"):
            assert batch[key][:, b:b + 1].tobytes() == alone[key].tobytes(), (b, key)


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("B, H", [(1, 300), (3, 64), (2, 33)])
def test_bf16_step_and_stream_give_exactly_a_one_step_forward(B, H, reset_after, rng):
    layer = grucy.GRU(11, H, num_layers=3, reset_after=reset_after, seed=5,
                      precision="bf16")
    x = rng.standard_normal((4, B, 11)).astype(np.float32)
    h = (0.5 * rng.standard_normal((3, B, H))).astype(np.float32)
    stream = layer.stream(B, h)
    for t in range(4):
        y, h_next = layer(x[t:t + 1], h, training=False)
        y_step, h_step = layer.step(x[t], h)
        assert y_step.tobytes() == y[0].tobytes() and h_step.tobytes() == h_next.tobytes()
        assert stream.step(x[t]).tobytes() == y[0].tobytes()
        assert stream.h.tobytes() == h_next.tobytes()
        h = h_next
    # switching the kernels repacks the stream: the same numbers
    y_all, _ = layer(x, training=False)
    for isa, mode in CHOICES:
        with lowp_kernels(isa, mode):
            s = layer.stream(B)
            assert np.stack([s.step(x[t]) for t in range(4)]).tobytes() == y_all.tobytes()


def test_bf16_layer_saves_and_loads_with_its_precision(tmp_path, rng):
    layer = grucy.GRU(5, 9, num_layers=2, seed=1, precision="bf16")
    path = tmp_path / "bf16.grucy"
    grucy.save(layer, path)
    back = grucy.load(path)
    assert back.precision == "bf16"
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    assert back(x)[0].tobytes() == layer(x)[0].tobytes()
    # a file from before the option loads as fp32
    from grucy.io import read_archive, write_archive
    kind, config, arrays = read_archive(path)
    del config["precision"]
    write_archive(path, kind, config, arrays)
    assert grucy.load(path).precision == "fp32"


# --------------------------------------------------------------------------------------
# int8 inference: grucy.quantize

from conftest import importorskip, peer_missing  # noqa: E402


def _float64_twin(layer):
    ref = grucy.GRU(layer.input_size, layer.hidden_size, layer.num_layers,
                    bidirectional=layer.bidirectional, reset_after=layer.reset_after,
                    batch_first=layer.batch_first, dtype=np.float64)
    ref.load_state_dict(layer.state_dict())
    return ref


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("isa, mode", CHOICES, ids=IDS)
def test_int8_layer_is_close_to_float64(isa, mode, reset_after, rng):
    layer = grucy.GRU(13, 70, num_layers=2, bidirectional=True, reset_after=reset_after,
                      seed=7)
    q = grucy.quantize(layer, "int8")
    x = rng.standard_normal((6, 11, 13)).astype(np.float32)
    h0 = (0.5 * rng.standard_normal((4, 11, 70))).astype(np.float32)
    lengths = rng.integers(1, 7, 11)
    with lowp_kernels(isa, mode):
        y, h_n = q(x, h0, lengths=lengths)
    y64, h64 = _float64_twin(layer)(x, h0, lengths=lengths, training=False)
    # 8-bit operands: a few 1e-3 here (README, "Low precision")
    assert np.abs(y - y64).max() < 0.03 and np.abs(h_n - h64).max() < 0.03
    assert np.abs(y - y64).max() > 1e-5          # int8 really is used
    assert np.all(y[lengths[None, :] <= np.arange(6)[:, None]] == 0)   # padding


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
def test_int8_same_bits_on_every_kernel_thread_count_and_plan(reset_after, rng,
                                                              restore_threads):
    layer = grucy.GRU(24, 96, num_layers=2, bidirectional=True, reset_after=reset_after,
                      seed=3)
    q = grucy.quantize(layer)
    x = rng.standard_normal((9, 37, 24)).astype(np.float32)
    lengths = rng.integers(1, 10, 37)
    grucy.set_num_threads(1)
    want = q(x, lengths=lengths)
    runs = {}
    for isa, mode in CHOICES:
        with lowp_kernels(isa, mode) as names:
            runs[names["int8"]] = q(x, lengths=lengths)
    for threads in (2, 3, 16):
        grucy.set_num_threads(threads)
        runs[f"{threads} threads"] = q(x, lengths=lengths)
    for groups, chunks in ((2, 1), (1, 3), (3, 5), (1, 6)):
        with forced_plan(groups, chunks, align=1):
            runs[f"plan {groups}x{chunks}"] = q(x, lengths=lengths)
    for name, (y, h) in runs.items():
        assert y.tobytes() == want[0].tobytes() and h.tobytes() == want[1].tobytes(), name


def test_int8_sequence_does_not_depend_on_its_batch(rng):
    layer = grucy.GRU(5, 97, num_layers=2, bidirectional=True, seed=4)
    q = grucy.quantize(layer)
    x = rng.standard_normal((7, 19, 5)).astype(np.float32)
    lengths = rng.integers(1, 8, 19)
    y, h = q(x, lengths=lengths)
    for b in (0, 1, 9, 18):
        L = int(lengths[b])
        y1, h1 = q(x[:L, b:b + 1])
        assert y[:L, b:b + 1].tobytes() == y1.tobytes() and h[:, b:b + 1].tobytes() == \
            h1.tobytes(), b


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
def test_int8_step_and_stream_give_exactly_a_one_step_forward(reset_after, rng):
    layer = grucy.GRU(11, 70, num_layers=3, reset_after=reset_after, seed=5)
    q = grucy.quantize(layer)
    x = rng.standard_normal((4, 3, 11)).astype(np.float32)
    h = (0.5 * rng.standard_normal((3, 3, 70))).astype(np.float32)
    stream = q.stream(3, h)
    for t in range(4):
        y, h_next = q(x[t:t + 1], h)
        y_step, h_step = q.step(x[t], h)
        assert y_step.tobytes() == y[0].tobytes() and h_step.tobytes() == h_next.tobytes()
        assert stream.step(x[t]).tobytes() == y[0].tobytes()
        h = h_next
    y_all, _ = q(x)
    for isa, mode in CHOICES:
        with lowp_kernels(isa, mode):
            s = q.stream(3)
            assert np.stack([s.step(x[t]) for t in range(4)]).tobytes() == y_all.tobytes()


def test_int8_is_inference_only_and_refuses_onnx(rng):
    layer = grucy.GRU(3, 8, seed=0)
    q = grucy.quantize(layer, "int8")
    with pytest.raises(ValueError, match="inference only"):
        q(np.zeros((2, 1, 3), np.float32), training=True)
    assert not hasattr(q, "backward")
    with pytest.raises(NotImplementedError, match="ONNX"):
        q.to_onnx("x.onnx")
    if not peer_missing("onnx"):      # (to_onnx imports onnx before anything else)
        with pytest.raises(NotImplementedError, match="ONNX Runtime has no quantized GRU"):
            grucy.interop.to_onnx(q)
    with pytest.raises(ValueError, match="int8"):
        grucy.quantize(layer, "int4")
    with pytest.raises(TypeError, match="grucy.GRU"):
        grucy.quantize(object())
    with pytest.raises(ValueError, match="4 features"):
        q(np.zeros((2, 1, 4), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        q(np.full((2, 1, 3), np.nan, np.float32))
    # the float layer is untouched and still trains
    before = layer.state_dict()
    layer(rng.standard_normal((2, 1, 3)))
    layer.backward(np.ones((2, 1, 8), np.float32))
    assert all(np.array_equal(before[k], v) for k, v in layer.state_dict().items())
    assert all(p.flags.writeable for p in layer.parameters())


def test_int8_saves_and_loads(tmp_path, rng):
    layer = grucy.GRU(6, 20, num_layers=2, bidirectional=True, batch_first=True,
                      reset_after=False, bias=False, seed=2)
    q = grucy.quantize(layer)
    path = tmp_path / "q.grucy"
    grucy.save(q, path)
    back = grucy.load(path)
    assert isinstance(back, grucy.QuantizedGRU) and repr(back) == repr(q)
    x = rng.standard_normal((3, 5, 6)).astype(np.float32)
    assert back(x)[0].tobytes() == q(x)[0].tobytes()
    for w, v in zip(q.weights, back.weights):
        for k in w:
            assert w[k].dtype == v[k].dtype and np.array_equal(w[k], v[k]), k


@pytest.mark.parametrize("reset_after", [True], ids=["reset_after"])
def test_int8_error_no_worse_than_torch_dynamic_int8(reset_after, rng):
    torch = importorskip("torch", "the comparison with torch's dynamic int8 GRU")
    import warnings
    worse = []
    for (B, T, I, H) in ((1, 30, 32, 64), (16, 30, 64, 128), (8, 20, 128, 256)):
        layer = grucy.GRU(I, H, seed=B + H)
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        y64, _ = _float64_twin(layer)(x, training=False)
        y8, _ = grucy.quantize(layer)(x)
        m = torch.nn.GRU(I, H)
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.copy_(torch.from_numpy(layer.state_dict()[name]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.qconfig = torch.ao.quantization.default_dynamic_qconfig
            qm = torch.ao.nn.quantized.dynamic.GRU.from_float(m)
            with torch.no_grad():
                yt, _ = qm(torch.from_numpy(x))
        ours = np.abs(y8 - y64).max()
        theirs = np.abs(yt.numpy() - y64).max()
        assert theirs > 1e-4, "torch's GRU did not quantize"
        if not ours <= theirs:
            worse.append(((B, T, I, H), ours, theirs))
    assert not worse, worse


# --------------------------------------------------------------------------------------
# Models: precision="bf16" and grucy.quantize(model, "int8")

def _series(n=120):
    t = np.arange(n)
    return np.sin(t / 5.0) + 0.1 * np.cos(t / 2.0)


def test_models_train_in_bf16_and_save_it(tmp_path):
    s = _series()
    m = grucy.Forecaster(lookback=8, hidden_size=16, epochs=3, random_state=0,
                         precision="bf16").fit(s)
    assert m.get_params()["precision"] == "bf16" and "precision='bf16'" in repr(m)
    assert m.net_.gru.precision == "bf16"
    f = grucy.Forecaster(lookback=8, hidden_size=16, epochs=3, random_state=0).fit(s)
    assert f.net_.gru.precision == "fp32"
    p16, p32 = m.predict(s, horizon=3), f.predict(s, horizon=3)
    assert np.abs(p16 - p32).max() < 0.1 * np.abs(p32).max() and not np.array_equal(p16, p32)
    grucy.save(m, tmp_path / "m.grucy")
    back = grucy.load(tmp_path / "m.grucy")
    assert back.precision == "bf16" and back.net_.gru.precision == "bf16"
    assert back.predict(s, horizon=3).tobytes() == p16.tobytes()
    with pytest.raises(ValueError, match="float32"):
        grucy.GRURegressor(epochs=1, dtype="float64", precision="bf16").fit(
            np.zeros((4, 3, 2)), np.zeros(4))


def test_quantized_models_predict_close_and_save(tmp_path, rng):
    s = _series()
    f = grucy.Forecaster(lookback=8, hidden_size=16, epochs=3, random_state=0).fit(s)
    q = grucy.quantize(f, "int8")
    assert q.net_.gru.precision == "int8" and f.net_.gru.precision == "fp32"
    pf, pq = f.predict(s, horizon=2), q.predict(s, horizon=2)
    assert np.abs(pq - pf).max() < 0.05 * np.abs(pf).max() and not np.array_equal(pq, pf)
    grucy.save(q, tmp_path / "q.grucy")
    back = grucy.load(tmp_path / "q.grucy")
    assert back.net_.gru.precision == "int8"
    assert back.predict(s, horizon=2).tobytes() == pq.tobytes()
    # fitting the copy again trains in float and drops the quantization
    q.set_params(epochs=1).fit(s)
    assert q.net_.gru.precision == "fp32"
    X = rng.standard_normal((40, 5, 3))
    y = (X[:, :, 0].sum(1) > 0).astype(int)
    clf = grucy.GRUClassifier(hidden_size=8, epochs=2, random_state=0).fit(X, y)
    qc = grucy.quantize(clf)
    assert np.abs(qc.predict_proba(X) - clf.predict_proba(X)).max() < 0.05
    text = "def f(x):\n    return x + 1\n" * 20
    lm = grucy.CharLM(hidden_size=16, embedding_dim=4, epochs=1, bptt=16, batch_size=4,
                      random_state=0).fit(text)
    qlm = grucy.quantize(lm)
    assert abs(qlm.bits_per_char(text[:200]) - lm.bits_per_char(text[:200])) < 0.05
    assert isinstance(qlm.generate("def", 10, temperature=0), str)
    grucy.save(qlm, tmp_path / "lm.grucy")
    assert grucy.load(tmp_path / "lm.grucy").bits_per_char(text[:200]) == \
        qlm.bits_per_char(text[:200])
    with pytest.raises(ValueError, match="not fitted|fit"):
        grucy.quantize(grucy.Forecaster())


# --------------------------------------------------------------------------------------
# Issue 15's guarantees hold in low precision: the memory check before a call, checked
# files, overflow as NumericOverflowError, bounded scratch

@pytest.mark.parametrize("L, bidi, training, lengths, bf", [
    (6, True, True, None, False), (2, False, True, None, True), (1, True, True, "near", False),
    (3, True, False, None, False), (3, False, False, "near", True)])
def test_bf16_memory_estimate_is_the_measured_peak(L, bidi, training, lengths, bf):
    """As tests/test_reliability.py's float32 check: what check_memory compares with the
    limit (its pools counted by workspace_bytes(precision="bf16")) is never below
    tracemalloc's peak of the call, and at most a quarter above."""
    from test_reliability import check_estimate_is_peak
    check_estimate_is_peak(lambda **kw: grucy.GRU(**kw, precision="bf16"), L, bidi,
                           training, lengths, bf)


def test_workspace_bytes_by_precision():
    fp32 = _gru.workspace_bytes(50, 16, 64, 128)
    bf16 = _gru.workspace_bytes(50, 16, 64, 128, precision="bf16")
    int8 = _gru.workspace_bytes(50, 16, 64, 128, training=False, precision="int8")
    assert 0 < int8 < bf16 and bf16 != fp32
    with pytest.raises(ValueError, match="int8.*inference"):
        _gru.workspace_bytes(50, 16, 64, 128, precision="int8")
    with pytest.raises(ValueError, match="float32"):
        _gru.workspace_bytes(50, 16, 64, 128, dtype=np.float64, precision="bf16")
    with pytest.raises(ValueError, match="precision"):
        _gru.workspace_bytes(50, 16, 64, 128, precision="fp16")


def test_int8_memory_check_is_never_below_the_peak(rng):
    """The bytes QuantizedGRU.forward hands to check_memory cover tracemalloc's peak."""
    import gc
    import tracemalloc

    from grucy import quantized
    for L, bidi, lengths, bf in ((3, True, None, False), (1, False, "near", True)):
        T, B, I, H = 40, 32, 48, 64
        q = grucy.quantize(grucy.GRU(I, H, L, bidirectional=bidi, batch_first=bf, seed=0))
        q.max_scratch_bytes = None
        x = rng.standard_normal((B, T, I) if bf else (T, B, I))
        ln = None if lengths is None else np.r_[np.full(B - 1, T), T - 1]
        asked = []
        real = quantized.check_memory
        quantized.check_memory = lambda what, n: (asked.append(n), real(what, n))
        try:
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            q(x, lengths=ln)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
            quantized.check_memory = real
        assert peak <= asked[-1], (peak, asked[-1])


def test_int8_scratch_is_bounded_and_freed():
    q = grucy.quantize(grucy.GRU(8, 16, num_layers=2, seed=0))
    x = np.ones((20, 4, 8), np.float32)
    q(x)
    assert 0 < q._scratch_bytes() <= grucy.QuantizedGRU.max_scratch_bytes
    q.free_scratch()
    assert q._scratch_bytes() == 0
    q.max_scratch_bytes = 0
    q(x)
    assert q._scratch_bytes() == 0


def test_int8_refuses_bad_arguments_naming_them():
    q = grucy.quantize(grucy.GRU(3, 8, num_layers=2, seed=0))
    with pytest.raises(ValueError, match="h0 must have shape"):
        q(np.zeros((2, 1, 3), np.float32), np.zeros((1, 1, 8), np.float32))
    with pytest.raises(ValueError, match="h0 contains NaN"):
        q(np.zeros((2, 1, 3), np.float32), np.full((2, 1, 8), np.inf, np.float32))
    with pytest.raises(ValueError, match="lengths must lie in"):
        q(np.zeros((2, 3, 3), np.float32), lengths=[1, 2, 3])
    with pytest.raises(TypeError, match="training must be"):
        q(np.zeros((2, 1, 3), np.float32), training="no")
    with pytest.raises(TypeError, match="x must"):
        q(np.zeros((2, 1, 3), complex))
    with pytest.raises(ValueError, match="batch_size"):
        q.stream(0)
    s = q.step(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="h must have shape"):
        q.step(np.zeros((2, 3), np.float32), np.zeros((1, 2, 8), np.float32))
    with pytest.raises(ValueError, match="h contains NaN"):
        q.step(np.zeros((2, 3), np.float32), np.full((2, 2, 8), np.nan, np.float32))
    assert s[0].shape == (2, 8)


def _rewrite(path, edit):
    from grucy.io import read_archive, write_archive
    kind, config, arrays = read_archive(path)
    config, arrays = edit(dict(config), dict(arrays))
    write_archive(path, kind, config, arrays)


def _flip(name, fn):
    def edit(config, arrays):
        arrays[name] = fn(arrays[name].copy())
        return config, arrays
    return edit


@pytest.mark.parametrize("edit, match", [
    (_flip("weight_ih_l0", lambda a: np.full_like(a, -128)), r"\[-127, 127\]"),
    (_flip("weight_ih_l0_scale", lambda a: -a - 1), "non-negative"),
    (_flip("weight_hh_l0_scale", lambda a: np.full_like(a, np.nan)), "NaN or inf"),
    (_flip("bias_ih_l0", lambda a: a.astype(np.float64)), "dtype"),
    (_flip("weight_hh_l0", lambda a: a[:, :-1]), "shapes"),
    (lambda c, a: (c, {**a, "weight_ih_l1": a["weight_ih_l0"]}), "unexpected"),
    (lambda c, a: (c, {k: v for k, v in a.items() if k != "bias_hh_l0"}), "missing"),
    (lambda c, a: ({**c, "quantization": "int4"}, a), "quantization"),
    (lambda c, a: ({**c, "bidirectional": "yes"}, a), "bidirectional"),
    (lambda c, a: ({**c, "hidden_size": 1 << 40}, a), "2\\*\\*31|memory|GiB"),
], ids=["int8-range", "negative-scale", "nan-scale", "bias-dtype", "shape", "extra-array",
        "missing-array", "scheme", "flag", "huge"])
def test_hostile_int8_files_are_refused(tmp_path, edit, match):
    path = tmp_path / "q.grucy"
    grucy.save(grucy.quantize(grucy.GRU(3, 8, seed=0)), path)
    _rewrite(path, edit)
    with pytest.raises(grucy.FileFormatError, match=match):
        grucy.load(path)


@pytest.mark.parametrize("precision, dtype, match", [
    ("fp16", "float32", "precision must be one of"), ("bf16", "float64", "float32"),
    (["bf16"], "float32", "precision must be one of")])
def test_hostile_bf16_files_are_refused(tmp_path, precision, dtype, match):
    path = tmp_path / "g.grucy"
    grucy.save(grucy.GRU(3, 8, seed=0, dtype=dtype), path)
    _rewrite(path, lambda c, a: ({**c, "precision": precision}, a))
    with pytest.raises(grucy.FileFormatError, match=match):
        grucy.load(path)


def test_hostile_quantized_model_file_is_refused(tmp_path):
    X = np.random.default_rng(0).standard_normal((20, 5, 2))
    m = grucy.GRURegressor(hidden_size=4, epochs=1, random_state=0).fit(X, X[:, -1, 0])
    path = tmp_path / "m.grucy"
    grucy.save(grucy.quantize(m), path)
    assert grucy.load(path).net_.gru.precision == "int8"
    _rewrite(path, lambda c, a: ({**c, "quantized": "int4"}, a))
    with pytest.raises(grucy.FileFormatError, match="quantized"):
        grucy.load(path)



def test_int8_refuses_inputs_whose_integer_sums_could_overflow():
    # The int8 GEMM sums (q + 128) * w, up to 255 * 127 a term, in int32: 66311 inputs
    # are exact in the worst case, and more were silently wrong (a sign flip at 140000).
    K = (2**31 - 1) // (255 * 127)
    g = grucy.GRU(K, 1, seed=0)
    for p in g.parameters():
        p[...] = 1e-5        # every weight the same: quantized exactly, worst-case sums
    x = np.ones((1, 1, K), np.float32)   # every input at the top of the int8 range
    got = grucy.quantize(g, "int8")(x)[0]
    want = g(x, training=False)[0]
    np.testing.assert_allclose(got, want, rtol=1e-3)   # (scales rounded to float32)
    assert abs(float(want[0, 0, 0])) > 0.1
    with pytest.raises(grucy.SizeLimitError, match="at most 66311"):
        grucy.quantize(grucy.GRU(K + 1, 1, seed=0), "int8")


def test_quantizing_float64_weights_beyond_float32_names_the_parameter():
    # (three NumPy overflow warnings, then "weights[0]['scale_ih'] contains NaN or inf")
    import warnings
    g = grucy.GRU(3, 4, seed=0, dtype=np.float64)
    g.parameters()[0][1, 2] = 1e39
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"^parameter 'weight_ih_l0' has values beyond "
                                             r"float32's range \(up to 1e\+39"):
            grucy.quantize(g, "int8")


def test_int8_refuses_inputs_whose_scaled_sums_overflow_float32():
    # ((float)S * scale) * weight_scale: the first product overflowed for inputs near
    # float32's maximum (x = 3e38, weights 1e-38: a true pre-activation of 0.3), the
    # gate saw inf and the output came back 0.0 instead of ~0.124, without an error.
    from grucy._validation import NumericOverflowError
    g = grucy.GRU(2, 1, seed=0, bias=False)
    sd = g.state_dict()
    sd["weight_ih_l0"] = np.array([[1.3e-38, 1.2e-38]] * 3, np.float32)
    sd["weight_hh_l0"] = np.zeros((3, 1), np.float32)
    g.load_state_dict(sd)
    q = grucy.quantize(g, "int8")
    x = np.array([[[3e38, -3e38]]], np.float32)
    for call in (lambda: q(x), lambda: q.step(x[0]),
                 lambda: q(np.ones_like(x), np.full((1, 1, 1), 3e38, np.float32))):
        with pytest.raises(NumericOverflowError, match=r"(x|h0) holds values up to 3e\+38: "
                                                       r"the int8 kernels"):
            call()
    limit = np.finfo(np.float32).max / (255 * 2)   # at the bound: finite, as float32's
    y = q(np.full((1, 1, 2), limit * 0.999, np.float32))[0]
    assert np.all(np.isfinite(y))


def test_int8_stream_refuses_each_steps_x_and_a_state_beyond_the_range():
    # A stream checked only its h0: a later step's x = 3e38 overflowed the first float32
    # product and the step returned a plausible, wrong output (0.0, not ~0.124).
    from grucy._validation import NumericOverflowError
    g = grucy.GRU(2, 1, seed=0, bias=False)
    sd = g.state_dict()
    sd["weight_ih_l0"] = np.array([[1.3e-38, 1.2e-38]] * 3, np.float32)
    sd["weight_hh_l0"] = np.full((3, 1), 0.5, np.float32)
    g.load_state_dict(sd)
    q = grucy.quantize(g, "int8")
    s = q.stream()
    x = np.array([0.5, -0.25], np.float32)
    s.step(x)
    h = s.h
    with pytest.raises(NumericOverflowError, match=r"^x holds values up to 3e\+38: the int8"):
        s.step(np.array([3e38, -3e38], np.float32))
    np.testing.assert_array_equal(s.h, h)  # the refused step left the state alone
    with pytest.raises(NumericOverflowError, match=r"^h holds values up to 3e\+38"):
        s.h = np.full((1, 1, 1), 3e38, np.float32)
    np.testing.assert_array_equal(s.h, h)
    # the stream still gives the one-step forward's numbers from that state
    y = s.step(x)
    np.testing.assert_array_equal(y, q.step(x[None], h)[0][0])


def test_exporting_a_quantized_layer_is_refused_with_the_reason():
    """interop.to_onnx(q) said only "gru must be a grucy GRU layer ..., got QuantizedGRU";
    the README promises the reason."""
    from grucy import interop
    q = grucy.quantize(grucy.GRU(3, 4, seed=0), "int8")
    ran = 0
    for export, to, peer in ((interop.to_torch, "PyTorch", "torch"),
                             (interop.to_keras, "Keras", "keras")):
        if peer_missing(peer):  # (each export imports its peer first)
            continue
        with pytest.raises(TypeError, match=f"a QuantizedGRU cannot be exported to {to}: "
                                            f".*export the float layer"):
            export(q)
        ran += 1
    if not ran:
        pytest.skip("torch, keras")
