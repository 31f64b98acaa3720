"""Where a training step of grucy.GRU spends its time (``grucy bench --profile``).

Nothing in the kernels is instrumented; the pieces are timed from the outside, on the
same shapes, the same BLAS library and the same thread settings:

* the whole step through the layer (``GRU.forward`` + ``GRU.backward``);
* the same step as direct calls of the kernels ``grucy._gru.forward`` / ``backward`` with
  preallocated outputs: the difference is the layer's Python code and its own output
  allocations;
* the fixed entry cost of a kernel call (the same calls on a 1x1x1x1 problem);
* allocation and first touch of the workspaces the kernels allocate (np.empty + a write
  pass, minus the same write pass over buffers that already exist);
* every GEMM/GEMV the kernels issue, with the kernels' exact arguments, called through
  scipy's BLAS function pointers (the library grucy's kernels call) with ctypes; the
  ctypes call cost is measured (a zero-size call) and subtracted;
* what is left of the kernel time: the fused elementwise passes, the copies of the state,
  OpenMP fork/join and BLAS thread wake-ups between the in-loop calls.  For scale, grucy's
  own fast sigmoid and tanh over the forward pass's element counts are timed too.

With ``perf`` usable (``perf record -e cpu-clock`` on this process), a sampling profile
of training steps is added, grouped by library: BLAS compute kernels, BLAS thread
synchronisation (spinning/yielding while waiting), grucy's compiled code, the OpenMP
runtime, the OS kernel (page faults, scheduling), libc (memcpy/malloc), Python, numpy.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

import numpy as np

from .benchmark import (DEFAULT_JSON, DEFAULT_SHAPES, Entry, gemm_peak, machine_info,
                        measure, text_table, write_atomic)

__all__ = ["run_profile", "ScipyBlas"]


class ScipyBlas:
    """sgemm / sgemv of scipy.linalg.cython_blas called through ctypes, row-major like
    grucy/_blas.pxd (C = op(A) @ op(B) computed as C^T = op(B)^T @ op(A)^T)."""

    def __init__(self):
        import scipy.linalg.cython_blas as cb

        get_name = ctypes.pythonapi.PyCapsule_GetName
        get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
        get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
        get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object,
                                                              ctypes.c_char_p]
        P = ctypes.c_void_p

        def fn(name, nargs):
            cap = cb.__pyx_capi__[name]
            return ctypes.CFUNCTYPE(None, *([P] * nargs))(get_ptr(cap, get_name(cap)))

        self._sgemm, self._sgemv = fn("sgemm", 13), fn("sgemv", 11)
        self._chars = {c: ctypes.c_char(c.encode()) for c in "NT"}

    @staticmethod
    def _i(v):
        return ctypes.byref(ctypes.c_int(v))

    @staticmethod
    def _f(v):
        return ctypes.byref(ctypes.c_float(v))

    def gemm_call(self, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
        """A zero-argument callable doing what grucy's ``gemm`` does for these arguments
        (GEMV when m == 1); a, b, c are (array, offset in elements) pairs."""
        ptr = [arr.ctypes.data + off * arr.itemsize for arr, off in (a, b, c)]
        i, f = self._i, self._f
        ch = lambda t: ctypes.byref(self._chars["T" if t else "N"])  # noqa: E731
        if m == 1:
            inc_a = lda if trans_a else 1
            if trans_b:
                args = (ch(True), i(k), i(n), f(1.0), ptr[1], i(ldb), ptr[0], i(inc_a),
                        f(beta), ptr[2], i(1))
            else:
                args = (ch(False), i(n), i(k), f(1.0), ptr[1], i(ldb), ptr[0], i(inc_a),
                        f(beta), ptr[2], i(1))
            fn = self._sgemv
        else:
            args = (ch(trans_b), ch(trans_a), i(n), i(m), i(k), f(1.0), ptr[1], i(ldb),
                    ptr[0], i(lda), f(beta), ptr[2], i(ldc))
            fn = self._sgemm
        return _bound(fn, args, (a[0], b[0], c[0]))

    def colsum_call(self, rows, cols, a, lda, ones, out):
        i, f = self._i, self._f
        args = (ctypes.byref(self._chars["N"]), i(cols), i(rows), f(1.0),
                a[0].ctypes.data + a[1] * 4, i(lda), ones.ctypes.data, i(1), f(1.0),
                out.ctypes.data, i(1))
        return _bound(self._sgemv, args, (a[0], ones, out))

    def empty_call(self):
        """A GEMM of size 0: the cost of one ctypes call into BLAS."""
        z = np.zeros(1, np.float32)
        return self.gemm_call(False, True, 0, 0, 0, (z, 0), 1, (z, 0), 1, 0.0, (z, 0), 1)


def _bound(fn, args, arrays):
    """fn(*args) as a callable that keeps the arrays behind the raw pointers alive."""
    def call(_keep=arrays):
        fn(*args)
    return call


# Mirrors of the kernels' work split (grucy/_gru.pyx): MAX_CHUNKS and ROW_BLOCKS are
# compile-time constants there; the chunk size settings are read through _set_chunking.
MAX_CHUNKS = 8
ROW_BLOCKS = 8


def kernel_split(H, B):
    """How grucy/_gru.pyx splits a layer of H units at batch B: (chunked?, unit bounds).

    Chunked kernels (per-step work B*3H*H at or above the threshold) give each OpenMP
    thread whole chunks of hidden units; otherwise one thread issues whole GEMMs."""
    from . import _gru

    min_work, min_chunk, align = 1 << 17, 32, 16
    if hasattr(_gru, "_set_chunking"):
        old = _gru._set_chunking(min_work)
        _gru._set_chunking(*old)
        min_work, min_chunk, align = old
    chunked = B * 3 * H * H >= min_work
    nc = max(1, min(H // min_chunk, MAX_CHUNKS)) if chunked else 1
    bounds = [H if k >= nc else (k * H // nc) // align * align for k in range(nc + 1)]
    return chunked, bounds


def gemm_pieces(blas, B, T, I, H, bounds):
    """Callables issuing the BLAS calls of one training step as grucy/_gru.pyx does
    (reset-after form, full lengths), all on the calling thread:
    {piece: (callable, number of BLAS calls, flops)}.  ``bounds``: the unit chunks
    (one chunk [0, H] for the unchunked kernels, which issue whole GEMMs)."""
    rng = np.random.default_rng(0)
    H3, N = 3 * H, T * B
    chunks = [(bounds[k], bounds[k + 1] - bounds[k]) for k in range(len(bounds) - 1)]
    split = len(chunks) > 1
    blocks = ([(N * b // ROW_BLOCKS, N * (b + 1) // ROW_BLOCKS) for b in range(ROW_BLOCKS)]
              if split else [(0, N)])

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    X, wih, whh = arr(N, I), arr(H3, I), arr(H3, H)
    G, S, Gh = arr(N, H3), arr(B, H), arr(B, H3)
    dG, dGxn, Hp, dS = arr(N, H3), arr(N, H), arr(N, H), arr(B, H)
    dwih, dwhh, dX, ones = arr(H3, I), arr(H3, H), arr(N, I), np.ones(N, np.float32)
    dbih, dbhh = arr(H3), arr(H3)
    g = blas.gemm_call
    # G = X @ W_ih^T (by row blocks when split)
    fwd_in = [g(False, True, r1 - r0, H3, I, (X, r0 * I), I, (wih, 0), I, 0.0,
                (G, r0 * H3), H3) for r0, r1 in blocks if r1 > r0]
    if split:
        # Gh[:, chunk] = h @ W_hh[chunk rows]^T (W_hh regrouped chunk-major); one step
        fwd_rec = [g(False, True, B, 3 * c, H, (S, 0), H, (whh, 3 * j0 * H), H, 0.0,
                     (Gh, 3 * j0), H3) for j0, c in chunks]
        # dh[:, chunk] += dGh @ W_hh[:, chunk]
        bwd_rec = [g(False, False, B, c, H3, (dG, 0), H3, (whh, j0), H, 1.0, (dS, j0), H)
                   for j0, c in chunks]
    else:
        fwd_rec = [g(False, True, B, H3, H, (S, 0), H, (whh, 0), H, 0.0, (Gh, 0), H3)]
        bwd_rec = [g(False, False, B, H, H3, (dG, 0), H3, (whh, 0), H, 1.0, (dS, 0), H)]
    bwd_hoisted = []
    for j0, c in chunks:
        for q in range(2):  # r and z: dW_ih, dW_hh and both bias sums share dG
            bwd_hoisted += [
                g(True, False, c, I, N, (dG, q * H + j0), H3, (X, 0), I, 1.0,
                  (dwih, (q * H + j0) * I), I),
                g(True, False, c, H, N, (dG, q * H + j0), H3, (Hp, 0), H, 1.0,
                  (dwhh, (q * H + j0) * H), H),
                blas.colsum_call(N, c, (dG, q * H + j0), H3, ones, dbih[q * H + j0:]),
                blas.colsum_call(N, c, (dG, q * H + j0), H3, ones, dbhh[q * H + j0:])]
        bwd_hoisted += [
            g(True, False, c, I, N, (dGxn, j0), H, (X, 0), I, 1.0, (dwih, (2 * H + j0) * I), I),
            g(True, False, c, H, N, (dG, 2 * H + j0), H3, (Hp, 0), H, 1.0,
              (dwhh, (2 * H + j0) * H), H),
            blas.colsum_call(N, c, (dGxn, j0), H, ones, dbih[2 * H + j0:]),
            blas.colsum_call(N, c, (dG, 2 * H + j0), H3, ones, dbhh[2 * H + j0:])]
    for r0, r1 in blocks:  # dX = dGx @ W_ih
        if r1 > r0:
            bwd_hoisted += [
                g(False, False, r1 - r0, I, 2 * H, (dG, r0 * H3), H3, (wih, 0), I, 0.0,
                  (dX, r0 * I), I),
                g(False, False, r1 - r0, I, H, (dGxn, r0 * H), H, (wih, 2 * H * I), I, 1.0,
                  (dX, r0 * I), I)]

    def run(fns, times=1):
        def go():
            for _ in range(times):
                for fn in fns:
                    fn()
        return go

    flop = 2.0 * N * H3
    return {
        "recurrent GEMM, forward": (run(fwd_rec, T), T * len(fwd_rec), flop * H),
        "recurrent GEMM, backward": (run(bwd_rec, T), T * len(bwd_rec), flop * H),
        "hoisted GEMM, forward (X W_ih^T)": (run(fwd_in), len(fwd_in), flop * I),
        "hoisted GEMMs + bias sums, backward": (run(bwd_hoisted), len(bwd_hoisted),
                                                flop * (2 * I + H)),
    }


def workspace_cycles(B, T, I, H):
    """(allocate + touch + free, touch only) callables over the buffers the kernels
    allocate per training step: G, A, Hp, Gh (forward); dG, dGxn, ones (backward)."""
    H3, N = 3 * H, T * B
    shapes = [(N, H3), (N, H), (N, H), (B, H3), (N, H3), (N, H), (N,)]
    kept = [np.empty(s, np.float32) for s in shapes]
    for k in kept:
        k.fill(1)

    def fresh():
        bufs = [np.empty(s, np.float32) for s in shapes]
        for b in bufs:
            b.fill(1)
        del bufs

    def reuse():
        for b in kept:
            b.fill(1)

    return fresh, reuse


def kernel_calls(grucy, layer, x, dy):
    """Direct calls of grucy._gru.forward/backward for the layer's single direction, with
    preallocated outputs: (forward, backward, both) callables, or raises TypeError when
    the private kernel signatures differ from what this profiler knows."""
    from . import _gru

    T, B, _ = x.shape
    H = layer.hidden_size
    w_ih, w_hh, b_ih, b_hh = layer.layer_params(0, 0)
    grads = layer.layer_grads(0, 0)
    y = np.empty((T, B, H), layer.dtype)
    h = np.zeros((B, H), layer.dtype)
    dh = np.zeros((B, H), layer.dtype)
    dX = np.empty(x.shape, layer.dtype)
    bs = np.full(T, B, np.intc)
    ws = [None]

    def forward():
        h.fill(0)
        ws[0] = _gru.forward(x, w_ih, w_hh, b_ih, b_hh, h, y, bs, False, True, True)

    def backward():
        dh.fill(0)
        _gru.backward(ws[0], dy, dh, w_ih, w_hh, *grads, dX, False)

    def both():
        forward()
        backward()

    both()  # raises if the private signatures changed
    return forward, backward, both


def profile_shape(shape, grucy, blas, peak, target, min_repeats, seed, log):
    from ._bench_peers import GrucyPeer, Problem

    B, T, I, H = shape
    nt = grucy.get_num_threads()
    prob = Problem(B, T, I, H, seed=seed)
    peer = GrucyPeer(prob, nt)
    layer = peer.layer
    chunked, bounds = kernel_split(H, B)
    # The unchunked kernels issue every GEMM from one thread; the chunked ones share the
    # chunks (and row blocks) among nt OpenMP threads, each on single-threaded BLAS, so
    # the wall time of a GEMM phase is ideally its 1-thread time / nt.
    share = nt if chunked else 1
    out = {"label": "x".join(map(str, shape)), "B": B, "T": T, "I": I, "H": H,
           "gflop": prob.flops("train") / 1e9, "pieces": {}, "notes": [],
           "chunked": chunked, "chunks": len(bounds) - 1, "threads": nt}
    entries = [Entry("layer step", peer.train_step)]
    try:
        k_fwd, k_bwd, k_both = kernel_calls(grucy, layer, prob.x, prob.dy)
        tiny = Problem(1, 1, 1, 1, seed=seed)
        tiny_layer = GrucyPeer(tiny, 1).layer
        _, _, t_both = kernel_calls(grucy, tiny_layer, tiny.x, tiny.dy)
        entries += [Entry("kernel calls", k_both), Entry("kernel forward", k_fwd),
                    Entry("kernel backward", k_bwd), Entry("kernel entry (1x1x1x1)", t_both)]
    except (TypeError, ValueError, AttributeError, ImportError) as exc:
        out["notes"].append(f"direct kernel calls unavailable ({type(exc).__name__}: "
                            f"{exc}); layer-level pieces only")
    fresh, reuse = workspace_cycles(B, T, I, H)
    entries += [Entry("workspace alloc+touch", fresh), Entry("workspace touch", reuse)]
    empty = blas.empty_call()
    entries.append(Entry("ctypes BLAS call", lambda: [empty() for _ in range(100)], calls=100))
    pieces = gemm_pieces(blas, B, T, I, H, bounds)
    entries += [Entry(name, fn) for name, (fn, _, _) in pieces.items()]
    if chunked:  # _gru.forward regroups W_hh chunk-major on every call
        w = layer.layer_params(0, 0)[1]
        entries.append(Entry("W_hh regroup", lambda: np.concatenate(
            [w[g * H + bounds[k]:g * H + bounds[k + 1]]
             for k in range(len(bounds) - 1) for g in range(3)])))
    from . import _gru
    if hasattr(_gru, "_fast_sigmoidf"):
        a2, b2 = (np.random.default_rng(1).standard_normal(T * B * 2 * H).astype(np.float32),
                  np.empty(T * B * 2 * H, np.float32))
        a1, b1 = a2[:T * B * H].copy(), b2[:T * B * H].copy()
        entries.append(Entry("sigmoid+tanh of the forward pass (1 thread)",
                             lambda: (_gru._fast_sigmoidf(a2, b2), _gru._fast_tanhf(a1, b1))))
    try:  # BLAS on one thread, as inside the kernels (grucy_blas_enter)
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(limits=1, user_api="blas")
    except ImportError:
        limiter = None
        out["notes"].append("threadpoolctl missing: GEMM pieces ran on BLAS's own threads")
    try:
        times = measure(entries, target, min_repeats)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    ms = {k: min(v) * 1e3 for k, v in times.items()}
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    call_ms = ms["ctypes BLAS call"]
    step = ms["layer step"]
    P = out["pieces"]

    def put(name, value, how):
        P[name] = {"ms": value, "pct": 100.0 * value / step, "how": how}

    put("training step (layer API)", step, "GRU.forward(training=True) + GRU.backward")
    if "kernel calls" in ms:
        kern = ms["kernel calls"]
        put("  layer.py: Python + output allocation", step - kern,
            "layer step - direct _gru.forward/backward calls with preallocated outputs")
        put("  kernel calls (_gru.forward + backward)", kern, "direct calls")
        put("    forward kernel", ms["kernel forward"], "_gru.forward(training=True)")
        put("    backward kernel", ms["kernel backward"], "_gru.backward on that workspace")
        put("    entry cost per step (fixed)", ms["kernel entry (1x1x1x1)"],
            "the same two calls on a 1x1x1x1 problem")
    alloc = max(ms["workspace alloc+touch"] - ms["workspace touch"], 0.0)
    put("    workspace allocation + first touch", alloc,
        "np.empty + write of G, A, Hp, Gh, dG, dGxn, ones - the write alone")
    regroup = ms.get("W_hh regroup", 0.0)
    if chunked:
        put("    W_hh regroup copy (chunked kernels)", regroup,
            "the np.concatenate _gru.forward does per call")
    gemm_total = 0.0
    for name, (_, ncalls, flops) in pieces.items():
        one = max(ms[name] - ncalls * call_ms, 0.0)
        value = one / share
        gemm_total += value
        gflops_1 = flops / max(one, 1e-9) / 1e6
        how = (f"{ncalls} BLAS calls on 1 thread via ctypes (minus {call_ms * 1e3:.1f} us "
               f"each): {one:.3f} ms at {gflops_1:.0f} GFLOP/s")
        if share > 1:
            how += f", / {share} threads"
        put(f"    {name}", value, how)
        P[f"    {name}"].update({"ms_one_thread": one, "gflops_one_thread": gflops_1})
    if "kernel calls" in ms:
        rest = (ms["kernel calls"] - ms["kernel entry (1x1x1x1)"] - alloc - regroup
                - gemm_total)
        put("    rest: fused passes, copies, barriers, imbalance", rest,
            "kernel calls - entry - allocation - regroup - GEMMs")
    key = "sigmoid+tanh of the forward pass (1 thread)"
    if key in ms:
        put(f"    (for scale: {key})", ms[key], "grucy._gru._fast_sigmoidf/_fast_tanhf")
    # If everything but the GEMMs were free: the ceiling of this algorithm and split.
    out["gemm_bound_pct_sgemm"] = (100.0 * prob.flops("train") / (gemm_total * 1e-3)
                                   / 1e9 / peak) if gemm_total else None
    out["step_pct_sgemm"] = 100.0 * prob.flops("train") / (step * 1e-3) / 1e9 / peak
    out["ms_min"], out["ms_median"] = ms, med
    log(f"  profile {out['label']}: step {step:.3f} ms, GEMMs {gemm_total:.3f} ms")
    return out


# -- perf -----------------------------------------------------------------------------------
CATEGORIES = [  # (label, dso regex, symbol regex or None): first match wins
    ("BLAS thread sync (spin/yield/wait)", r"openblas",
     r"^(blas_thread_server|exec_blas\w*|inner_thread|sched_yield|blas_\w*wait\w*)$"),
    ("BLAS compute (GEMM/GEMV kernels, packing)", r"openblas", None),
    ("grucy compiled code (fused passes, loops)", r"^_gru\.", None),
    ("OpenMP runtime (libgomp)", r"libgomp", None),
    ("OS kernel (page faults, scheduling, syscalls)", r"kernel|\[k", None),
    ("libc (memcpy, memset, malloc)", r"^libc[.-]|^libm[.-]", None),
    ("Python interpreter", r"python|libpython", None),
    ("numpy", r"_multiarray|numpy", None),
]


def perf_available():
    """True when ``perf record -e cpu-clock`` works here (hardware counters need not)."""
    perf = shutil.which("perf")
    if perf is None:
        return False, "perf is not installed"
    with tempfile.TemporaryDirectory() as d:
        try:
            proc = subprocess.run([perf, "record", "-q", "-e", "cpu-clock", "-o",
                                   os.path.join(d, "p.data"), "--", "true"],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"perf record failed: {exc}"
    if proc.returncode != 0:
        return False, f"perf record failed: {proc.stderr.strip()[-200:]}"
    return True, perf


def perf_profile(perf, step, seconds, log):
    """Sample this process (all threads) while ``step`` runs for ``seconds``; returns the
    share of samples per category and the top symbols."""
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "perf.data")
        proc = subprocess.Popen([perf, "record", "-q", "-e", "cpu-clock", "-F", "1999",
                                 "-p", str(os.getpid()), "-o", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # let perf attach; sleeping produces no cpu-clock samples
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            step()
            steps += 1
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return {"error": "perf did not stop"}
        rep = subprocess.run([perf, "report", "-i", data, "--stdio", "--no-children",
                              "--sort", "dso,sym", "--percent-limit", "0"],
                             capture_output=True, text=True, timeout=300)
    line_re = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.+?)\s*$")
    cats = {label: 0.0 for label, _, _ in CATEGORIES}
    cats["other"] = 0.0
    symbols = []
    for line in rep.stdout.splitlines():
        m = line_re.match(line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
        if kind == "k":
            dso = "[kernel]"
        symbols.append((pct, dso, sym))
        for label, dso_re, sym_re in CATEGORIES:
            if re.search(dso_re, dso) and (sym_re is None or re.search(sym_re, sym)):
                cats[label] += pct
                break
        else:
            cats["other"] += pct
    symbols.sort(reverse=True)
    log(f"  perf: {steps} steps in {seconds:.1f} s")
    return {"steps": steps, "seconds": seconds, "categories": cats,
            "top_symbols": [{"pct": p, "dso": d_, "symbol": s} for p, d_, s in symbols[:12]]}


# -- main -------------------------------------------------------------------------------------
def run_profile(args, grucy, log, command):
    """The --profile mode of grucy.benchmark.main: print the breakdown, write JSON."""
    shapes = args.shapes or DEFAULT_SHAPES
    threads = args.threads or grucy.get_num_threads()
    limiter = None
    if args.threads is not None:
        grucy.set_num_threads(args.threads)
        try:
            from threadpoolctl import threadpool_limits
            limiter = threadpool_limits(limits=args.threads)
        except ImportError:
            pass
    target = args.target_seconds or (0.5 if args.quick else 2.0)
    min_repeats = args.min_repeats or (3 if args.quick else 5)
    blas = ScipyBlas()
    try:
        log("grucy bench --profile: SGEMM peak ...")
        peak = max(gemm_peak(args.gemm_size, 3).values())
        machine = machine_info(grucy, threads)
        rows = [profile_shape(s, grucy, blas, peak, target, min_repeats, args.seed, log)
                for s in shapes]
        ok, perf = perf_available()
        perf_rows = {}
        if ok:
            from ._bench_peers import GrucyPeer, Problem
            for s in shapes:
                peer = GrucyPeer(Problem(*s, seed=args.seed), threads)
                peer.train_step()
                perf_rows["x".join(map(str, s))] = perf_profile(
                    perf, peer.train_step, 1.5 if args.quick else 4.0, log)
        else:
            log(f"grucy bench --profile: no sampling profile ({perf})")
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    doc = {"benchmark": "grucy-profile", "format": 1,
           "command": command,
           "machine": machine, "sgemm_gflops": peak, "threads": threads,
           "shapes": rows, "perf": perf_rows if ok else {"unavailable": perf}}
    print("\n".join(profile_lines(doc)))
    if args.json not in ("", "-"):
        path = args.json
        if os.path.basename(path) == os.path.basename(DEFAULT_JSON):
            path = os.path.join(os.path.dirname(path), "profile_gru.json")
        write_atomic(path, json.dumps(doc, indent=1) + "\n")
        log(f"grucy bench --profile: wrote {path}")
    return 0


def profile_lines(doc):
    out = [f"Training step of grucy.GRU broken down (float32, 1 layer, {doc['threads']} "
           f"threads; SGEMM peak {doc['sgemm_gflops']:.1f} GFLOP/s with BLAS's own threads; "
           f"min of interleaved repeats)"]
    for r in doc["shapes"]:
        split = (f"chunked kernels, {r['chunks']} unit chunks over {r['threads']} threads"
                 if r.get("chunked") else "unchunked kernels (one thread issues the GEMMs)")
        out += ["", f"{r['label']} ({split}): {r['gflop']:.3g} GFLOP per step; step at "
                    f"{r['step_pct_sgemm']:.0f}% of SGEMM peak"
                + (f"; its GEMMs alone would allow {r['gemm_bound_pct_sgemm']:.0f}%"
                   if r.get("gemm_bound_pct_sgemm") else "")]
        body = [[name, f"{p['ms']:.3f}", f"{p['pct']:.1f}", p["how"]]
                for name, p in r["pieces"].items()]
        out.append(text_table(["piece", "ms", "% step", "how measured"], body, left=1))
        for note in r["notes"]:
            out.append(f"note: {note}")
    perf = doc["perf"]
    if "unavailable" in perf:
        out += ["", f"Sampling profile: unavailable ({perf['unavailable']})"]
    elif perf:
        labels = list(next(iter(perf.values()))["categories"])
        out += ["", "Sampling profile (perf record -e cpu-clock, all threads of the process; "
                    "% of CPU samples)"]
        body = [[lab] + [f"{p['categories'][lab]:.1f}" for p in perf.values()]
                for lab in labels]
        out.append(text_table(["category"] + list(perf), body, left=1))
        for label, p in perf.items():
            top = ", ".join(f"{s['symbol']} {s['pct']:.1f}%" for s in p["top_symbols"][:6])
            out.append(f"top symbols {label}: {top}")
    return out
