"""Where a training step of grucy.GRU spends its time (``bench_gru.py --profile``).

Nothing in the kernels is instrumented; the pieces are timed from the outside, on the
same shapes, the same BLAS library and the same thread settings:

* the whole step through the layer (``GRU.forward`` + ``GRU.backward``);
* the same step as direct calls of the kernels ``grucy._gru.forward`` / ``backward`` with
  preallocated outputs and a kernel buffer pool kept across calls (as the layer keeps
  one): the difference is the layer's Python code and its own output allocations;
* the fixed entry cost of a kernel call (the same calls on a 1x1x1x1 problem);
* the GEMMs the kernels run on grucy's packed AVX-512 kernel when
  ``_gru.packed_gemm_enabled()`` (the recurrent GEMMs, the input projection and dX)
  through the hook ``grucy._gru._pgemm_probe`` (which packs its operand once, then
  times a loop of kernel calls), on the operands and row blocks the kernels use;
* the packing of W_hh and W_ih the kernels do per call (probe wall time minus its
  timed loop), or, on the chunked BLAS path, the chunk-major copy of W_hh;
* every BLAS GEMM/GEMV the kernels issue, with the kernels' exact arguments and split
  (row blocks, the two row halves of the weight gradients), called through scipy's BLAS
  function pointers (the library grucy's kernels call) with ctypes; the ctypes call cost
  is measured (a zero-size call) and subtracted;
* the add of the weight gradients' second half (memory-bound), as numpy adds of the
  kernels' blocks;
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

from _bench_machine import busy_warning, gemm_peak, limit_threads, loadavg, machine_info
from _bench_peers import DEFAULT_SHAPES, GrucyPeer, Problem
from _bench_report import text_table
from _bench_timing import Entry, measure, write_atomic

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
# PACKED_MIN_STEPS and HOISTED_PARALLEL_MIN_WORK are compile-time constants (DEF) there,
# PANEL is the panel width of a packed float32 operand in _pgemm.h (2 vectors of 16
# lanes); the chunk settings are read through _set_chunking, the packed path through
# packed_gemm_enabled.
MAX_CHUNKS = 8
ROW_BLOCKS = 8
PACKED_MIN_STEPS = 4
HOISTED_PARALLEL_MIN_WORK = 1 << 20
PANEL = 32


class KernelSplit(NamedTuple):
    """How grucy/_gru.pyx runs one layer (see :func:`kernel_split`)."""

    chunked: bool        # the parallel kernels (unit chunks shared by the OpenMP threads)
    bounds: list         # unit bounds of the chunks; [0, H] for the serial kernels
    packed: bool         # W_hh and W_ih packed once per call for grucy's kernel (else BLAS)
    row_blocks: list     # row bounds of the ROW_BLOCKS blocks of the N = T*B rows
    row_halves: list     # row bounds of the two halves of the weight gradients


def kernel_split(H, B, T=PACKED_MIN_STEPS):
    """How grucy/_gru.pyx splits a layer of H units at batch B over T steps (full
    lengths: N = T*B rows).

    Chunked kernels (per-step work B*3H*H at or above the threshold) give each OpenMP
    thread whole chunks of hidden units (chunk k to thread k % nt); otherwise one thread
    runs the time loop.  Both run the input projection and dX by ROW_BLOCKS fixed row
    blocks and the weight gradients as two fixed halves of the rows, [0, N//2) and
    [N//2, N) (:func:`hoisted_threads`: on how many threads).  The recurrent GEMMs, the
    input projection and dX run grucy's packed kernel when the CPU has it (AVX-512) and
    the kernels are chunked or T >= PACKED_MIN_STEPS; else BLAS."""
    from grucy import _gru

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
    N = T * B
    return KernelSplit(chunked, bounds, packed,
                       [N * b // ROW_BLOCKS for b in range(ROW_BLOCKS + 1)],
                       [0, N // 2, N])


def hoisted_threads(split, work, nt):
    """Threads of the GEMMs outside the time loop: the whole team in the chunked kernels;
    in the serial ones (``_hoisted_threads``) the team when ``work`` (multiply-adds:
    N*3H*I for the input projection, N*3H*(I+H) for the backward's) reaches
    HOISTED_PARALLEL_MIN_WORK, else one thread."""
    if split.chunked or (nt > 1 and work >= HOISTED_PARALLEL_MIN_WORK):
        return nt
    return 1


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


def _probe_call(probes):
    """A zero-argument callable returning the seconds of packed-kernel calls
    (grucy._gru._pgemm_probe on each (a, w, transposed, c, repeats) of ``probes``;
    packing excluded)."""
    def call():
        from grucy import _gru  # looked up at call time (the tests spy on it)
        return sum(_gru._pgemm_probe(*p) for p in probes)
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
        from grucy import _gru
        total = 0.0
        for a, w, transposed, c in probes:
            _gru._pgemm_probe(tiny, tiny, True, tiny, 1)
            t0 = time.perf_counter()
            inner = _gru._pgemm_probe(a, w, transposed, c, 1)
            total += time.perf_counter() - t0 - inner
        return total
    return call


def _panel_share(cols, tid, nt):
    """Columns [c0, c1) of the packed panels thread tid of nt packs (_pack_ih's share in
    _forward_par/_backward_par: panels P*tid//nt .. P*(tid+1)//nt of P)."""
    p = -(-cols // PANEL)
    return min(p * tid // nt * PANEL, cols), min(p * (tid + 1) // nt * PANEL, cols)


def gemm_pieces(blas, B, T, I, H, split, nt=1):
    """The GEMMs of one training step as grucy/_gru.pyx issues them (reset-after form,
    full lengths), each thread's share separately, all run on the calling thread.

    Returns ``(pieces, bufs)``: pieces {name: {"kind", "threads", "flops"}} with
    "threads" one (callable, calls) per OpenMP thread that has work; kind "blas"
    (callables issue BLAS calls through ``blas``: time them), "probe" (GEMMs on grucy's
    packed kernel: the callables return their own seconds), "pack" (the packing of W_hh
    and W_ih, self-timed, not a GEMM) or "add" (numpy adds, time them: the weight
    gradients' second half added in, not a GEMM).  bufs: the arrays the callables work
    on and the recurrent operands per thread (for the tests)."""
    rng = np.random.default_rng(0)
    H3, N = 3 * H, T * B
    chunked, packed = split.chunked, split.packed
    nc = len(split.bounds) - 1
    chunk_teams = _teams(nc, nt) if chunked else [[0]]
    rows, halves = split.row_blocks, split.row_halves
    nt_fwd = hoisted_threads(split, N * H3 * I, nt)
    nt_bwd = hoisted_threads(split, N * H3 * (I + H), nt)
    row_teams_f, row_teams_b = _teams(ROW_BLOCKS, nt_fwd), _teams(ROW_BLOCKS, nt_bwd)
    half_teams = _teams(2, nt_bwd)

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def zeros(*shape):
        return np.zeros(shape, np.float32)

    X, wih, whh = arr(N, I), arr(H3, I), arr(H3, H)
    S, Gh, dS = arr(B, H), arr(B, H3), arr(B, H)
    dG, dGxn, Hp = arr(N, H3), arr(N, H), arr(N, H)
    G, dX, dXn, ones = zeros(N, H3), zeros(N, I), zeros(N, I), np.ones(N, np.float32)
    dwih, dwhh, dbih, dbhh = zeros(H3, I), zeros(H3, H), zeros(H3), zeros(H3)
    # the second half's scratch: W2 (dW_ih, db_ih, db_hh) and W2hh (dW_hh)
    w2ih, w2hh, w2b = zeros(H3, I), zeros(H3, H), zeros(2, H3)
    bufs = {"X": X, "w_ih": wih, "w_hh": whh, "S": S, "dG": dG, "dGxn": dGxn, "Hp": Hp,
            "G": G, "dX": dX, "dX_n": dXn, "dw_ih": dwih, "dw_hh": dwhh, "db_ih": dbih,
            "db_hh": dbhh, "w2_ih": w2ih, "w2_hh": w2hh, "w2_b": w2b}
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

    def blocks(team):
        return [(rows[b], rows[b + 1]) for b in team if rows[b + 1] > rows[b]]

    flop = 2.0 * N * H3
    # G = X @ W_ih^T by the fixed row blocks (_input_projection)
    name = "hoisted GEMM, forward (X W_ih^T)"
    if packed:
        put(name, "probe", [(_probe_call([(X[r0:r1], wih, True, G[r0:r1], 1)
                                          for r0, r1 in blocks(team)]), len(blocks(team)))
                            for team in row_teams_f], flop * I)
    else:
        put(name, "blas", blas_threads(
            [[g(False, True, r1 - r0, H3, I, (X, r0 * I), I, (wih, 0), I, 0.0,
                (G, r0 * H3), H3) for r0, r1 in blocks(team)] for team in row_teams_f]),
            flop * I)
    if packed:
        rec = bufs["recurrent"] = []
        fwd, bwd = [], []
        a_b = dG[:B]  # one step's gate gradients (B, 3H), contiguous
        for team in chunk_teams:
            wf, wb, layout = recurrent_operands(whh, split.bounds, team)
            cf = np.empty((B, wf.shape[0]), np.float32)
            cb = np.empty((B, wb.shape[1]), np.float32)
            rec.append({"w_fwd": wf, "w_bwd": wb, "layout": layout, "c_fwd": cf,
                        "c_bwd": cb, "a_bwd": a_b})
            fwd.append((_probe_call([(S, wf, True, cf, T)]), T * len(team)))
            bwd.append((_probe_call([(a_b, wb, False, cb, T)]), T * len(team)))
        put("recurrent GEMM, forward", "probe", fwd, flop * H)
        put("recurrent GEMM, backward", "probe", bwd, flop * H)
        # Each thread packs its chunks' W_hh blocks and a share of W_ih's panels
        # (_forward_par/_backward_par; the serial kernels pack all on one thread), forward
        # and backward.  The backward's W_ih share is a contiguous copy of W_ih's columns
        # c0:c1 (the probe needs one; same values and size, unit-stride source rows).
        pack_nt = nt if chunked else 1
        bufs["pack"] = pack = []
        for tid in range(pack_nt):
            probes = []
            if tid < len(rec):
                r = rec[tid]
                probes += [(S[:1], r["w_fwd"], True, r["c_fwd"][:1]),
                           (a_b[:1], r["w_bwd"], False, r["c_bwd"][:1])]
            c0, c1 = _panel_share(H3, tid, pack_nt)
            if c1 > c0:
                probes.append((X[:1], wih[c0:c1], True, zeros(1, c1 - c0)))
            c0, c1 = _panel_share(I, tid, pack_nt)
            if c1 > c0:
                probes.append((dG[:1], np.ascontiguousarray(wih[:, c0:c1]), False,
                               zeros(1, c1 - c0)))
            pack.append(probes)
        put("W_hh + W_ih packing (forward + backward)", "pack",
            [(_pack_call(p), len(p)) for p in pack], 0.0)
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

    def wgrad(r0, r1, d_rz, d_n, src, dw, db, beta):
        """_wgrad on rows r0:r1: dw (+)= D^T @ src, D's gate columns from d_rz (r, z) and
        d_n (n), each an (array, offset, ld); db += D's column sums.  Returns (GEMMs,
        column sums)."""
        m, ld = r1 - r0, src.shape[1]
        (a_rz, o_rz, ld_rz), (a_n, o_n, ld_n) = d_rz, d_n
        gemms = [g(True, False, 2 * H, ld, m, (a_rz, o_rz + r0 * ld_rz), ld_rz,
                   (src, r0 * ld), ld, beta, (dw, 0), ld),
                 g(True, False, H, ld, m, (a_n, o_n + r0 * ld_n), ld_n, (src, r0 * ld), ld,
                   beta, (dw, 2 * H * ld), ld)]
        sums = [blas.colsum_call(m, 2 * H, (a_rz, o_rz + r0 * ld_rz), ld_rz, ones, db),
                blas.colsum_call(m, H, (a_n, o_n + r0 * ld_n), ld_n, ones, db[2 * H:])]
        return gemms, sums

    dw_ih, dw_hh, bias = [], [], []
    for team in half_teams:
        ih, hh, sums = [], [], []
        for q in team:  # half 0 adds into the gradients, half 1 sets the scratch
            r0, r1 = halves[q], halves[q + 1]
            beta = 1.0 if q == 0 else 0.0
            # dW_ih (+)= dGx^T @ X (dGx: dG for r, z; dGxn for n)
            gm, sm = wgrad(r0, r1, (dG, 0, H3), (dGxn, 0, H), X,
                           dwih if q == 0 else w2ih, dbih if q == 0 else w2b[0], beta)
            ih += gm
            sums += sm
            # dW_hh (+)= dGh^T @ Hp
            gm, sm = wgrad(r0, r1, (dG, 0, H3), (dG, 2 * H, H3), Hp,
                           dwhh if q == 0 else w2hh, dbhh if q == 0 else w2b[1], beta)
            hh += gm
            sums += sm
        dw_ih.append(ih)
        dw_hh.append(hh)
        bias.append(sums)
    put("hoisted GEMM, backward dW_ih", "blas", blas_threads(dw_ih), flop * I)
    put("hoisted GEMM, backward dW_hh", "blas", blas_threads(dw_hh), flop * H)
    put("bias gradient sums (GEMV), backward", "blas", blas_threads(bias), 4.0 * N * H3)
    # dX = dG[:, :2H] @ W_ih[:2H] + dGxn @ W_ih[2H:] by the row blocks
    name = "hoisted GEMM, backward dX"
    if packed:
        # The probe needs a C-contiguous A: the first product reads a contiguous copy of
        # dG[:, :2H] (same shape and FLOPs, unit-stride A instead of stride 3H).  The
        # second product goes to its own output dX_n (the kernels add it into dX: the
        # probe overwrites, one load of the output less).
        dGrz = bufs["dG_rz"] = np.ascontiguousarray(dG[:, :2 * H])
        put(name, "probe", [(_probe_call(
            [p for r0, r1 in blocks(team) for p in (
                (dGrz[r0:r1], wih[:2 * H], False, dX[r0:r1], 1),
                (dGxn[r0:r1], wih[2 * H:], False, dXn[r0:r1], 1))]), 2 * len(blocks(team)))
            for team in row_teams_b], flop * I)
    else:
        put(name, "blas", blas_threads(
            [[c for r0, r1 in blocks(team) for c in (
                g(False, False, r1 - r0, I, 2 * H, (dG, r0 * H3), H3, (wih, 0), I, 0.0,
                  (dX, r0 * I), I),
                g(False, False, r1 - r0, I, H, (dGxn, r0 * H), H, (wih, 2 * H * I), I, 1.0,
                  (dX, r0 * I), I))] for team in row_teams_b]), flop * I)
    # After a barrier: the gradients += the second half's, by the row blocks of the flat
    # arrays (memory-bound)
    pairs = [(dwih.ravel(), w2ih.ravel()), (dwhh.ravel(), w2hh.ravel()), (dbih, w2b[0]),
             (dbhh, w2b[1])]
    adds = []
    for team in row_teams_b:
        views = [(d[d.size * b // ROW_BLOCKS:d.size * (b + 1) // ROW_BLOCKS],
                  s[s.size * b // ROW_BLOCKS:s.size * (b + 1) // ROW_BLOCKS])
                 for b in team for d, s in pairs]
        adds.append((_add_call(views), len(views)))
    put("weight gradients: second half added (memory-bound)", "add", adds, 0.0)
    return pieces, bufs


def _add_call(views):
    """A zero-argument callable doing dst += src for each (dst, src) of ``views``."""
    def call():
        for d, s in views:
            np.add(d, s, out=d)
    return call


def workspace_cycles(B, T, I, H, split):
    """(allocate + touch + free, touch only) callables over the buffers the kernels keep
    in their pool (training step, full lengths): G, A, Hp, Gh, S2 (chunked) (forward);
    dG, dGxn, dRH, ones, W2 (backward); pk, the packed W_hh and W_ih (packed path; the
    backward reuses the forward's, grown when it needs more)."""
    H3, N = 3 * H, T * B
    shapes = [(N, H3), (N, H), (N, H), (B, H3), (N, H3), (N, H), (1, H), (N,),
              (H3 * (I + 2 + (0 if split.packed else H)),)]
    if split.chunked:
        shapes.append((B, H))
    if split.packed:
        nc = len(split.bounds) - 1
        widths = [split.bounds[k + 1] - split.bounds[k] for k in range(nc)]
        size = lambda K, n: K * -(-n // PANEL) * PANEL  # noqa: E731 (grucy_pgemm_size)
        shapes.append((max(sum(size(H, 3 * c) for c in widths) + size(I, H3),
                           sum(size(H3, c) for c in widths) + size(H3, I)),))
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
    from grucy import _gru

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
    z = np.zeros(0, np.float32)
    entries.append(Entry("numpy add call", lambda: [np.add(z, z, out=z) for _ in range(100)],
                         calls=100))
    pieces, _ = gemm_pieces(blas, B, T, I, H, split, nt)
    for name, p in pieces.items():
        for tid, (fn, _) in enumerate(p["threads"]):
            timer = Entry if p["kind"] in ("blas", "add") else _SelfTimed
            entries.append(timer(f"{name} #{tid}", fn))
    if split.packed:  # the fixed cost of a probe call outside its loop, on a 1x1 problem
        one = np.ones((1, 1), np.float32)
        entries.append(_SelfTimed("probe call cost", _pack_call([(one, one, True, one)])))
    elif split.chunked:  # _gru.forward regroups W_hh chunk-major on every call
        w, bounds = layer.layer_params(0, 0)[1], split.bounds
        entries.append(Entry("W_hh regroup", lambda: np.concatenate(
            [w[g * H + bounds[k]:g * H + bounds[k + 1]]
             for k in range(len(bounds) - 1) for g in range(3)])))
    from grucy import _gru
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
                t -= ncalls * ms["probe call cost"]
            elif p["kind"] == "add":
                t -= ncalls * ms["numpy add call"]
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
        if p["kind"] == "add":
            fixed += value
            put(f"    {name}", value,
                f"{ncalls} numpy adds of the kernels' blocks of the flat gradients (minus "
                f"{ms['numpy add call'] * 1e3:.1f} us each): {one:.3f} ms on 1 thread"
                + share)
            continue
        gemm_total += value
        gflops_1 = p["flops"] / max(one, 1e-9) / 1e6
        if p["kind"] == "probe":
            how = (f"grucy's packed kernel (_pgemm_probe), {ncalls} GEMMs: "
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
            " - ".join(["kernel calls", "entry"]
                       + (["packing"] if split.packed else ["regroup"] if split.chunked
                          else []) + ["gradient-half add", "GEMMs"]))
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
    ("grucy other code (weight packing, loops, copies, Cython)", r"^_gru\.", None),
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
    """The --profile mode of bench_gru.py: print the breakdown, write JSON."""
    shapes = args.shapes or DEFAULT_SHAPES
    threads = args.threads or grucy.get_num_threads()
    limiter = limit_threads(args.threads, grucy, log)
    target = args.target_seconds or (0.5 if args.quick else 2.0)
    min_repeats = args.min_repeats or (3 if args.quick else 5)
    blas = ScipyBlas()
    try:
        log("bench_gru --profile: SGEMM peak ...")
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
            for s in shapes:
                peer = GrucyPeer(Problem(*s, seed=args.seed), threads)
                peer.train_step()
                load = loadavg()
                row = perf_rows["x".join(map(str, s))] = perf_profile(
                    perf, peer.train_step, 1.5 if args.quick else 4.0, log)
                row["loadavg_before"] = load
        else:
            log(f"bench_gru --profile: no sampling profile ({perf})")
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
    if args.json:
        path = args.json
        write_atomic(path, json.dumps(doc, indent=1) + "\n")
        log(f"bench_gru --profile: wrote {path}")
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
        split += ("; recurrent GEMMs, input projection and dX on grucy's packed kernel"
                  if r.get("packed") else "; GEMMs in BLAS")
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
