"""``grucy bench``: check this machine and this build, with nothing but grucy installed.

Times ``grucy.GRU`` against ``grucy.reference.GRU`` (plain NumPy, the same weights; their
outputs and gradients are compared before timing) on a few shapes, training step and
inference, and measures the machine's float32 ceilings at the same thread count: the FMA
peak (``grucy._gru.fma_peak``: independent vector FMA chains, the physical limit) and
the SGEMM peak (``numpy.matmul`` of two N x N matrices, what a tuned BLAS reaches).  It
prints which kernels run (``grucy._gru.kernel_info``) and warns about OpenBLAS settings
that slow it down.  The full benchmark against PyTorch, ONNX Runtime and Keras, with a
thread sweep and a busy-machine mode, lives in the source repository
(``python bench/bench_gru.py``).
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

__all__ = ["DEFAULT_SHAPES", "OptionError", "add_arguments", "run", "sgemm_peak",
           "blas_env_warnings", "train_flops"]

DEFAULT_SHAPES = ((1, 100, 32, 64), (16, 100, 64, 128), (32, 100, 128, 256))
FULL_BENCHMARK = ("python bench/bench_gru.py (in the grucy source repository; "
                  "see bench/README.md)")
CHECK_TOL = 1e-4  # max |reference - grucy| / max |grucy|; two float32 GRUs differ ~1e-6
# Settings that make OpenBLAS run another kernel or block size than it would choose.
BLAS_ENV = {
    "OPENBLAS_CORETYPE": "OpenBLAS runs the kernel of that CPU type instead of the one "
                         "for this CPU (it can halve the SGEMM rate)",
    "OPENBLAS_L2_SIZE": "OpenBLAS sizes its blocks for that L2 cache instead of this CPU's",
}


class OptionError(ValueError):
    """A bad option value (the command line prints it as a one-line error)."""


def add_arguments(parser):
    """The options of ``grucy bench`` (values are checked by :func:`run`)."""
    shapes = ",".join("x".join(map(str, s)) for s in DEFAULT_SHAPES)
    parser.add_argument("--shapes", default=shapes, metavar="LIST",
                        help="comma-separated BxTxIxH (batch, steps, input size, hidden "
                             "size), float32, 1 layer (default: %(default)s)")
    parser.add_argument("--threads", default=None, metavar="N",
                        help="threads for grucy and, with threadpoolctl installed, for "
                             "BLAS (default: grucy's current count)")
    parser.add_argument("--seconds", default="0.3", metavar="S",
                        help="time spent per implementation and case (default: "
                             "%(default)s; at least 3 repeats)")
    parser.add_argument("--gemm-size", default="2048", metavar="N",
                        help="N of the N x N SGEMM of the peak (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def _positive(text, name, convert=int):
    try:
        value = convert(text)
    except (TypeError, ValueError):
        value = None
    if value is None or not (value > 0 and math.isfinite(value)):
        kind = "a positive integer" if convert is int else "a positive number"
        raise OptionError(f"{name} must be {kind}, got {text!r}")
    return value


def _shapes(text):
    shapes = []
    for item in (t.strip() for t in text.split(",")):
        parts = item.lower().split("x")
        if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise OptionError(f"--shapes: {item!r} is not BxTxIxH with positive integers")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


def train_flops(B, T, I, H):
    """Multiply-adds x 2 of a training step (forward + backward) of one GRU layer."""
    return 18.0 * T * B * H * (I + H)


def blas_env_warnings(environ=None):
    """One line per OpenBLAS variable that changes its kernel choice."""
    environ = os.environ if environ is None else environ
    return [f"{k}={environ[k]} is set: {why}; for benchmarks run under "
            f"'env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE'"
            for k, why in BLAS_ENV.items() if environ.get(k)]


def sgemm_peak(n, repeats=3, threads=None):
    """Best GFLOP/s of ``numpy.matmul`` on two float32 n x n matrices."""
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)  # warm-up: thread pool, page faults
    best = min(_timed(lambda: np.matmul(a, b, out=c)) for _ in range(repeats))
    return 2.0 * n ** 3 / best / 1e9


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _best_time(fn, seconds, min_repeats=3):
    fn()  # warm-up
    times, t_end = [], time.perf_counter() + seconds
    while len(times) < min_repeats or (time.perf_counter() < t_end and len(times) < 10000):
        times.append(_timed(fn))
    return min(times), len(times)


def _rel_diff(a, b):
    """max |a - b| / max |b| over every array of two dicts with the same keys."""
    worst = 0.0
    for k, ref in b.items():
        ref = np.asarray(ref, np.float64)
        scale = max(float(np.max(np.abs(ref))), 1e-30)
        worst = max(worst, float(np.max(np.abs(np.asarray(a[k], np.float64) - ref))) / scale)
    return worst


def _case(shape, seconds, seed=0):
    """Check grucy against the reference on one shape, then time both, both modes."""
    from .layer import GRU
    from .reference import GRU as Reference

    B, T, I, H = shape
    ref = Reference(I, H, dtype=np.float32, seed=seed)
    gru = GRU(I, H, dtype=np.float32, seed=seed + 1)
    gru.load_state_dict(ref.state_dict())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)

    def outputs(layer):
        layer.zero_grad()
        y, h_n = layer.forward(x, training=True)
        dx, _ = layer.backward(dy)
        out = {"y": y, "h_n": h_n, "dx": dx} | {k: g.copy() for k, g in layer.grads.items()}
        layer.zero_grad()
        return out

    diff = _rel_diff(outputs(ref), outputs(gru))
    rows = []
    for mode in ("train", "infer"):
        times = {}
        for name, layer in (("grucy", gru), ("numpy", ref)):
            if mode == "train":
                def fn(layer=layer):
                    layer.forward(x, training=True)
                    layer.backward(dy)
            else:
                def fn(layer=layer):
                    layer.forward(x, training=False)
            times[name] = _best_time(fn, seconds)
        flops = train_flops(B, T, I, H) / (1 if mode == "train" else 3)
        g = times["grucy"][0]
        rows.append({"shape": "x".join(map(str, shape)), "mode": mode,
                     "grucy_ms": g * 1e3, "numpy_ms": times["numpy"][0] * 1e3,
                     "repeats": times["grucy"][1], "speedup": times["numpy"][0] / g,
                     "gflops": flops / g / 1e9, "max_rel_diff": diff,
                     "check": "ok" if diff <= CHECK_TOL else "MISMATCH"})
    return rows


def run(args):
    """Validate the options, run the check, print it; exit status (1 on a mismatch)."""
    from . import _gru
    from ._threads import set_num_threads
    from ._version import __version__

    shapes = _shapes(args.shapes)
    seconds = _positive(args.seconds, "--seconds", float)
    gemm_n = _positive(args.gemm_size, "--gemm-size")
    limiter = None
    if args.threads is not None:
        n = _positive(args.threads, "--threads")
        try:
            set_num_threads(n)
        except ValueError as exc:
            raise OptionError(f"--threads: {exc}") from None
        try:
            from threadpoolctl import threadpool_limits
            limiter = threadpool_limits(limits=_gru.get_num_threads(), user_api="blas")
        except ImportError:
            pass
    threads = _gru.get_num_threads()
    try:
        fma = _gru.fma_peak(threads, 0.2)
        sgemm = sgemm_peak(gemm_n)
        rows = [r for s in shapes for r in _case(s, seconds)]
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    for r in rows:
        r["pct_fma"], r["pct_sgemm"] = 100 * r["gflops"] / fma, 100 * r["gflops"] / sgemm
    doc = {"grucy": __version__, "threads": threads, "kernels": _gru.kernel_info(),
           "fma_gflops": fma, "sgemm_gflops": sgemm, "sgemm_n": gemm_n,
           "blas_threads_limited": limiter is not None,
           "warnings": blas_env_warnings(), "results": rows,
           "full_benchmark": FULL_BENCHMARK}
    print(json.dumps(doc, indent=1) if args.json else "\n".join(_report(doc)))
    return 0 if all(r["check"] == "ok" for r in rows) else 1


def _report(doc):
    k = doc["kernels"]
    n = doc["threads"]
    out = [f"grucy {doc['grucy']}: this machine's float32 ceilings and grucy against its "
           f"NumPy reference, {n} thread{'s' if n != 1 else ''}",
           f"kernels  products with the weights: {k['packed']}; row passes: {k['rows']}; "
           f"OpenBLAS core: {k['blas_core'] or 'not OpenBLAS'}",
           f"peaks    FMA {doc['fma_gflops']:.0f} GFLOP/s (independent vector FMA chains), "
           f"SGEMM {doc['sgemm_gflops']:.0f} GFLOP/s (numpy.matmul, "
           f"{doc['sgemm_n']}^3)"]
    out += [f"WARNING  {w}" for w in doc["warnings"]]
    head = ["BxTxIxH", "mode", "grucy ms", "NumPy ms", "speedup", "GFLOP/s", "% FMA",
            "% SGEMM", "check"]
    body = [[r["shape"], r["mode"], f"{r['grucy_ms']:.3f}", f"{r['numpy_ms']:.3f}",
             f"{r['speedup']:.1f}x", f"{r['gflops']:.1f}", f"{r['pct_fma']:.0f}",
             f"{r['pct_sgemm']:.0f}", f"{r['check']} {r['max_rel_diff']:.0e}"]
            for r in doc["results"]]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    out.append("")
    for cells in [head, ["-" * w for w in widths]] + body:
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip())
    out += ["", "Minimum times; train = forward + backward (outputs, input and weight "
                "gradients checked against the reference), infer = forward.",
            f"Full benchmark (PyTorch, ONNX Runtime, Keras, thread sweep, busy machine): "
            f"{doc['full_benchmark']}"]
    return out
