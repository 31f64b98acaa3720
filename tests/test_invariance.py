"""Results that do not depend on threads, on the batch, or on the GEMM kernel.

The kernels compute every product with a weight as one FMA chain per output, in order
(src/grucy/_pgemm.h), and every elementwise pass per value; only the weight and bias
gradients sum over rows, block by block in a fixed order.  So:

- outputs, final states, dX, dh0 and every gradient are bit-identical for any thread
  count and any split of the work (forced here with 1, 2, 3, 5 and 16 threads on a
  machine of any size);
- a sequence's outputs, final state, dX and dh0 are bit-identical whatever its position
  in the batch and whatever the other sequences are, their lengths included;
- GRU.step and GRUStream.step give exactly a one-step forward;
- the AVX-512 and AVX2 kernels give the same bits (the portable one too where the CPU
  has FMA).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import grucy

from conftest import available_isas, forced_plan, kernels, make_inputs, run_layer

DTYPES = [np.float32, np.float64]
FORMS = [True, False]


@pytest.fixture(autouse=True)
def _grucy_gemm():
    if grucy._gru.kernel_isa() == "blas":
        pytest.skip("GRUCY_ISA=blas: BLAS blocks its sums by the size of each call, so "
                    "its results are not promised to be thread- or batch-invariant")


@pytest.fixture
def restore_threads():
    before = grucy.get_num_threads()
    old = grucy._gru._force_plan(0, 0)
    grucy._gru._force_plan(*old)
    yield
    grucy.set_num_threads(before)
    grucy._gru._force_plan(*old)


def _equal(a, b, what):
    """Bitwise equality of two run_layer results (outputs and every gradient)."""
    pairs = [(k, a[k], b[k]) for k in ("y", "h_n", "dx", "dh0")]
    pairs += [(f"grads[{k}]", a["grads"][k], b["grads"][k]) for k in b["grads"]]
    for key, x, y in pairs:
        assert x.shape == y.shape and x.tobytes() == y.tobytes(), f"{what}: {key} differs"


@pytest.fixture(params=[True, False], ids=["claimed", "static"])
def schedule(request):
    """Plans without unit chunks run as pieces claimed by whichever thread runs (the
    default) or one part per thread (the static schedule): both must give the bits."""
    old = grucy._gru._set_dynamic(request.param)
    yield request.param
    grucy._gru._set_dynamic(old)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
def test_bit_identical_for_any_thread_count(lengths, reset_after, dtype, rng,
                                            restore_threads, schedule):
    # big enough that the cost model itself uses several threads, and forced splits on
    # top (16 threads on a 2-core machine are still 16 threads of work)
    layer = grucy.GRU(24, 96, num_layers=2, bidirectional=True, reset_after=reset_after,
                      dtype=dtype, seed=3)
    inputs = make_inputs(rng, layer, T=9, B=37, lengths=lengths)
    grucy.set_num_threads(1)
    want = run_layer(layer, inputs)
    for threads in (2, 3, 5, 16):
        grucy.set_num_threads(threads)
        _equal(run_layer(layer, inputs), want, f"{threads} threads")
    for groups, chunks in ((2, 1), (1, 3), (5, 1), (3, 5), (16, 1), (4, 4), (1, 6)):
        with forced_plan(groups, chunks, align=1):
            _equal(run_layer(layer, inputs), want, f"plan {groups}x{chunks}")


_LATE_WORKERS = """
import sys
import numpy as np
import grucy
sys.path.insert(0, sys.argv[1])
from conftest import forced_plan, make_inputs, run_layer
layer = grucy.GRU(8, 32, seed=1)
inputs = make_inputs(np.random.default_rng(0), layer, T=5, B=32, lengths=True)
grucy.set_num_threads(1)
want = run_layer(layer, inputs)
late = grucy._gru._late_workers()
for i in range(1200):
    groups, chunks = (16, 1) if i % 2 else (4, 4)
    with forced_plan(groups, chunks, align=1):
        plan = grucy._gru.work_plan(5, 32, 8, 32)
        assert (plan["threads"], plan["groups"], plan["chunks"]) == (16, groups, chunks)
        got = run_layer(layer, inputs)
    for k in ("y", "h_n", "dx", "dh0"):
        assert got[k].tobytes() == want[k].tobytes(), (i, k)
    for k in want["grads"]:
        assert got["grads"][k].tobytes() == want["grads"][k].tobytes(), (i, k)
print("late", grucy._gru._late_workers() - late)
"""


def test_claimed_pieces_give_the_bits_when_workers_come_late():
    """Sixteen threads on this (2-core) machine: in most claimed calls some worker gets a
    core only after the others have claimed every piece, and must neither join the
    finished call nor run the next one twice (a static call after it needs each of its
    threads exactly once: the first version of the team hung here about one run in
    three).  1200 calls alternating claimed (16 row groups) and static (4 groups x 4
    chunks), each bit-identical to one thread; in a child process, so that a hang is a
    failure with a message."""
    import subprocess
    import sys
    from pathlib import Path
    try:
        out = subprocess.run([sys.executable, "-c", _LATE_WORKERS,
                              str(Path(__file__).parent)], capture_output=True, text=True,
                             timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("1200 short calls did not finish in 120 s: the thread team hung")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("late "), out.stdout


def _one(layer, x, h0, dy, dh_n, length=None):
    """Outputs and input-side gradients of one sequence (B = 1)."""
    T = x.shape[0] if length is None else length
    got = run_layer(layer, dict(x=x[:T, None], h0=h0[:, None], lengths=None,
                                dy=dy[:T, None], dh_n=dh_n[:, None]))
    return {k: got[k] for k in ("y", "h_n", "dx", "dh0")}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("threads", [1, 3])
def test_a_sequence_does_not_depend_on_its_batch(threads, reset_after, dtype, rng,
                                                 restore_threads):
    grucy.set_num_threads(threads)
    T, B, I, H = 7, 19, 5, 300       # H = 300: where GRU.step differed by 1 ulp before
    layer = grucy.GRU(I, H, num_layers=2, bidirectional=True, reset_after=reset_after,
                      dtype=dtype, seed=4)
    inputs = make_inputs(rng, layer, T, B, lengths=True)
    batch = run_layer(layer, inputs)
    lengths = inputs["lengths"]
    for b in (0, 1, B // 2, B - 1):
        L = int(lengths[b])
        alone = _one(layer, inputs["x"][:, b], inputs["h0"][:, b], inputs["dy"][:, b],
                     inputs["dh_n"][:, b], L)
        for key, axis in (("y", 1), ("dx", 1), ("h_n", 1), ("dh0", 1)):
            mine = np.take(batch[key], [b], axis=axis)
            if key in ("y", "dx"):
                mine = mine[:L]
            assert mine.tobytes() == alone[key].tobytes(), f"sequence {b} ({key})"
    # the same batch in another order, and with other neighbours
    perm = rng.permutation(B)
    shuffled = run_layer(layer, {k: (v if v is None else
                                     v[perm] if k == "lengths" else
                                     v[:, perm]) for k, v in inputs.items()})
    for key in ("y", "h_n", "dx", "dh0"):
        assert shuffled[key].tobytes() == batch[key][:, perm].tobytes(), key


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("B, H", [(1, 300), (3, 300), (2, 64)])
def test_step_and_stream_give_exactly_a_one_step_forward(B, H, reset_after, dtype, rng):
    layer = grucy.GRU(11, H, num_layers=3, reset_after=reset_after, dtype=dtype, seed=5)
    x = rng.standard_normal((4, B, 11)).astype(dtype)
    h = (0.5 * rng.standard_normal((3, B, H))).astype(dtype)
    stream = layer.stream(B, h)
    for t in range(4):
        y, h_next = layer(x[t:t + 1], h, training=False)
        y_step, h_step = layer.step(x[t], h)
        y_stream = stream.step(x[t])
        assert y_step.tobytes() == y[0].tobytes()
        assert h_step.tobytes() == h_next.tobytes()
        assert y_stream.tobytes() == y[0].tobytes()
        assert stream.h.tobytes() == h_next.tobytes()
        h = h_next
    # ... and a whole sequence run step by step gives the whole forward's numbers
    y_all, _ = layer(x, layer.stream(B).h * 0, training=False)
    s = layer.stream(B)
    assert np.stack([s.step(x[t]) for t in range(4)]).tobytes() == y_all.tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
def test_avx512_and_avx2_kernels_give_the_same_bits(reset_after, dtype, rng):
    isas = [name for name in ("avx512", "avx2") if name in available_isas()]
    if len(isas) < 2:
        pytest.skip(f"needs a CPU with AVX-512 (this one runs {isas})")
    layer = grucy.GRU(13, 70, num_layers=2, bidirectional=True, reset_after=reset_after,
                      dtype=dtype, seed=6)
    inputs = make_inputs(rng, layer, 6, 19, lengths=True)
    results = {}
    for isa in isas:
        with kernels(isa):
            results[isa] = run_layer(layer, inputs)
    _equal(results["avx2"], results["avx512"], "avx2 vs avx512")


# One fixed problem's bits on every CPU whose kernels fuse the multiply-adds: measured
# 2026-12-05 on x86-64 (Zen 5: the AVX-512 and AVX2 kernels) and on ARM64 (the portable
# kernel, NEON, under qemu: .ci/arm64), the same digests.  They change only when the
# arithmetic does (the fast exp/tanh, the order of a sum): update them knowingly.
# float64 is left out (its exp and tanh are the C library's); x86's portable kernel has
# no FMA (SSE2), so its float32 products round twice; bf16 products are exact in float32
# and int8 sums are integers, so those two agree there too.
GOLDEN_BITS = {("fp32", True): "25d1d8ab0542ef6d", ("fp32", False): "79f337da3deafb97",
               ("bf16", True): "fca2e705e882dce2", ("bf16", False): "26a191549f8d2b25",
               "int8": "d8ea3f442aa878b2 250251e34a08e397"}


def _hash(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def _digest(*arrays):
    return hashlib.sha256("".join(_hash(a) for a in arrays).encode()).hexdigest()[:16]


def _kernel_fuses():
    """Ask the float32 GEMM in use, not the CPU's name: x86's SSE2 portable build has no
    FMA, and a -O0 build of the portable C does not contract.  a*a - a*a with
    a = 1 + 2^-12 is -2^-24 when fused, 0 when each product is rounded."""
    if grucy._gru.kernel_isa() == "blas":
        return False
    a = np.float32(1 + 2.0 ** -12)
    c = np.zeros((1, 1), np.float32)
    grucy._gru._pgemm_probe(np.array([[a, -a]]), np.array([[a, a]]), True, c, 1)
    return c[0, 0] == np.float32(-(2.0 ** -24))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
def test_a_fixed_problem_gives_the_same_bits_on_every_cpu(reset_after, precision):
    if precision == "fp32" and not _kernel_fuses():
        pytest.skip(f"the {grucy._gru.kernel_isa()} kernel of this build has no FMA: its "
                    "float32 products round twice")
    kw = {} if precision == "fp32" else {"precision": precision}
    layer = grucy.GRU(13, 70, num_layers=2, bidirectional=True, reset_after=reset_after,
                      seed=6, **kw)
    res = run_layer(layer, make_inputs(np.random.default_rng(20240611), layer, 6, 19,
                                       lengths=True))
    got = _digest(*[res[k] for k in ("y", "h_n", "dx", "dh0")],
                  *[res["grads"][k] for k in sorted(res["grads"])])
    assert got == GOLDEN_BITS[precision, reset_after]


def test_a_fixed_int8_problem_gives_the_same_bits_on_every_cpu():
    q = grucy.quantize(grucy.GRU(24, 96, num_layers=2, bidirectional=True, seed=3))
    r = np.random.default_rng(7)
    x = r.standard_normal((9, 37, 24)).astype(np.float32)
    y, h = q(x, lengths=r.integers(1, 10, 37))
    assert f"{_hash(y)} {_hash(h)}" == GOLDEN_BITS["int8"]


def test_work_plan_describes_the_calls(restore_threads):
    grucy.set_num_threads(4)
    plan = grucy._gru.work_plan(50, 64, 256, 512)
    assert plan["threads"] <= 4 and plan["groups"] * plan["chunks"] <= plan["threads"]
    assert plan["row_bounds"][0] == 0 and plan["row_bounds"][-1] == 64
    assert plan["unit_bounds"][0] == 0 and plan["unit_bounds"][-1] == 512
    assert all(a < b for a, b in zip(plan["row_bounds"], plan["row_bounds"][1:]))
    assert all(a < b for a, b in zip(plan["unit_bounds"], plan["unit_bounds"][1:]))
    # a tiny problem never wakes a team
    assert grucy._gru.work_plan(100, 1, 32, 64)["threads"] == 1
    # variable lengths: groups hold equal shares of the row-steps, longest rows first
    lengths = np.r_[np.full(8, 100), np.full(56, 10)]
    grucy.set_num_threads(2)
    with forced_plan(2, 1):
        plan = grucy._gru.work_plan(100, 64, 64, 64, lengths=lengths)
    assert plan["groups"] == 2 and plan["row_bounds"][1] < 32
    with pytest.raises(ValueError, match="lengths"):
        grucy._gru.work_plan(10, 3, 2, 2, lengths=[1, 2, 11])
