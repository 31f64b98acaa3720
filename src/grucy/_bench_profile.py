"""Where a training step of grucy.GRU spends its time (``grucy bench --profile``).

Nothing in the kernels is instrumented; the pieces are timed from the outside, on the
same shapes, the same BLAS library and the same thread settings:

* the whole step through the layer (``GRU.forward`` + ``GRU.backward``);
* the same step as direct calls of the kernels ``grucy._gru.forward`` / ``backward`` with
  preallocated outputs and a kernel buffer pool kept across calls (as the layer keeps
  one): the difference is the layer's Python code and its own output allocations;
* the fixed entry cost of a kernel call (the same calls on a 1x1x1x1 problem);
* the recurrent GEMMs as the kernels run them: on grucy's packed AVX-512 kernel through
  the hook ``grucy._gru._pgemm_probe`` (which packs its operand once, then times a loop
  of kernel calls) when ``_gru.packed_gemm_enabled()``, else through BLAS;
* the packing of W_hh the kernels do per call (probe wall time minus its timed loop),
  or, on the BLAS path, the chunk-major copy of W_hh;
* every other GEMM/GEMV the kernels issue, with the kernels' exact arguments and split
  (row blocks, the weight-gradient blocks of gate rows), called through scipy's BLAS
  function pointers (the library grucy's kernels call) with ctypes; the ctypes call cost
  is measured (a zero-size call) and subtracted;
* each thread's share of a split GEMM phase is timed on its own (on one thread); the
  phase counts as its slowest share;
* what is left of the kernel time: the fused elementwise passes, the copies of the state,
  barrier waits and load imbalance.  For scale, grucy's own fast sigmoid and tanh over
  the forward pass's element counts are timed too, and the allocation + first touch of
  the kernel buffers that the pool now saves.

With ``perf`` usable (``perf record -e cpu-clock`` on this process), a sampling profile
of training steps is added, grouped by library and symbol: BLAS compute kernels, BLAS
thread synchronisation (spinning/yielding while waiting), grucy's packed GEMM kernel,
grucy's fused passes, the rest of grucy's compiled code, the OpenMP runtime, the OS
kernel (page faults, scheduling), libc (memcpy/malloc), Python, numpy.
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
from typing import NamedTuple

import numpy as np

from .benchmark import (DEFAULT_JSON, DEFAULT_SHAPES, Entry, busy_warning, gemm_peak,
                        loadavg, machine_info, measure, text_table, write_atomic)

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


# Mirrors of the kernels' work split (grucy/_gru.pyx).  MAX_CHUNKS, ROW_BLOCKS,
# WGRAD_BLOCKS and PACKED_MIN_STEPS are compile-time constants (DEF) there, PANEL is the
# panel width of a packed float32 operand in _pgemm.h (2 vectors of 16 lanes); the chunk
# settings are read through _set_chunking, the packed path through packed_gemm_enabled.
MAX_CHUNKS = 8
ROW_BLOCKS = 8
WGRAD_BLOCKS = 4
PACKED_MIN_STEPS = 4
PANEL = 32


class KernelSplit(NamedTuple):
    """How grucy/_gru.pyx runs one layer (see :func:`kernel_split`)."""

    chunked: bool        # the parallel kernels (unit chunks shared by the OpenMP threads)
    bounds: list         # unit bounds of the chunks; [0, H] for the serial kernels
    packed: bool         # recurrent GEMMs on W_hh packed once per call (else BLAS)
    wgrad_bounds: list   # gate-row bounds of the weight-gradient blocks (of 3H rows)


def kernel_split(H, B, T=PACKED_MIN_STEPS):
    """How grucy/_gru.pyx splits a layer of H units at batch B over T steps.

    Chunked kernels (per-step work B*3H*H at or above the threshold) give each OpenMP
    thread whole chunks of hidden units (chunk k to thread k % nt), their input projection
    and dX by ROW_BLOCKS fixed row blocks and their weight gradients by WGRAD_BLOCKS fixed
    blocks of the 3H gate rows; otherwise one thread issues whole GEMMs.  The recurrent
    GEMMs run grucy's packed kernel when the CPU has it (AVX-512) and the kernels are
    chunked or T >= PACKED_MIN_STEPS; else BLAS."""
    from . import _gru

    min_work, min_chunk, align = 1 << 17, 32, 16
    if hasattr(_gru, "_set_chunking"):
        old = _gru._set_chunking(min_work)
        _gru._set_chunking(*old)
        min_work, min_chunk, align = old
    chunked = B * 3 * H * H >= min_work
    nc = max(1, min(H // min_chunk, MAX_CHUNKS)) if chunked else 1
    bounds = [H if k >= nc else (k * H // nc) // align * align for k in range(nc + 1)]
    packed = (bool(getattr(_gru, "packed_gemm_enabled", lambda: False)())
              and (chunked or T >= PACKED_MIN_STEPS))
    H3 = 3 * H
    wgrad = ([H3 if b >= WGRAD_BLOCKS else (b * H3 // WGRAD_BLOCKS) // 16 * 16
              for b in range(WGRAD_BLOCKS + 1)] if chunked else [0, H3])
    return KernelSplit(chunked, bounds, packed, wgrad)


def _teams(n_items, nt):
    """The items (chunks, row blocks, ...) each OpenMP thread takes: item k goes to
    thread k % nt; threads without an item are left out."""
    return [list(range(tid, n_items, nt)) for tid in range(min(nt, n_items))]


def recurrent_operands(whh, bounds, own):
    """One thread's recurrent GEMMs as single products on the packed kernel.

    The kernels pack W_hh once per call, one block per chunk (forward: the r, z, n rows
    of the chunk's units, N = 3c columns; backward: W_hh[:, chunk], N = c columns, K = 3H),
    each zero-padded to whole panels of PANEL columns, and at every step multiply the
    thread's chunks in turn; the packed kernel runs panel after panel, so this equals one
    product with the thread's blocks side by side, each but the last padded with zeros
    to whole panels (the probe pads the last one, like the kernels).  Returns (forward
    operand (Nf, H) for a @ w.T, backward operand (3H, Nb) for a @ w, layout) with layout
    [(chunk, first forward column, first backward column)]."""
    H = whh.shape[1]
    fwd, bwd, layout = [], [], []
    col_f = col_b = 0
    for i, k in enumerate(own):
        j0, c = bounds[k], bounds[k + 1] - bounds[k]
        last = i == len(own) - 1
        pad_f = 0 if last else -3 * c % PANEL
        pad_b = 0 if last else -c % PANEL
        fwd += [whh[g * H + j0:g * H + j0 + c] for g in range(3)]
        fwd.append(np.zeros((pad_f, H), whh.dtype))
        bwd += [whh[:, j0:j0 + c], np.zeros((3 * H, pad_b), whh.dtype)]
        layout.append((k, col_f, col_b))
        col_f += 3 * c + pad_f
        col_b += c + pad_b
    return (np.ascontiguousarray(np.concatenate(fwd)),
            np.ascontiguousarray(np.concatenate(bwd, axis=1)), layout)


def _probe_call(a, w, transposed, c, repeats):
    """A zero-argument callable returning the seconds of ``repeats`` packed-kernel calls
    (grucy._gru._pgemm_probe; packing excluded)."""
    def call():
        from . import _gru  # looked up at call time (the tests spy on it)
        return _gru._pgemm_probe(a, w, transposed, c, repeats)
    return call


def _pack_call(probes):
    """A zero-argument callable returning the seconds the probe calls spend outside their
    timed loop: packing w, plus a fixed call cost (measured with a 1x1 probe in place of
    w and subtracted by the caller).  Each call is preceded by an untimed 1x1 probe, so
    that the fixed cost is that of a warm call path (after a large GEMM it can otherwise
    be ten times the 1-2 us of a warm call) while w itself is as cold as in the kernels,
    which pack it once per call."""
    tiny = np.ones((1, 1), np.float32)

    def call():
        from . import _gru
        total = 0.0
        for a, w, transposed, c in probes:
            _gru._pgemm_probe(tiny, tiny, True, tiny, 1)
            t0 = time.perf_counter()
            inner = _gru._pgemm_probe(a, w, transposed, c, 1)
            total += time.perf_counter() - t0 - inner
        return total
    return call


def gemm_pieces(blas, B, T, I, H, split, nt=1):
    """The GEMMs of one training step as grucy/_gru.pyx issues them (reset-after form,
    full lengths), each thread's share separately, all run on the calling thread.

    Returns ``(pieces, bufs)``: pieces {name: {"kind", "threads", "flops"}} with
    "threads" one (callable, calls) per OpenMP thread that has work; kind "blas"
    (callables issue BLAS calls through ``blas``: time them), "probe" (recurrent GEMMs
    on the packed kernel: the callables return their own seconds) or "pack" (the W_hh
    packing, self-timed, not a GEMM).  bufs: the arrays the callables work on and the
    recurrent operands per thread (for the tests)."""
    rng = np.random.default_rng(0)
    H3, N = 3 * H, T * B
    chunked = split.chunked
    nc = len(split.bounds) - 1
    chunk_teams = _teams(nc, nt) if chunked else [[0]]
    row_bounds = ([N * b // ROW_BLOCKS for b in range(ROW_BLOCKS + 1)] if chunked
                  else [0, N])
    row_teams = _teams(len(row_bounds) - 1, nt) if chunked else [[0]]
    wg = split.wgrad_bounds
    wgrad_teams = _teams(len(wg) - 1, nt) if chunked else [[0]]

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def zeros(*shape):
        return np.zeros(shape, np.float32)

    X, wih, whh = arr(N, I), arr(H3, I), arr(H3, H)
    S, Gh, dS = arr(B, H), arr(B, H3), arr(B, H)
    dG, dGxn, Hp = arr(N, H3), arr(N, H), arr(N, H)
    G, dX, ones = zeros(N, H3), zeros(N, I), np.ones(N, np.float32)
    dwih, dwhh, dbih, dbhh = zeros(H3, I), zeros(H3, H), zeros(H3), zeros(H3)
    bufs = {"X": X, "w_ih": wih, "w_hh": whh, "S": S, "dG": dG, "dGxn": dGxn, "Hp": Hp,
            "G": G, "dX": dX, "dw_ih": dwih, "dw_hh": dwhh, "db_ih": dbih, "db_hh": dbhh}
    g = blas.gemm_call
    pieces = {}

    def put(name, kind, threads, flops):
        pieces[name] = {"kind": kind, "threads": threads, "flops": flops}

    def run(fns, times=1):
        def go():
            for _ in range(times):
                for fn in fns:
                    fn()
        return go

    def blas_threads(lists, times=1):
        return [(run(fns, times), times * len(fns)) for fns in lists]

    flop = 2.0 * N * H3
    # G = X @ W_ih^T (by row blocks when chunked)
    put("hoisted GEMM, forward (X W_ih^T)", "blas", blas_threads(
        [[g(False, True, row_bounds[b + 1] - row_bounds[b], H3, I, (X, row_bounds[b] * I),
            I, (wih, 0), I, 0.0, (G, row_bounds[b] * H3), H3)
          for b in team if row_bounds[b + 1] > row_bounds[b]] for team in row_teams]),
        flop * I)
    if split.packed:
        rec = bufs["recurrent"] = []
        fwd, bwd, pack = [], [], []
        a_b = dG[:B]  # one step's gate gradients (B, 3H), contiguous
        for team in chunk_teams:
            wf, wb, layout = recurrent_operands(whh, split.bounds, team)
            cf = np.empty((B, wf.shape[0]), np.float32)
            cb = np.empty((B, wb.shape[1]), np.float32)
            rec.append({"w_fwd": wf, "w_bwd": wb, "layout": layout, "c_fwd": cf,
                        "c_bwd": cb, "a_bwd": a_b})
            fwd.append((_probe_call(S, wf, True, cf, T), T * len(team)))
            bwd.append((_probe_call(a_b, wb, False, cb, T), T * len(team)))
            pack.append((_pack_call([(S[:1], wf, True, cf[:1]),
                                     (a_b[:1], wb, False, cb[:1])]), 2 * len(team)))
        put("recurrent GEMM, forward", "probe", fwd, flop * H)
        put("recurrent GEMM, backward", "probe", bwd, flop * H)
        put("W_hh packing (forward + backward)", "pack", pack, 0.0)
    elif chunked:
        # BLAS on W_hh regrouped chunk-major ([r z n] of chunk 0, of chunk 1, ...)
        chunks = [(split.bounds[k], split.bounds[k + 1] - split.bounds[k])
                  for k in range(nc)]
        put("recurrent GEMM, forward", "blas", blas_threads(
            [[g(False, True, B, 3 * chunks[k][1], H, (S, 0), H, (whh, 3 * chunks[k][0] * H),
                H, 0.0, (Gh, 3 * chunks[k][0]), H3) for k in team] for team in chunk_teams],
            T), flop * H)
        put("recurrent GEMM, backward", "blas", blas_threads(
            [[g(False, False, B, chunks[k][1], H3, (dG, 0), H3, (whh, chunks[k][0]), H,
                1.0, (dS, chunks[k][0]), H) for k in team] for team in chunk_teams], T),
            flop * H)
    else:
        put("recurrent GEMM, forward", "blas", blas_threads(
            [[g(False, True, B, H3, H, (S, 0), H, (whh, 0), H, 0.0, (Gh, 0), H3)]], T),
            flop * H)
        put("recurrent GEMM, backward", "blas", blas_threads(
            [[g(False, False, B, H, H3, (dG, 0), H3, (whh, 0), H, 1.0, (dS, 0), H)]], T),
            flop * H)

    def wgrad_rows(g0, g1, d_rz, d_n, src, dw, db):
        """_wgrad_rows: rows g0:g1 of a weight gradient; d_rz, d_n: (array, offset, ld)
        of the gate gradients of the r, z rows and of the n rows; src: (rz, n) sources.
        Returns (GEMMs, column sums)."""
        ld = src[0].shape[1]
        gemms, sums = [], []
        if g0 < 2 * H:
            m = min(g1, 2 * H) - g0
            gemms.append(g(True, False, m, ld, N, (d_rz[0], d_rz[1] + g0), d_rz[2],
                           (src[0], 0), ld, 1.0, (dw, g0 * ld), ld))
            sums.append(blas.colsum_call(N, m, (d_rz[0], d_rz[1] + g0), d_rz[2], ones,
                                         db[g0:]))
            g0 += m
        if g1 > g0:
            o = d_n[1] + g0 - 2 * H
            gemms.append(g(True, False, g1 - g0, ld, N, (d_n[0], o), d_n[2], (src[1], 0),
                           ld, 1.0, (dw, g0 * ld), ld))
            sums.append(blas.colsum_call(N, g1 - g0, (d_n[0], o), d_n[2], ones, db[g0:]))
        return gemms, sums

    dw_ih, dw_hh, bias = [], [], []
    for team in wgrad_teams:
        ih, hh, sums = [], [], []
        for b in team:
            q0, q1 = wg[b], wg[b + 1]
            # dW_ih[q0:q1] += dGx[:, q0:q1]^T @ X (dGx: dG for r, z; dGxn for n)
            gm, sm = wgrad_rows(q0, q1, (dG, 0, H3), (dGxn, 0, H), (X, X), dwih, dbih)
            ih += gm
            sums += sm
            # dW_hh[q0:q1] += dGh[:, q0:q1]^T @ Hp
            gm, sm = wgrad_rows(q0, q1, (dG, 0, H3), (dG, 2 * H, H3), (Hp, Hp), dwhh, dbhh)
            hh += gm
            sums += sm
        if not chunked:  # _backward_seq: db_hh in one column sum over all 3H
            sums = sums[:2] + [blas.colsum_call(N, H3, (dG, 0), H3, ones, dbhh)]
        dw_ih.append(ih)
        dw_hh.append(hh)
        bias.append(sums)
    put("hoisted GEMM, backward dW_ih", "blas", blas_threads(dw_ih), flop * I)
    put("hoisted GEMM, backward dW_hh", "blas", blas_threads(dw_hh), flop * H)
    # dX = dGx @ W_ih (by row blocks when chunked)
    dx = []
    for team in row_teams:
        calls = []
        for b in team:
            r0, r1 = row_bounds[b], row_bounds[b + 1]
            if r1 > r0:
                calls += [g(False, False, r1 - r0, I, 2 * H, (dG, r0 * H3), H3, (wih, 0), I,
                            0.0, (dX, r0 * I), I),
                          g(False, False, r1 - r0, I, H, (dGxn, r0 * H), H, (wih, 2 * H * I),
                            I, 1.0, (dX, r0 * I), I)]
        dx.append(calls)
    put("hoisted GEMM, backward dX", "blas", blas_threads(dx), flop * I)
    put("bias gradient sums (GEMV), backward", "blas", blas_threads(bias), 4.0 * N * H3)
    return pieces, bufs


def workspace_cycles(B, T, I, H, split):
    """(allocate + touch + free, touch only) callables over the buffers the kernels keep
    in their pool (training step, full lengths): G, A, Hp, Gh, the packed W_hh (packed
    path) (forward); dG, dGxn, dRH, ones, the packed W_hh (backward)."""
    H3, N = 3 * H, T * B
    shapes = [(N, H3), (N, H), (N, H), (B, H3), (N, H3), (N, H), (1, H), (N,)]
    if split.packed:
        nc = len(split.bounds) - 1
        widths = [split.bounds[k + 1] - split.bounds[k] for k in range(nc)]
        shapes += [(sum(H * -(-3 * c // PANEL) * PANEL for c in widths),),
                   (sum(H3 * -(-c // PANEL) * PANEL for c in widths),)]
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
    preallocated outputs and a kernel buffer pool kept across calls (as the layer does):
    (forward, backward, both) callables, or raises TypeError when the private kernel
    signatures differ from what this profiler knows."""
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
    pool = {}

    def forward():
        h.fill(0)
        ws[0] = _gru.forward(x, w_ih, w_hh, b_ih, b_hh, h, y, bs, False, True, True, pool)

    def backward():
        dh.fill(0)
        _gru.backward(ws[0], dy, dh, w_ih, w_hh, *grads, dX, False)

    def both():
        forward()
        backward()

    both()  # raises if the private signatures changed
    return forward, backward, both


class _SelfTimed(Entry):
    """An Entry whose callable returns its own seconds (the packed-kernel probe times
    its loop inside, without its packing)."""

    def once(self):
        if self.prepare is not None:
            self.prepare()
        return self.fn() / self.calls


def profile_shape(shape, grucy, blas, target, min_repeats, seed, log):
    from ._bench_peers import GrucyPeer, Problem

    B, T, I, H = shape
    nt = grucy.get_num_threads()
    prob = Problem(B, T, I, H, seed=seed)
    peer = GrucyPeer(prob, nt)
    layer = peer.layer
    if not layer.reset_after:  # pragma: no cover - the benchmark's layers are reset-after
        raise ValueError("the profile mirrors the reset-after kernels only")
    split = kernel_split(H, B, T)
    out = {"label": "x".join(map(str, shape)), "B": B, "T": T, "I": I, "H": H,
           "gflop": prob.flops("train") / 1e9, "pieces": {}, "notes": [],
           "chunked": split.chunked, "chunks": len(split.bounds) - 1,
           "packed": split.packed, "threads": nt}
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
    fresh, reuse = workspace_cycles(B, T, I, H, split)
    entries += [Entry("workspace alloc+touch", fresh), Entry("workspace touch", reuse)]
    empty = blas.empty_call()
    entries.append(Entry("ctypes BLAS call", lambda: [empty() for _ in range(100)], calls=100))
    pieces, _ = gemm_pieces(blas, B, T, I, H, split, nt)
    for name, p in pieces.items():
        for tid, (fn, _) in enumerate(p["threads"]):
            entries.append((Entry if p["kind"] == "blas" else _SelfTimed)(f"{name} #{tid}", fn))
    if split.packed:  # the fixed cost of a probe call outside its loop, on a 1x1 problem
        one = np.ones((1, 1), np.float32)
        entries.append(_SelfTimed("probe call cost", _pack_call([(one, one, True, one)])))
    elif split.chunked:  # _gru.forward regroups W_hh chunk-major on every call
        w, bounds = layer.layer_params(0, 0)[1], split.bounds
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
        put("  kernel calls (_gru.forward + backward)", kern,
            "direct calls, kernel buffers reused from a pool as the layer does")
        put("    forward kernel", ms["kernel forward"], "_gru.forward(training=True)")
        put("    backward kernel", ms["kernel backward"], "_gru.backward on that workspace")
        put("    entry cost per step (fixed)", ms["kernel entry (1x1x1x1)"],
            "the same two calls on a 1x1x1x1 problem")
    fixed = 0.0
    gemm_total = 0.0
    for name, p in pieces.items():
        per = []
        for tid, (_, ncalls) in enumerate(p["threads"]):
            t = ms[f"{name} #{tid}"]
            if p["kind"] == "blas":
                t -= ncalls * call_ms
            elif p["kind"] == "pack":
                t -= 2 * ms["probe call cost"]
            per.append(max(t, 0.0))
        one = sum(per)
        value = max(per)  # the threads' shares run side by side; the slowest ends it
        ncalls = sum(c for _, c in p["threads"])
        share = (f", slowest of {len(per)} threads' shares" if len(per) > 1 else "")
        if p["kind"] == "pack":
            fixed += value
            put(f"    {name}", value,
                f"{ncalls} packed blocks (grucy._gru._pgemm_probe wall time minus its "
                f"timed loop, minus a 1x1 probe's): {one:.3f} ms on 1 thread{share}")
            continue
        gemm_total += value
        gflops_1 = p["flops"] / max(one, 1e-9) / 1e6
        if p["kind"] == "probe":
            how = (f"grucy's packed kernel (_pgemm_probe), {ncalls} chunk GEMMs: "
                   f"{one:.3f} ms on 1 thread at {gflops_1:.0f} GFLOP/s")
        else:
            how = (f"{ncalls} BLAS calls on 1 thread via ctypes (minus "
                   f"{call_ms * 1e3:.1f} us each): {one:.3f} ms at {gflops_1:.0f} GFLOP/s")
        put(f"    {name}", value, how + share)
        P[f"    {name}"].update({"ms_one_thread": one, "gflops_one_thread": gflops_1,
                                 "kind": p["kind"],
                                 "ms_threads": per})
    if "W_hh regroup" in ms:
        fixed += ms["W_hh regroup"]
        put("    W_hh regroup copy (chunked BLAS path)", ms["W_hh regroup"],
            "the np.concatenate _gru.forward does per call")
    if "kernel calls" in ms:
        rest = ms["kernel calls"] - ms["kernel entry (1x1x1x1)"] - fixed - gemm_total
        put("    rest: fused passes, copies, barriers, imbalance", rest,
            "kernel calls - entry - " + ("packing" if split.packed else "regroup")
            + " - GEMMs")
    key = "sigmoid+tanh of the forward pass (1 thread)"
    if key in ms:
        put(f"    (for scale: {key})", ms[key], "grucy._gru._fast_sigmoidf/_fast_tanhf")
    alloc = max(ms["workspace alloc+touch"] - ms["workspace touch"], 0.0)
    put("    (not in the step: allocation + first touch of the kernel buffers)", alloc,
        "np.empty + write of the pool's buffers - the write alone: what the pool saves "
        "after the first call")
    out["gemm_ms"], out["step_ms"] = gemm_total, step
    out["ms_min"], out["ms_median"] = ms, med
    log(f"  profile {out['label']}: step {step:.3f} ms, GEMMs {gemm_total:.3f} ms")
    return out


SGEMM_REPEATS = 7  # best of 7: on a shared machine fewer often miss the peak by 10-15%


def sgemm_peaks(n):
    """Best SGEMM GFLOP/s with BLAS's threads as they are, and on one thread."""
    peaks = {"all": max(gemm_peak(n, SGEMM_REPEATS).values())}
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        peaks["one"] = float("nan")
        return peaks
    with threadpool_limits(limits=1, user_api="blas"):
        peaks["one"] = max(gemm_peak(n, SGEMM_REPEATS).values())
    return peaks


# -- perf -----------------------------------------------------------------------------------
CATEGORIES = [  # (label, dso regex, symbol regex or None): first match wins
    ("BLAS thread sync (spin/yield/wait)", r"openblas",
     r"^(blas_thread_server|exec_blas\w*|inner_thread|sched_yield|blas_\w*wait\w*)$"),
    ("BLAS compute (GEMM/GEMV kernels, packing)", r"openblas", None),
    ("grucy packed GEMM kernel (grucy_pgemm_*)", r"^_gru\.", r"^grucy_pgemm"),
    ("grucy fused passes (grucy_fwd_*/grucy_bwd_*)", r"^_gru\.", r"^grucy_(fwd|bwd)_"),
    ("grucy other code (W_hh packing, loops, copies, Cython)", r"^_gru\.", None),
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
        load_start = loadavg()
        peaks = [sgemm_peaks(args.gemm_size)]
        machine = machine_info(grucy, threads)
        machine["loadavg_start"] = load_start
        rows = []
        for s in shapes:
            load = loadavg()
            rows.append(profile_shape(s, grucy, blas, target, min_repeats, args.seed, log))
            rows[-1]["loadavg_before"] = load
        peaks.append(sgemm_peaks(args.gemm_size))
        ok, perf = perf_available()
        perf_rows = {}
        if ok:
            from ._bench_peers import GrucyPeer, Problem
            for s in shapes:
                peer = GrucyPeer(Problem(*s, seed=args.seed), threads)
                peer.train_step()
                load = loadavg()
                row = perf_rows["x".join(map(str, s))] = perf_profile(
                    perf, peer.train_step, 1.5 if args.quick else 4.0, log)
                row["loadavg_before"] = load
        else:
            log(f"grucy bench --profile: no sampling profile ({perf})")
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    machine["loadavg_end"] = loadavg()
    peak = max(p["all"] for p in peaks)
    peak_1 = max(p["one"] for p in peaks)
    for r in rows:
        flops = r["gflop"] * 1e9
        r["step_pct_sgemm"] = 100.0 * flops / (r["step_ms"] * 1e-3) / 1e9 / peak
        # If everything but the GEMMs were free: the ceiling of this algorithm and split.
        r["gemm_bound_pct_sgemm"] = (100.0 * flops / (r["gemm_ms"] * 1e-3) / 1e9 / peak
                                     if r["gemm_ms"] else None)
        for p in r["pieces"].values():
            if "gflops_one_thread" in p:
                p["pct_sgemm_one_thread"] = 100.0 * p["gflops_one_thread"] / peak_1
                p["how"] += f" ({p['pct_sgemm_one_thread']:.0f}% of 1-thread SGEMM)"
    doc = {"benchmark": "grucy-profile", "format": 1,
           "command": command,
           "machine": machine, "sgemm_gflops": peak, "sgemm_gflops_one_thread": peak_1,
           "sgemm_runs": peaks, "threads": threads,
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
    n = doc["threads"]
    out = [f"Training step of grucy.GRU broken down (float32, 1 layer, {n} "
           f"thread{'s' if n != 1 else ''}; SGEMM peak {doc['sgemm_gflops']:.1f} GFLOP/s with BLAS's threads, "
           f"{doc['sgemm_gflops_one_thread']:.1f} on one; min of interleaved repeats): "
           f"{doc['command']}"]
    m = doc["machine"]
    if m.get("loadavg_start") is not None:
        out.append(f"1-min load average {m['loadavg_start']:.2f} at start, "
                   f"{m['loadavg_end']:.2f} at end, on {m['usable_cpus']} CPUs "
                   f"(this run adds up to {n})")
        warn = busy_warning(m)
        if warn:
            out.append(warn)
    for r in doc["shapes"]:
        split = (f"chunked kernels, {r['chunks']} unit chunks over {r['threads']} threads"
                 if r.get("chunked") else "unchunked kernels (one thread issues the GEMMs)")
        split += ("; recurrent GEMMs on the packed W_hh" if r.get("packed")
                  else "; recurrent GEMMs in BLAS")
        out += ["", f"{r['label']} ({split}): {r['gflop']:.3g} GFLOP per step; step at "
                    f"{r['step_pct_sgemm']:.0f}% of SGEMM peak"
                + (f"; its GEMMs alone would allow {r['gemm_bound_pct_sgemm']:.0f}%"
                   if r.get("gemm_bound_pct_sgemm") else "")
                + (f" (load {r['loadavg_before']:.2f} before it)"
                   if r.get("loadavg_before") is not None else "")]
        body = [[name, f"{p['ms']:.3f}", f"{p['pct']:.1f}", p["how"]]
                for name, p in r["pieces"].items()]
        out.append(text_table(["piece", "ms", "% step", "how measured"], body, left=1))
        for note in r["notes"]:
            out.append(f"note: {note}")
    perf = doc["perf"]
    if "unavailable" in perf:
        out += ["", f"Sampling profile: unavailable ({perf['unavailable']})"]
        return out
    for label, p in perf.items():
        if "error" in p:
            out += ["", f"Sampling profile {label}: {p['error']}"]
    perf = {k: p for k, p in perf.items() if "categories" in p}
    if perf:
        labels = list(next(iter(perf.values()))["categories"])
        out += ["", "Sampling profile (perf record -e cpu-clock, all threads of the process; "
                    "% of CPU samples)"]
        body = [[lab] + [f"{p['categories'][lab]:.1f}" for p in perf.values()]
                for lab in labels]
        # Steps much slower than the timed ones above: other processes took the cores
        # while sampling (threads then wait at the barriers: libgomp grows).
        body.append(["(ms per step while sampling)"]
                    + [f"{1e3 * p['seconds'] / max(p['steps'], 1):.1f}" for p in perf.values()])
        body.append(["(1-min load average before)"]
                    + [f"{p['loadavg_before']:.2f}" if p.get("loadavg_before") is not None
                       else "-" for p in perf.values()])
        out.append(text_table(["category"] + list(perf), body, left=1))
        for label, p in perf.items():
            top = ", ".join(f"{s['symbol']} {s['pct']:.1f}%" for s in p["top_symbols"][:6])
            out.append(f"top symbols {label}: {top}")
    return out
