"""GRU kernels: one nogil call runs every time step of one layer and one direction.

Layout.  Sequences are sorted by length, longest first, so at time t the active
sequences are the first ``bs[t]`` rows (``bs``: batch sizes per step, as in PyTorch's
packed sequences).  Everything kept per step is stored *packed* in time order: step t
owns rows ``off[t] .. off[t] + bs[t]`` of a (N, .) buffer, N = sum(bs).  With full
lengths packed is the plain (T*B, .) layout and the input is used as it is; with
variable lengths no work is spent on padding.

Forward, per step: Gh = h @ W_hh^T (the one GEMM that must stay in the loop), then one
fused pass over the active rows (biases, sigmoids, tanh, update, workspace writes).  The
input projection X @ W_ih^T of all steps is one GEMM before the loop.

Backward, per step: one fused pass producing the gate gradients, then dh += dGh @ W_hh.
dX, dW_ih, dW_hh and the bias gradients are GEMMs over all N rows after the loop.

Workspace kept for backward (training only): G (N, 3H) gates r, z, n; A (N, H) the
auxiliary W_hn h + b_hn (reset-after) or r * h (reset-before); Hp (N, H) the state
entering each step.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memcpy, memset

import numpy as np
cimport numpy as cnp

from ._blas cimport gemm, colsum

cnp.import_array()

cdef extern from "_fastmath.h" nogil:
    float grucy_sigmoidf(float x)
    float grucy_tanhf(float x)
    float grucy_expf(float x)

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define GRUCY_OPENMP 1
    static int grucy_omp_max_threads(void) { return omp_get_max_threads(); }
    static inline void grucy_barrier(void) { _Pragma("omp barrier") }
    static inline int grucy_thread_num(void) { return omp_get_thread_num(); }
    #else
    #define GRUCY_OPENMP 0
    static int grucy_omp_max_threads(void) { return 1; }
    static inline void grucy_barrier(void) {}
    static inline int grucy_thread_num(void) { return 0; }
    #endif

    /* BLAS threads are set to 1 while a kernel runs (the kernels parallelise with
     * their own OpenMP threads, each calling BLAS on its own slice), and restored
     * when the last concurrent kernel call returns. */
    #include <pthread.h>
    typedef void (*grucy_blas_set_t)(int);
    typedef int (*grucy_blas_get_t)(void);
    static grucy_blas_set_t grucy_blas_set = 0;
    static grucy_blas_get_t grucy_blas_get = 0;
    static pthread_mutex_t grucy_blas_lock = PTHREAD_MUTEX_INITIALIZER;
    static int grucy_blas_users = 0, grucy_blas_saved = 1;
    static void grucy_blas_enter(void) {
        if (!grucy_blas_set) return;
        pthread_mutex_lock(&grucy_blas_lock);
        if (grucy_blas_users++ == 0) {
            grucy_blas_saved = grucy_blas_get();
            if (grucy_blas_saved != 1) grucy_blas_set(1);
        }
        pthread_mutex_unlock(&grucy_blas_lock);
    }
    static void grucy_blas_exit(void) {
        if (!grucy_blas_set) return;
        pthread_mutex_lock(&grucy_blas_lock);
        if (--grucy_blas_users == 0 && grucy_blas_saved != 1) grucy_blas_set(grucy_blas_saved);
        pthread_mutex_unlock(&grucy_blas_lock);
    }
    static void grucy_blas_install(size_t set, size_t get) {
        grucy_blas_set = (grucy_blas_set_t)set;
        grucy_blas_get = (grucy_blas_get_t)get;
    }
    """
    int GRUCY_OPENMP
    int grucy_omp_max_threads() noexcept nogil
    void grucy_barrier() noexcept nogil
    int grucy_thread_num() noexcept nogil
    void grucy_blas_enter() noexcept nogil
    void grucy_blas_exit() noexcept nogil
    void grucy_blas_install(size_t set, size_t get) noexcept

# Threads used by the fused elementwise passes.
cdef int _num_threads = grucy_omp_max_threads()
# Below this many elements per step, waking a second thread costs more than it saves.
cdef Py_ssize_t PARALLEL_MIN_WORK = 8192
# Below this many multiply-adds the serial kernels run their hoisted GEMMs on one thread:
# waking a team costs a few microseconds.
DEF HOISTED_PARALLEL_MIN_WORK = 1 << 20


cdef str _blas_control = "none"


def _install_blas_control():
    """Find the thread setter of the BLAS behind scipy.linalg.cython_blas (OpenBLAS)."""
    global _blas_control
    import ctypes
    import scipy.linalg.cython_blas as cython_blas
    try:
        lib = ctypes.CDLL(cython_blas.__file__)
    except OSError:  # pragma: no cover - unusual platform
        return
    for prefix in ("scipy_openblas", "openblas"):
        for suffix in ("", "64_"):
            try:
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}")
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}")
            except AttributeError:
                continue
            grucy_blas_install(ctypes.cast(setter, ctypes.c_void_p).value,
                               ctypes.cast(getter, ctypes.c_void_p).value)
            _blas_control = f"{prefix}_set_num_threads{suffix}"
            return


_install_blas_control()


_blas_corename = None


def _install_blas_corename():
    """OpenBLAS's own name of the kernel it chose for this CPU (e.g. "SkylakeX", or
    "Haswell" when OPENBLAS_CORETYPE forces it), or None for another BLAS."""
    global _blas_corename
    import ctypes
    import scipy.linalg.cython_blas as cython_blas
    try:
        lib = ctypes.CDLL(cython_blas.__file__)
    except OSError:  # pragma: no cover - unusual platform
        return
    for prefix in ("scipy_openblas", "openblas"):
        for suffix in ("", "64_"):
            fn = getattr(lib, f"{prefix}_get_corename{suffix}", None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                name = fn()
                _blas_corename = name.decode("ascii", "replace").strip() if name else None
                return


_install_blas_corename()


cdef extern from *:
    """
    /* Which clone of the fused row kernels (_gru_rows.h, target_clones) the loader
     * picks on this CPU: the same test GCC's resolver makes. */
    static int grucy_rows_isa(void) {
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
        && !defined(GRUCY_NO_CLONES)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) return 2;
        if (__builtin_cpu_supports("avx2")) return 1;
    #endif
        return 0;
    }
    """
    int grucy_rows_isa() noexcept


def kernel_info():
    """What runs on this CPU, as a dict of strings: ``packed`` (the kernel of the
    products with the weights: "avx512", or "blas" on CPUs without AVX-512),
    ``rows`` (the instruction set of the fused per-row passes: "avx512", "avx2" or
    "baseline"), ``blas_core`` (OpenBLAS's own name of its kernel, or None for another
    BLAS) and ``blas_threads`` (how grucy keeps BLAS single-threaded inside its
    kernels, see blas_thread_control)."""
    return {"packed": "avx512" if _packed else "blas",
            "rows": ("baseline", "avx2", "avx512")[grucy_rows_isa()],
            "blas_core": _blas_corename,
            "blas_threads": _blas_control}


cdef extern from *:
    """
    #include <time.h>
    static double grucy_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + 1e-9 * ts.tv_nsec;
    }
    /* The FMA peak: 24 independent chains of vector FMAs (enough to cover the FMA
     * latency times the FMA units of any current x86 core), `iters` rounds.  Returns
     * the float32 multiply-adds done; the result feeds a sink so nothing is removed. */
    #if defined(__GNUC__) && defined(__x86_64__)
    #include <immintrin.h>
    #define GRUCY_FMA_CHAINS 24
    __attribute__((target("avx512f"))) static double grucy_fma_avx512(long iters, float* sink) {
        __m512 a[GRUCY_FMA_CHAINS];
        const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
        for (int i = 0; i < GRUCY_FMA_CHAINS; i++) a[i] = _mm512_set1_ps((float)i);
        for (long k = 0; k < iters; k++) {
            _Pragma("GCC unroll 24")
            for (int i = 0; i < GRUCY_FMA_CHAINS; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
        }
        __m512 s = a[0];
        for (int i = 1; i < GRUCY_FMA_CHAINS; i++) s = _mm512_add_ps(s, a[i]);
        *sink += _mm512_reduce_add_ps(s);
        return (double)iters * GRUCY_FMA_CHAINS * 16;
    }
    __attribute__((target("avx2,fma"))) static double grucy_fma_avx2(long iters, float* sink) {
        __m256 a[12];
        const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
        float out[8];
        for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
        for (long k = 0; k < iters; k++) {
            _Pragma("GCC unroll 12")
            for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
        }
        __m256 s = a[0];
        for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, a[i]);
        _mm256_storeu_ps(out, s);
        for (int i = 0; i < 8; i++) *sink += out[i];
        return (double)iters * 12 * 8;
    }
    static int grucy_fma_isa(void) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) return 2;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
        return 0;
    }
    #else
    static double grucy_fma_avx512(long iters, float* sink) { return 0; }
    static double grucy_fma_avx2(long iters, float* sink) { return 0; }
    static int grucy_fma_isa(void) { return 0; }
    #endif
    static double grucy_fma_scalar(long iters, float* sink) {
        float a[16];
        for (int i = 0; i < 16; i++) a[i] = (float)i;
        for (long k = 0; k < iters; k++)
            for (int i = 0; i < 16; i++) a[i] = a[i] * 0.999999f + 1e-7f;
        for (int i = 0; i < 16; i++) *sink += a[i];
        return (double)iters * 16;
    }
    static double grucy_fma_run(int isa, long iters, float* sink) {
        if (isa == 2) return grucy_fma_avx512(iters, sink);
        if (isa == 1) return grucy_fma_avx2(iters, sink);
        return grucy_fma_scalar(iters, sink);
    }
    """
    double grucy_now() noexcept nogil
    int grucy_fma_isa() noexcept nogil
    double grucy_fma_run(int isa, long iters, float* sink) noexcept nogil


def fma_peak(int threads=1, double seconds=0.2):
    """The machine's float32 FMA peak in GFLOP/s (2 flops per multiply-add): ``threads``
    threads each run independent chains of the widest vector FMA this CPU has
    (AVX-512, else AVX2, else scalar multiply-adds) for about ``seconds``.  The
    physical ceiling that every GEMM figure can be compared with."""
    if threads < 1:
        raise ValueError(f"threads must be a positive number, got {threads}")
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    cdef int isa = grucy_fma_isa()
    cdef long iters = 1 << 16
    cdef double t0, elapsed = 0, flops = 0
    cdef float sink = 0
    cdef int tid
    # Calibrate on one thread, then run all threads for the measured length.
    while True:
        t0 = grucy_now()
        with nogil:
            grucy_fma_run(isa, iters, &sink)
        elapsed = grucy_now() - t0
        if elapsed > seconds / 8 or iters > (1 << 40):
            break
        iters *= 4
    iters = <long>(iters * (seconds / max(elapsed, 1e-9)))
    if iters < 1:
        iters = 1
    cdef double[::1] done = np.zeros(threads)
    cdef float[::1] sinks = np.zeros(threads, np.float32)
    t0 = grucy_now()
    with nogil, parallel(num_threads=threads):
        tid = grucy_thread_num()
        done[tid] = grucy_fma_run(isa, iters, &sinks[tid])
    elapsed = grucy_now() - t0
    for tid in range(threads):
        flops += 2 * done[tid]
    return flops / elapsed / 1e9


def blas_thread_control():
    """Name of the BLAS function grucy uses to keep BLAS single-threaded inside its
    kernels, or "none" when scipy's BLAS offers none (then BLAS threads are left as
    they are and may compete with grucy's OpenMP threads)."""
    return _blas_control


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(GRUCY_OPENMP)


def set_num_threads(int n):
    """Threads for grucy's OpenMP loops (1 .. any); without OpenMP only 1 is meaningful."""
    global _num_threads
    if n < 1:
        raise ValueError(f"n must be a positive number of threads, got {n}")
    _num_threads = n if GRUCY_OPENMP else 1


def get_num_threads():
    """Threads grucy's OpenMP loops use."""
    return _num_threads


cdef inline int _hoisted_threads(Py_ssize_t work) noexcept nogil:
    """Threads for the hoisted GEMMs of the serial kernels (work: multiply-adds)."""
    if _num_threads > 1 and work >= HOISTED_PARALLEL_MIN_WORK:
        return _num_threads
    return 1


cdef inline int _threads_for(Py_ssize_t work) noexcept nogil:
    if _num_threads > 1 and work >= PARALLEL_MIN_WORK:
        return _num_threads
    return 1


cdef extern from *:
    """
    #include <stdint.h>
    /* 1 when no value is NaN or inf: all exponent bits set marks both.  An integer OR
     * reduction, so gcc vectorizes it (a float reduction it may not reorder). */
    static int grucy_finite_f(const void* v, ptrdiff_t n) {
        const uint32_t* p = (const uint32_t*)v;
        uint32_t bad = 0;
        for (ptrdiff_t i = 0; i < n; i++) bad |= (p[i] & 0x7f800000u) == 0x7f800000u;
        return !bad;
    }
    static int grucy_finite_d(const void* v, ptrdiff_t n) {
        const uint64_t* p = (const uint64_t*)v;
        uint64_t bad = 0;
        for (ptrdiff_t i = 0; i < n; i++)
            bad |= (p[i] & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
        return !bad;
    }
    """
    bint grucy_finite_f(const void* p, Py_ssize_t n) noexcept nogil
    bint grucy_finite_d(const void* p, Py_ssize_t n) noexcept nogil


def all_finite(cnp.ndarray a):
    """True when every value of the C-contiguous float32 or float64 array ``a`` is
    finite, False when one is not; None for any other array (check it with NumPy)."""
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        return None
    cdef int typenum = cnp.PyArray_TYPE(a)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef void* p = cnp.PyArray_DATA(a)
    cdef bint ok
    if typenum == cnp.NPY_FLOAT:
        with nogil:
            ok = grucy_finite_f(p, n)
    elif typenum == cnp.NPY_DOUBLE:
        with nogil:
            ok = grucy_finite_d(p, n)
    else:
        return None
    return ok


def _fast_expf(const float[::1] x, float[::1] out):
    """Vectorizable float32 exp, sigmoid, tanh over arrays (exposed for the tests)."""
    if out.shape[0] < x.shape[0]:
        raise ValueError(f"out must hold at least {x.shape[0]} values, got {out.shape[0]}")
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        out[i] = grucy_expf(x[i])


def _fast_sigmoidf(const float[::1] x, float[::1] out):
    if out.shape[0] < x.shape[0]:
        raise ValueError(f"out must hold at least {x.shape[0]} values, got {out.shape[0]}")
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        out[i] = grucy_sigmoidf(x[i])


def _fast_tanhf(const float[::1] x, float[::1] out):
    if out.shape[0] < x.shape[0]:
        raise ValueError(f"out must hold at least {x.shape[0]} values, got {out.shape[0]}")
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        out[i] = grucy_tanhf(x[i])


# ---------------------------------------------------------------------------------------
# Fused per-row passes: the arithmetic lives in _gru_rows.h (C, so that `restrict` lets
# gcc vectorize it); these wrappers split a row into its r, z, n slices.  g: the row's 3H
# gate slots (input projection in, gates out); gh: recurrent projection; h: the state
# (h_prev in, h_new out); y: output row.

cdef extern from "_gru_rows.h" nogil:
    void grucy_fwd_after_f(int H, float* xr, float* xz, float* xn, const float* hr, const float* hz, const float* hn, const float* bir, const float* biz, const float* bin_, const float* bhr, const float* bhz, const float* bhn, float* h, float* y, float* aux)
    void grucy_fwd_before_rz_f(int H, float* xr, float* xz, const float* hr, const float* hz, const float* bir, const float* biz, const float* bhr, const float* bhz, const float* h, float* aux)
    void grucy_fwd_before_n_f(int H, const float* z, float* xn, const float* hn, const float* bin_, const float* bhn, float* h, float* y)
    void grucy_bwd_after_f(int H, const float* dy, float* dh, const float* r, const float* z, const float* n, const float* aux, const float* hp, float* dr, float* dz, float* dhn, float* dxn)
    void grucy_bwd_before_zn_f(int H, const float* dy, float* dh, const float* z, const float* n, const float* hp, float* dz, float* dn)
    void grucy_bwd_before_r_f(int H, const float* drh, float* dh, const float* r, const float* hp, float* dr)
    void grucy_fwd_after_d(int H, double* xr, double* xz, double* xn, const double* hr, const double* hz, const double* hn, const double* bir, const double* biz, const double* bin_, const double* bhr, const double* bhz, const double* bhn, double* h, double* y, double* aux)
    void grucy_fwd_before_rz_d(int H, double* xr, double* xz, const double* hr, const double* hz, const double* bir, const double* biz, const double* bhr, const double* bhz, const double* h, double* aux)
    void grucy_fwd_before_n_d(int H, const double* z, double* xn, const double* hn, const double* bin_, const double* bhn, double* h, double* y)
    void grucy_bwd_after_d(int H, const double* dy, double* dh, const double* r, const double* z, const double* n, const double* aux, const double* hp, double* dr, double* dz, double* dhn, double* dxn)
    void grucy_bwd_before_zn_d(int H, const double* dy, double* dh, const double* z, const double* n, const double* hp, double* dz, double* dn)
    void grucy_bwd_before_r_d(int H, const double* drh, double* dh, const double* r, const double* hp, double* dr)


# The wrappers below run the fused pass on a run of c units starting at some unit j0 of
# a row (c = H: the whole row).  Gate slots r, z, n of g, the biases and the gradients
# are H apart; those of gh (the recurrent projection, chunk-major) are c apart.

cdef inline void _fwd_chunk_after(int c, floating* g, const floating* gh,
                                  const floating* bih, const floating* bhh, int H,
                                  floating* h, floating* y, floating* aux) noexcept nogil:
    # g: the row's r slot at unit j0 (z, n at +H, +2H); gh: the chunk's [r z n] block
    # (width c each); biases at unit j0.
    if floating is float:
        grucy_fwd_after_f(c, g, g + H, g + 2 * H, gh, gh + c, gh + 2 * c,
                          bih, bih + H, bih + 2 * H, bhh, bhh + H, bhh + 2 * H, h, y, aux)
    else:
        grucy_fwd_after_d(c, g, g + H, g + 2 * H, gh, gh + c, gh + 2 * c,
                          bih, bih + H, bih + 2 * H, bhh, bhh + H, bhh + 2 * H, h, y, aux)


cdef inline void _fwd_chunk_before_rz(int c, floating* g, const floating* gh,
                                      const floating* bih, const floating* bhh, int H,
                                      const floating* h, floating* aux) noexcept nogil:
    if floating is float:
        grucy_fwd_before_rz_f(c, g, g + H, gh, gh + c, bih, bih + H, bhh, bhh + H, h, aux)
    else:
        grucy_fwd_before_rz_d(c, g, g + H, gh, gh + c, bih, bih + H, bhh, bhh + H, h, aux)


cdef inline void _fwd_chunk_before_n(int c, floating* g, const floating* gh,
                                     const floating* bih, const floating* bhh, int H,
                                     floating* h, floating* y) noexcept nogil:
    if floating is float:
        grucy_fwd_before_n_f(c, g + H, g + 2 * H, gh + 2 * c, bih + 2 * H, bhh + 2 * H, h, y)
    else:
        grucy_fwd_before_n_d(c, g + H, g + 2 * H, gh + 2 * c, bih + 2 * H, bhh + 2 * H, h, y)


cdef inline void _bwd_chunk_after(int c, int H, const floating* dy, floating* dh,
                                  const floating* g, const floating* aux,
                                  const floating* hp, floating* dg,
                                  floating* dgxn) noexcept nogil:
    # all pointers at unit j0 of their row; gates/gradients r, z, n at +0, +H, +2H
    if floating is float:
        grucy_bwd_after_f(c, dy, dh, g, g + H, g + 2 * H, aux, hp,
                          dg, dg + H, dg + 2 * H, dgxn)
    else:
        grucy_bwd_after_d(c, dy, dh, g, g + H, g + 2 * H, aux, hp,
                          dg, dg + H, dg + 2 * H, dgxn)


cdef inline void _bwd_chunk_before_zn(int c, int H, const floating* dy, floating* dh,
                                      const floating* g, const floating* hp,
                                      floating* dg) noexcept nogil:
    if floating is float:
        grucy_bwd_before_zn_f(c, dy, dh, g + H, g + 2 * H, hp, dg + H, dg + 2 * H)
    else:
        grucy_bwd_before_zn_d(c, dy, dh, g + H, g + 2 * H, hp, dg + H, dg + 2 * H)


cdef inline void _bwd_row_before_r(int H, const floating* drh, floating* dh,
                                   const floating* g, const floating* hp,
                                   floating* dgh) noexcept nogil:
    # drh = d(r * h_prev) = da_n @ W_hn.
    if floating is float:
        grucy_bwd_before_r_f(H, drh, dh, g, hp, dgh)
    else:
        grucy_bwd_before_r_d(H, drh, dh, g, hp, dgh)


# ---------------------------------------------------------------------------------------
# The products with the weights on packed operands (_pgemm.h): W_hh and W_ih are packed
# once per call into the layout of grucy's AVX-512 kernel (BLAS would re-pack W_hh at
# every step).  W_ih: _pack_ih.  A packed W_hh block covers the gates of a run of c
# units starting at unit j0 (a chunk, or the whole layer with j0 = 0, c = H):
#   forward, reset-after:  B = W_hh[[r z n] rows of the run]^T     (H, 3c)
#   forward, reset-before: B = W_hh[[r z] rows]^T (H, 2c), then W_hn[rows]^T (H, c)
#   backward:              B = W_hh[:, run]                         (3H, c)

cdef extern from "_pgemm.h" nogil:
    int grucy_pgemm_available()
    size_t grucy_pgemm_size(int K, int N, int nr)
    void grucy_pack_t_f(int K, int c, int g0, int ng, int H, int j0, const float* W, int ldw, float* P)
    void grucy_pack_t_d(int K, int c, int g0, int ng, int H, int j0, const double* W, int ldw, double* P)
    void grucy_pack_n_f(int K, int N, const float* W, int ldw, float* P)
    void grucy_pack_n_d(int K, int N, const double* W, int ldw, double* P)
    void grucy_pgemm_f(int M, int N, int K, const float* A, int lda, const float* P, size_t pstride, float* C, int ldc, int beta, int backwards)
    void grucy_pgemm_d(int M, int N, int K, const double* A, int lda, const double* P, size_t pstride, double* C, int ldc, int beta, int backwards)

# Whether the kernels use the packed kernel (AVX-512 CPUs); _set_packed changes it.
cdef bint _packed = grucy_pgemm_available()
# The serial kernels pack only for sequences of at least this many steps (the packing
# costs about one step's GEMM).
DEF PACKED_MIN_STEPS = 4


def _set_packed(bint on):
    """Test hook: run the products with the weights on the packed kernel (when the CPU
    has AVX-512) or on BLAS.  Returns the old setting."""
    global _packed
    old = _packed
    _packed = on and grucy_pgemm_available()
    return old


def packed_gemm_enabled():
    """True when the products with the weights (recurrent steps, input projection, dX)
    run grucy's own AVX-512 kernel on W_hh and W_ih packed once per call (False: BLAS,
    on CPUs without AVX-512)."""
    return bool(_packed)


cdef inline int _nr(const floating* p) noexcept nogil:
    """Columns per panel of a packed operand of this element type."""
    return 32 if floating is float else 16


cdef inline Py_ssize_t _pk_fwd_size(const floating* p, int H, int c,
                                    bint reset_after) noexcept nogil:
    """Values of the forward packed block of a run of c units."""
    if reset_after:
        return grucy_pgemm_size(H, 3 * c, _nr(p))
    return grucy_pgemm_size(H, 2 * c, _nr(p)) + grucy_pgemm_size(H, c, _nr(p))


cdef inline Py_ssize_t _pk_n_off(const floating* p, int H, int c) noexcept nogil:
    """Reset-before forward block: where the W_hn part starts."""
    return grucy_pgemm_size(H, 2 * c, _nr(p))


cdef inline Py_ssize_t _pk_bwd_size(const floating* p, int H, int c) noexcept nogil:
    return grucy_pgemm_size(3 * H, c, _nr(p))


cdef Py_ssize_t _pk_total(const floating* p, int I, int H, bint chunked, bint forward,
                         bint reset_after) noexcept nogil:
    """Values of all packed blocks of a layer: W_hh's, one per chunk or one for all H
    units, followed by W_ih's (_pk_ih_size)."""
    cdef int k, c, nc = _nchunks(H) if chunked else 1
    cdef Py_ssize_t total = 0
    for k in range(nc):
        c = _chunk_lo(k + 1, nc, H) - _chunk_lo(k, nc, H) if chunked else H
        total += _pk_fwd_size(p, H, c, reset_after) if forward else _pk_bwd_size(p, H, c)
    return total + _pk_ih_size(p, I, H, forward)


cdef inline Py_ssize_t _pk_ih_size(const floating* p, int I, int H,
                                   bint forward) noexcept nogil:
    """W_ih packed: for the input projection B = W_ih^T (I, 3H), for dX B = W_ih (3H, I)."""
    if forward:
        return grucy_pgemm_size(I, 3 * H, _nr(p))
    return grucy_pgemm_size(3 * H, I, _nr(p))


cdef inline int _ih_panels(const floating* p, int I, int H, bint forward) noexcept nogil:
    cdef int cols = 3 * H if forward else I
    return (cols + _nr(p) - 1) // _nr(p)


cdef void _pack_ih(int I, int H, bint forward, int p_lo, int p_hi, const floating* wih,
                   floating* P) noexcept nogil:
    """Panels p_lo .. p_hi - 1 of W_ih packed for the input projection (``forward``:
    B = W_ih^T) or for dX (B = W_ih); P: the whole packed operand."""
    cdef int nr = _nr(P), cols = 3 * H if forward else I
    cdef int c0 = p_lo * nr, c1 = p_hi * nr if p_hi * nr < cols else cols
    if c1 <= c0:
        return
    if floating is float:
        if forward:
            grucy_pack_t_f(I, c1 - c0, 0, 1, 0, c0, wih, I, P + <Py_ssize_t>c0 * I)
        else:
            grucy_pack_n_f(3 * H, c1 - c0, wih + c0, I, P + <Py_ssize_t>c0 * 3 * H)
    else:
        if forward:
            grucy_pack_t_d(I, c1 - c0, 0, 1, 0, c0, wih, I, P + <Py_ssize_t>c0 * I)
        else:
            grucy_pack_n_d(3 * H, c1 - c0, wih + c0, I, P + <Py_ssize_t>c0 * 3 * H)


cdef void _pack_fwd(int H, int j0, int c, bint reset_after, const floating* whh,
                    floating* P) noexcept nogil:
    if floating is float:
        if reset_after:
            grucy_pack_t_f(H, c, 0, 3, H, j0, whh, H, P)
        else:
            grucy_pack_t_f(H, c, 0, 2, H, j0, whh, H, P)
            grucy_pack_t_f(H, c, 2, 1, H, j0, whh, H, P + _pk_n_off(P, H, c))
    else:
        if reset_after:
            grucy_pack_t_d(H, c, 0, 3, H, j0, whh, H, P)
        else:
            grucy_pack_t_d(H, c, 0, 2, H, j0, whh, H, P)
            grucy_pack_t_d(H, c, 2, 1, H, j0, whh, H, P + _pk_n_off(P, H, c))


cdef void _pack_bwd(int H, int j0, int c, const floating* whh, floating* P) noexcept nogil:
    if floating is float:
        grucy_pack_n_f(3 * H, c, whh + j0, H, P)
    else:
        grucy_pack_n_d(3 * H, c, whh + j0, H, P)


def _pgemm_probe(const floating[:, ::1] a, const floating[:, ::1] w, bint transposed,
                 floating[:, ::1] c, int repeats):
    """Profiling/test hook: pack ``w`` once, then run the packed kernel ``repeats`` times:
    c = a @ w.T (``transposed``, the forward's shape: w is (N, K)) or c = a @ w (the
    backward's: w is (K, N)).  Returns the seconds of the repeats (packing excluded)."""
    import time
    cdef int M = a.shape[0], K = a.shape[1]
    cdef int N = w.shape[0] if transposed else w.shape[1]
    if (w.shape[1] if transposed else w.shape[0]) != K or c.shape[0] != M or c.shape[1] != N:
        raise ValueError("_pgemm_probe: shapes do not match")
    if not grucy_pgemm_available():
        raise RuntimeError("the packed kernel needs AVX-512")
    if repeats < 1 or M < 1 or N < 1 or K < 1:
        raise ValueError("_pgemm_probe: sizes and repeats must be positive")
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] P = np.empty(grucy_pgemm_size(K, N, 32 if floating is float else 16),
                                    dtype)
    cdef int r
    if floating is float:
        if transposed:
            grucy_pack_t_f(K, N, 0, 1, 0, 0, &w[0, 0], K, &P[0])
        else:
            grucy_pack_n_f(K, N, &w[0, 0], N, &P[0])
    else:
        if transposed:
            grucy_pack_t_d(K, N, 0, 1, 0, 0, &w[0, 0], K, &P[0])
        else:
            grucy_pack_n_d(K, N, &w[0, 0], N, &P[0])
    t0 = time.perf_counter()
    with nogil:
        for r in range(repeats):
            _pgemm(M, N, K, &a[0, 0], K, &P[0], <Py_ssize_t>K * _nr(&P[0]), &c[0, 0], N,
                   False, r & 1)
    return time.perf_counter() - t0


cdef inline void _pgemm(int m, int n, int k, const floating* a, int lda,
                        const floating* P, Py_ssize_t pstride, floating* c, int ldc,
                        bint beta, bint backwards=False) noexcept nogil:
    """C (m, n) (+)= A (m, k) @ B, B packed (see above); ``backwards``: panel order."""
    if floating is float:
        grucy_pgemm_f(m, n, k, a, lda, P, pstride, c, ldc, beta, backwards)
    else:
        grucy_pgemm_d(m, n, k, a, lda, P, pstride, c, ldc, beta, backwards)


# ---------------------------------------------------------------------------------------
# Whole-sequence kernels.

cdef void _gather_rows(int T, int B, int I, const int* bs, const Py_ssize_t* off,
                       const floating* X, floating* Xp) noexcept nogil:
    """Variable lengths: copy the active rows of each step of X (T, B, I) to packed Xp."""
    cdef int t
    for t in range(T):
        memcpy(Xp + off[t] * I, X + <Py_ssize_t>t * B * I,
               <size_t>bs[t] * I * sizeof(floating))


cdef inline Py_ssize_t _row(const Py_ssize_t* rowmap, int b) noexcept nogil:
    """Where sequence b (in the kernels' longest-first order) sits in the caller's
    arrays that take a row map (y in forward, dX in backward); NULL: the same place."""
    return b if rowmap == NULL else rowmap[b]


cdef void _scatter_rows(int T, int B, int I, const int* bs, const Py_ssize_t* off,
                        const floating* dXp, floating* dX, bint accumulate,
                        const Py_ssize_t* xmap) noexcept nogil:
    """Packed rows back to dX (T, B, I), set or added, sequence b to row _row(xmap, b);
    padding gets no gradient."""
    cdef int t, b
    cdef Py_ssize_t k
    cdef floating* row
    cdef const floating* src
    for t in range(T):
        for b in range(B):
            row = dX + (<Py_ssize_t>t * B + _row(xmap, b)) * I
            src = dXp + (off[t] + b) * I
            if b >= bs[t]:
                if not accumulate:
                    memset(row, 0, <size_t>I * sizeof(floating))
            elif accumulate:
                for k in range(I):
                    row[k] += src[k]
            else:
                memcpy(row, src, <size_t>I * sizeof(floating))

# ---------------------------------------------------------------------------------------
# The GEMMs outside the time loop, shared by both kernel families.  Each is split into
# pieces fixed by the sizes, never by the thread count (so results are bit-identical for
# any number of threads); thread `tid` of `nt` takes pieces tid, tid + nt, ...  Called
# by every thread of a team (they contain barriers), or by one thread with nt = 1.

DEF ROW_BLOCKS = 8


cdef inline Py_ssize_t _row_lo(int blk, Py_ssize_t N) noexcept nogil:
    return N * blk // ROW_BLOCKS


cdef void _input_projection(int tid, int nt, Py_ssize_t N, int I, int H,
                            const floating* X, const floating* wih, const floating* pih,
                            floating* G) noexcept nogil:
    """G (N, 3H) = X (N, I) @ W_ih^T by fixed row blocks; pih: W_ih packed for it
    (_pack_ih forward), or NULL for BLAS."""
    cdef int blk = tid, H3 = 3 * H
    cdef Py_ssize_t r0, r1
    while blk < ROW_BLOCKS:
        r0 = _row_lo(blk, N)
        r1 = _row_lo(blk + 1, N)
        if pih != NULL:
            _pgemm(<int>(r1 - r0), H3, I, X + r0 * I, I, pih, <Py_ssize_t>I * _nr(pih),
                   G + r0 * H3, H3, False)
        else:
            gemm(False, True, <int>(r1 - r0), H3, I, 1, X + r0 * I, I, wih, I, 0,
                 G + r0 * H3, H3)
        blk = blk + nt


cdef void _hoisted_gradients(int tid, int nt, Py_ssize_t N, int I, int H,
                             bint reset_after, const floating* dG,
                             const floating* dGxn, const floating* X,
                             const floating* Hp, const floating* A,
                             const floating* wih, const floating* pih,
                             floating* dwih, floating* dwhh, floating* dbih,
                             floating* dbhh, const floating* ones, floating* W2,
                             floating* W2hh, floating* dX, bint beta_dx) noexcept nogil:
    """After BPTT: the weight and bias gradients (added) and dX (N, I) (set, or added
    when ``beta_dx``) from the gate gradients dG (N, 3H) (hidden side; reset-after keeps
    the input side of n in dGxn (N, H)).  pih: W_ih packed for dX (_pack_ih backward) or
    NULL; W2: room for 3H * (I + 2) values, W2hh for 3H * H (the kernels pass the
    packed W_hh, no longer needed by then).

    The weight gradients are sums over all N rows, computed as two halves of the rows:
    the first half is added to the gradients, the second is put into W2 and added
    after a barrier.  Each half is one large GEMM per weight (two where the source
    changes at gate row 2H), so BLAS packs every operand once (split by gate rows
    instead, the sources were packed again for every block: 12% of the backward's CPU
    time at 32x100x128x256)."""
    cdef int H3 = 3 * H, q = tid, blk
    cdef Py_ssize_t r0, r1
    cdef const floating* pn = dGxn if reset_after else dG + 2 * H
    cdef int ld_pn = H if reset_after else H3
    while q < 2:
        r0 = 0 if q == 0 else N // 2
        r1 = N // 2 if q == 0 else N
        # dW_ih (+)= dGx^T @ X;  dW_hh (+)= dGh^T @ [Hp | Hp or A], rows r0:r1
        _wgrad(H, <int>(r1 - r0), dG + r0 * H3, H3, pn + r0 * ld_pn, ld_pn,
               X + r0 * I, X + r0 * I, I, dwih if q == 0 else W2, ones,
               dbih if q == 0 else W2 + <Py_ssize_t>H3 * I, q == 0)
        _wgrad(H, <int>(r1 - r0), dG + r0 * H3, H3, dG + r0 * H3 + 2 * H, H3,
               Hp + r0 * H, (Hp if reset_after else A) + r0 * H, H,
               dwhh if q == 0 else W2hh, ones,
               dbhh if q == 0 else W2 + <Py_ssize_t>H3 * (I + 1), q == 0)
        q = q + nt
    # dX (+)= dGx @ W_ih by row blocks
    blk = tid
    while blk < ROW_BLOCKS:
        r0 = _row_lo(blk, N)
        r1 = _row_lo(blk + 1, N)
        if pih != NULL:
            _pgemm(<int>(r1 - r0), I, 2 * H, dG + r0 * H3, H3, pih,
                   <Py_ssize_t>H3 * _nr(pih), dX + r0 * I, I, beta_dx)
            _pgemm(<int>(r1 - r0), I, H, pn + r0 * ld_pn, ld_pn,
                   pih + <Py_ssize_t>2 * H * _nr(pih), <Py_ssize_t>H3 * _nr(pih),
                   dX + r0 * I, I, True)
        else:
            gemm(False, False, <int>(r1 - r0), I, 2 * H, 1, dG + r0 * H3, H3, wih, I,
                 1 if beta_dx else 0, dX + r0 * I, I)
            gemm(False, False, <int>(r1 - r0), I, H, 1, pn + r0 * ld_pn, ld_pn,
                 wih + <Py_ssize_t>2 * H * I, I, 1, dX + r0 * I, I)
        blk = blk + nt
    grucy_barrier()
    # gradients += the second half's, by blocks of the flat arrays
    blk = tid
    while blk < ROW_BLOCKS:
        _add_rows(dwih, W2, _row_lo(blk, <Py_ssize_t>H3 * I),
                  _row_lo(blk + 1, <Py_ssize_t>H3 * I))
        _add_rows(dwhh, W2hh, _row_lo(blk, <Py_ssize_t>H3 * H),
                  _row_lo(blk + 1, <Py_ssize_t>H3 * H))
        _add_rows(dbih, W2 + <Py_ssize_t>H3 * I, _row_lo(blk, H3), _row_lo(blk + 1, H3))
        _add_rows(dbhh, W2 + <Py_ssize_t>H3 * (I + 1), _row_lo(blk, H3),
                  _row_lo(blk + 1, H3))
        blk = blk + nt


cdef void _forward_seq(int T, int B, int I, int H, const int* bs, const Py_ssize_t* off,
                       bint reverse, bint reset_after, bint training,
                       const floating* X, const floating* wih, const floating* whh,
                       const floating* bih, const floating* bhh,
                       floating* Y, Py_ssize_t y_t, Py_ssize_t y_b, floating* S,
                       floating* G, floating* A, floating* Hp, floating* Gh,
                       floating* Xp, floating* pk, const Py_ssize_t* ymap) noexcept nogil:
    """pk: room for the packed W_hh of the whole layer (_pk_fwd_size), or NULL to call
    BLAS for the recurrent GEMMs; ymap: see _row."""
    cdef int H3 = 3 * H
    cdef int s, t, n, b, nt
    cdef Py_ssize_t N = off[T]
    cdef const floating* xsrc = X
    cdef floating* g
    cdef floating* aux
    cdef floating* y
    if Xp != NULL:  # variable lengths: gather the active rows of each step
        _gather_rows(T, B, I, bs, off, X, Xp)
        xsrc = Xp
    cdef floating* pih = NULL
    cdef int tid = 0
    if pk != NULL:
        _pack_fwd(H, 0, H, reset_after, whh, pk)
        pih = pk + _pk_fwd_size(pk, H, H, reset_after)
        _pack_ih(I, H, True, 0, _ih_panels(pk, I, H, True), wih, pih)
    # G = X @ W_ih^T, every step at once
    nt = _hoisted_threads(N * H3 * I)
    if nt > 1:
        with parallel(num_threads=nt):
            tid = grucy_thread_num()
            _input_projection(tid, nt, N, I, H, xsrc, wih, pih, G)
    else:
        _input_projection(0, 1, N, I, H, xsrc, wih, pih, G)
    for s in range(T):
        t = T - 1 - s if reverse else s
        n = bs[t]
        if n == 0:
            continue
        g = G + off[t] * H3
        y = Y + t * y_t
        if training:
            aux = A + off[t] * H
            memcpy(Hp + off[t] * H, S, <size_t>n * H * sizeof(floating))
        else:
            aux = A
        nt = _threads_for(<Py_ssize_t>n * H3)
        if reset_after:
            # Gh = h @ W_hh^T
            if pk != NULL:
                _pgemm(n, H3, H, S, H, pk, <Py_ssize_t>H * _nr(pk), Gh, H3, False, s & 1)
            else:
                gemm(False, True, n, H3, H, 1, S, H, whh, H, 0, Gh, H3)
            if nt > 1:
                for b in prange(n, num_threads=nt, schedule="static"):
                    _fwd_chunk_after(H, g + b * H3, Gh + b * H3, bih, bhh, H, S + b * H,
                                   y + _row(ymap, b) * y_b, aux + b * H)
            else:
                for b in range(n):
                    _fwd_chunk_after(H, g + b * H3, Gh + b * H3, bih, bhh, H, S + b * H,
                                   y + _row(ymap, b) * y_b, aux + b * H)
        else:
            # Gh[:, :2H] = h @ W_h{r,z}^T; then Gh[:, 2H:] = (r * h) @ W_hn^T
            if pk != NULL:
                _pgemm(n, 2 * H, H, S, H, pk, <Py_ssize_t>H * _nr(pk), Gh, H3, False, s & 1)
            else:
                gemm(False, True, n, 2 * H, H, 1, S, H, whh, H, 0, Gh, H3)
            if nt > 1:
                for b in prange(n, num_threads=nt, schedule="static"):
                    _fwd_chunk_before_rz(H, g + b * H3, Gh + b * H3, bih, bhh, H,
                                         S + b * H,
                                       aux + b * H)
            else:
                for b in range(n):
                    _fwd_chunk_before_rz(H, g + b * H3, Gh + b * H3, bih, bhh, H,
                                         S + b * H,
                                       aux + b * H)
            if pk != NULL:
                _pgemm(n, H, H, aux, H, pk + _pk_n_off(pk, H, H), <Py_ssize_t>H * _nr(pk),
                       Gh + 2 * H, H3, False)
            else:
                gemm(False, True, n, H, H, 1, aux, H, whh + 2 * H * H, H, 0, Gh + 2 * H, H3)
            if nt > 1:
                for b in prange(n, num_threads=nt, schedule="static"):
                    _fwd_chunk_before_n(H, g + b * H3, Gh + b * H3, bih, bhh, H,
                                        S + b * H,
                                      y + _row(ymap, b) * y_b)
            else:
                for b in range(n):
                    _fwd_chunk_before_n(H, g + b * H3, Gh + b * H3, bih, bhh, H,
                                        S + b * H,
                                      y + _row(ymap, b) * y_b)


cdef void _backward_seq(int T, int B, int I, int H, const int* bs, const Py_ssize_t* off,
                        bint reverse, bint reset_after,
                        const floating* dY, Py_ssize_t y_t, Py_ssize_t y_b, floating* dS,
                        const floating* X, const floating* wih, const floating* whh,
                        const floating* G, const floating* A, const floating* Hp,
                        floating* dwih, floating* dwhh, floating* dbih, floating* dbhh,
                        floating* dG, floating* dGxn, floating* dRH, const floating* ones,
                        floating* dX, floating* dXp, bint accumulate,
                        floating* pk, floating* W2, const Py_ssize_t* xmap) noexcept nogil:
    """pk: room for the packed W_hh and W_ih (_pk_total), or NULL (BLAS); W2: see
    _hoisted_gradients (followed by room for W2hh when pk is NULL); xmap: see _row
    (used when dX goes through dXp)."""
    cdef int H3 = 3 * H
    cdef int s, t, n, b, nt
    cdef Py_ssize_t N = off[T]
    cdef const floating* dy
    cdef floating* dg
    cdef const floating* pn      # input-side gradient of the n gate (N, H), stride ld_pn
    cdef int ld_pn
    cdef floating* dxdst
    cdef Py_ssize_t ps = <Py_ssize_t>3 * H * (_nr(pk))
    if pk != NULL:
        _pack_bwd(H, 0, H, whh, pk)
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if reverse else s
        n = bs[t]
        if n == 0:
            continue
        dy = dY + t * y_t
        dg = dG + off[t] * H3
        nt = _threads_for(<Py_ssize_t>n * H3)
        if reset_after:
            if nt > 1:
                for b in prange(n, num_threads=nt, schedule="static"):
                    _bwd_chunk_after(H, H, dy + b * y_b, dS + b * H, G + (off[t] + b) * H3,
                                   A + (off[t] + b) * H, Hp + (off[t] + b) * H,
                                   dg + b * H3, dGxn + (off[t] + b) * H)
            else:
                for b in range(n):
                    _bwd_chunk_after(H, H, dy + b * y_b, dS + b * H, G + (off[t] + b) * H3,
                                   A + (off[t] + b) * H, Hp + (off[t] + b) * H,
                                   dg + b * H3, dGxn + (off[t] + b) * H)
            # dh += dGh @ W_hh
            if pk != NULL:
                _pgemm(n, H, H3, dg, H3, pk, ps, dS, H, True, s & 1)
            else:
                gemm(False, False, n, H, H3, 1, dg, H3, whh, H, 1, dS, H)
        else:
            if nt > 1:
                for b in prange(n, num_threads=nt, schedule="static"):
                    _bwd_chunk_before_zn(H, H, dy + b * y_b, dS + b * H,
                                         G + (off[t] + b) * H3,
                                       Hp + (off[t] + b) * H, dg + b * H3)
            else:
                for b in range(n):
                    _bwd_chunk_before_zn(H, H, dy + b * y_b, dS + b * H,
                                         G + (off[t] + b) * H3,
                                       Hp + (off[t] + b) * H, dg + b * H3)
            # d(r * h) = da_n @ W_hn
            if pk != NULL:
                _pgemm(n, H, H, dg + 2 * H, H3, pk + <Py_ssize_t>2 * H * _nr(pk), ps,
                       dRH, H, False)
            else:
                gemm(False, False, n, H, H, 1, dg + 2 * H, H3, whh + 2 * H * H, H, 0, dRH, H)
            if nt > 1:
                for b in prange(n, num_threads=nt, schedule="static"):
                    _bwd_row_before_r(H, dRH + b * H, dS + b * H, G + (off[t] + b) * H3,
                                      Hp + (off[t] + b) * H, dg + b * H3)
            else:
                for b in range(n):
                    _bwd_row_before_r(H, dRH + b * H, dS + b * H, G + (off[t] + b) * H3,
                                      Hp + (off[t] + b) * H, dg + b * H3)
            # dh += dG[:, :2H] @ W_h{r,z}
            if pk != NULL:
                _pgemm(n, H, 2 * H, dg, H3, pk, ps, dS, H, True, s & 1)
            else:
                gemm(False, False, n, H, 2 * H, 1, dg, H3, whh, H, 1, dS, H)

    # Weight and bias gradients, dX (+)= dGx @ W_ih
    dxdst = dX if dXp == NULL else dXp
    cdef floating* pih = NULL
    cdef int tid = 0
    if pk != NULL:
        pih = pk + _pk_bwd_size(pk, H, H)
        _pack_ih(I, H, False, 0, _ih_panels(pk, I, H, False), wih, pih)
    nt = _hoisted_threads(N * H3 * (I + H))
    if nt > 1:
        with parallel(num_threads=nt):
            tid = grucy_thread_num()
            _hoisted_gradients(tid, nt, N, I, H, reset_after, dG, dGxn, X, Hp, A, wih,
                               pih, dwih, dwhh, dbih, dbhh, ones, W2,
                               pk if pk != NULL else W2 + <Py_ssize_t>H3 * (I + 2), dxdst,
                               accumulate and dXp == NULL)
    else:
        _hoisted_gradients(0, 1, N, I, H, reset_after, dG, dGxn, X, Hp, A, wih, pih,
                           dwih, dwhh, dbih, dbhh, ones, W2,
                           pk if pk != NULL else W2 + <Py_ssize_t>H3 * (I + 2), dxdst,
                           accumulate and dXp == NULL)
    if dXp != NULL:
        _scatter_rows(T, B, I, bs, off, dXp, dX, accumulate, xmap)


# ---------------------------------------------------------------------------------------
# Parallel whole-sequence kernels: one OpenMP team for the whole sequence.
#
# The hidden units are cut into a fixed number of chunks (at most MAX_CHUNKS, at least
# _min_chunk units each, boundaries on multiples of _chunk_align) that depend only on H,
# never on the thread count; thread `tid` takes chunks tid, tid + nt, ...  Each thread
# packs the W_hh rows of its own chunks, runs the recurrent GEMM for its own units (the
# packed kernel, or single-threaded BLAS), then the fused pass for its own units;
# barriers separate the phases.  Because every GEMM call and every summation is the same
# whatever the number of threads, results are bit-identical for 1, 2, ... threads.  The
# GEMMs outside the loop are split into fixed pieces too (_input_projection,
# _hoisted_gradients).

DEF MAX_CHUNKS = 8
# Chunks have at least _min_chunk units and start on multiples of _chunk_align units.
cdef int _min_chunk = 32
cdef int _chunk_align = 16

# Per-step work (B * 3H * H multiply-adds) from which the chunked kernels are used.
cdef Py_ssize_t CHUNKED_MIN_WORK = 1 << 17


def _set_chunking(Py_ssize_t min_work, int min_chunk=32, int align=16):
    """Test hook: per-step work from which the chunked kernels run, smallest chunk and
    chunk alignment (units).  Returns the old settings as a tuple."""
    global CHUNKED_MIN_WORK, _min_chunk, _chunk_align
    if min_chunk < 1 or align < 1:
        raise ValueError("min_chunk and align must be positive")
    old = (CHUNKED_MIN_WORK, _min_chunk, _chunk_align)
    CHUNKED_MIN_WORK, _min_chunk, _chunk_align = min_work, min_chunk, align
    return old


cdef inline int _nchunks(int H) noexcept nogil:
    cdef int c = H // _min_chunk
    if c < 1:
        return 1
    return c if c < MAX_CHUNKS else MAX_CHUNKS


cdef inline int _chunk_lo(int k, int nc, int H) noexcept nogil:
    if k >= nc:
        return H
    return <int>((<long long>k * H // nc) // _chunk_align * _chunk_align)


cdef void _wgrad(int H, int N, const floating* d_rz, int ld_rz, const floating* d_n,
                 int ld_n, const floating* src_rz, const floating* src_n, int ld_src,
                 floating* dw, const floating* ones, floating* db,
                 bint beta) noexcept nogil:
    """A weight gradient (3H, F) over N rows: dw[g] (+)= D[:, g] @ src and db[g] (+)=
    sum(D[:, g]) (added when ``beta``, else set), where gate column g of D is d_rz[:, g]
    below 2H and d_n[:, g - 2H] from 2H on, and src is src_rz for the r, z rows and
    src_n for the n rows: two GEMMs, so BLAS packs each operand once."""
    if not beta:
        memset(db, 0, <size_t>3 * H * sizeof(floating))
    gemm(True, False, 2 * H, ld_src, N, 1, d_rz, ld_rz, src_rz, ld_src, 1 if beta else 0,
         dw, ld_src)
    colsum(N, 2 * H, d_rz, ld_rz, ones, db)
    gemm(True, False, H, ld_src, N, 1, d_n, ld_n, src_n, ld_src, 1 if beta else 0,
         dw + <Py_ssize_t>2 * H * ld_src, ld_src)
    colsum(N, H, d_n, ld_n, ones, db + 2 * H)


cdef inline void _add_rows(floating* dst, const floating* src, Py_ssize_t lo,
                           Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        dst[i] += src[i]


cdef void _forward_par(int nt, int T, int B, int I, int H, const int* bs,
                       const Py_ssize_t* off, bint reverse, bint reset_after,
                       bint training, const floating* X, const floating* wih,
                       const floating* whp, const floating* bih, const floating* bhh,
                       floating* Y, Py_ssize_t y_t, Py_ssize_t y_b, floating* S,
                       floating* G, floating* A, floating* Hp, floating* Gh,
                       const floating* whh, floating* pk, floating* S2,
                       const Py_ssize_t* ymap) noexcept nogil:
    """Forward with one OpenMP team.  X: packed input rows (N, I); Gh (B, 3H) in
    chunk-major column order ([r z n] of chunk 0, then of chunk 1, ...).  The recurrent
    GEMMs use pk (room for the packed blocks of every chunk, _pk_fwd_size each) when it
    is not NULL, else BLAS on whp: W_hh with its rows regrouped in the order of Gh.

    Reset-after: S2 (B, H) is a second state buffer.  Step s reads the state from one
    buffer and writes the new state to the other (S at even steps, S2 at odd), so the
    GEMMs of a step never read what the fused passes of the same step write: one
    barrier per step instead of two.  Reset-before updates S in place (its second GEMM
    needs a barrier anyway).  ymap: see _row."""
    cdef int H3 = 3 * H, nc = _nchunks(H)
    cdef Py_ssize_t N = off[T]
    cdef Py_ssize_t pko[MAX_CHUNKS + 1]   # where each chunk's packed block starts
    cdef Py_ssize_t ps = <Py_ssize_t>H * _nr(pk)
    # (initialised: Cython makes them firstprivate in the parallel block)
    cdef int tid = 0, k = 0, s = 0, t = 0, n = 0, b = 0, j0 = 0, c = 0, blk = 0
    cdef Py_ssize_t r0 = 0, r1 = 0
    cdef floating* g = NULL
    cdef floating* aux = NULL
    cdef floating* y = NULL
    cdef floating* cur = NULL
    cdef floating* nxt = NULL
    cdef int steps = T
    pko[0] = 0
    for k in range(nc):
        pko[k + 1] = pko[k] + _pk_fwd_size(
            pk, H, _chunk_lo(k + 1, nc, H) - _chunk_lo(k, nc, H), reset_after)
    with parallel(num_threads=nt):
        tid = grucy_thread_num()
        if pk != NULL:
            # Each thread packs the chunks it will multiply by (no barrier needed).
            k = tid
            while k < nc:
                j0 = _chunk_lo(k, nc, H)
                _pack_fwd(H, j0, _chunk_lo(k + 1, nc, H) - j0, reset_after, whh,
                          pk + pko[k])
                k = k + nt
            # W_ih, shared by every row block: each thread packs a share of its panels
            _pack_ih(I, H, True, _ih_panels(pk, I, H, True) * tid // nt,
                     _ih_panels(pk, I, H, True) * (tid + 1) // nt, wih, pk + pko[nc])
            grucy_barrier()
        # G = X @ W_ih^T in fixed row blocks
        _input_projection(tid, nt, N, I, H, X, wih, pk + pko[nc] if pk != NULL else NULL,
                          G)
        if reset_after and tid == 0:
            # h0 in both buffers: a sequence joining late (reverse direction, variable
            # lengths) reads it from whichever buffer its first step reads.
            memcpy(S2, S, <size_t>B * H * sizeof(floating))
        grucy_barrier()
        for s in range(T):
            t = T - 1 - s if reverse else s
            n = bs[t]
            if n == 0:
                continue
            g = G + off[t] * H3
            y = Y + t * y_t
            aux = A + off[t] * H if training else A
            cur = S2 if reset_after and s % 2 == 1 else S
            nxt = S if s % 2 == 1 else S2
            # Phase 1: this thread's recurrent GEMMs (they read all of cur); reset-after
            # also runs its fused pass here (it writes only nxt).
            k = tid
            while k < nc:
                j0 = _chunk_lo(k, nc, H)
                c = _chunk_lo(k + 1, nc, H) - j0
                if training:
                    for b in range(n):
                        memcpy(Hp + (off[t] + b) * H + j0, cur + b * H + j0,
                               <size_t>c * sizeof(floating))
                if pk != NULL:
                    _pgemm(n, (3 if reset_after else 2) * c, H, cur, H, pk + pko[k], ps,
                           Gh + 3 * j0, H3, False)
                else:
                    gemm(False, True, n, (3 if reset_after else 2) * c, H, 1, cur, H,
                         whp + <Py_ssize_t>3 * j0 * H, H, 0, Gh + 3 * j0, H3)
                for b in range(n):
                    if reset_after:
                        memcpy(nxt + b * H + j0, cur + b * H + j0,
                               <size_t>c * sizeof(floating))
                        _fwd_chunk_after(c, g + b * H3 + j0, Gh + b * H3 + 3 * j0,
                                         bih + j0, bhh + j0, H, nxt + b * H + j0,
                                         y + _row(ymap, b) * y_b + j0, aux + b * H + j0)
                    else:
                        _fwd_chunk_before_rz(c, g + b * H3 + j0, Gh + b * H3 + 3 * j0,
                                             bih + j0, bhh + j0, H, S + b * H + j0,
                                             aux + b * H + j0)
                k = k + nt
            grucy_barrier()
            if not reset_after:
                # Gh_n = (r * h) @ W_hn^T for this thread's units (reads all of aux).
                k = tid
                while k < nc:
                    j0 = _chunk_lo(k, nc, H)
                    c = _chunk_lo(k + 1, nc, H) - j0
                    if pk != NULL:
                        _pgemm(n, c, H, aux, H, pk + pko[k] + _pk_n_off(pk, H, c), ps,
                               Gh + 3 * j0 + 2 * c, H3, False)
                    else:
                        gemm(False, True, n, c, H, 1, aux, H,
                             whp + <Py_ssize_t>(3 * j0 + 2 * c) * H, H, 0,
                             Gh + 3 * j0 + 2 * c, H3)
                    k = k + nt
                # Phase 2: the fused pass for this thread's units (writes its part of S).
                k = tid
                while k < nc:
                    j0 = _chunk_lo(k, nc, H)
                    c = _chunk_lo(k + 1, nc, H) - j0
                    for b in range(n):
                        _fwd_chunk_before_n(c, g + b * H3 + j0, Gh + b * H3 + 3 * j0,
                                            bih + j0, bhh + j0, H, S + b * H + j0,
                                            y + _row(ymap, b) * y_b + j0)
                    k = k + nt
                grucy_barrier()
        if reset_after and tid == 0:
            # Each sequence's last step wrote its final state to S2 when that step was
            # even: copy those rows to S (h_n).  steps: how many steps row b is active
            # (rows are sorted longest first, bs non-increasing).
            steps = T
            for b in range(B):
                while steps > 0 and bs[steps - 1] <= b:
                    steps = steps - 1
                if steps > 0 and (T - 1 if reverse else steps - 1) % 2 == 0:
                    memcpy(S + b * H, S2 + b * H, <size_t>H * sizeof(floating))


cdef void _backward_par(int nt, int T, int B, int I, int H, const int* bs,
                        const Py_ssize_t* off, bint reverse, bint reset_after,
                        const floating* dY, Py_ssize_t y_t, Py_ssize_t y_b, floating* dS,
                        const floating* X, const floating* wih, const floating* whh,
                        const floating* G, const floating* A, const floating* Hp,
                        floating* dwih, floating* dwhh, floating* dbih, floating* dbhh,
                        floating* dG, floating* dGxn, floating* dRH,
                        const floating* ones, floating* dX, bint beta_dx,
                        floating* pk, floating* W2) noexcept nogil:
    """BPTT with one OpenMP team (see _forward_par); dX (N, I) packed rows, added to
    when ``beta_dx``.  pk: room for the packed W_hh[:, chunk] of every chunk
    (_pk_bwd_size each) followed by W_ih's, or NULL (BLAS).  W2: as in _backward_seq; see
    _hoisted_gradients."""
    cdef int H3 = 3 * H, nc = _nchunks(H)
    cdef Py_ssize_t pko[MAX_CHUNKS + 1]
    cdef Py_ssize_t ps = <Py_ssize_t>3 * H * _nr(pk)
    cdef Py_ssize_t N = off[T]
    cdef int tid = 0, k = 0, s = 0, t = 0, n = 0, b = 0, j0 = 0, c = 0, blk = 0, q = 0
    cdef Py_ssize_t r0 = 0, r1 = 0, row = 0
    cdef const floating* dy = NULL
    cdef floating* dg = NULL
    cdef const floating* pn
    cdef int ld_pn
    pko[0] = 0
    for k in range(nc):
        pko[k + 1] = pko[k] + _pk_bwd_size(
            pk, H, _chunk_lo(k + 1, nc, H) - _chunk_lo(k, nc, H))
    if reset_after:
        pn = dGxn
        ld_pn = H
    else:
        pn = dG + 2 * H
        ld_pn = H3
    with parallel(num_threads=nt):
        tid = grucy_thread_num()
        if pk != NULL:
            k = tid
            while k < nc:
                j0 = _chunk_lo(k, nc, H)
                _pack_bwd(H, j0, _chunk_lo(k + 1, nc, H) - j0, whh, pk + pko[k])
                k = k + nt
            # W_ih for dX, used after the time loop's barriers
            _pack_ih(I, H, False, _ih_panels(pk, I, H, False) * tid // nt,
                     _ih_panels(pk, I, H, False) * (tid + 1) // nt, wih, pk + pko[nc])
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if reverse else s
            n = bs[t]
            if n == 0:
                continue
            dy = dY + t * y_t
            dg = dG + off[t] * H3
            # Phase 1: fused pass on this thread's units.
            k = tid
            while k < nc:
                j0 = _chunk_lo(k, nc, H)
                c = _chunk_lo(k + 1, nc, H) - j0
                for b in range(n):
                    row = off[t] + b
                    if reset_after:
                        _bwd_chunk_after(c, H, dy + b * y_b + j0, dS + b * H + j0,
                                         G + row * H3 + j0, A + row * H + j0,
                                         Hp + row * H + j0, dg + b * H3 + j0,
                                         dGxn + row * H + j0)
                    else:
                        _bwd_chunk_before_zn(c, H, dy + b * y_b + j0, dS + b * H + j0,
                                             G + row * H3 + j0, Hp + row * H + j0,
                                             dg + b * H3 + j0)
                k = k + nt
            grucy_barrier()
            if not reset_after:
                # d(r * h) = dn @ W_hn for this thread's units, then dr.
                k = tid
                while k < nc:
                    j0 = _chunk_lo(k, nc, H)
                    c = _chunk_lo(k + 1, nc, H) - j0
                    if pk != NULL:
                        _pgemm(n, c, H, dg + 2 * H, H3,
                               pk + pko[k] + <Py_ssize_t>2 * H * _nr(pk), ps,
                               dRH + j0, H, False)
                    else:
                        gemm(False, False, n, c, H, 1, dg + 2 * H, H3,
                             whh + <Py_ssize_t>2 * H * H + j0, H, 0, dRH + j0, H)
                    for b in range(n):
                        row = off[t] + b
                        _bwd_row_before_r(c, dRH + b * H + j0, dS + b * H + j0,
                                          G + row * H3 + j0, Hp + row * H + j0,
                                          dg + b * H3 + j0)
                    k = k + nt
                grucy_barrier()
            # Phase 2: dh[:, own units] += dGh @ W_hh[:, own units].
            k = tid
            while k < nc:
                j0 = _chunk_lo(k, nc, H)
                c = _chunk_lo(k + 1, nc, H) - j0
                if pk != NULL:
                    _pgemm(n, c, H3 if reset_after else 2 * H, dg, H3, pk + pko[k], ps,
                           dS + j0, H, True)
                else:
                    gemm(False, False, n, c, H3 if reset_after else 2 * H, 1, dg, H3,
                         whh + j0, H, 1, dS + j0, H)
                k = k + nt
        grucy_barrier()
        _hoisted_gradients(tid, nt, N, I, H, reset_after, dG, dGxn, X, Hp, A, wih,
                           pk + pko[nc] if pk != NULL else NULL, dwih, dwhh, dbih, dbhh,
                           ones, W2, pk if pk != NULL else W2 + <Py_ssize_t>H3 * (I + 2),
                           dX, beta_dx)


# ---------------------------------------------------------------------------------------
# Python entry points (called by grucy.layer.GRU, which validates user input).

def _check(bint ok, str what):
    if not ok:
        raise ValueError(f"grucy._gru: inconsistent arguments: {what}")


def _buffer(dict pool, str key, tuple shape, dtype):
    """An uninitialised array of ``shape``: a view of ``pool[key]`` when that buffer is
    large enough, else of a new buffer left in the pool.  Reusing buffers across calls
    saves the page faults and zeroing of fresh memory (about a tenth of a forward at
    32x100x128x256)."""
    cdef Py_ssize_t n = 1
    for d in shape:
        n *= d
    buf = pool.get(key)
    if buf is None or buf.dtype != dtype or buf.shape[0] < n:
        buf = np.empty(max(n, 1), dtype)
        pool[key] = buf
    return buf[:n].reshape(shape)


cdef const Py_ssize_t* _rowmap(const Py_ssize_t[::1] rowmap, int B) except? NULL:
    """Pointer to a row map (None: NULL), checked to be a permutation of 0..B-1."""
    if rowmap is None:
        return NULL
    _check(rowmap.shape[0] == B, "row map length")
    seen = np.zeros(B, dtype=bool)
    cdef Py_ssize_t b, r
    for b in range(B):
        r = rowmap[b]
        _check(0 <= r < B and not seen[r], "row map must be a permutation of 0..B-1")
        seen[r] = True
    return &rowmap[0]


cdef object _row_offsets(const int[::1] bs, int B):
    """off (T + 1,): where each step's rows start in the packed layout; checks that bs is
    non-increasing in [0, B]."""
    cdef Py_ssize_t T = bs.shape[0], t
    off_arr = np.empty(T + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] off = off_arr
    cdef int prev = B
    off[0] = 0
    for t in range(T):
        if not 0 <= bs[t] <= prev:
            _check(False, "batch_sizes must be non-increasing in [0, B]")
        prev = bs[t]
        off[t + 1] = off[t] + bs[t]
    return off_arr


def forward(const floating[:, :, ::1] X, const floating[:, ::1] w_ih,
            const floating[:, ::1] w_hh, const floating[::1] b_ih,
            const floating[::1] b_hh, floating[:, ::1] h, floating[:, :, :] Y,
            const int[::1] batch_sizes, bint reverse, bint reset_after, bint training,
            dict pool=None, const Py_ssize_t[::1] ymap=None):
    """Run one layer and direction over the whole sequence.

    X (T, B, I) time-major; h (B, H) holds h0 on entry and h_n on exit; Y (T, B, H) (a
    view of the layer output, last axis contiguous) receives h_t for active rows only;
    batch_sizes (T,) is non-increasing (sequences sorted longest first).  Returns the
    workspace backward() needs when ``training``, else None.

    pool: a dict of scratch buffers reused by this call and by backward() on its
    workspace (None: fresh buffers).  The caller must not pass the pool of a workspace
    it still wants to backpropagate: this call overwrites it.  ymap (B,): sequence b
    (longest-first order) goes to row ymap[b] of Y (a permutation of 0..B-1; None: b);
    Y's rows past a sequence's end are not written.
    """
    cdef int T = X.shape[0], B = X.shape[1], I = X.shape[2], H = w_hh.shape[1]
    _check(w_ih.shape[0] == 3 * H and w_ih.shape[1] == I, "w_ih shape")
    _check(w_hh.shape[0] == 3 * H, "w_hh shape")
    _check(b_ih.shape[0] == 3 * H and b_hh.shape[0] == 3 * H, "bias shape")
    _check(h.shape[0] == B and h.shape[1] == H, "h shape")
    _check(Y.shape[0] == T and Y.shape[1] == B and Y.shape[2] == H, "Y shape")
    _check(Y.strides[2] == sizeof(floating), "Y must be contiguous on its last axis")
    _check(batch_sizes.shape[0] == T, "batch_sizes length")
    cdef const Py_ssize_t* ymap_ptr = _rowmap(ymap, B)
    off_arr = _row_offsets(batch_sizes, B)
    cdef Py_ssize_t N = off_arr[T]
    cdef bint full = N == <Py_ssize_t>T * B
    dtype = np.float32 if floating is float else np.float64
    if pool is None:
        pool = {}
    G_arr = _buffer(pool, "G", (max(N, 1), 3 * H), dtype)
    A_arr = _buffer(pool, "A", (max(N, 1) if training else B, H), dtype)
    Hp_arr = _buffer(pool, "Hp", (max(N, 1), H), dtype) if training else None
    Gh_arr = _buffer(pool, "Gh", (B, 3 * H), dtype)
    Xp_arr = None if full else _buffer(pool, "Xp", (max(N, 1), I), dtype)
    cdef floating[:, ::1] G = G_arr
    cdef floating[:, ::1] A = A_arr
    cdef floating[:, ::1] Gh = Gh_arr
    cdef floating[:, ::1] Hp
    cdef floating[:, ::1] Xp
    cdef floating* hp_ptr = NULL
    cdef floating* xp_ptr = NULL
    cdef Py_ssize_t[::1] off = off_arr
    cdef const int[::1] bs = batch_sizes
    if training:
        Hp = Hp_arr
        hp_ptr = &Hp[0, 0]
    if not full:
        Xp = Xp_arr
        xp_ptr = &Xp[0, 0]
    cdef Py_ssize_t y_t = Y.strides[0] // sizeof(floating)
    cdef Py_ssize_t y_b = Y.strides[1] // sizeof(floating)
    cdef bint chunked = <Py_ssize_t>B * 3 * H * H >= CHUNKED_MIN_WORK
    cdef floating[:, ::1] whp = None
    cdef floating[::1] pk
    cdef floating* pk_ptr = NULL
    cdef const floating* whp_ptr = NULL
    cdef floating[:, ::1] S2
    cdef floating* s2_ptr = NULL
    if chunked and reset_after:
        S2 = _buffer(pool, "S2", (B, H), dtype)
        s2_ptr = &S2[0, 0]
    cdef int t, nt = _num_threads
    cdef const floating* xsrc = &X[0, 0, 0]
    if _packed and (chunked or T >= PACKED_MIN_STEPS):
        pk = _buffer(pool, "pk", (_pk_total(pk_ptr, I, H, chunked, True, reset_after),),
                     dtype)
        pk_ptr = &pk[0]
    elif chunked:
        # W_hh rows regrouped by unit chunk: [r z n] of chunk 0, of chunk 1, ...
        nc = _nchunks(H)
        bounds = [_chunk_lo(k, nc, H) for k in range(nc + 1)]
        w = np.asarray(w_hh)
        whp = np.concatenate([w[g * H + bounds[k]:g * H + bounds[k + 1]]
                              for k in range(nc) for g in range(3)])
        whp_ptr = &whp[0, 0]
    with nogil:
        grucy_blas_enter()
        if not chunked:
            _forward_seq(T, B, I, H, &bs[0], &off[0], reverse, reset_after, training,
                         &X[0, 0, 0], &w_ih[0, 0], &w_hh[0, 0], &b_ih[0], &b_hh[0],
                         &Y[0, 0, 0], y_t, y_b, &h[0, 0], &G[0, 0], &A[0, 0], hp_ptr,
                         &Gh[0, 0], xp_ptr, pk_ptr, ymap_ptr)
        else:
            if xp_ptr != NULL:
                _gather_rows(T, B, I, &bs[0], &off[0], &X[0, 0, 0], xp_ptr)
                xsrc = xp_ptr
            _forward_par(nt, T, B, I, H, &bs[0], &off[0], reverse, reset_after, training,
                         xsrc, &w_ih[0, 0], whp_ptr, &b_ih[0], &b_hh[0],
                         &Y[0, 0, 0], y_t, y_b, &h[0, 0], &G[0, 0], &A[0, 0], hp_ptr,
                         &Gh[0, 0], &w_hh[0, 0], pk_ptr, s2_ptr, ymap_ptr)
        grucy_blas_exit()
    if not training:
        return None
    return {"X": np.asarray(X) if full else Xp_arr, "G": G_arr, "A": A_arr, "Hp": Hp_arr,
            "bs": np.asarray(bs), "off": off_arr, "full": full, "reverse": reverse,
            "reset_after": reset_after, "shape": (T, B, I, H), "pool": pool}


def backward(dict ws, const floating[:, :, :] dY, floating[:, ::1] dh,
             const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
             floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db_ih,
             floating[::1] db_hh, floating[:, :, ::1] dX, bint accumulate,
             const Py_ssize_t[::1] xmap=None):
    """Backpropagate one layer and direction through time.

    ws: what forward() returned.  dY (T, B, H) gradient of this direction's outputs; dh
    (B, H) holds dh_n on entry and dh0 on exit; parameter gradients are accumulated;
    dX (T, B, I) is overwritten (``accumulate`` False) or added to; xmap (B,): sequence
    b (longest-first order) goes to row xmap[b] of dX (a permutation; None: b).
    """
    cdef int T, B, I, H
    T, B, I, H = ws["shape"]
    _check(dY.shape[0] == T and dY.shape[1] == B and dY.shape[2] == H, "dY shape")
    _check(dY.strides[2] == sizeof(floating), "dY must be contiguous on its last axis")
    _check(dh.shape[0] == B and dh.shape[1] == H, "dh shape")
    _check(dX.shape[0] == T and dX.shape[1] == B and dX.shape[2] == I, "dX shape")
    _check(w_ih.shape[0] == 3 * H and w_ih.shape[1] == I and w_hh.shape[0] == 3 * H
           and w_hh.shape[1] == H, "weight shapes")
    _check(dw_ih.shape[0] == 3 * H and dw_ih.shape[1] == I and dw_hh.shape[0] == 3 * H
           and dw_hh.shape[1] == H and db_ih.shape[0] == 3 * H and db_hh.shape[0] == 3 * H,
           "gradient shapes")
    cdef bint reset_after = ws["reset_after"]
    cdef bint full = ws["full"]
    cdef const floating[:, ::1] X = ws["X"].reshape(-1, I)
    cdef const floating[:, ::1] G = ws["G"]
    cdef const floating[:, ::1] A = ws["A"]
    cdef const floating[:, ::1] Hp = ws["Hp"]
    cdef Py_ssize_t[::1] off = ws["off"]
    cdef const int[::1] bs = ws["bs"]
    cdef Py_ssize_t N = off[T]
    dtype = np.float32 if floating is float else np.float64
    rows = max(N, 1)
    pool = ws["pool"]
    cdef floating[:, ::1] dG = _buffer(pool, "dG", (rows, 3 * H), dtype)
    cdef floating[:, ::1] dGxn = _buffer(pool, "dGxn", (rows if reset_after else 1, H), dtype)
    cdef floating[:, ::1] dRH = _buffer(pool, "dRH", (B if not reset_after else 1, H), dtype)
    ones_arr = pool.get("ones")
    if ones_arr is None or ones_arr.dtype != dtype or ones_arr.shape[0] < rows:
        ones_arr = pool["ones"] = np.ones(rows, dtype)
    cdef floating[::1] ones = ones_arr
    cdef floating[:, ::1] dXp
    cdef floating* dxp_ptr = NULL
    cdef const Py_ssize_t* xmap_ptr = _rowmap(xmap, B)
    if not full or xmap_ptr != NULL:  # packed rows, then scattered (through xmap)
        dXp = _buffer(pool, "dXp", (rows, I), dtype)
        dxp_ptr = &dXp[0, 0]
    cdef Py_ssize_t y_t = dY.strides[0] // sizeof(floating)
    cdef Py_ssize_t y_b = dY.strides[1] // sizeof(floating)
    cdef bint reverse = ws["reverse"]
    cdef bint chunked = <Py_ssize_t>B * 3 * H * H >= CHUNKED_MIN_WORK
    cdef int nt = _num_threads
    cdef floating[::1] pk
    cdef floating* pk_ptr = NULL
    if _packed and (chunked or T >= PACKED_MIN_STEPS):
        # (the forward's buffer: it is done with its packed weights)
        pk = _buffer(pool, "pk", (_pk_total(pk_ptr, I, H, chunked, False, reset_after),),
                     dtype)
        pk_ptr = &pk[0]
    # Partial weight gradients (_hoisted_gradients); dW_hh's go into the packed W_hh
    # (pk starts with it: 3H * roundup(H) values) once the time loop is done with it.
    cdef floating[::1] W2 = _buffer(pool, "W2", (3 * H * (I + 2 + (0 if pk_ptr else H)),),
                                    dtype)
    with nogil:
        grucy_blas_enter()
        if not chunked:
            _backward_seq(T, B, I, H, &bs[0], &off[0], reverse, reset_after,
                          &dY[0, 0, 0], y_t, y_b, &dh[0, 0],
                          &X[0, 0], &w_ih[0, 0], &w_hh[0, 0], &G[0, 0], &A[0, 0],
                          &Hp[0, 0], &dw_ih[0, 0], &dw_hh[0, 0], &db_ih[0], &db_hh[0],
                          &dG[0, 0], &dGxn[0, 0], &dRH[0, 0], &ones[0],
                          &dX[0, 0, 0], dxp_ptr, accumulate, pk_ptr, &W2[0], xmap_ptr)
        else:
            _backward_par(nt, T, B, I, H, &bs[0], &off[0], reverse, reset_after,
                          &dY[0, 0, 0], y_t, y_b, &dh[0, 0],
                          &X[0, 0], &w_ih[0, 0], &w_hh[0, 0], &G[0, 0], &A[0, 0],
                          &Hp[0, 0], &dw_ih[0, 0], &dw_hh[0, 0], &db_ih[0], &db_hh[0],
                          &dG[0, 0], &dGxn[0, 0], &dRH[0, 0], &ones[0],
                          &dX[0, 0, 0] if dxp_ptr == NULL else dxp_ptr,
                          accumulate and dxp_ptr == NULL, pk_ptr, &W2[0])
            if dxp_ptr != NULL:
                _scatter_rows(T, B, I, &bs[0], &off[0], dxp_ptr, &dX[0, 0, 0], accumulate,
                              xmap_ptr)
        grucy_blas_exit()


# ---------------------------------------------------------------------------------------
# Streaming: one step at a time, state kept between calls.

from cpython.mem cimport PyMem_Malloc, PyMem_Free

ctypedef struct _LayerPtrs:
    char* wih
    char* whh
    char* bih
    char* bhh
    int in_size


cdef inline bint _all_finite(const floating* p, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return grucy_finite_f(p, n)
    else:
        return grucy_finite_d(p, n)


cdef class GRUStream:
    """Online inference: feed one step of every stream, get its output, keep the state.

    Made by :meth:`grucy.GRU.stream`.  It works on the layer's parameter arrays in place,
    so optimizer updates and ``load_state_dict`` are seen by later steps.  Unidirectional
    layers only (a bidirectional layer needs the future).  Not thread-safe: use one
    stream per thread.

    Attributes
    ----------
    h : ndarray (num_layers, batch_size, hidden_size)
        The state after the last step (a copy; assign to replace it).
    batch_size, hidden_size, num_layers, input_size : int
    """

    cdef _LayerPtrs* lp
    cdef readonly int num_layers, batch_size, hidden_size, input_size
    cdef bint reset_after, dbl
    cdef object dtype
    cdef object keep
    cdef object S_arr, G_arr, A_arr, Gh_arr, Y_arr, S_prev_arr
    cdef bint busy
    cdef char* S_prev
    cdef char* S
    cdef char* G
    cdef char* A
    cdef char* Gh
    cdef char* Y
    cdef int bs[1]
    cdef Py_ssize_t off[2]

    def __cinit__(self, list layers, int batch_size, int hidden_size, bint reset_after,
                  dtype, h0):
        cdef int L = len(layers), H = hidden_size, B = batch_size
        cdef int l
        if L < 1 or H < 1 or B < 1:
            raise ValueError("GRUStream needs at least one layer, unit and stream")
        self.lp = <_LayerPtrs*>PyMem_Malloc(L * sizeof(_LayerPtrs))
        if self.lp == NULL:
            raise MemoryError()
        self.num_layers, self.batch_size, self.hidden_size = L, B, H
        self.reset_after = reset_after
        self.dtype = np.dtype(dtype)
        self.dbl = self.dtype == np.float64
        keep = []
        for l in range(L):
            # Already contiguous arrays of the right dtype: the layer's own parameters.
            arrs = [np.ascontiguousarray(a, dtype=self.dtype) for a in layers[l]]
            if (arrs[0].shape[0] != 3 * H or arrs[1].shape != (3 * H, H)
                    or arrs[2].shape != (3 * H,) or arrs[3].shape != (3 * H,)
                    or (l > 0 and arrs[0].shape[1] != H)):
                raise ValueError(f"GRUStream: parameter shapes of layer {l} do not match")
            keep.append(arrs)
            self.lp[l].wih = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrs[0])
            self.lp[l].whh = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrs[1])
            self.lp[l].bih = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrs[2])
            self.lp[l].bhh = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrs[3])
            self.lp[l].in_size = arrs[0].shape[1]
        self.keep = keep
        self.input_size = self.lp[0].in_size
        self.S_arr = np.array(h0, dtype=self.dtype, order="C")
        if self.S_arr.shape != (L, B, H):
            raise ValueError(f"h0 must have shape {(L, B, H)}, got {self.S_arr.shape}")
        self.S_prev_arr = np.empty_like(self.S_arr)
        self.S_prev = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.S_prev_arr)
        self.G_arr = np.empty((B, 3 * H), self.dtype)
        self.A_arr = np.empty((B, H), self.dtype)
        self.Gh_arr = np.empty((B, 3 * H), self.dtype)
        self.Y_arr = np.empty((max(L - 1, 1), B, H), self.dtype)
        self.S = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.S_arr)
        self.G = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.G_arr)
        self.A = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.A_arr)
        self.Gh = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.Gh_arr)
        self.Y = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.Y_arr)
        self.bs[0] = B
        self.off[0] = 0
        self.off[1] = B

    def __dealloc__(self):
        PyMem_Free(self.lp)

    @property
    def h(self):
        return self.S_arr.copy()

    @h.setter
    def h(self, value):
        shape = (self.num_layers, self.batch_size, self.hidden_size)
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"h must be an array of real numbers, got dtype {arr.dtype}")
        if arr.shape != shape:
            raise ValueError(f"h must have shape (num_layers, batch_size, hidden_size) = "
                             f"{shape}, got {arr.shape}")
        arr = arr.astype(self.dtype, copy=False)
        if not np.all(np.isfinite(arr)):
            raise ValueError("h contains NaN or inf")
        self.S_arr[...] = arr

    def reset(self):
        """Set the state of every stream to zeros."""
        self.S_arr.fill(0)

    def step(self, x):
        """Advance every stream by one step; returns the top layer's output (B, H).

        x: (batch_size, input_size), or (input_size,) when batch_size is 1 (the output
        is then (hidden_size,)).  Integers and the other float width are cast; NaN or
        inf are refused (ValueError) and leave the state unchanged, as does a step whose
        new state is not finite (parameters made NaN or inf in place).  One stream
        serves one thread at a time (RuntimeError otherwise).
        """
        if self.busy:
            raise RuntimeError("this GRUStream is in use by another thread; give each "
                               "thread its own stream")
        self.busy = True
        try:
            return self._step(x)
        finally:
            self.busy = False

    cdef object _step(self, x):
        cdef int B = self.batch_size, H = self.hidden_size, I0 = self.input_size
        cdef bint flat = False
        cdef int typenum = cnp.NPY_DOUBLE if self.dbl else cnp.NPY_FLOAT
        cdef cnp.ndarray xa
        if (type(x) is not np.ndarray or cnp.PyArray_TYPE(<cnp.ndarray>x) != typenum
                or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x)):
            try:
                arr = np.asarray(x)
            except ValueError as exc:  # ragged nested sequences
                raise ValueError(f"x must be an array of shape (batch_size, input_size), "
                                 f"got {type(x).__name__}: {exc}") from None
            if arr.dtype.kind not in "fiu":
                raise TypeError(f"x must be an array of real numbers, got dtype "
                                f"{arr.dtype}")
            if arr.ndim == 0:
                raise ValueError(f"x must have shape (batch_size, input_size) = "
                                 f"({B}, {I0}), got a scalar")
            x = np.ascontiguousarray(arr, dtype=self.dtype)
        xa = <cnp.ndarray>x
        cdef int nd = cnp.PyArray_NDIM(xa)
        cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(xa)
        cdef cnp.npy_intp odims[2]
        if nd == 1 and B == 1 and dims[0] == I0:
            flat = True
        elif nd != 2 or dims[0] != B or dims[1] != I0:
            raise ValueError(f"x must have shape (batch_size, input_size) = ({B}, {I0})"
                             + (f" or ({I0},)" if B == 1 else "") + f", got {x.shape}")
        odims[0] = B
        odims[1] = H
        if flat:
            out = cnp.PyArray_EMPTY(1, &odims[1], typenum, 0)
        else:
            out = cnp.PyArray_EMPTY(2, odims, typenum, 0)
        cdef char* xp = <char*>cnp.PyArray_DATA(xa)
        cdef char* op = <char*>cnp.PyArray_DATA(<cnp.ndarray>out)
        cdef bint ok, state_ok = True
        cdef Py_ssize_t ns = <Py_ssize_t>self.num_layers * B * H
        cdef size_t nbytes = ns * (8 if self.dbl else 4)
        with nogil:
            if self.dbl:
                ok = _all_finite(<double*>xp, <Py_ssize_t>B * I0)
            else:
                ok = _all_finite(<float*>xp, <Py_ssize_t>B * I0)
            if ok:
                memcpy(self.S_prev, self.S, nbytes)
                if self.dbl:
                    self._run(<double*>xp, <double*>op)
                    state_ok = _all_finite(<double*>self.S, ns)
                else:
                    self._run(<float*>xp, <float*>op)
                    state_ok = _all_finite(<float*>self.S, ns)
                if not state_ok:
                    memcpy(self.S, self.S_prev, nbytes)
        if not ok:
            raise ValueError("x contains NaN or inf")
        if not state_ok:
            raise ValueError("the new state is not finite: the layer's parameters contain "
                             "NaN or inf (the state is left as it was)")
        return out

    cdef void _run(self, floating* x, floating* out) noexcept nogil:
        cdef int l, L = self.num_layers, B = self.batch_size, H = self.hidden_size
        cdef floating* inp = x
        cdef floating* y
        grucy_blas_enter()
        for l in range(L):
            y = out if l == L - 1 else <floating*>self.Y + <Py_ssize_t>l * B * H
            _forward_seq(1, B, self.lp[l].in_size, H, self.bs, self.off, False,
                         self.reset_after, False, inp, <floating*>self.lp[l].wih,
                         <floating*>self.lp[l].whh, <floating*>self.lp[l].bih,
                         <floating*>self.lp[l].bhh, y, <Py_ssize_t>B * H, H,
                         <floating*>self.S + <Py_ssize_t>l * B * H, <floating*>self.G,
                         <floating*>self.A, NULL, <floating*>self.Gh, NULL, NULL, NULL)
            inp = y
        grucy_blas_exit()
