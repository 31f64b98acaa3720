"""GRU kernels: one nogil call runs every time step of one layer and one direction.

Layout.  Sequences are sorted by length, longest first, so at time t the active
sequences are the first ``bs[t]`` rows (``bs``: batch sizes per step, as in PyTorch's
packed sequences).  Everything kept per step is stored *packed* in time order: step t
owns rows ``off[t] .. off[t] + bs[t]`` of a (N, .) buffer, N = sum(bs).  With full
lengths packed is the plain (T*B, .) layout and the input is used as it is; with
variable lengths no work is spent on padding.

What a step computes is the cell's (the table of stages below, _CELLS; the arithmetic
in _gru_rows.h): forward, a product of the state with W_hh then a fused pass over the
rows (biases, sigmoids, tanh, update); backward, a fused pass producing the gate
gradients then their product with W_hh.  The input projection X @ W_ih^T of all steps
runs before the loop; dX, dW_ih, dW_hh and the bias gradients after it.

Arithmetic.  Every product with a weight runs on grucy's own GEMM (_pgemm.h), in which
each output is one chain of fused multiply-adds over k in order.  So a row's results do
not depend on the other rows, on how rows and units are split between threads, or on
the vector width: outputs, final states and dX are bit-identical whatever a sequence's
position in the batch, its neighbours, their lengths or the thread count; the weight
gradients (sums over rows) are bit-identical for any thread count.

Parallel work (the plan, _make_plan and work_plan()).  The threads of a call form
``groups`` x ``chunks``: each group owns a block of rows for the whole sequence, each
chunk a block of hidden units.  With one chunk a thread runs its rows through all T
steps with no barrier at all; with several, the threads of a group meet once per stage
of a step.  Groups and chunks are chosen per call from the batch, H and the L2 cache
(a chunk's slice of W_hh should stay in its core's L2), threads from the total work.
The GEMMs around the loop are split over all threads of the call.

Workspace kept for backward (training only): G (N, 3H) gates r, z, n; A (N, H) the
auxiliary W_hn h + b_hn (reset-after) or r * h (reset-before); Hp (N, H) the state
entering each step.
"""

from cython cimport floating
from libc.string cimport memcmp, memcpy, memset
from libc.stdlib cimport getenv
from cpython.mem cimport PyMem_Malloc, PyMem_Free

import os

import numpy as np
cimport numpy as cnp

from ._blas cimport gemm, colsum

cnp.import_array()

cdef extern from "_fastmath.h" nogil:
    float grucy_sigmoidf(float x)
    float grucy_tanhf(float x)
    float grucy_expf(float x)

cdef extern from "_pool.h" nogil:
    ctypedef struct grucy_barrier:
        int n
    ctypedef void (*grucy_job_fn)(void* ctx, int tid, int nt) noexcept nogil
    double grucy_now()
    void grucy_barrier_init(grucy_barrier* b, int n)
    double grucy_barrier_wait(grucy_barrier* b)
    int grucy_pool_acquire(int want)
    void grucy_pool_release(int acquired)
    void grucy_pool_run(grucy_job_fn fn, void* ctx, int nt, int dynamic)
    ctypedef struct grucy_tasks:
        int total
    void grucy_tasks_init(grucy_tasks* q, int total)
    int grucy_tasks_claim(grucy_tasks* q)
    void grucy_tasks_finish(grucy_tasks* q)
    double grucy_tasks_wait(grucy_tasks* q)
    int grucy_pool_workers()
    long grucy_pool_late
    int grucy_nthreads
    double grucy_spin_s


# ---------------------------------------------------------------------------------------
# Threads.

# The most threads a call may be given: four times the cores, and never less than 64
# (oversubscription stays possible for experiments; thousands of threads, which would
# exhaust the process's threads and memory, are not).  grucy.set_num_threads refuses more;
# a larger OMP_NUM_THREADS is taken as this.
MAX_THREADS = max(64, 4 * (os.cpu_count() or 1))


cdef int _default_threads():
    """OMP_NUM_THREADS when set (the usual way to ask numeric libraries for a count; at
    most MAX_THREADS), else the CPUs this process may run on."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value.isascii() and value.isdigit() and int(value) > 0:
        return min(int(value), MAX_THREADS)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return max(1, os.cpu_count() or 1)


grucy_nthreads = _default_threads()
_spin = os.environ.get("GRUCY_SPIN_US", "")
if _spin:
    try:
        grucy_spin_s = max(0.0, float(_spin)) * 1e-6
    except ValueError:
        raise ImportError(f"GRUCY_SPIN_US must be a number of microseconds, got {_spin!r}")


def openmp_enabled():
    """False: the kernels run on grucy's own thread team (pthreads), not OpenMP.  Kept
    for code written against older versions; see kernel_info()["threads"]."""
    return False


def set_num_threads(int n):
    """Threads the kernels may use (1 .. any; grucy.set_num_threads validates it)."""
    global grucy_nthreads
    if n < 1:
        raise ValueError(f"n must be a positive number of threads, got {n}")
    grucy_nthreads = n


def get_num_threads():
    """Threads the kernels may use (a call uses fewer when its work is small)."""
    return grucy_nthreads


def _pool_workers():
    """Worker threads started so far (a forked child starts with none)."""
    return grucy_pool_workers()


# ---------------------------------------------------------------------------------------
# BLAS: only the "blas" kernel choice (GRUCY_ISA=blas) calls it inside the kernels.

cdef extern from *:
    """
    /* BLAS threads are set to 1 while a kernel runs (the kernels parallelise with
     * their own threads, each calling BLAS on its own slice), and restored when the
     * last concurrent kernel call returns. */
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
    void grucy_blas_enter() noexcept nogil
    void grucy_blas_exit() noexcept nogil
    void grucy_blas_install(size_t set, size_t get) noexcept


cdef str _blas_control = "none"
_blas_corename = None


def _scipy_blas_function(name):
    """A ctypes function of the BLAS behind scipy.linalg.cython_blas (OpenBLAS:
    scipy_openblas_<name> or openblas_<name>, with or without the 64_ suffix)."""
    import ctypes
    import scipy.linalg.cython_blas as cython_blas
    try:
        lib = ctypes.CDLL(cython_blas.__file__)
    except OSError:  # pragma: no cover - unusual platform
        return None, None
    for prefix in ("scipy_openblas", "openblas"):
        for suffix in ("", "64_"):
            fn = getattr(lib, f"{prefix}_{name}{suffix}", None)
            if fn is not None:
                return fn, f"{prefix}_{name}{suffix}"
    return None, None


def _install_blas():
    global _blas_control, _blas_corename
    import ctypes
    setter, name = _scipy_blas_function("set_num_threads")
    getter, _ = _scipy_blas_function("get_num_threads")
    if setter is not None and getter is not None:
        grucy_blas_install(ctypes.cast(setter, ctypes.c_void_p).value,
                           ctypes.cast(getter, ctypes.c_void_p).value)
        _blas_control = name
    corename, _ = _scipy_blas_function("get_corename")
    if corename is not None:
        corename.restype = ctypes.c_char_p
        value = corename()
        _blas_corename = value.decode("ascii", "replace").strip() if value else None


_install_blas()


def blas_thread_control():
    """Name of the BLAS function grucy uses to keep BLAS single-threaded inside its
    kernels (GRUCY_ISA=blas only), or "none" when scipy's BLAS offers none."""
    return _blas_control


# ---------------------------------------------------------------------------------------
# Which GEMM kernel runs: chosen at import from the CPU, or by GRUCY_ISA.

cdef extern from "_pgemm.h" nogil:
    int GRUCY_ISA_PORTABLE, GRUCY_ISA_AVX2, GRUCY_ISA_AVX512, GRUCY_ISA_BLAS
    int grucy_isa
    int grucy_isa_best()
    int grucy_isa_select(int isa)
    int grucy_nr(int isa, int elsize)
    size_t grucy_pgemm_size(int K, int N, int nr)
    void grucy_pack_t_f(int nr, int K, int c, int g0, int ng, int H, int j0, const float* W, int ldw, float* P)
    void grucy_pack_t_d(int nr, int K, int c, int g0, int ng, int H, int j0, const double* W, int ldw, double* P)
    void grucy_pack_n_f(int nr, int K, int N, const float* W, int ldw, float* P)
    void grucy_pack_n_d(int nr, int K, int N, const double* W, int ldw, double* P)
    void grucy_pgemm_f(int M, int N, int K, const float* A, int lda, const float* B, Py_ssize_t bk, Py_ssize_t pstride, float* C, int ldc, int beta, int backwards)
    void grucy_pgemm_d(int M, int N, int K, const double* A, int lda, const double* B, Py_ssize_t bk, Py_ssize_t pstride, double* C, int ldc, int beta, int backwards)
    void grucy_pgemm_at_f(int M, int N, int K, const float* A, int lda, const float* B, Py_ssize_t bk, Py_ssize_t pstride, float* C, int ldc, int beta, int backwards)
    void grucy_pgemm_at_d(int M, int N, int K, const double* A, int lda, const double* B, Py_ssize_t bk, Py_ssize_t pstride, double* C, int ldc, int beta, int backwards)

ISA_NAMES = ("portable", "avx2", "avx512", "blas")


def _isa_from_env():
    name = os.environ.get("GRUCY_ISA", "").strip().lower()
    if not name:
        return grucy_isa_best()
    if name not in ISA_NAMES:
        raise ImportError(f"GRUCY_ISA must be one of {', '.join(ISA_NAMES)} (or unset), "
                          f"got {name!r}")
    isa = ISA_NAMES.index(name)
    if isa != GRUCY_ISA_BLAS and isa > grucy_isa_best():
        raise ImportError(f"GRUCY_ISA={name}: this CPU cannot run it (the best it can "
                          f"run is {ISA_NAMES[grucy_isa_best()]})")
    return isa


grucy_isa_select(_isa_from_env())


def kernel_isa():
    """The kernel of the products with the weights: "avx512", "avx2", "portable" (plain
    C that compilers vectorize: SSE2, NEON) or "blas" (scipy's BLAS; GRUCY_ISA=blas)."""
    return ISA_NAMES[grucy_isa]


def available_isas():
    """The GEMM kernels this CPU and build can run, best first, "blas" last."""
    best = grucy_isa_best()
    return [ISA_NAMES[i] for i in (GRUCY_ISA_AVX512, GRUCY_ISA_AVX2, GRUCY_ISA_PORTABLE)
            if i <= best] + ["blas"]


def _set_isa(str name):
    """Test hook: switch the kernels to ``name`` (see kernel_isa); returns the old name.
    ValueError when this CPU cannot run it."""
    if name not in ISA_NAMES:
        raise ValueError(f"name must be one of {ISA_NAMES}, got {name!r}")
    old = ISA_NAMES[grucy_isa]
    if grucy_isa_select(ISA_NAMES.index(name)) != 0:
        raise ValueError(f"this CPU cannot run the {name} kernels")
    grucy_lp_select(grucy_isa, _lowp_native)
    return old


def packed_gemm_enabled():
    """True when the products with the weights run grucy's own kernels (False: BLAS)."""
    return grucy_isa != GRUCY_ISA_BLAS


# ---------------------------------------------------------------------------------------
# Low precision (bf16, int8): the kernels of _lowp.h, chosen with the float32 ones.

cdef extern from "_lowp.h" nogil:
    int GRUCY_LP_PORTABLE, GRUCY_LP_AVX2, GRUCY_LP_AVX512, GRUCY_LP_NATIVE
    int grucy_bf16_kind, grucy_i8_kind
    int grucy_cpu_has_lowp(int bf16)
    int grucy_lp_nr(int kind)
    void grucy_lp_select(int isa, int native)
    unsigned int grucy_bf16_bits(unsigned int x)
    int grucy_bf16_kp(int K)
    size_t grucy_bf16_esz()
    size_t grucy_bf16_panel_bytes(int K)
    size_t grucy_bf16_pack_bytes(int K, int N)
    void grucy_bf16_cvt(int M, int K, const float* A, Py_ssize_t ars, Py_ssize_t acs, void* out, int ldo)
    void grucy_bf16_pack_t(int K, int c, int g0, int ng, int H, int j0, const float* W, int ldw, void* P, void* tmp, int p0, int p1)
    void grucy_bf16_pack_n(int K, int N, const float* W, int ldw, void* P)
    void grucy_bf16_gemm(int M, int N, int K, const void* A, int lda, const void* B, Py_ssize_t pstride_bytes, float* C, int ldc, int beta, int backwards)
    int grucy_i8_kq(int K)
    size_t grucy_i8_panel_bytes(int K)
    size_t grucy_i8_pack_bytes(int K, int N)
    void grucy_i8_quant(int M, int K, const float* A, Py_ssize_t lda, unsigned char* out, int ldo, float* sa)
    void grucy_i8_pack_t(int K, int c, int g0, int ng, int H, int j0, const signed char* W, int ldw, const float* sw, void* P, int* corr, float* scale, void* tmp, int p0, int p1)
    int* grucy_i8_corr(void* P, int K, int N)
    float* grucy_i8_scale(void* P, int K, int N)
    void grucy_i8_gemm(int M, int N, int K, const unsigned char* A, int lda, const float* sa, const void* B, const int* corr, const float* sc, float* C, int ldc, int backwards)

LOWP_MODES = ("native", "emulated")
cdef bint _lowp_native = True


def _lowp_from_env():
    name = os.environ.get("GRUCY_LOWP", "").strip().lower()
    if not name:
        return True
    if name not in LOWP_MODES:
        raise ImportError(f"GRUCY_LOWP must be one of {', '.join(LOWP_MODES)} (or unset), "
                          f"got {name!r}")
    return name == "native"


_lowp_native = _lowp_from_env()
grucy_lp_select(grucy_isa, _lowp_native)


def _lp_name(int kind, str native):
    if kind == GRUCY_LP_NATIVE:
        return native
    return ("portable", "avx2", "avx512")[kind] + "-emulated"


def lowp_kernels():
    """The kernels of the low-precision products: {"bf16": ..., "int8": ...}, each the
    native instruction ("avx512bf16": VDPBF16PS, "avx512vnni": VPDPBUSD) or an exact
    emulation ("avx512-emulated", "avx2-emulated", "portable-emulated"), which gives the
    same numbers.  They follow the float32 kernels' width (GRUCY_ISA, _set_isa);
    GRUCY_LOWP=emulated (or _set_lowp) keeps the emulations on a CPU that has the
    instructions."""
    return {"bf16": _lp_name(grucy_bf16_kind, "avx512bf16"),
            "int8": _lp_name(grucy_i8_kind, "avx512vnni")}


def _set_lowp(str mode):
    """Test hook: "native" (the instructions when this CPU has them) or "emulated" (the
    exact emulation of the float32 kernels' width); returns the old mode.  Streams
    repack their snapshots on their next step."""
    global _lowp_native
    if mode not in LOWP_MODES:
        raise ValueError(f"mode must be one of {LOWP_MODES}, got {mode!r}")
    old = LOWP_MODES[0 if _lowp_native else 1]
    _lowp_native = mode == "native"
    grucy_lp_select(grucy_isa, _lowp_native)
    return old


cdef extern from *:
    """
    /* Which clone of the fused row kernels (_gru_rows.h, target_clones) the loader
     * picks on this CPU: the same test GCC's resolver makes. */
    static int grucy_rows_isa(void) {
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \\
        && !defined(GRUCY_NO_CLONES)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) return 2;
        if (__builtin_cpu_supports("avx2")) return 1;
    #endif
        return 0;
    }
    """
    int grucy_rows_isa() noexcept


cdef Py_ssize_t _l2_bytes = 0


def _detect_l2():
    """L2 cache per core in bytes (sysconf, then sysfs; 1 MiB when neither says)."""
    try:
        v = os.sysconf("SC_LEVEL2_CACHE_SIZE")
        if v and v > 0:
            return int(v)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as f:
            text = f.read().strip().upper()
        mult = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        return int(text.rstrip("KM")) * mult
    except (OSError, ValueError):
        return 1 << 20


_l2_bytes = _detect_l2()


def kernel_info():
    """What runs on this CPU, as a dict: ``packed`` (the kernel of the products with the
    weights, as kernel_isa()), ``rows`` (the instruction set of the fused per-row
    passes: "avx512", "avx2" or "baseline"), ``blas_core`` (OpenBLAS's own name of its
    kernel, or None for another BLAS), ``blas_threads`` (blas_thread_control()),
    ``threads`` (the thread runtime), ``l2_bytes`` (the L2 size the plans assume),
    ``bf16`` and ``int8`` (the low-precision kernels, lowp_kernels())."""
    return {"packed": kernel_isa(),
            "rows": ("baseline", "avx2", "avx512")[grucy_rows_isa()],
            "blas_core": _blas_corename,
            "blas_threads": _blas_control,
            "threads": "grucy pthread team",
            "l2_bytes": int(_l2_bytes),
            **lowp_kernels()}


# ---------------------------------------------------------------------------------------
# The FMA peak: the ceiling for every GEMM figure.

cdef extern from *:
    """
    /* 24 independent chains of vector FMAs (enough to cover the FMA latency times the
     * FMA units of any current x86 core), `iters` rounds.  Returns the float32
     * multiply-adds done; the result feeds a sink so nothing is removed. */
    #if defined(__GNUC__) && defined(__x86_64__)
    #include <immintrin.h>
    __attribute__((target("avx512f"))) static double grucy_fma_avx512(long iters, float* sink) {
        __m512 a[24];
        const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
        for (int i = 0; i < 24; i++) a[i] = _mm512_set1_ps((float)i);
        for (long k = 0; k < iters; k++) {
            _Pragma("GCC unroll 24")
            for (int i = 0; i < 24; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
        }
        __m512 s = a[0];
        for (int i = 1; i < 24; i++) s = _mm512_add_ps(s, a[i]);
        *sink += _mm512_reduce_add_ps(s);
        return (double)iters * 24 * 16;
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
    #else
    static double grucy_fma_avx512(long iters, float* sink) { return 0; }
    static double grucy_fma_avx2(long iters, float* sink) { return 0; }
    #endif
    static double grucy_fma_scalar(long iters, float* sink) {
        float a[16];
        for (int i = 0; i < 16; i++) a[i] = (float)i;
        for (long k = 0; k < iters; k++)
            for (int i = 0; i < 16; i++) a[i] = a[i] * 0.999999f + 1e-7f;
        for (int i = 0; i < 16; i++) *sink += a[i];
        return (double)iters * 16;
    }
    typedef struct { int isa; long iters; double* done; float* sinks; } grucy_fma_job;
    static void grucy_fma_run(void* p, int tid, int nt) {
        grucy_fma_job* j = (grucy_fma_job*)p;
        j->done[tid] = j->isa == 2 ? grucy_fma_avx512(j->iters, &j->sinks[tid])
                     : j->isa == 1 ? grucy_fma_avx2(j->iters, &j->sinks[tid])
                     : grucy_fma_scalar(j->iters, &j->sinks[tid]);
    }
    """
    ctypedef struct grucy_fma_job:
        int isa
        long iters
        double* done
        float* sinks
    void grucy_fma_run(void* p, int tid, int nt) noexcept nogil


def fma_peak(int threads=1, double seconds=0.2):
    """The machine's float32 FMA peak in GFLOP/s (2 flops per multiply-add): ``threads``
    threads each run independent chains of the widest vector FMA this CPU has
    (AVX-512, else AVX2, else scalar multiply-adds) for about ``seconds``."""
    if threads < 1:
        raise ValueError(f"threads must be a positive number, got {threads}")
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    best = grucy_isa_best()
    cdef grucy_fma_job job
    cdef double[::1] done = np.zeros(threads)
    cdef float[::1] sinks = np.zeros(threads, np.float32)
    cdef double t0, elapsed
    cdef int nt
    job.isa = 2 if best == GRUCY_ISA_AVX512 else 1 if best == GRUCY_ISA_AVX2 else 0
    job.iters = 1 << 14
    job.done = &done[0]
    job.sinks = &sinks[0]
    while True:  # calibrate on one thread
        t0 = grucy_now()
        with nogil:
            grucy_fma_run(&job, 0, 1)
        elapsed = grucy_now() - t0
        if elapsed > seconds / 8 or job.iters > (1 << 40):
            break
        job.iters *= 4
    job.iters = max(1, <long>(job.iters * (seconds / max(elapsed, 1e-9))))
    done[:] = 0
    with nogil:
        nt = grucy_pool_acquire(threads)
        t0 = grucy_now()
        grucy_pool_run(<grucy_job_fn>grucy_fma_run, &job, nt, 0)
        elapsed = grucy_now() - t0
        grucy_pool_release(nt)
    return 2 * float(np.sum(done)) / elapsed / 1e9


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
    finite, False when one is not; None for any other array (check it with NumPy),
    byte-swapped ones included."""
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISNOTSWAPPED(a):
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


cdef _fast_probe(int which, const float[::1] x, float[::1] out):
    if out.shape[0] < x.shape[0]:
        raise ValueError(f"out must hold at least {x.shape[0]} values, got {out.shape[0]}")
    if x.shape[0]:
        grucy_fast_probe_f(which, &x[0], &out[0], x.shape[0])


def _fast_expf(const float[::1] x, float[::1] out):
    """Vectorizable float32 exp, sigmoid, tanh over arrays (exposed for the tests)."""
    _fast_probe(0, x, out)


def _fast_sigmoidf(const float[::1] x, float[::1] out):
    _fast_probe(1, x, out)


def _fast_tanhf(const float[::1] x, float[::1] out):
    _fast_probe(2, x, out)


# ---------------------------------------------------------------------------------------
# Fused per-row passes: the arithmetic lives in _gru_rows.h (C, so that `restrict` lets
# gcc vectorize it); these wrappers split a row into its r, z, n slices.  g: the row's 3H
# gate slots (input projection in, gates out); gh: recurrent projection; h: the state
# (h_prev in, h_new out); y: output row.

cdef extern from "_gru_rows.h" nogil:
    void grucy_fast_probe_f(int which, const float* x, float* out, Py_ssize_t n)
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
# The cell: what one time step computes, as stages.  This table is the one place that
# says how a GRU form differs; the drivers below read it and never ask which form runs.
#
# Forward stage: Gh[:, gates g0 .. g0+ng of the thread's units] = src @ W_hh[those
#   rows]^T (src: the state, or the auxiliary A written by an earlier stage), then the
#   fused pass `fused` on the thread's rows and units.
# Backward stage: the fused pass `fused`, then dst (+)= dG[:, gates g0 .. g0+ng] @
#   W_hh[those gate rows, the thread's units] (dst: dS, accumulated; or dRH, set).
# Threads sharing rows meet after every forward stage and between the fused pass and
# the product of every backward stage.  A one-stage forward reads the state in its
# product and writes it in its fused pass, so it keeps two state buffers.
#
# A new cell (a minimal GRU, a LayerNorm GRU): its row kernels in _gru_rows.h, their
# ids and calls in _fwd_fused/_bwd_fused, a Cell entry here, and its NumPy reference.

DEF SRC_STATE = 0
DEF SRC_AUX = 1
DEF DST_DS = 0
DEF DST_DRH = 1

DEF F_AFTER = 0          # reset-after: r, z, n and h' in one pass
DEF F_BEFORE_RZ = 1      # reset-before: r, z and aux = r * h
DEF F_BEFORE_N = 2       # reset-before: n and h'
DEF B_AFTER = 0          # reset-after backward: all gate gradients, dh * z
DEF B_BEFORE_ZN = 1      # reset-before backward: dz, dn, dh * z
DEF B_BEFORE_R = 2       # reset-before backward: dr from d(r * h), dh += d(r*h) * r

ctypedef struct FwdStage:
    int src, g0, ng, fused

ctypedef struct BwdStage:
    int fused, dst, g0, ng

ctypedef struct Cell:
    int nfwd, nbwd
    FwdStage fwd[2]
    BwdStage bwd[2]
    # the input-side gradient of gate n differs from the hidden side (kept in dGxn)
    bint xn_separate
    # what dW_hh's rows of each gate multiply: 0 the state entering the step, 1 A
    int whh_src[3]

cdef Cell _CELLS[2]
# reset-before (Cho et al. 2014): n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
_CELLS[0].nfwd = 2
_CELLS[0].fwd[0] = FwdStage(src=SRC_STATE, g0=0, ng=2, fused=F_BEFORE_RZ)
_CELLS[0].fwd[1] = FwdStage(src=SRC_AUX, g0=2, ng=1, fused=F_BEFORE_N)
_CELLS[0].nbwd = 2
_CELLS[0].bwd[0] = BwdStage(fused=B_BEFORE_ZN, dst=DST_DRH, g0=2, ng=1)
_CELLS[0].bwd[1] = BwdStage(fused=B_BEFORE_R, dst=DST_DS, g0=0, ng=2)
_CELLS[0].xn_separate = False
_CELLS[0].whh_src[:] = [0, 0, 1]
# reset-after (PyTorch, cuDNN, Keras 3): n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
_CELLS[1].nfwd = 1
_CELLS[1].fwd[0] = FwdStage(src=SRC_STATE, g0=0, ng=3, fused=F_AFTER)
_CELLS[1].nbwd = 1
_CELLS[1].bwd[0] = BwdStage(fused=B_AFTER, dst=DST_DS, g0=0, ng=3)
_CELLS[1].xn_separate = True
_CELLS[1].whh_src[:] = [0, 0, 0]


cdef inline const Cell* _cell(bint reset_after) noexcept nogil:
    return &_CELLS[1 if reset_after else 0]


# ---------------------------------------------------------------------------------------
# The work plan of a call.

DEF MAX_GROUPS = 1024
DEF MAX_CHUNKS = 64
DEF MAX_PROF_THREADS = 256
DEF NPHASES = 6          # pack, projection / dX, recurrent GEMMs, fused passes, waits, dW
DEF WGRAD_K_BLOCK = 256  # rows per block of the weight gradients (see _weight_grads)
DEF WGRAD_STRIP = 64     # weight-gradient tiles: gate rows x columns (_wgrad_block)
DEF WGRAD_COLS = 256
DEF LP_NONE = 0          # the arithmetic of the products (Ctx.lowp): the floating type's,
DEF LP_BF16 = 1          # bf16 operands with float32 sums (float32 layers),
DEF LP_INT8 = 2          # or int8 (inference of a quantized float32 layer); _lowp.h
DEF LP_ROWS = 64         # rows converted at a time for the products outside the loop

# Cost model of one step for a (groups, chunks) choice, in seconds.  Only the ratios
# matter: a core multiplies at ~1e11 multiply-adds/s (Zen 5: 245 GFLOP/s per core
# measured by fma_peak, the GEMM reaches 95-99% of it); a slice of W_hh that does not fit
# in half the L2 streams from L3 at ~5e10 bytes/s per core (Zen 5: 32 bytes per cycle
# from L3); threads in lockstep pay a barrier per stage (~5 us once a partner is late)
# and wait for the slowest of them at every step, which we count as half of the step's
# work: on a 2-core machine with two other busy threads, 32x100x128x256 trained in 38 ms
# split into 2 chunks and in 27 ms split into 2 row groups.  So chunks are chosen when
# the batch is too small to give every thread a block of rows, not to save L3 traffic.
cdef double _RATE = 1e11
cdef double _L3_BW = 5e10
cdef double _BARRIER_S = 5e-6
cdef double _LOCKSTEP = 0.5
# Threads are only worth waking for at least this many multiply-adds each (~40 us).
cdef double _MIN_THREAD_WORK = 4e6
# A chunk has at least this many units, and chunk bounds are multiples of 16 units.
cdef int _MIN_CHUNK = 32
cdef int _CHUNK_ALIGN = 16
cdef Py_ssize_t _ALIGN = 64   # bytes: buffers start on a cache line (see _buffer)
# Rows the GEMM takes at once (its register block): fewer rows per group waste it.
cdef int _MR = 8


ctypedef struct Plan:
    int nt            # threads of the call (packing, projection, dX, weight gradients)
    int groups        # row groups of the recurrence
    int chunks        # unit chunks per group; groups * chunks <= nt threads run it
    int row_lo[MAX_GROUPS + 1]
    int unit_lo[MAX_CHUNKS + 1]


cdef int _forced_groups = 0, _forced_chunks = 0


def _force_plan(int groups=0, int chunks=0, int align=16):
    """Test and tuning hook: force the recurrence's groups and chunks (0: the cost
    model chooses; a plan needs that many threads, see set_num_threads) and the unit
    alignment of chunk bounds.  Results never depend on it; returns the old setting."""
    global _forced_groups, _forced_chunks, _CHUNK_ALIGN
    if groups < 0 or chunks < 0 or groups > MAX_GROUPS or chunks > MAX_CHUNKS or align < 1:
        raise ValueError(f"groups must be in [0, {MAX_GROUPS}], chunks in [0, {MAX_CHUNKS}] "
                         f"and align positive, got {groups}, {chunks}, {align}")
    old = (_forced_groups, _forced_chunks, _CHUNK_ALIGN)
    _forced_groups, _forced_chunks, _CHUNK_ALIGN = groups, chunks, align
    return old


cdef inline double _speed(int elsize) noexcept nogil:
    """Multiply-adds per second relative to float32 of the products for an element size
    of the packed weights: 2 bytes bf16, 1 byte int8 (measured here: 2.0x and 2.8x)."""
    return 2.0 if elsize == 2 else 2.8 if elsize == 1 else 1.0


cdef double _step_cost(int rows, int cw, int H, int nstages, int elsize) noexcept nogil:
    cdef double macs = <double>rows * 3 * cw * H
    cdef double slice_bytes = 3.0 * cw * H * elsize
    cdef double rate = _RATE * _speed(elsize)
    cdef double t
    if rows < _MR:     # the kernel's 8-row register block is partly empty
        rate = rate * rows / _MR
    t = macs / rate
    if slice_bytes > 0.5 * _l2_bytes:
        if elsize < 4:
            # bf16, int8: the slice streams from L3 while the kernel multiplies (with a
            # half or a quarter of float32's bytes per multiply-add): the longer of the
            # two, measured at 2 threads (64x50x256x512: row groups 7.8 ms in int8,
            # 9.3 in bf16, against 10.0 and 9.6 for unit chunks with their barriers)
            return max(t, slice_bytes / _L3_BW)
        t += slice_bytes / _L3_BW
    return t


cdef void _make_plan(Plan* p, int T, int B, int I, int H, const int* bs, int want,
                     int nstages, int elsize) noexcept nogil:
    """Fill p for at most ``want`` threads (see the module docstring)."""
    cdef Py_ssize_t N = 0
    cdef int t, b, R, C, best_R = 1, best_C = 1, rows, cw, k, nt
    cdef double work, cost, best = 1e300
    cdef double total_len, acc, target
    cdef int lo
    for t in range(T):
        N += bs[t]
    # threads worth waking: forward (projection + recurrence) or backward alike
    work = <double>N * 3 * H * (I + H) / _speed(elsize)
    nt = <int>(work / _MIN_THREAD_WORK)
    if nt > want:
        nt = want
    if nt < 1:
        nt = 1
    p.nt = nt
    # groups x chunks by the cost model: fewest steps' time, then fewest threads
    B = bs[0] if T > 0 else 0
    if B < 1:
        B = 1
    for C in range(1, nt + 1):
        if C > MAX_CHUNKS or (C > 1 and H // C < _MIN_CHUNK):
            break
        R = nt // C
        if R > B:
            R = B
        if R > MAX_GROUPS:
            R = MAX_GROUPS
        if R < 1:
            break
        rows = (B + R - 1) // R
        cw = (H + C - 1) // C
        cost = _step_cost(rows, cw, H, nstages, elsize)
        if C > 1:
            cost += nstages * _BARRIER_S + _LOCKSTEP * <double>rows * 3 * cw * H / _RATE
        if cost < 0.97 * best:
            best, best_R, best_C = cost, R, C
    if _forced_groups > 0:
        best_R = min(_forced_groups, B)
    if _forced_chunks > 0:
        best_C = min(_forced_chunks, H)
    if best_R * best_C > want:      # (a forced plan, with fewer threads granted)
        best_C = max(1, want // best_R)
        best_R = min(best_R, want)
    if best_R * best_C > p.nt:
        p.nt = best_R * best_C
    p.groups = best_R
    p.chunks = best_C
    # unit chunks: even split, bounds on multiples of _CHUNK_ALIGN when H allows
    for k in range(best_C + 1):
        lo = <int>((<long long>k * H) // best_C)
        if H >= best_C * _CHUNK_ALIGN and k < best_C:
            lo = lo // _CHUNK_ALIGN * _CHUNK_ALIGN
        p.unit_lo[k] = lo
    p.unit_lo[best_C] = H
    # row groups: equal shares of the row-steps (rows sorted longest first), bounds on
    # multiples of the GEMM's row block when the groups are large enough
    total_len = <double>N
    p.row_lo[0] = 0
    b = 0
    acc = 0
    for k in range(1, best_R):
        target = total_len * k / best_R
        while b < B and acc + _row_len(bs, T, b) * 0.5 < target:
            acc += _row_len(bs, T, b)
            b += 1
        lo = b
        if B >= best_R * 2 * _MR:
            lo = (lo + _MR // 2) // _MR * _MR
        if lo <= p.row_lo[k - 1]:
            lo = p.row_lo[k - 1] + 1
        if lo > B - (best_R - k):
            lo = B - (best_R - k)
        p.row_lo[k] = lo
    p.row_lo[best_R] = B


cdef inline int _row_len(const int* bs, int T, int b) noexcept nogil:
    """Steps in which row b is active (bs non-increasing)."""
    cdef int lo = 0, hi = T, mid
    while lo < hi:   # first t with bs[t] <= b
        mid = (lo + hi) // 2
        if bs[mid] > b:
            lo = mid + 1
        else:
            hi = mid
    return lo


def work_plan(int T, int B, int I, int H, lengths=None, threads=None,
              reset_after=True, dtype=np.float32, precision="fp32"):
    """The work plan the kernels make for one layer and direction: a dict with
    ``threads`` (of the call), ``groups`` and ``chunks`` (of the recurrence),
    ``row_bounds`` (rows of each group, longest sequences first), ``unit_bounds``,
    ``wgrad_k_block`` (rows per block of the weight gradients), ``isa``, ``nr`` (columns
    per packed panel) and ``l2_bytes``.  Tools read it instead of copying constants.
    ``precision``: "fp32" (the dtype's), "bf16" or "int8" (their plans see smaller,
    faster weights)."""
    if T < 1 or B < 1 or I < 1 or H < 1:
        raise ValueError(f"T, B, I and H must be positive, got {T}, {B}, {I}, {H}")
    if lengths is None:
        bs = np.full(T, B, np.intc)
    else:
        lengths = np.sort(np.asarray(lengths, dtype=np.int64))[::-1]
        if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
            raise ValueError(f"lengths must be {B} integers in [1, {T}]")
        bs = (lengths[None, :] > np.arange(T)[:, None]).sum(1).astype(np.intc)
    cdef int[::1] bsv = bs
    cdef int want = grucy_nthreads if threads is None else int(threads)
    if want < 1:
        raise ValueError(f"threads must be positive, got {want}")
    if precision not in ("fp32", "bf16", "int8"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'int8', got {precision!r}")
    cdef int elsize = {"fp32": np.dtype(dtype).itemsize, "bf16": 2, "int8": 1}[precision]
    cdef Plan* p = <Plan*>PyMem_Malloc(sizeof(Plan))
    if p == NULL:
        raise MemoryError()
    cdef int nstages = _cell(reset_after).nfwd
    try:
        with nogil:
            _make_plan(p, T, B, I, H, &bsv[0], want, nstages, elsize)
        return {"threads": p.nt, "groups": p.groups, "chunks": p.chunks,
                "row_bounds": [p.row_lo[k] for k in range(p.groups + 1)],
                "unit_bounds": [p.unit_lo[k] for k in range(p.chunks + 1)],
                "wgrad_k_block": WGRAD_K_BLOCK, "isa": kernel_isa(),
                "nr": grucy_nr(grucy_isa, elsize) if precision == "fp32" else
                grucy_lp_nr(grucy_bf16_kind if precision == "bf16" else grucy_i8_kind),
                "l2_bytes": int(_l2_bytes)}
    finally:
        PyMem_Free(p)


def workspace_bytes(int T, int B, int I, int H, bint training=True, bint reset_after=True,
                    dtype=np.float32, threads=None, bint full_lengths=True,
                    precision="fp32"):
    """Bytes of the kernel buffers one layer and direction keeps in its pool: a forward
    (``training``: what backward reads, too) and its backward, for N = T*B rows (fewer
    with variable lengths; ``full_lengths=False`` adds the gathered input rows).  The
    pool keeps the largest buffers of its calls; the layer adds its own copies.
    ``precision``: "fp32" (the dtype's products), "bf16" (float32 layers) or "int8"
    (inference of a quantized float32 layer): their packed weights, converted rows and
    conversion scratch instead of the float ones."""
    if T < 1 or B < 1 or I < 1 or H < 1:
        raise ValueError(f"T, B, I and H must be positive, got {T}, {B}, {I}, {H}")
    if precision not in ("fp32", "bf16", "int8"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'int8', got {precision!r}")
    cdef int lowp = {"fp32": LP_NONE, "bf16": LP_BF16, "int8": LP_INT8}[precision]
    if lowp and np.dtype(dtype) != np.float32:
        raise ValueError(f"precision={precision!r} needs dtype float32, got {dtype}")
    if lowp == LP_INT8 and training:
        raise ValueError("precision='int8' runs inference only (training=False)")
    cdef int want = grucy_nthreads if threads is None else int(threads)
    cdef Py_ssize_t el = np.dtype(dtype).itemsize, N = <Py_ssize_t>T * B
    cdef int nr = grucy_nr(grucy_isa, <int>el)
    cdef const Cell* cell = _cell(reset_after)
    cdef Plan* p = <Plan*>PyMem_Malloc(sizeof(Plan))
    cdef Py_ssize_t[MAX_CHUNKS + 1] off
    cdef int plan_el = <int>el if not lowp else (2 if lowp == LP_BF16 else 1)
    if p == NULL:
        raise MemoryError()
    bs = np.full(T, B, np.intc)
    cdef int[::1] bsv = bs
    try:
        with nogil:
            _make_plan(p, T, B, I, H, &bsv[0], want, cell.nfwd, plan_el)
        nt = p.nt
        if lowp:   # bytes (_lp_buffers): packed blocks, per-thread scratch, X converted
            pk = max(_lp_layout(cell, p, lowp, I, H, True, off),
                     _lp_layout(cell, p, lowp, I, H, False, off) if training else 0) + 64
            lws = nt * max(_lp_scratch(lowp, True, B, I, H),
                           _lp_scratch(lowp, False, B, I, H) if training else 0) + 64
            xc = _al(N * _lp_row_bytes(lowp, I)) + N * 4 + 64
        else:
            pk = max(_pack_layout(cell, p, I, H, nr, True, off),
                     _pack_layout(cell, p, I, H, nr, False, off))
    finally:
        PyMem_Free(p)
    # low precision without training: G holds one step's rows (the projection runs in
    # the recurrence)
    fwd = (B if lowp and not training else N) * 3 * H
    fwd += (N if training else B) * H + (N * H if training else 0) + B * 3 * H
    fwd += B * H if cell.nfwd == 1 else 0
    fwd += 0 if full_lengths else N * I
    bwd = 0
    if training:
        bwd = N * 3 * H + (N * H if cell.xn_separate else H) + B * H + N * I
        if not lowp:
            bwd += nt * _wgrad_scratch(I, H, nr)
    # + each buffer's alignment slack (_buffer: at most 16 buffers a layer and direction)
    if lowp:
        return int((fwd + bwd) * el + pk + lws + xc) + 16 * _ALIGN
    return int((fwd + bwd + (pk if grucy_isa != GRUCY_ISA_BLAS else 0)) * el) + 16 * _ALIGN


# ---------------------------------------------------------------------------------------
# The products with the weights.

cdef inline int _nr(const floating* tag) noexcept nogil:
    """Columns per panel of a packed operand of this element type (kernels in use)."""
    return grucy_nr(grucy_isa, sizeof(floating))


cdef inline void _pgemm(int m, int n, int k, const floating* a, int lda,
                        const floating* B, Py_ssize_t bk, Py_ssize_t pstride,
                        floating* c, int ldc, bint beta, bint backwards) noexcept nogil:
    """C (m, n) (+)= A (m, k) @ B, B as panels (see _pgemm.h)."""
    if m <= 0 or n <= 0:
        return
    if floating is float:
        grucy_pgemm_f(m, n, k, a, lda, B, bk, pstride, c, ldc, beta, backwards)
    else:
        grucy_pgemm_d(m, n, k, a, lda, B, bk, pstride, c, ldc, beta, backwards)


cdef inline void _pgemm_at(int m, int n, int k, const floating* a, int lda,
                           const floating* B, Py_ssize_t bk, Py_ssize_t pstride,
                           floating* c, int ldc, bint beta) noexcept nogil:
    """C (m, n) (+)= A^T @ B with A a (k, m) array."""
    if m <= 0 or n <= 0:
        return
    if floating is float:
        grucy_pgemm_at_f(m, n, k, a, lda, B, bk, pstride, c, ldc, beta, False)
    else:
        grucy_pgemm_at_d(m, n, k, a, lda, B, bk, pstride, c, ldc, beta, False)


cdef void _pack_t(int nr, int K, int c, int g0, int ng, int H, int j0, const floating* W,
                  int ldw, floating* P) noexcept nogil:
    if floating is float:
        grucy_pack_t_f(nr, K, c, g0, ng, H, j0, W, ldw, P)
    else:
        grucy_pack_t_d(nr, K, c, g0, ng, H, j0, W, ldw, P)


cdef void _pack_n(int nr, int K, int N, const floating* W, int ldw,
                  floating* P) noexcept nogil:
    if floating is float:
        grucy_pack_n_f(nr, K, N, W, ldw, P)
    else:
        grucy_pack_n_d(nr, K, N, W, ldw, P)


cdef inline Py_ssize_t _fwd_block_size(const Cell* cell, int H, int cw, int nr) noexcept nogil:
    """Values of a chunk's forward block: the stages' W_hh^T blocks one after another."""
    cdef Py_ssize_t n = 0
    cdef int s
    for s in range(cell.nfwd):
        n += grucy_pgemm_size(H, cell.fwd[s].ng * cw, nr)
    return n


cdef inline Py_ssize_t _fwd_stage_off(const Cell* cell, int s, int H, int cw,
                                      int nr) noexcept nogil:
    cdef Py_ssize_t n = 0
    cdef int q
    for q in range(s):
        n += grucy_pgemm_size(H, cell.fwd[q].ng * cw, nr)
    return n


cdef Py_ssize_t _pack_layout(const Cell* cell, const Plan* p, int I, int H, int nr,
                             bint forward, Py_ssize_t* chunk_off) noexcept nogil:
    """Offsets of the packed blocks of each chunk (chunk_off[0 .. chunks]), then W_ih's;
    returns the total values.  Forward: per chunk the stages' W_hh^T blocks, then W_ih^T
    (I, 3H).  Backward: per chunk W_hh[:, chunk] (3H, cw), then W_ih (3H, I)."""
    cdef int k, cw
    chunk_off[0] = 0
    for k in range(p.chunks):
        cw = p.unit_lo[k + 1] - p.unit_lo[k]
        if forward:
            chunk_off[k + 1] = chunk_off[k] + _fwd_block_size(cell, H, cw, nr)
        else:
            chunk_off[k + 1] = chunk_off[k] + grucy_pgemm_size(3 * H, cw, nr)
    if forward:
        return chunk_off[p.chunks] + grucy_pgemm_size(I, 3 * H, nr)
    return chunk_off[p.chunks] + grucy_pgemm_size(3 * H, I, nr)


# ---------------------------------------------------------------------------------------
# One call's context, shared by its threads.

ctypedef struct Ctx:
    int T, B, I_, H, elsize     # (I_: a field called I meets complex.h's macro)
    const int* bs
    const Py_ssize_t* off
    bint reverse, training, prepacked, blas
    const Cell* cell
    Plan plan
    grucy_barrier* bar          # one per group, then one for all threads
    # Dynamic calls (plans without unit chunks: nothing meets at a barrier inside a
    # phase) run each phase as pieces claimed by whichever thread runs (_first, _next):
    # piece i is the work static thread i would do, so the bits are the same.
    bint dynamic
    grucy_tasks* tasks          # per phase
    int npieces[3]
    # weights (W_ih (3H, I), W_hh (3H, H), biases (3H,))
    const void* wih
    const void* whh
    const void* bih
    const void* bhh
    void* pk                    # packed blocks (_pack_layout)
    Py_ssize_t chunk_off[MAX_CHUNKS + 1]
    Py_ssize_t ih_off
    # forward
    const void* X               # input rows (N, I), packed
    void* Y
    Py_ssize_t y_t, y_b
    const Py_ssize_t* ymap
    void* S
    void* S2
    void* G
    void* A
    void* Hp
    void* Gh
    # backward
    const void* dY
    void* dS
    void* dG
    void* dGxn
    void* dRH
    void* dX
    bint beta_dx
    void* dwih
    void* dwhh
    void* dbih
    void* dbhh
    void* scratch               # per thread: WGRAD_K_BLOCK * nr values
    double* prof                # per thread NPHASES seconds, or NULL
    # low precision (lowp != LP_NONE; float32 layers): pk, chunk_off and ih_off are in
    # bytes, the packed blocks in _lowp.h's layouts; wih/whh are int8 with row scales
    # sih/shh for LP_INT8; lws: per thread lws_bytes of scratch for the converted rows
    int lowp
    bint gsmall                 # G holds one step's rows (B, 3H), not all (N, 3H)
    const float* sih
    const float* shh
    char* lws
    Py_ssize_t lws_bytes
    char* xc                    # forward: X's rows converted (rows of _lp_row_bytes(I))
    float* xsa                  # and (int8) their scales


cdef bint _profiling = False
cdef double _prof_acc[MAX_PROF_THREADS][NPHASES]
cdef double _prof_wall = 0
cdef long _prof_calls = 0
PHASES = ("pack", "projection_dx", "recurrent_gemm", "fused", "wait", "weight_grads")


def profile(bint on):
    """Start (True) or stop (False) the kernels' phase timers; starting clears them.
    Timers cost two clock reads per phase and step while on."""
    global _profiling, _prof_wall, _prof_calls
    if on:
        memset(_prof_acc, 0, sizeof(_prof_acc))
        _prof_wall = 0
        _prof_calls = 0
    _profiling = on


def profile_report():
    """Seconds per phase summed over threads (dict), the kernels' wall time and calls,
    and per-thread rows, since profile(True)."""
    cdef int t, ph
    rows = [[_prof_acc[t][ph] for ph in range(NPHASES)] for t in range(MAX_PROF_THREADS)]
    used = [r for r in rows if any(r)]
    return {"phases": {name: sum(r[i] for r in used) for i, name in enumerate(PHASES)},
            "threads": used, "wall": _prof_wall, "calls": _prof_calls}


cdef inline double _tic(Ctx* c) noexcept nogil:
    return grucy_now() if c.prof != NULL else 0


cdef inline void _toc(Ctx* c, int tid, int phase, double t0) noexcept nogil:
    if c.prof != NULL and tid < MAX_PROF_THREADS:
        c.prof[tid * NPHASES + phase] += grucy_now() - t0


cdef inline void _wait(Ctx* c, grucy_barrier* b, int tid) noexcept nogil:
    cdef double w = grucy_barrier_wait(b)
    if c.prof != NULL and tid < MAX_PROF_THREADS:
        c.prof[tid * NPHASES + 4] += w


cdef inline Py_ssize_t _share(Py_ssize_t n, int i, int parts) noexcept nogil:
    """Start of part i of n items cut in `parts` nearly equal parts."""
    return <Py_ssize_t>((<long long>n * i) // parts)


cdef inline Py_ssize_t _panel_share(int n, int nr, int i, int parts) noexcept nogil:
    """Start of part i of n columns cut in `parts` runs of whole panels of nr (a packing
    job's share of W_ih: part i runs to _panel_share(..., i + 1, ...))."""
    return min(_share((n + nr - 1) // nr, i, parts) * nr, n)




# ---------------------------------------------------------------------------------------
# Low precision: packing, conversions and products of _lowp.h in the drivers' terms.
# Offsets are in bytes, every block starts on a multiple of 64.

cdef inline Py_ssize_t _al(Py_ssize_t n) noexcept nogil:
    return (n + 63) // 64 * 64


cdef inline int _lp_nr(int lowp) noexcept nogil:
    return grucy_lp_nr(grucy_bf16_kind if lowp == LP_BF16 else grucy_i8_kind)


cdef inline Py_ssize_t _lp_pack_bytes(int lowp, int K, int N) noexcept nogil:
    if lowp == LP_BF16:
        return _al(grucy_bf16_pack_bytes(K, N))
    return _al(grucy_i8_pack_bytes(K, N))


cdef inline Py_ssize_t _lp_row_bytes(int lowp, int K) noexcept nogil:
    """Bytes of one converted row of K values (bf16 A format, or int8 bytes)."""
    if lowp == LP_BF16:
        return grucy_bf16_kp(K) * <Py_ssize_t>grucy_bf16_esz()
    return grucy_i8_kq(K)


cdef inline Py_ssize_t _lp_stage_off(const Cell* cell, int lowp, int s, int H,
                                     int cw) noexcept nogil:
    cdef Py_ssize_t n = 0
    cdef int q
    for q in range(s):
        n += _lp_pack_bytes(lowp, H, cell.fwd[q].ng * cw)
    return n


cdef inline Py_ssize_t _lp_fwd_block(const Cell* cell, int lowp, int I, int H,
                                     int cw) noexcept nogil:
    """Bytes of a chunk's forward block: the stages' W_hh^T blocks, then one W_ih^T
    block per gate (the input projection runs in the recurrence, _lp_step_projection)."""
    return _lp_stage_off(cell, lowp, cell.nfwd, H, cw) + 3 * _lp_pack_bytes(lowp, I, cw)


cdef Py_ssize_t _lp_layout(const Cell* cell, const Plan* p, int lowp, int I, int H,
                           bint forward, Py_ssize_t* chunk_off) noexcept nogil:
    """_pack_layout in bytes for the low-precision layouts.  Forward: per chunk the
    stages' W_hh^T blocks and the gates' W_ih^T blocks (_lp_fwd_block); backward: per
    chunk W_hh[:, chunk], then W_ih."""
    cdef int k, cw
    chunk_off[0] = 0
    for k in range(p.chunks):
        cw = p.unit_lo[k + 1] - p.unit_lo[k]
        if forward:
            chunk_off[k + 1] = chunk_off[k] + _lp_fwd_block(cell, lowp, I, H, cw)
        else:
            chunk_off[k + 1] = chunk_off[k] + _lp_pack_bytes(lowp, 3 * H, cw)
    if forward:
        return chunk_off[p.chunks]
    return chunk_off[p.chunks] + _lp_pack_bytes(lowp, 3 * H, I)


cdef Py_ssize_t _lp_scratch(int lowp, bint forward, int B, int I, int H) noexcept nogil:
    """Bytes of one thread's scratch (Ctx.lws_bytes) for a call."""
    cdef Py_ssize_t need = 0, kmax = I if I > H else H
    cdef int nr = _lp_nr(lowp)
    cdef Py_ssize_t esz = grucy_bf16_esz()
    cdef int kb = WGRAD_K_BLOCK
    if forward:
        if lowp == LP_BF16:
            need = nr * grucy_bf16_kp(<int>kmax) * 4          # packing W^T panel by panel
        else:
            need = nr * grucy_i8_kq(<int>kmax)
        need = max(need, _al(B * _lp_row_bytes(lowp, I)) + B * 4)
        need = max(need, _al(B * _lp_row_bytes(lowp, H)) + B * 4)
    else:
        need = B * _lp_row_bytes(lowp, 3 * H)
        need = max(need, LP_ROWS * _lp_row_bytes(lowp, 3 * H))
        need = max(need, _al(grucy_bf16_pack_bytes(kb, I)) + _al(grucy_bf16_pack_bytes(kb, H))
                   + 2 * _al(H * grucy_bf16_kp(kb) * esz))
    return _al(need)


cdef void _lp_pack_t(int lowp, int K, int cc, int g0, int ng, int H, int j0, const void* W,
                     const float* sw, int ldw, char* blk, void* tmp, int p0,
                     int p1) noexcept nogil:
    """Panels p0 .. p1 - 1 of the packed W^T block at blk (rows of W selected as in
    grucy_pack_t: column j is row (g0 + j / cc) * H + j0 + j % cc)."""
    if lowp == LP_BF16:
        grucy_bf16_pack_t(K, cc, g0, ng, H, j0, <const float*>W, ldw, blk, tmp, p0, p1)
    else:
        grucy_i8_pack_t(K, cc, g0, ng, H, j0, <const signed char*>W, ldw, sw, blk,
                        grucy_i8_corr(blk, K, ng * cc), grucy_i8_scale(blk, K, ng * cc),
                        tmp, p0, p1)


cdef void _lp_pack_fwd(Ctx* c, int tid, int nt) noexcept nogil:
    """Forward: the blocks of every chunk (_lp_fwd_block), their panels shared out over
    the threads (a plan of one chunk still packs on every thread)."""
    cdef const Plan* p = &c.plan
    cdef const Cell* cell = c.cell
    cdef int H = c.H, I = c.I_, nr = _lp_nr(c.lowp), k, b, j0, cw, g0, ng, K, np_
    cdef char* pk = <char*>c.pk
    cdef char* blk
    cdef void* tmp = c.lws + tid * c.lws_bytes
    cdef Py_ssize_t total = 0, base, lo, hi
    cdef const void* W
    cdef const float* sw
    # every block's panels in one list: chunk by chunk, the stages then the 3 gates
    for k in range(p.chunks):
        cw = p.unit_lo[k + 1] - p.unit_lo[k]
        for b in range(cell.nfwd + 3):
            ng = cell.fwd[b].ng if b < cell.nfwd else 1
            total += (ng * cw + nr - 1) // nr
    lo = _share(total, tid, nt)
    hi = _share(total, tid + 1, nt)
    base = 0
    for k in range(p.chunks):
        j0 = p.unit_lo[k]
        cw = p.unit_lo[k + 1] - j0
        blk = pk + c.chunk_off[k]
        for b in range(cell.nfwd + 3):
            if b < cell.nfwd:
                g0, ng, K, W, sw = cell.fwd[b].g0, cell.fwd[b].ng, H, c.whh, c.shh
            else:
                g0, ng, K, W, sw = b - cell.nfwd, 1, I, c.wih, c.sih
            np_ = (ng * cw + nr - 1) // nr
            if base + np_ > lo and base < hi:
                _lp_pack_t(c.lowp, K, cw, g0, ng, H, j0, W, sw, K, blk, tmp,
                           <int>(max(lo, base) - base), <int>(min(hi, base + np_) - base))
            base += np_
            blk += _lp_pack_bytes(c.lowp, K, ng * cw)


cdef void _lp_pack_bwd(Ctx* c, int tid, int nt) noexcept nogil:
    """Backward (bf16): each chunk's W_hh[:, chunk], then W_ih (panels split)."""
    cdef const Plan* p = &c.plan
    cdef int H = c.H, H3 = 3 * c.H, I = c.I_, nr = _lp_nr(c.lowp), k, j0
    cdef char* pk = <char*>c.pk
    cdef const float* whh = <const float*>c.whh
    cdef Py_ssize_t q0, q1
    k = tid
    while k < p.chunks:
        j0 = p.unit_lo[k]
        grucy_bf16_pack_n(H3, p.unit_lo[k + 1] - j0, whh + j0, H, pk + c.chunk_off[k])
        k += nt
    q0 = _panel_share(I, nr, tid, nt)
    q1 = _panel_share(I, nr, tid + 1, nt)
    if q1 > q0:
        grucy_bf16_pack_n(H3, <int>(q1 - q0), <const float*>c.wih + q0, I,
                          pk + c.ih_off + (q0 // nr) * <Py_ssize_t>grucy_bf16_panel_bytes(H3))


cdef inline void _lp_convert_to(Ctx* c, char* out, float* sa, int M, int K, const float* A,
                                Py_ssize_t lda) noexcept nogil:
    """Rows of A converted to rows of _lp_row_bytes(K) at out (bf16 A format, or int8
    bytes with their scales at sa)."""
    if c.lowp == LP_BF16:
        grucy_bf16_cvt(M, K, A, lda, 1, out, grucy_bf16_kp(K))
    else:
        grucy_i8_quant(M, K, A, lda, <unsigned char*>out, <int>_lp_row_bytes(c.lowp, K), sa)


cdef inline void _lp_gemm_from(Ctx* c, const char* A, const float* sa, int M, int N, int K,
                               char* P, Py_ssize_t pstride, float* C, int ldc, bint beta,
                               bint backwards) noexcept nogil:
    """C (M, N) (+)= converted rows A (_lp_convert_to) @ the packed block P (K rows;
    bf16: panels pstride bytes apart, P possibly at a row offset; int8: the whole block
    of N columns, beta not supported)."""
    if M <= 0:
        return
    if c.lowp == LP_BF16:
        grucy_bf16_gemm(M, N, K, A, grucy_bf16_kp(K), P, pstride, C, ldc, beta, backwards)
    else:
        grucy_i8_gemm(M, N, K, <const unsigned char*>A, <int>_lp_row_bytes(c.lowp, K), sa,
                      P, grucy_i8_corr(P, K, N), grucy_i8_scale(P, K, N), C, ldc, backwards)


cdef inline void _lp_convert(Ctx* c, char* ws, int M, int K, const float* A,
                             Py_ssize_t lda) noexcept nogil:
    """Rows of A converted into ws (their scales after them)."""
    _lp_convert_to(c, ws, <float*>(ws + _al(M * _lp_row_bytes(c.lowp, K))), M, K, A, lda)


cdef inline void _lp_gemm(Ctx* c, char* ws, int M, int N, int K, char* P,
                          Py_ssize_t pstride, float* C, int ldc, bint beta,
                          bint backwards) noexcept nogil:
    """_lp_gemm_from the rows _lp_convert put in ws."""
    _lp_gemm_from(c, ws, <float*>(ws + _al(M * _lp_row_bytes(c.lowp, K))), M, N, K, P,
                  pstride, C, ldc, beta, backwards)


cdef void _lp_rows_gemm(Ctx* c, char* ws, int M, int N, int K, const float* A,
                        Py_ssize_t lda, char* P, Py_ssize_t pstride, float* C, int ldc,
                        bint beta, bint backwards) noexcept nogil:
    """_lp_convert then _lp_gemm."""
    if M <= 0:
        return
    _lp_convert(c, ws, M, K, A, lda)
    _lp_gemm(c, ws, M, N, K, P, pstride, C, ldc, beta, backwards)


cdef void _lp_step_projection(Ctx* c, int ch, Py_ssize_t row0, int m,
                              float* G) noexcept nogil:
    """The input projection of rows row0 .. row0 + m for the units of chunk ch, in the
    recurrence: the rows of X (converted before the loop, c.xc) times the chunk's W_ih^T
    block of each gate, into G's r, z, n columns (rows 3H apart).  Just before the fused
    pass reads them, so G is still in cache (as one product before the loop, G went to
    memory and back)."""
    cdef const Cell* cell = c.cell
    cdef int I = c.I_, H = c.H, j0 = c.plan.unit_lo[ch], cw = c.plan.unit_lo[ch + 1] - j0, g
    cdef char* blk = <char*>c.pk + c.chunk_off[ch] + _lp_stage_off(cell, c.lowp, cell.nfwd,
                                                                     H, cw)
    cdef Py_ssize_t ps = grucy_bf16_panel_bytes(I) if c.lowp == LP_BF16 else 0
    cdef const char* xr = c.xc + row0 * _lp_row_bytes(c.lowp, I)
    for g in range(3):
        _lp_gemm_from(c, xr, c.xsa + row0, m, cw, I, blk + g * _lp_pack_bytes(c.lowp, I, cw),
                      ps, G + g * H + j0, 3 * H, False, False)


cdef void _lp_dx_rows(Ctx* c, int tid, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """bf16: dX[r0:r1] = [dG r, z | dGxn or dG n] @ W_ih, ONE chain over the 3H gate
    gradients (the float32 path adds two)."""
    cdef int I = c.I_, H = c.H, H3 = 3 * c.H, mb, kp = grucy_bf16_kp(3 * c.H)
    cdef const float* dG = <const float*>c.dG
    cdef float* dX = <float*>c.dX
    cdef char* ws = c.lws + tid * c.lws_bytes
    cdef Py_ssize_t esz = grucy_bf16_esz()
    while r0 < r1:
        mb = <int>min(<Py_ssize_t>LP_ROWS, r1 - r0)
        if c.cell.xn_separate:
            grucy_bf16_cvt(mb, 2 * H, dG + r0 * H3, H3, 1, ws, kp)
            grucy_bf16_cvt(mb, H, <const float*>c.dGxn + r0 * H, H, 1, ws + 2 * H * esz, kp)
        else:
            grucy_bf16_cvt(mb, H3, dG + r0 * H3, H3, 1, ws, kp)
        grucy_bf16_gemm(mb, I, H3, ws, kp, <char*>c.pk + c.ih_off,
                        grucy_bf16_panel_bytes(H3), dX + r0 * I, I, c.beta_dx, False)
        r0 += mb


cdef int _lp_strip = WGRAD_STRIP, _lp_cols = WGRAD_COLS


def _lp_wgrad_tiles(int strip=0, int cols=0):
    """Tuning hook: the bf16 weight-gradient tiles (rows x columns; 0: unchanged,
    columns a multiple of 32); returns the old pair.  Results never depend on it."""
    global _lp_strip, _lp_cols
    old = (_lp_strip, _lp_cols)
    if strip < 0 or cols < 0 or cols % 32:
        raise ValueError("strip and cols must be non-negative, cols a multiple of 32")
    _lp_strip = strip or _lp_strip
    _lp_cols = cols or _lp_cols
    return old


cdef void _lp_wgrad_block(int m, int ncol, int kc, const char* Dt, int ldt,
                          const char* P, float* dw) noexcept nogil:
    """dw (m, ncol) += Dt (m, kc; converted rows of ldt elements) @ P (packed kc rows),
    in tiles as _wgrad_block."""
    cdef int c0, cw, j, w, nr = grucy_lp_nr(grucy_bf16_kind)
    cdef int strip = _lp_strip, cols = _lp_cols
    cdef Py_ssize_t ps = grucy_bf16_panel_bytes(kc), esz = grucy_bf16_esz()
    c0 = 0
    while c0 < ncol:
        cw = cols if ncol - c0 > cols else ncol - c0
        j = 0
        while j < m:
            w = strip if m - j > strip else m - j
            grucy_bf16_gemm(w, cw, kc, Dt + <Py_ssize_t>j * ldt * esz, ldt,
                            P + (c0 // nr) * ps, ps, dw + <Py_ssize_t>j * ncol + c0, ncol,
                            True, False)
            j += strip
        c0 += cols


cdef void _lp_weight_grads(Ctx* c, int tid, int nt) noexcept nogil:
    """bf16 dW_ih, dW_hh (bf16 products, float32 sums; blocks in order as
    _weight_grads) and the bias gradients (float32, as _weight_grads)."""
    cdef const Cell* cell = c.cell
    cdef int I = c.I_, H = c.H, H3 = 3 * c.H
    cdef Py_ssize_t N = c.off[c.T], k0
    cdef const float* dG = <const float*>c.dG
    cdef const float* X = <const float*>c.X
    cdef const float* Hp = <const float*>c.Hp
    cdef const float* A = <const float*>c.A
    cdef float* dwih = <float*>c.dwih
    cdef float* dwhh = <float*>c.dwhh
    cdef float* dbih = <float*>c.dbih
    cdef float* dbhh = <float*>c.dbhh
    cdef char* Px = c.lws + tid * c.lws_bytes
    cdef char* Ph = Px + _al(grucy_bf16_pack_bytes(WGRAD_K_BLOCK, I))
    cdef char* Dth = Ph + _al(grucy_bf16_pack_bytes(WGRAD_K_BLOCK, H))
    cdef char* Dtx = Dth + _al(H * grucy_bf16_kp(WGRAD_K_BLOCK) * <Py_ssize_t>grucy_bf16_esz())
    cdef char* dtx
    cdef const float* packed_src = NULL
    cdef int u0 = <int>_share(H3, tid, nt), u1 = <int>_share(H3, tid + 1, nt)
    cdef int a, e, g, kc, kp, ldx
    cdef const float* Dx
    cdef const float* Dh
    cdef const float* src
    if u1 <= u0:
        return
    k0 = 0
    while k0 < N:
        kc = <int>(WGRAD_K_BLOCK if N - k0 > WGRAD_K_BLOCK else N - k0)
        kp = grucy_bf16_kp(kc)
        grucy_bf16_pack_n(kc, I, X + k0 * I, I, Px)
        packed_src = NULL
        a = u0
        while a < u1:
            g = a // H
            e = (g + 1) * H if (g + 1) * H < u1 else u1
            Dh = dG + k0 * H3 + a
            if g == 2 and cell.xn_separate:
                Dx = <const float*>c.dGxn + k0 * H + (a - 2 * H)
                ldx = H
            else:
                Dx = Dh
                ldx = H3
            src = (A if cell.whh_src[g] else Hp) + k0 * H
            if src != packed_src:
                grucy_bf16_pack_n(kc, H, src, H, Ph)
                packed_src = src
            # the gate-gradient columns a..e as converted rows (transposed)
            grucy_bf16_cvt(e - a, kc, Dh, 1, H3, Dth, kp)
            dtx = Dth
            if Dx != Dh:
                grucy_bf16_cvt(e - a, kc, Dx, 1, ldx, Dtx, kp)
                dtx = Dtx
            _lp_wgrad_block(e - a, I, kc, dtx, kp, Px, dwih + <Py_ssize_t>a * I)
            _lp_wgrad_block(e - a, H, kc, Dth, kp, Ph, dwhh + <Py_ssize_t>a * H)
            _colsum(kc, e - a, Dx, ldx, dbih + a)
            _colsum(kc, e - a, Dh, H3, dbhh + a)
            a = e
        k0 += kc

# ---------------------------------------------------------------------------------------
# Forward.

cdef inline Py_ssize_t _row(const Py_ssize_t* rowmap, int b) noexcept nogil:
    """Where sequence b (in the kernels' longest-first order) sits in the caller's
    arrays that take a row map (y in forward, dX in backward); NULL: the same place."""
    return b if rowmap == NULL else rowmap[b]


cdef void _fwd_fused(int which, int cw, int H, floating* g, const floating* gh,
                     const floating* bih, const floating* bhh, floating* h,
                     floating* y, floating* aux) noexcept nogil:
    if which == F_AFTER:
        _fwd_chunk_after(cw, g, gh, bih, bhh, H, h, y, aux)
    elif which == F_BEFORE_RZ:
        _fwd_chunk_before_rz(cw, g, gh, bih, bhh, H, h, aux)
    else:
        _fwd_chunk_before_n(cw, g, gh, bih, bhh, H, h, y)


cdef void _fwd_run(const floating* tag, Ctx* c, int tid, int nt) noexcept nogil:
    cdef const Plan* p = &c.plan
    cdef const Cell* cell = c.cell
    cdef int T = c.T, B = c.B, I = c.I_, H = c.H, H3 = 3 * c.H
    cdef int nr = _nr(tag)
    cdef Py_ssize_t N = c.off[T]
    cdef const floating* wih = <const floating*>c.wih
    cdef const floating* whh = <const floating*>c.whh
    cdef floating* pk = <floating*>c.pk
    cdef floating* S = <floating*>c.S
    cdef floating* S2 = <floating*>c.S2
    cdef int nrec = p.groups * p.chunks
    cdef int k, s, grp, ch, r0, r1, j0, cw, piece
    cdef Py_ssize_t q0, q1
    cdef double t0
    cdef bint dbuf = cell.nfwd == 1
    # 1. pack W_hh's chunk blocks and W_ih^T, shared by all threads (piece i: what
    #    thread i of nt packs)
    if not c.prepacked and (c.lowp or not c.blas):
        piece = _first(c, 0, tid)
        while piece >= 0:
            t0 = _tic(c)
            if c.lowp:
                _lp_pack_fwd(c, piece, nt)
            else:
                k = piece
                while k < p.chunks:
                    j0 = p.unit_lo[k]
                    cw = p.unit_lo[k + 1] - j0
                    for s in range(cell.nfwd):
                        _pack_t(nr, H, cw, cell.fwd[s].g0, cell.fwd[s].ng, H, j0, whh, H,
                                pk + c.chunk_off[k] + _fwd_stage_off(cell, s, H, cw, nr))
                    k += nt
                q0 = _panel_share(H3, nr, piece, nt)
                q1 = _panel_share(H3, nr, piece + 1, nt)
                if q1 > q0:
                    _pack_t(nr, I, <int>(q1 - q0), 0, 1, 0, <int>q0, wih, I,
                            pk + c.ih_off + q0 * I)
            _toc(c, piece, 0, t0)
            piece = _next(c, 0)
        _phase_end(c, 0, tid, nt)
    # 2. G = X @ W_ih^T, rows split in nt pieces; h0 into the second state buffer
    piece = _first(c, 1, tid)
    while piece >= 0:
        t0 = _tic(c)
        q0 = _share(N, piece, nt)
        q1 = _share(N, piece + 1, nt)
        if c.lowp:      # X's rows converted once; the products in _lp_step_projection
            _lp_convert_to(c, c.xc + q0 * _lp_row_bytes(c.lowp, I), c.xsa + q0,
                           <int>(q1 - q0), I, <const float*>c.X + q0 * I, I)
        else:
            _input_projection(c, tag, q0, q1)
        if dbuf and piece < nrec:
            # a sequence joining late (reverse direction, variable lengths) reads h0
            # from whichever buffer its first step reads
            grp = piece // p.chunks
            ch = piece % p.chunks
            j0 = p.unit_lo[ch]
            cw = p.unit_lo[ch + 1] - j0
            for k in range(p.row_lo[grp], p.row_lo[grp + 1]):
                memcpy(S2 + <Py_ssize_t>k * H + j0, S + <Py_ssize_t>k * H + j0,
                       <size_t>cw * sizeof(floating))
        _toc(c, piece, 1, t0)
        piece = _next(c, 1)
    _phase_end(c, 1, tid, nt)
    # 3. the recurrence: a row group (x unit chunk) per piece
    piece = _first(c, 2, tid)
    while piece >= 0:
        _fwd_recurrence(c, tag, piece)
        piece = _next(c, 2)
    if c.dynamic and tid == 0:
        _phase_end(c, 2, tid, nt)   # the caller returns when every group is done


cdef void _input_projection(Ctx* c, const floating* tag, Py_ssize_t r0,
                            Py_ssize_t r1) noexcept nogil:
    """G[r0:r1] = X[r0:r1] @ W_ih^T."""
    cdef int I = c.I_, H3 = 3 * c.H, nr = _nr(tag)
    cdef const floating* X = <const floating*>c.X
    cdef floating* G = <floating*>c.G
    if r1 <= r0:
        return
    if c.blas:
        gemm(False, True, <int>(r1 - r0), H3, I, 1, X + r0 * I, I,
             <const floating*>c.wih, I, 0, G + r0 * H3, H3)
    else:
        _pgemm(<int>(r1 - r0), H3, I, X + r0 * I, I, <floating*>c.pk + c.ih_off, nr,
               <Py_ssize_t>I * nr, G + r0 * H3, H3, False, False)


ctypedef struct Part:
    # What thread tid of the recurrence owns: rows r0..r1 (a group), units j0..j0+cw (a
    # chunk), the chunk's packed block, the group's barrier (None of it if only one).
    int r0, r1, j0, cw, chunk
    grucy_barrier* bar
    bint sync


cdef inline Part _part(Ctx* c, int tid) noexcept nogil:
    cdef Part me
    cdef int grp = tid // c.plan.chunks
    me.chunk = tid % c.plan.chunks
    me.r0, me.r1 = c.plan.row_lo[grp], c.plan.row_lo[grp + 1]
    me.j0 = c.plan.unit_lo[me.chunk]
    me.cw = c.plan.unit_lo[me.chunk + 1] - me.j0
    me.sync = c.plan.chunks > 1
    me.bar = &c.bar[grp] if me.sync else NULL
    return me


cdef void _fwd_recurrence(Ctx* c, const floating* tag, int tid) noexcept nogil:
    cdef const Cell* cell = c.cell
    cdef Part me = _part(c, tid)
    cdef int T = c.T, H = c.H, H3 = 3 * c.H, nr = _nr(tag)
    cdef int r0 = me.r0, r1 = me.r1, j0 = me.j0, cw = me.cw
    cdef bint dbuf = cell.nfwd == 1
    cdef const floating* whh = <const floating*>c.whh
    cdef const floating* bih = <const floating*>c.bih + j0
    cdef const floating* bhh = <const floating*>c.bhh + j0
    cdef floating* blk = <floating*>c.pk + c.chunk_off[me.chunk]
    cdef floating* S = <floating*>c.S
    cdef floating* S2 = <floating*>c.S2
    cdef floating* G = <floating*>c.G
    cdef floating* Gh = <floating*>c.Gh
    cdef floating* A = <floating*>c.A
    cdef floating* Hp = <floating*>c.Hp
    cdef floating* Y = <floating*>c.Y
    cdef floating* cur
    cdef floating* nxt
    cdef floating* aux
    cdef floating* src
    cdef floating* h
    cdef floating* y
    cdef Py_ssize_t row, goff
    cdef int s, t, n, m, b, st, gi, steps
    cdef double t0
    cdef const FwdStage* fs
    for s in range(T):
        t = T - 1 - s if c.reverse else s
        n = c.bs[t]
        if n <= r0:
            continue       # (the whole group skips the step: its barriers stay matched)
        m = (n if n < r1 else r1) - r0
        cur = S2 if dbuf and s % 2 == 1 else S
        nxt = (S if s % 2 == 1 else S2) if dbuf else S
        aux = A + (c.off[t] if c.training else 0) * H
        goff = 0 if c.gsmall else c.off[t]     # G: every step's rows, or this step's
        if c.training:
            for b in range(r0, r0 + m):
                memcpy(Hp + (c.off[t] + b) * H + j0, cur + <Py_ssize_t>b * H + j0,
                       <size_t>cw * sizeof(floating))
        if c.lowp:
            t0 = _tic(c)
            _lp_step_projection(c, me.chunk, c.off[t] + r0, m, <float*>(G + (goff + r0) * H3))
            _toc(c, tid, 1, t0)
        for st in range(cell.nfwd):
            fs = &cell.fwd[st]
            src = cur if fs.src == SRC_STATE else aux
            t0 = _tic(c)
            if c.lowp:
                _lp_rows_gemm(c, c.lws + tid * c.lws_bytes, m, fs.ng * cw, H,
                              <const float*>(src + <Py_ssize_t>r0 * H), H,
                              <char*>c.pk + c.chunk_off[me.chunk]
                              + _lp_stage_off(cell, c.lowp, st, H, cw),
                              grucy_bf16_panel_bytes(H) if c.lowp == LP_BF16 else 0,
                              <float*>(Gh + <Py_ssize_t>r0 * H3 + 3 * j0 + fs.g0 * cw), H3,
                              False, s & 1)
            elif c.blas:
                for gi in range(fs.ng):
                    gemm(False, True, m, cw, H, 1, src + <Py_ssize_t>r0 * H, H,
                         whh + <Py_ssize_t>((fs.g0 + gi) * H + j0) * H, H, 0,
                         Gh + <Py_ssize_t>r0 * H3 + 3 * j0 + (fs.g0 + gi) * cw, H3)
            else:
                _pgemm(m, fs.ng * cw, H, src + <Py_ssize_t>r0 * H, H,
                       blk + _fwd_stage_off(cell, st, H, cw, nr), nr, <Py_ssize_t>H * nr,
                       Gh + <Py_ssize_t>r0 * H3 + 3 * j0 + fs.g0 * cw, H3, False, s & 1)
            _toc(c, tid, 2, t0)
            t0 = _tic(c)
            for b in range(r0, r0 + m):
                row = c.off[t] + b
                h = (nxt if st == cell.nfwd - 1 else cur) + <Py_ssize_t>b * H + j0
                if dbuf:
                    memcpy(h, cur + <Py_ssize_t>b * H + j0, <size_t>cw * sizeof(floating))
                y = Y + t * c.y_t + _row(c.ymap, b) * c.y_b + j0
                _fwd_fused(fs.fused, cw, H, G + (goff + b) * H3 + j0,
                           Gh + <Py_ssize_t>b * H3 + 3 * j0, bih, bhh, h, y,
                           aux + <Py_ssize_t>b * H + j0)
            _toc(c, tid, 3, t0)
            if me.sync:
                _wait(c, me.bar, tid)
    if dbuf:
        # Each row's last step wrote its final state to S2 when that step was even.
        steps = T
        for b in range(r0, r1):
            while steps > 0 and c.bs[steps - 1] <= b:
                steps -= 1
            if steps > 0 and (T - 1 if c.reverse else steps - 1) % 2 == 0:
                memcpy(S + <Py_ssize_t>b * H + j0, S2 + <Py_ssize_t>b * H + j0,
                       <size_t>cw * sizeof(floating))


cdef void _fwd_job(void* ctx, int tid, int nt) noexcept nogil:
    cdef Ctx* c = <Ctx*>ctx
    if c.elsize == 8:
        _fwd_run(<double*>NULL, c, tid, nt)
    else:
        _fwd_run(<float*>NULL, c, tid, nt)


# ---------------------------------------------------------------------------------------
# Backward.

cdef void _bwd_fused(int which, int cw, int H, const floating* dy, floating* dh,
                     const floating* g, const floating* aux, const floating* hp,
                     floating* dg, floating* dgxn, const floating* drh) noexcept nogil:
    if which == B_AFTER:
        _bwd_chunk_after(cw, H, dy, dh, g, aux, hp, dg, dgxn)
    elif which == B_BEFORE_ZN:
        _bwd_chunk_before_zn(cw, H, dy, dh, g, hp, dg)
    else:
        _bwd_row_before_r(cw, drh, dh, g, hp, dg)


cdef void _bwd_run(const floating* tag, Ctx* c, int tid, int nt) noexcept nogil:
    cdef const Plan* p = &c.plan
    cdef int T = c.T, I = c.I_, H = c.H, H3 = 3 * c.H, nr = _nr(tag)
    cdef Py_ssize_t N = c.off[T]
    cdef const floating* wih = <const floating*>c.wih
    cdef const floating* whh = <const floating*>c.whh
    cdef floating* pk = <floating*>c.pk
    cdef int k, j0, cw, piece
    cdef Py_ssize_t q0, q1
    cdef double t0
    # 1. pack W_hh[:, chunk] per chunk and W_ih (for dX); piece i: what thread i packs
    if c.lowp or not c.blas:
        piece = _first(c, 0, tid)
        while piece >= 0:
            t0 = _tic(c)
            if c.lowp:
                _lp_pack_bwd(c, piece, nt)
            else:
                k = piece
                while k < p.chunks:
                    j0 = p.unit_lo[k]
                    cw = p.unit_lo[k + 1] - j0
                    _pack_n(nr, H3, cw, whh + j0, H, pk + c.chunk_off[k])
                    k += nt
                q0 = _panel_share(I, nr, piece, nt)
                q1 = _panel_share(I, nr, piece + 1, nt)
                if q1 > q0:
                    _pack_n(nr, H3, <int>(q1 - q0), wih + q0, I, pk + c.ih_off + q0 * H3)
            _toc(c, piece, 0, t0)
            piece = _next(c, 0)
        _phase_end(c, 0, tid, nt)
    # 2. BPTT: a row group (x unit chunk) per piece
    piece = _first(c, 1, tid)
    while piece >= 0:
        _bwd_recurrence(c, tag, piece)
        piece = _next(c, 1)
    _phase_end(c, 1, tid, nt)
    # 3. dX (rows split) and the weight gradients (gate rows split); piece i: thread i's
    #    share of both (one piece, so that the per-piece scratch is used by one thread)
    piece = _first(c, 2, tid)
    while piece >= 0:
        t0 = _tic(c)
        if c.lowp:
            _lp_dx_rows(c, piece, _share(N, piece, nt), _share(N, piece + 1, nt))
        else:
            _dx_rows(c, tag, _share(N, piece, nt), _share(N, piece + 1, nt))
        _toc(c, piece, 1, t0)
        t0 = _tic(c)
        if c.lowp:
            _lp_weight_grads(c, piece, nt)
        else:
            _weight_grads(c, tag, piece, nt)
        _toc(c, piece, 5, t0)
        piece = _next(c, 2)
    if c.dynamic and tid == 0:
        _phase_end(c, 2, tid, nt)   # the caller returns when every piece is done


cdef void _bwd_recurrence(Ctx* c, const floating* tag, int tid) noexcept nogil:
    cdef const Cell* cell = c.cell
    cdef Part me = _part(c, tid)
    cdef int T = c.T, H = c.H, H3 = 3 * c.H, nr = _nr(tag)
    cdef int r0 = me.r0, r1 = me.r1, j0 = me.j0, cw = me.cw
    cdef const floating* whh = <const floating*>c.whh
    cdef const floating* blk = <floating*>c.pk + c.chunk_off[me.chunk]
    cdef const floating* dY = <const floating*>c.dY
    cdef floating* dS = <floating*>c.dS
    cdef floating* dRH = <floating*>c.dRH
    cdef const floating* G = <const floating*>c.G
    cdef const floating* A = <const floating*>c.A
    cdef const floating* Hp = <const floating*>c.Hp
    cdef floating* dG = <floating*>c.dG
    cdef floating* dGxn = <floating*>c.dGxn
    cdef floating* dst
    cdef Py_ssize_t row, ps = <Py_ssize_t>H3 * nr
    cdef int s, t, n, m, b, st
    cdef double t0
    cdef const BwdStage* bst
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if c.reverse else s
        n = c.bs[t]
        if n <= r0:
            continue
        m = (n if n < r1 else r1) - r0
        for st in range(cell.nbwd):
            bst = &cell.bwd[st]
            t0 = _tic(c)
            for b in range(r0, r0 + m):
                row = c.off[t] + b
                _bwd_fused(bst.fused, cw, H, dY + t * c.y_t + b * c.y_b + j0,
                           dS + <Py_ssize_t>b * H + j0, G + row * H3 + j0,
                           A + row * H + j0, Hp + row * H + j0, dG + row * H3 + j0,
                           dGxn + (row * H + j0 if cell.xn_separate else 0),
                           dRH + <Py_ssize_t>b * H + j0)
            _toc(c, tid, 3, t0)
            if me.sync:
                _wait(c, me.bar, tid)
            # dst[rows, own units] (+)= dG[rows, gates g0..] @ W_hh[those rows, own units]
            t0 = _tic(c)
            dst = (dS if bst.dst == DST_DS else dRH) + <Py_ssize_t>r0 * H + j0
            if c.lowp:
                _lp_rows_gemm(c, c.lws + tid * c.lws_bytes, m, cw, bst.ng * H,
                              <const float*>(dG + (c.off[t] + r0) * H3 + bst.g0 * H), H3,
                              <char*>c.pk + c.chunk_off[me.chunk] + <Py_ssize_t>bst.g0 * H
                              * _lp_nr(c.lowp) * <Py_ssize_t>grucy_bf16_esz(),
                              grucy_bf16_panel_bytes(H3), <float*>dst, H,
                              bst.dst == DST_DS, s & 1)
            elif c.blas:
                gemm(False, False, m, cw, bst.ng * H, 1,
                     dG + (c.off[t] + r0) * H3 + bst.g0 * H, H3,
                     whh + <Py_ssize_t>bst.g0 * H * H + j0, H,
                     1 if bst.dst == DST_DS else 0, dst, H)
            else:
                _pgemm(m, cw, bst.ng * H, dG + (c.off[t] + r0) * H3 + bst.g0 * H, H3,
                       blk + <Py_ssize_t>bst.g0 * H * nr, nr, ps, dst, H,
                       bst.dst == DST_DS, s & 1)
            _toc(c, tid, 2, t0)


cdef void _dx_rows(Ctx* c, const floating* tag, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """dX[r0:r1] (+)= dGx[r0:r1] @ W_ih: the input-side gate gradients are dG's r, z
    columns and (xn_separate) dGxn or dG's n columns."""
    cdef int I = c.I_, H = c.H, H3 = 3 * c.H, nr = _nr(tag)
    cdef const floating* dG = <const floating*>c.dG
    cdef const floating* pn
    cdef int ld_pn
    cdef const floating* wih = <const floating*>c.wih
    cdef const floating* pih = <floating*>c.pk + c.ih_off
    cdef floating* dX = <floating*>c.dX
    cdef int m = <int>(r1 - r0)
    if m <= 0:
        return
    if c.cell.xn_separate:
        pn = <const floating*>c.dGxn
        ld_pn = H
    else:
        pn = dG + 2 * H
        ld_pn = H3
    if c.blas:
        gemm(False, False, m, I, 2 * H, 1, dG + r0 * H3, H3, wih, I,
             1 if c.beta_dx else 0, dX + r0 * I, I)
        gemm(False, False, m, I, H, 1, pn + r0 * ld_pn, ld_pn,
             wih + <Py_ssize_t>2 * H * I, I, 1, dX + r0 * I, I)
    else:
        _pgemm(m, I, 2 * H, dG + r0 * H3, H3, pih, nr, <Py_ssize_t>H3 * nr,
               dX + r0 * I, I, c.beta_dx, False)
        _pgemm(m, I, H, pn + r0 * ld_pn, ld_pn, pih + <Py_ssize_t>2 * H * nr, nr,
               <Py_ssize_t>H3 * nr, dX + r0 * I, I, True, False)


cdef void _wgrad_block(Ctx* c, const floating* tag, int m, int ncol, int kc,
                       const floating* D, int ldd, const floating* P,
                       floating* dw) noexcept nogil:
    """dw (m, ncol) += D^T @ B over kc rows: D (kc, m) with leading dimension ldd, B
    packed in P (_pack_n, kc rows).  In tiles of WGRAD_COLS columns x WGRAD_STRIP rows,
    columns outer: a tile's panels (kc x 256 values, 256 KB) stay in L2 while the strips
    of D (kc x 64, 64 KB) pass; the whole of B (1 MB at H = 1024) came from L3 for every
    strip and the GEMM ran at 190 instead of 230 GFLOP/s."""
    cdef int nr = _nr(tag), c0, cw, j, w
    for c0 in range(0, ncol, WGRAD_COLS):
        cw = WGRAD_COLS if ncol - c0 > WGRAD_COLS else ncol - c0
        for j in range(0, m, WGRAD_STRIP):
            w = WGRAD_STRIP if m - j > WGRAD_STRIP else m - j
            _pgemm_at(w, cw, kc, D + j, ldd, P + <Py_ssize_t>c0 * kc, nr,
                      <Py_ssize_t>kc * nr, dw + <Py_ssize_t>j * ncol + c0, ncol, True)


cdef extern from *:
    """
    /* db[j] += sum over r of D[r][j], rows in order (restrict: vectorized over j) */
    #define GRUCY_COLSUM(T, SFX) \
    static void grucy_colsum_##SFX(int rows, int cols, const T* restrict D, ptrdiff_t ldd, \
                                   T* restrict db) { \
        for (int r = 0; r < rows; r++) \
            for (int j = 0; j < cols; j++) db[j] += D[r * ldd + j]; \
    }
    GRUCY_COLSUM(float, f)
    GRUCY_COLSUM(double, d)
    """
    void grucy_colsum_f(int rows, int cols, const float* D, Py_ssize_t ldd, float* db) noexcept nogil
    void grucy_colsum_d(int rows, int cols, const double* D, Py_ssize_t ldd, double* db) noexcept nogil


cdef inline void _colsum(int rows, int cols, const floating* D, Py_ssize_t ldd,
                         floating* db) noexcept nogil:
    if floating is float:
        grucy_colsum_f(rows, cols, D, ldd, db)
    else:
        grucy_colsum_d(rows, cols, D, ldd, db)


cdef inline Py_ssize_t _wgrad_scratch(int I, int H, int nr) noexcept nogil:
    """Values of one thread's weight-gradient scratch: a block of X and one of Hp,
    packed, and two blocks of gate-gradient columns (_weight_grads)."""
    return (grucy_pgemm_size(WGRAD_K_BLOCK, I, nr) + grucy_pgemm_size(WGRAD_K_BLOCK, H, nr)
            + 2 * <Py_ssize_t>WGRAD_K_BLOCK * (H + 32))


cdef inline void _copy_rows(int rows, int cols, const floating* src, Py_ssize_t lds,
                            floating* dst, Py_ssize_t ldd) noexcept nogil:
    cdef int r
    for r in range(rows):
        memcpy(dst + r * ldd, src + r * lds, <size_t>cols * sizeof(floating))


ctypedef struct GateBlock:
    # One gate's part a..e of a thread's gate rows, for rows k0.. of the block:
    int e                # end of the part (exclusive)
    const void* Dx       # input-side gate gradients, column a (dW_ih, db_ih)
    int ldx
    const void* Dh       # hidden-side gate gradients, column a (dW_hh, db_hh)
    const void* src      # what dW_hh's rows of this gate multiply (Hp or A), row k0


cdef inline GateBlock _gate_block(Ctx* c, const floating* tag, int a, int u1,
                                  Py_ssize_t k0) noexcept nogil:
    """Which arrays the weight gradients of gate rows a.. read (the cell decides)."""
    cdef GateBlock gb
    cdef int H = c.H, H3 = 3 * c.H, g = a // c.H
    gb.e = (g + 1) * H if (g + 1) * H < u1 else u1
    gb.Dh = <const floating*>c.dG + k0 * H3 + a
    if g == 2 and c.cell.xn_separate:
        gb.Dx = <const floating*>c.dGxn + k0 * H + (a - 2 * H)
        gb.ldx = H
    else:
        gb.Dx = gb.Dh
        gb.ldx = H3
    gb.src = (<const floating*>c.A if c.cell.whh_src[g] else <const floating*>c.Hp) + k0 * H
    return gb


cdef void _weight_grads(Ctx* c, const floating* tag, int tid, int nt) noexcept nogil:
    """dW_ih, dW_hh and the bias gradients (added).  Each thread owns a range of the 3H
    gate rows of both weights; every value is its old value plus, block by block of
    WGRAD_K_BLOCK rows in order, one FMA chain over the block, so the result is the same
    for any thread count.  (OpenBLAS split by output tiles re-packs its operands per
    tile; split by rows it needs a reduction buffer per piece.)"""
    cdef int I = c.I_, H = c.H, H3 = 3 * c.H, nr = _nr(tag)
    cdef Py_ssize_t N = c.off[c.T], k0
    cdef const floating* X = <const floating*>c.X
    cdef Py_ssize_t per = _wgrad_scratch(I, H, nr)
    cdef floating* Px = <floating*>c.scratch + tid * per
    cdef floating* Ph = Px + grucy_pgemm_size(WGRAD_K_BLOCK, I, nr)
    cdef floating* Dc = Ph + grucy_pgemm_size(WGRAD_K_BLOCK, H, nr)
    cdef floating* Dc2 = Dc + <Py_ssize_t>WGRAD_K_BLOCK * (H + 32)
    cdef const floating* packed_src
    cdef int u0 = <int>_share(H3, tid, nt), u1 = <int>_share(H3, tid + 1, nt)
    cdef int a, kc, ldx, ldh, ldc_
    cdef const floating* Dx
    cdef const floating* Dh
    cdef GateBlock gb
    k0 = 0
    while k0 < N and u0 < u1:
        kc = <int>(WGRAD_K_BLOCK if N - k0 > WGRAD_K_BLOCK else N - k0)
        if not c.blas:
            _pack_n(nr, kc, I, X + k0 * I, I, Px)   # this block of X, for all gates
        packed_src = NULL
        a = u0
        while a < u1:          # the part of this thread's rows within one gate
            gb = _gate_block(c, tag, a, u1, k0)
            Dx, ldx = <const floating*>gb.Dx, gb.ldx
            Dh, ldh = <const floating*>gb.Dh, H3
            if c.blas:
                gemm(True, False, gb.e - a, I, kc, 1, Dx, ldx, X + k0 * I, I, 1,
                     <floating*>c.dwih + <Py_ssize_t>a * I, I)
                gemm(True, False, gb.e - a, H, kc, 1, Dh, ldh, <const floating*>gb.src, H,
                     1, <floating*>c.dwhh + <Py_ssize_t>a * H, H)
            else:
                if gb.src != packed_src:
                    # this block of Hp (or A) packed: read in place, its rows (H values
                    # apart, 4 KB at H = 1024) fell on the same L1 sets and the GEMM ran
                    # at 160 instead of 230 GFLOP/s
                    _pack_n(nr, kc, H, <const floating*>gb.src, H, Ph)
                    packed_src = <const floating*>gb.src
                # Rows of dG a multiple of 4 KB apart (3H values: H = 1024, 2048) all
                # fall on one L1 set, and the GEMM reading them ran at 184 instead of 230
                # GFLOP/s: then this block of columns a..e is copied with a padded row
                # length first (a copy that costs 8% at H = 512, where the stride does
                # no harm).
                ldc_ = (gb.e - a + 15) // 16 * 16 + 16
                if (<Py_ssize_t>H3 * sizeof(floating)) % 4096 == 0:
                    _copy_rows(kc, gb.e - a, Dh, H3, Dc, ldc_)
                    Dh, ldh = Dc, ldc_
                if gb.Dx == gb.Dh:
                    Dx, ldx = Dh, ldh
                elif (<Py_ssize_t>ldx * sizeof(floating)) % 4096 == 0:
                    _copy_rows(kc, gb.e - a, Dx, ldx, Dc2, ldc_)
                    Dx, ldx = Dc2, ldc_
                _wgrad_block(c, tag, gb.e - a, I, kc, Dx, ldx, Px,
                             <floating*>c.dwih + <Py_ssize_t>a * I)
                _wgrad_block(c, tag, gb.e - a, H, kc, Dh, ldh, Ph,
                             <floating*>c.dwhh + <Py_ssize_t>a * H)
            _colsum(kc, gb.e - a, Dx, ldx, <floating*>c.dbih + a)
            _colsum(kc, gb.e - a, Dh, ldh, <floating*>c.dbhh + a)
            a = gb.e
        k0 += kc


cdef void _bwd_job(void* ctx, int tid, int nt) noexcept nogil:
    cdef Ctx* c = <Ctx*>ctx
    if c.elsize == 8:
        _bwd_run(<double*>NULL, c, tid, nt)
    else:
        _bwd_run(<float*>NULL, c, tid, nt)


cdef void _gather_rows(int T, int B, int I, const int* bs, const Py_ssize_t* off,
                       const floating* X, floating* Xp) noexcept nogil:
    """Variable lengths: copy the active rows of each step of X (T, B, I) to packed Xp."""
    cdef int t
    for t in range(T):
        memcpy(Xp + off[t] * I, X + <Py_ssize_t>t * B * I,
               <size_t>bs[t] * I * sizeof(floating))


cdef void _put_rows(Py_ssize_t n, const floating* src, floating* dst,
                    bint accumulate) noexcept nogil:
    cdef Py_ssize_t k
    if accumulate:
        for k in range(n):
            dst[k] += src[k]
    else:
        memcpy(dst, src, <size_t>n * sizeof(floating))


cdef void _scatter_rows(int T, int B, int I, const int* bs, const Py_ssize_t* off,
                        const floating* dXp, floating* dX, bint accumulate,
                        const Py_ssize_t* xmap) noexcept nogil:
    """Packed rows back to dX (T, B, I), set or added, sequence b to row _row(xmap, b);
    padding gets no gradient."""
    cdef int t, b
    cdef Py_ssize_t k
    cdef floating* dst
    cdef const floating* src
    for t in range(T):
        for b in range(B):
            dst = dX + (<Py_ssize_t>t * B + _row(xmap, b)) * I
            src = dXp + (off[t] + b) * I
            if b >= bs[t]:
                if not accumulate:
                    memset(dst, 0, <size_t>I * sizeof(floating))
            elif accumulate:
                for k in range(I):
                    dst[k] += src[k]
            else:
                memcpy(dst, src, <size_t>I * sizeof(floating))


# ---------------------------------------------------------------------------------------
# Helpers of the entry points.

def _check(bint ok, str what):
    if not ok:
        raise ValueError(f"grucy._gru: inconsistent arguments: {what}")


def _buffer(dict pool, str key, tuple shape, dtype):
    """An uninitialised array of ``shape``: a view of ``pool[key]`` when that buffer is
    large enough, else of a new buffer left in the pool.  Reusing buffers across calls
    saves the page faults and zeroing of fresh memory (about a tenth of a forward at
    32x100x128x256).  The view starts on a 64-byte cache line: NumPy aligns to 16 bytes,
    and a packed weight panel off the line makes every AVX-512 load of it a split load
    (a forward at 1x100x32x64 took 54 or 68 us by the process's luck, 1 in 4 fast)."""
    cdef Py_ssize_t n = 1
    for d in shape:
        n *= d
    dt = np.dtype(dtype)
    cdef Py_ssize_t pad = _ALIGN // dt.itemsize
    buf = pool.get(key)
    if buf is None or buf.dtype != dt or buf.shape[0] < n + pad:
        buf = np.empty(max(n, 1) + pad, dt)
        pool[key] = buf
    cdef size_t addr = <size_t>cnp.PyArray_DATA(<cnp.ndarray>buf)
    cdef Py_ssize_t off = (_ALIGN - <Py_ssize_t>(addr % <size_t>_ALIGN)) % _ALIGN // dt.itemsize
    return buf[off:off + n].reshape(shape)


def _aligned_empty(Py_ssize_t n, dtype):
    """An uninitialised 1-D array of n elements whose data starts on a 64-byte line."""
    return _buffer({}, "", (n,), dtype)


cdef int _check_forward_args(const Py_ssize_t* xs, const Py_ssize_t* wih,
                             const Py_ssize_t* whh, Py_ssize_t nbih, Py_ssize_t nbhh,
                             const Py_ssize_t* hs, const Py_ssize_t* ys, bint y_inner,
                             Py_ssize_t nbs) except -1:
    """The checks of forward() and forward_int8(): X (T, B, I), w_ih (3H, I), w_hh
    (3H, H), biases (3H,), h (B, H), Y (T, B, H) contiguous on its last axis
    (``y_inner``), batch_sizes (T,), every size positive."""
    cdef Py_ssize_t T = xs[0], B = xs[1], I = xs[2], H = whh[1]
    _check(wih[0] == 3 * H and wih[1] == I, "w_ih shape")
    _check(whh[0] == 3 * H, "w_hh shape")
    _check(nbih == 3 * H and nbhh == 3 * H, "bias shape")
    _check(hs[0] == B and hs[1] == H, "h shape")
    _check(ys[0] == T and ys[1] == B and ys[2] == H, "Y shape")
    _check(y_inner, "Y must be contiguous on its last axis")
    _check(nbs == T, "batch_sizes length")
    _check(T >= 1 and B >= 1 and I >= 1 and H >= 1, "sizes must be positive")
    return 0


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


# ---------------------------------------------------------------------------------------
# Python entry points (called by grucy.layer.GRU, which validates user input).

cdef class _Team:
    """The thread team for one kernel call: taken for the planned threads (fewer when
    another caller holds it), released on exit, also after an exception."""
    cdef int nt

    def __cinit__(self):
        self.nt = 1

    cdef int take(self, int want) noexcept:
        with nogil:
            self.nt = grucy_pool_acquire(want)
        return self.nt

    def __dealloc__(self):
        grucy_pool_release(self.nt)
        self.nt = 1


cdef int _plan_call(Ctx* c, _Team team, int T, int B, int I, int H, const int* bs,
                    int elsize) except -1:
    """The plan of a call, for the threads the team grants."""
    cdef int granted
    with nogil:
        _make_plan(&c.plan, T, B, I, H, bs, grucy_nthreads, c.cell.nfwd, elsize)
    granted = team.take(c.plan.nt)
    if granted < c.plan.nt:
        with nogil:
            _make_plan(&c.plan, T, B, I, H, bs, granted, c.cell.nfwd, elsize)
    return 0


cdef object _schedule(Ctx* c, bint backward):
    """The call's schedule: claimed or static (c.dynamic), one barrier per row group (its
    chunks' threads) and one for all threads, and the phases' pieces: forward pack /
    projection / recurrence parts, backward pack / recurrence parts / dX and weight
    gradients (a piece per thread, a part per group x chunk); the returned bytes object
    owns the memory."""
    cdef Py_ssize_t nbar = sizeof(grucy_barrier) * (c.plan.groups + 1)
    cdef Py_ssize_t size = nbar + 3 * sizeof(grucy_tasks) + 128
    mem = bytearray(size)
    cdef char* raw = <char*>mem
    cdef size_t addr = <size_t>raw
    c.bar = <grucy_barrier*>(raw + ((64 - addr % 64) % 64))
    c.tasks = <grucy_tasks*>((<char*>c.bar) + (nbar + 63) // 64 * 64)
    cdef int g
    for g in range(c.plan.groups):
        grucy_barrier_init(&c.bar[g], c.plan.chunks)
    grucy_barrier_init(&c.bar[c.plan.groups], c.plan.nt)
    c.dynamic = c.plan.nt > 1 and c.plan.chunks == 1 and _dynamic_calls
    c.npieces[0] = c.plan.nt
    c.npieces[1] = c.plan.groups * c.plan.chunks if backward else c.plan.nt
    c.npieces[2] = c.plan.nt if backward else c.plan.groups * c.plan.chunks
    for g in range(3):
        grucy_tasks_init(&c.tasks[g], c.npieces[g])
    return mem


cdef bint _dynamic_calls = True


def _late_workers():
    """How many times a worker woke for a dynamic call that was already over (it then
    left it alone)."""
    return grucy_pool_late


def _set_dynamic(bint on):
    """Test and benchmark hook: run plans without unit chunks as claimed pieces (True,
    the default) or as one part per thread (False, the static schedule); returns the
    previous setting.  The results are the same bits either way."""
    global _dynamic_calls
    old = _dynamic_calls
    _dynamic_calls = on
    return old


cdef inline int _first(Ctx* c, int phase, int tid) noexcept nogil:
    """The first piece of ``phase`` this thread runs (-1: none): the next unclaimed
    one in a dynamic call, else its own."""
    if c.dynamic:
        return grucy_tasks_claim(&c.tasks[phase])
    return tid if tid < c.npieces[phase] else -1


cdef inline int _next(Ctx* c, int phase) noexcept nogil:
    """After a piece: the next one (dynamic calls), else -1."""
    if c.dynamic:
        grucy_tasks_finish(&c.tasks[phase])
        return grucy_tasks_claim(&c.tasks[phase])
    return -1


cdef inline void _phase_end(Ctx* c, int phase, int tid, int nt) noexcept nogil:
    """Every piece of ``phase`` done before anyone goes on: a wait for the pieces, or
    the all-thread barrier."""
    cdef double w
    if c.dynamic:
        w = grucy_tasks_wait(&c.tasks[phase])
        if c.prof != NULL and tid < MAX_PROF_THREADS:
            c.prof[tid * NPHASES + 4] += w
    elif nt > 1:
        _wait(c, &c.bar[c.plan.groups], tid)


cdef object _profile_start(Ctx* c):
    if not _profiling:
        c.prof = NULL
        return None
    buf = np.zeros(c.plan.nt * NPHASES)
    cdef double[::1] v = buf
    c.prof = &v[0]
    return buf


cdef void _profile_end(Ctx* c, object buf, double wall):
    global _prof_wall, _prof_calls
    if buf is None:
        return
    cdef int t, ph
    for t in range(min(c.plan.nt, MAX_PROF_THREADS)):
        for ph in range(NPHASES):
            _prof_acc[t][ph] += buf[t * NPHASES + ph]
    _prof_wall += wall
    _prof_calls += 1


cdef object _lp_buffer(dict pool, str key, Py_ssize_t nbytes):
    """_buffer of nbytes bytes; a buffer of the pool too small for them is dropped
    first, so that the two never live together (the layers of an inference forward
    share one pool, and the larger layer's converted rows and packed weights replace
    the smaller one's: the layer's memory estimate counts one of each)."""
    buf = pool.get(key)
    if buf is not None and (buf.dtype != np.uint8 or buf.shape[0] < nbytes):
        del pool[key]
        buf = None
    return _buffer(pool, key, (nbytes,), np.uint8)


cdef int _lp_buffers(Ctx* c, dict pool, bint forward, int B, int I, int H,
                     Py_ssize_t rows=0) except -1:
    """The packed blocks (bytes, Ctx.chunk_off / ih_off), the per-thread scratch of a
    low-precision call and (forward) the converted rows of X, from the pool."""
    cdef Py_ssize_t n = _lp_layout(c.cell, &c.plan, c.lowp, I, H, forward, c.chunk_off)
    cdef unsigned char[::1] pk = _lp_buffer(pool, "pk8", n + 64)
    c.pk = &pk[0] + (-<size_t>&pk[0]) % 64
    c.ih_off = c.chunk_off[c.plan.chunks]
    c.lws_bytes = _lp_scratch(c.lowp, forward, B, I, H)
    cdef unsigned char[::1] lws = _lp_buffer(pool, "lws", c.plan.nt * c.lws_bytes + 64)
    c.lws = <char*>&lws[0] + (-<size_t>&lws[0]) % 64
    cdef Py_ssize_t xb = _al(rows * _lp_row_bytes(c.lowp, I))
    cdef unsigned char[::1] xc
    if forward:
        xc = _lp_buffer(pool, "xc", xb + rows * 4 + 64)
        c.xc = <char*>&xc[0] + (-<size_t>&xc[0]) % 64
        c.xsa = <float*>(c.xc + xb)
    return 0


def forward(const floating[:, :, ::1] X, const floating[:, ::1] w_ih,
            const floating[:, ::1] w_hh, const floating[::1] b_ih,
            const floating[::1] b_hh, floating[:, ::1] h, floating[:, :, :] Y,
            const int[::1] batch_sizes, bint reverse, bint reset_after, bint training,
            dict pool=None, const Py_ssize_t[::1] ymap=None, int precision=0):
    """Run one layer and direction over the whole sequence.

    X (T, B, I) time-major; h (B, H) holds h0 on entry and h_n on exit; Y (T, B, H) (a
    view of the layer output, last axis contiguous) receives h_t for active rows only;
    batch_sizes (T,) is non-increasing (sequences sorted longest first).  Returns the
    workspace backward() needs when ``training``, else None.

    pool: a dict of scratch buffers reused by this call and by backward() on its
    workspace (None: fresh buffers).  The caller must not pass the pool of a workspace
    it still wants to backpropagate: this call overwrites it.  ymap (B,): sequence b
    (longest-first order) goes to row ymap[b] of Y (a permutation of 0..B-1; None: b);
    Y's rows past a sequence's end are not written.  precision: 0 (the products in the
    floating type) or 1 (bf16 products, float32 only; backward() follows the workspace).
    """
    cdef int T = X.shape[0], B = X.shape[1], I = X.shape[2], H = w_hh.shape[1]
    _check(precision == LP_NONE or (precision == LP_BF16 and floating is float),
           "precision must be 0, or 1 (bf16) with float32")
    _check_forward_args(X.shape, w_ih.shape, w_hh.shape, b_ih.shape[0], b_hh.shape[0],
                        h.shape, Y.shape, Y.strides[2] == sizeof(floating),
                        batch_sizes.shape[0])
    cdef const Py_ssize_t* ymap_ptr = _rowmap(ymap, B)
    off_arr = _row_offsets(batch_sizes, B)
    cdef Py_ssize_t[::1] off = off_arr
    cdef Py_ssize_t N = off[T]
    cdef bint full = N == <Py_ssize_t>T * B
    dtype = np.float32 if floating is float else np.float64
    if pool is None:
        pool = {}
    cdef Ctx c
    memset(&c, 0, sizeof(Ctx))
    c.T, c.B, c.I_, c.H, c.elsize = T, B, I, H, sizeof(floating)
    c.bs = &batch_sizes[0]
    c.off = &off[0]
    c.reverse, c.training, c.prepacked = reverse, training, False
    c.lowp = precision
    c.blas = grucy_isa == GRUCY_ISA_BLAS and not c.lowp
    c.cell = _cell(reset_after)
    team = _Team()
    _plan_call(&c, team, T, B, I, H, &batch_sizes[0], 2 if c.lowp else sizeof(floating))
    rows = max(N, 1)
    c.gsmall = c.lowp and not training     # (the projection runs step by step)
    G_arr = _buffer(pool, "G", (B if c.gsmall else rows, 3 * H), dtype)
    A_arr = _buffer(pool, "A", (rows if training else B, H), dtype)
    Hp_arr = _buffer(pool, "Hp", (rows, H), dtype) if training else None
    Gh_arr = _buffer(pool, "Gh", (B, 3 * H), dtype)
    S2_arr = _buffer(pool, "S2", (B, H), dtype) if c.cell.nfwd == 1 else None
    Xp_arr = None if full else _buffer(pool, "Xp", (rows, I), dtype)
    cdef floating[:, ::1] G = G_arr
    cdef floating[:, ::1] A = A_arr
    cdef floating[:, ::1] Gh = Gh_arr
    cdef floating[:, ::1] Hp
    cdef floating[:, ::1] S2
    cdef floating[:, ::1] Xp
    cdef floating[::1] pk
    cdef int nr = _nr(&w_ih[0, 0])
    if c.lowp:
        _lp_buffers(&c, pool, True, B, I, H, rows)
    elif not c.blas:
        pk = _buffer(pool, "pk", (_pack_layout(c.cell, &c.plan, I, H, nr, True,
                                               c.chunk_off),), dtype)
        c.pk = &pk[0]
        c.ih_off = c.chunk_off[c.plan.chunks]
    c.wih, c.whh, c.bih, c.bhh = &w_ih[0, 0], &w_hh[0, 0], &b_ih[0], &b_hh[0]
    c.X = &X[0, 0, 0]
    c.Y = &Y[0, 0, 0]
    c.y_t = Y.strides[0] // sizeof(floating)
    c.y_b = Y.strides[1] // sizeof(floating)
    c.ymap = ymap_ptr
    c.S = &h[0, 0]
    c.G, c.A, c.Gh = &G[0, 0], &A[0, 0], &Gh[0, 0]
    if training:
        Hp = Hp_arr
        c.Hp = &Hp[0, 0]
    if S2_arr is not None:
        S2 = S2_arr
        c.S2 = &S2[0, 0]
    if not full:
        Xp = Xp_arr
        c.X = &Xp[0, 0]
    bars = _schedule(&c, False)
    prof = _profile_start(&c)
    cdef double t0 = grucy_now()
    with nogil:
        if not full:
            _gather_rows(T, B, I, c.bs, c.off, &X[0, 0, 0], <floating*>c.X)
        if c.blas:
            grucy_blas_enter()
        grucy_pool_run(_fwd_job, &c, c.plan.nt, c.dynamic)
        if c.blas:
            grucy_blas_exit()
    _profile_end(&c, prof, grucy_now() - t0)
    del team
    if not training:
        return None
    return {"X": np.asarray(X) if full else Xp_arr, "G": G_arr, "A": A_arr, "Hp": Hp_arr,
            "bs": np.asarray(batch_sizes), "off": off_arr, "full": full,
            "reverse": reverse, "reset_after": reset_after, "shape": (T, B, I, H),
            "pool": pool, "precision": precision}


def forward_int8(const float[:, :, ::1] X, const signed char[:, ::1] w_ih,
                 const signed char[:, ::1] w_hh, const float[::1] s_ih,
                 const float[::1] s_hh, const float[::1] b_ih, const float[::1] b_hh,
                 float[:, ::1] h, float[:, :, :] Y, const int[::1] batch_sizes,
                 bint reverse, bint reset_after, dict pool=None,
                 const Py_ssize_t[::1] ymap=None):
    """forward() of a quantized layer, inference only: the products with the weights in
    int8 (_lowp.h): w_ih (3H, I) and w_hh (3H, H) int8 with per-row scales s_ih, s_hh;
    inputs and states quantized per row when used; everything else float32."""
    cdef int T = X.shape[0], B = X.shape[1], I = X.shape[2], H = w_hh.shape[1]
    _check(s_ih.shape[0] == 3 * H and s_hh.shape[0] == 3 * H, "scale shape")
    _check_forward_args(X.shape, w_ih.shape, w_hh.shape, b_ih.shape[0], b_hh.shape[0],
                        h.shape, Y.shape, Y.strides[2] == sizeof(float),
                        batch_sizes.shape[0])
    cdef const Py_ssize_t* ymap_ptr = _rowmap(ymap, B)
    off_arr = _row_offsets(batch_sizes, B)
    cdef Py_ssize_t[::1] off = off_arr
    cdef Py_ssize_t N = off[T]
    cdef bint full = N == <Py_ssize_t>T * B
    if pool is None:
        pool = {}
    cdef Ctx c
    memset(&c, 0, sizeof(Ctx))
    c.T, c.B, c.I_, c.H, c.elsize = T, B, I, H, sizeof(float)
    c.bs = &batch_sizes[0]
    c.off = &off[0]
    c.reverse, c.training, c.prepacked, c.blas = reverse, False, False, False
    c.lowp = LP_INT8
    c.cell = _cell(reset_after)
    team = _Team()
    _plan_call(&c, team, T, B, I, H, &batch_sizes[0], 1)
    rows = max(N, 1)
    c.gsmall = True
    cdef float[:, ::1] G = _buffer(pool, "G", (B, 3 * H), np.float32)
    cdef float[:, ::1] A = _buffer(pool, "A", (B, H), np.float32)
    cdef float[:, ::1] Gh = _buffer(pool, "Gh", (B, 3 * H), np.float32)
    cdef float[:, ::1] S2
    cdef float[:, ::1] Xp
    _lp_buffers(&c, pool, True, B, I, H, rows)
    c.wih, c.whh, c.bih, c.bhh = &w_ih[0, 0], &w_hh[0, 0], &b_ih[0], &b_hh[0]
    c.sih, c.shh = &s_ih[0], &s_hh[0]
    c.X = &X[0, 0, 0]
    c.Y = &Y[0, 0, 0]
    c.y_t = Y.strides[0] // sizeof(float)
    c.y_b = Y.strides[1] // sizeof(float)
    c.ymap = ymap_ptr
    c.S = &h[0, 0]
    c.G, c.A, c.Gh = &G[0, 0], &A[0, 0], &Gh[0, 0]
    if c.cell.nfwd == 1:
        S2 = _buffer(pool, "S2", (B, H), np.float32)
        c.S2 = &S2[0, 0]
    if not full:
        Xp = _buffer(pool, "Xp", (rows, I), np.float32)
        c.X = &Xp[0, 0]
    bars = _schedule(&c, False)
    prof = _profile_start(&c)
    cdef double t0 = grucy_now()
    with nogil:
        if not full:
            _gather_rows(T, B, I, c.bs, c.off, &X[0, 0, 0], <float*>c.X)
        grucy_pool_run(_fwd_job, &c, c.plan.nt, c.dynamic)
    _profile_end(&c, prof, grucy_now() - t0)
    del team


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
    cdef Ctx c
    memset(&c, 0, sizeof(Ctx))
    c.T, c.B, c.I_, c.H, c.elsize = T, B, I, H, sizeof(floating)
    c.bs = &bs[0]
    c.off = &off[0]
    c.reverse = ws["reverse"]
    c.training = True
    c.lowp = ws.get("precision", LP_NONE)
    _check(c.lowp == LP_NONE or (c.lowp == LP_BF16 and floating is float),
           "workspace precision")
    c.blas = grucy_isa == GRUCY_ISA_BLAS and not c.lowp
    c.cell = _cell(reset_after)
    team = _Team()
    _plan_call(&c, team, T, B, I, H, &bs[0], 2 if c.lowp else sizeof(floating))
    cdef bint needs_drh = False
    cdef int st
    for st in range(c.cell.nbwd):
        needs_drh = needs_drh or c.cell.bwd[st].dst == DST_DRH
    cdef floating[:, ::1] dG = _buffer(pool, "dG", (rows, 3 * H), dtype)
    cdef floating[:, ::1] dGxn = _buffer(pool, "dGxn", (rows if c.cell.xn_separate else 1,
                                                        H), dtype)
    cdef floating[:, ::1] dRH = _buffer(pool, "dRH", (B if needs_drh else 1, H), dtype)
    cdef floating[:, ::1] dXp
    cdef const Py_ssize_t* xmap_ptr = _rowmap(xmap, B)
    cdef int nr = _nr(&w_ih[0, 0])
    cdef floating[::1] pk
    cdef floating[::1] scratch
    if c.lowp:
        _lp_buffers(&c, pool, False, B, I, H)
    elif not c.blas:
        # (the forward's buffer: it is done with its packed weights)
        pk = _buffer(pool, "pk", (_pack_layout(c.cell, &c.plan, I, H, nr, False,
                                               c.chunk_off),), dtype)
        c.pk = &pk[0]
        c.ih_off = c.chunk_off[c.plan.chunks]
        scratch = _buffer(pool, "wgrad_scratch", (c.plan.nt * _wgrad_scratch(I, H, nr),),
                          dtype)
        c.scratch = &scratch[0]
    c.wih, c.whh = &w_ih[0, 0], &w_hh[0, 0]
    c.X, c.G, c.A, c.Hp = &X[0, 0], &G[0, 0], &A[0, 0], &Hp[0, 0]
    c.dY = &dY[0, 0, 0]
    c.y_t = dY.strides[0] // sizeof(floating)
    c.y_b = dY.strides[1] // sizeof(floating)
    c.dS = &dh[0, 0]
    c.dG, c.dGxn, c.dRH = &dG[0, 0], &dGxn[0, 0], &dRH[0, 0]
    c.dwih, c.dwhh, c.dbih, c.dbhh = &dw_ih[0, 0], &dw_hh[0, 0], &db_ih[0], &db_hh[0]
    # This direction's dX goes to packed rows first, then is put in place or added
    # (scattered through xmap): so dX of a bidirectional layer is always dX_fwd + dX_bwd,
    # each whole; accumulating the second direction's two products straight into dX
    # gave (dX_fwd + p1) + p2 on one path and dX_fwd + (p1 + p2) on the other.
    dXp = _buffer(pool, "dXp", (rows, I), dtype)
    c.dX = &dXp[0, 0]
    c.beta_dx = False
    bars = _schedule(&c, True)
    prof = _profile_start(&c)
    cdef double t0 = grucy_now()
    with nogil:
        if c.blas:
            grucy_blas_enter()
        grucy_pool_run(_bwd_job, &c, c.plan.nt, c.dynamic)
        if c.blas:
            grucy_blas_exit()
        if full and xmap_ptr == NULL:
            _put_rows(N * I, <floating*>c.dX, &dX[0, 0, 0], accumulate)
        else:
            _scatter_rows(T, B, I, &bs[0], &off[0], <floating*>c.dX, &dX[0, 0, 0],
                          accumulate, xmap_ptr)
    _profile_end(&c, prof, grucy_now() - t0)
    del team


# ---------------------------------------------------------------------------------------
# Streaming: one step at a time, state kept between calls.

cdef inline bint _all_finite(const floating* p, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return grucy_finite_f(p, n)
    else:
        return grucy_finite_d(p, n)


cdef inline double _abs_max_f(const float* p, Py_ssize_t n) noexcept nogil:
    cdef float m = 0, v
    cdef Py_ssize_t i
    for i in range(n):
        v = p[i] if p[i] >= 0 else -p[i]
        if v > m:
            m = v
    return m


PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


cdef class GRUStream:
    """Online inference: feed one step of every stream, get its output, keep the state.

    Made by :meth:`grucy.GRU.stream`.  The stream works on a snapshot of the layer's
    parameters taken when it is made, checked to be finite and packed once for grucy's
    GEMM, so a step costs the products and nothing else; :meth:`refresh` takes a new
    snapshot (after training steps, ``load_state_dict`` or edits in place).  A step
    gives exactly the numbers of a one-step ``forward`` with the snapshot's weights.
    Unidirectional layers only (a bidirectional layer needs the future).  Not
    thread-safe: use one stream per thread.

    Attributes
    ----------
    h : ndarray (num_layers, batch_size, hidden_size)
        The state after the last step (a copy; assign to replace it).
    batch_size, hidden_size, num_layers, input_size : int
    """

    cdef readonly int num_layers, batch_size, hidden_size, input_size, precision
    cdef bint reset_after, dbl
    cdef object dtype
    cdef list params          # the layer's arrays, read again by refresh()
    cdef list snapshot        # per layer: copies of (w_ih, w_hh, b_ih, b_hh[, s_ih, s_hh])
    cdef list packed          # per layer: packed W_hh^T blocks then W_ih^T
    cdef int isa              # the kernels the snapshot was packed for
    cdef int lpkind           # (the low-precision kernels, precision > 0)
    cdef object lws_arr       # low precision: scratch of the conversions
    cdef object xc_arr        # and the converted input rows
    cdef Py_ssize_t lws_bytes
    cdef object S_arr, S2_arr, G_arr, A_arr, Gh_arr, Y_arr, S_prev_arr
    cdef char* S
    cdef char* S2
    cdef char* G
    cdef char* A
    cdef char* Gh
    cdef char* Y
    cdef char* S_prev
    cdef bint busy

    def __cinit__(self, list layers, int batch_size, int hidden_size, bint reset_after,
                  dtype, h0, int precision=0):
        cdef int L = len(layers), H = hidden_size, B = batch_size
        if L < 1 or H < 1 or B < 1:
            raise ValueError("GRUStream needs at least one layer, unit and stream")
        self.num_layers, self.batch_size, self.hidden_size = L, B, H
        self.reset_after = reset_after
        self.dtype = np.dtype(dtype)
        self.dbl = self.dtype == np.float64
        if precision not in (LP_NONE, LP_BF16, LP_INT8) or (precision and self.dbl):
            raise ValueError("GRUStream: precision must be 0, or 1 (bf16) or 2 (int8) with "
                             "float32")
        self.precision = precision
        self.params = [list(arrs) for arrs in layers]
        self._take_snapshot()
        self.input_size = self.snapshot[0][0].shape[1]
        self.S_arr = np.array(h0, dtype=self.dtype, order="C")
        if self.S_arr.shape != (L, B, H):
            raise ValueError(f"h0 must have shape {(L, B, H)}, got {self.S_arr.shape}")
        self.S_prev_arr = np.empty_like(self.S_arr)
        self.S2_arr = _buffer({}, "", (B, H), self.dtype)
        self.G_arr = _buffer({}, "", (B, 3 * H), self.dtype)
        self.A_arr = _buffer({}, "", (B, H), self.dtype)
        self.Gh_arr = _buffer({}, "", (B, 3 * H), self.dtype)
        self.Y_arr = _buffer({}, "", (max(L - 1, 1), B, H), self.dtype)
        # (never reallocated: the state is assigned in place)
        self.S = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.S_arr)
        self.S_prev = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.S_prev_arr)
        self.S2 = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.S2_arr)
        self.G = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.G_arr)
        self.A = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.A_arr)
        self.Gh = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.Gh_arr)
        self.Y = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.Y_arr)

    def _take_snapshot(self):
        cdef int H = self.hidden_size, l
        snapshot = []
        int8 = self.precision == LP_INT8
        for l, arrs in enumerate(self.params):
            # int8: (w_ih, w_hh) int8 with their row scales after the biases
            arrs = [np.array(a, dtype=np.int8 if int8 and k < 2 else self.dtype, order="C",
                             copy=True) for k, a in enumerate(arrs)]
            if (len(arrs) != (6 if int8 else 4) or arrs[0].ndim != 2
                    or arrs[0].shape[0] != 3 * H or arrs[1].shape != (3 * H, H)
                    or any(a.shape != (3 * H,) for a in arrs[2:])
                    or (l > 0 and arrs[0].shape[1] != H)):
                raise ValueError(f"GRUStream: parameter shapes of layer {l} do not match")
            for name, a in zip(PARAM_NAMES + ("scale_ih", "scale_hh"), arrs):
                if a.dtype.kind == "f" and not all_finite(a):
                    raise ValueError(f"{name}_l{l} contains NaN or inf: the stream cannot "
                                     f"use these parameters")
            snapshot.append(arrs)
        self.snapshot = snapshot
        self._pack()

    def _pack(self):
        self.isa = grucy_isa
        self.lpkind = self._lp_kind()
        if self.precision:
            self.packed = [self._lp_pack_layer(arrs) for arrs in self.snapshot]
        else:
            self.packed = [self._pack_layer(arrs) for arrs in self.snapshot]

    cdef int _lp_kind(self):
        return grucy_bf16_kind if self.precision == LP_BF16 else grucy_i8_kind

    cdef object _lp_pack_layer(self, list arrs):
        """Low precision: the stages' W_hh^T blocks, then W_ih^T (_lp_layout, bytes)."""
        cdef int H = self.hidden_size, I = arrs[0].shape[1], s, B = self.batch_size
        cdef const Cell* cell = _cell(self.reset_after)
        cdef Ctx c
        memset(&c, 0, sizeof(Ctx))
        c.lowp = self.precision
        cdef Py_ssize_t blk = _lp_stage_off(cell, c.lowp, cell.nfwd, H, H)
        out = np.zeros(_lp_fwd_block(cell, c.lowp, I, H, H) + 64, np.uint8)
        cdef Py_ssize_t lws_bytes = _lp_scratch(c.lowp, True, B, max(I, H), H)
        self.lws_bytes = max(self.lws_bytes, lws_bytes)
        if self.lws_arr is None or self.lws_arr.shape[0] < self.lws_bytes + 64:
            self.lws_arr = np.zeros(self.lws_bytes + 64, np.uint8)
        lws_bytes = _al(B * _lp_row_bytes(c.lowp, max(I, H))) + B * 4 + 64
        if self.xc_arr is None or self.xc_arr.shape[0] < lws_bytes:
            self.xc_arr = np.zeros(lws_bytes, np.uint8)
        cdef char* P = <char*>cnp.PyArray_DATA(<cnp.ndarray>out)
        P += (-<size_t>P) % 64
        cdef char* tmp = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.lws_arr)
        cdef const void* wih = cnp.PyArray_DATA(<cnp.ndarray>arrs[0])
        cdef const void* whh = cnp.PyArray_DATA(<cnp.ndarray>arrs[1])
        cdef const float* sih = NULL
        cdef const float* shh = NULL
        if c.lowp == LP_INT8:
            sih = <const float*>cnp.PyArray_DATA(<cnp.ndarray>arrs[4])
            shh = <const float*>cnp.PyArray_DATA(<cnp.ndarray>arrs[5])
        with nogil:
            for s in range(cell.nfwd):
                _lp_pack_t(c.lowp, H, H, cell.fwd[s].g0, cell.fwd[s].ng, H, 0, whh, shh, H,
                           P + _lp_stage_off(cell, c.lowp, s, H, H), tmp, 0, 3 * H)
            for s in range(3):
                _lp_pack_t(c.lowp, I, H, s, 1, H, 0, wih, sih, I,
                           P + blk + s * _lp_pack_bytes(c.lowp, I, H), tmp, 0, H)
        return out

    cdef object _pack_layer(self, list arrs):
        cdef int H = self.hidden_size, I = arrs[0].shape[1]
        cdef const Cell* cell = _cell(self.reset_after)
        cdef int nr = grucy_nr(grucy_isa, 8 if self.dbl else 4), s
        cdef Py_ssize_t blk = _fwd_block_size(cell, H, H, nr)
        out = _aligned_empty(blk + grucy_pgemm_size(I, 3 * H, nr), self.dtype)
        cdef char* P = <char*>cnp.PyArray_DATA(<cnp.ndarray>out)
        cdef char* wih = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrs[0])
        cdef char* whh = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrs[1])
        cdef bint dbl = self.dbl
        with nogil:
            for s in range(cell.nfwd):
                if dbl:
                    _pack_t(nr, H, H, cell.fwd[s].g0, cell.fwd[s].ng, H, 0, <double*>whh, H,
                            <double*>P + _fwd_stage_off(cell, s, H, H, nr))
                else:
                    _pack_t(nr, H, H, cell.fwd[s].g0, cell.fwd[s].ng, H, 0, <float*>whh, H,
                            <float*>P + _fwd_stage_off(cell, s, H, H, nr))
            if dbl:
                _pack_t(nr, I, 3 * H, 0, 1, 0, 0, <double*>wih, I, <double*>P + blk)
            else:
                _pack_t(nr, I, 3 * H, 0, 1, 0, 0, <float*>wih, I, <float*>P + blk)
        return out

    def refresh(self):
        """Take a new snapshot of the layer's parameters (checked, packed); the state is
        kept.  ValueError when a parameter is not finite (the old snapshot stays).  The
        precision stays the one the stream was made with: after changing a layer's
        ``precision``, make a new stream (``GRU.step`` does so itself)."""
        self._take_snapshot()

    def _changed(self):
        """True when a parameter of the layer differs from the snapshot (GRU.step).

        Byte by byte where the parameter is a contiguous array of the snapshot's type:
        np.array_equal made a boolean array of the weights' size on every step (1.3 of
        the 2.0 ms of a 1024-unit GRU.step).  (A -0.0 for 0.0 then counts as a change:
        a new snapshot, never a wrong one.)"""
        cdef cnp.ndarray arr, snp
        for arrs, snap in zip(self.params, self.snapshot):
            for a, s in zip(arrs, snap):
                if (type(a) is np.ndarray and a.dtype == s.dtype and a.shape == s.shape
                        and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)):
                    arr, snp = <cnp.ndarray>a, <cnp.ndarray>s
                    if memcmp(cnp.PyArray_DATA(arr), cnp.PyArray_DATA(snp),
                              <size_t>cnp.PyArray_NBYTES(arr)) != 0:
                        return True
                elif a.shape != s.shape or not np.array_equal(a, s):
                    return True
        return False

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
        if self.precision == LP_INT8:
            from ._validation import check_int8_range  # (a leaf, but it imports this module)
            check_int8_range("h", arr, self.hidden_size)
        self.S_arr[...] = arr

    def reset(self):
        """Set the state of every stream to zeros."""
        self.S_arr.fill(0)

    def step(self, x):
        """Advance every stream by one step; returns the top layer's output (B, H).

        x: (batch_size, input_size), or (input_size,) when batch_size is 1 (the output
        is then (hidden_size,)).  Integers and the other float width are cast; NaN or
        inf are refused (ValueError) and leave the state unchanged, as does a step whose
        new state is not finite.  One stream serves one thread at a time (RuntimeError
        otherwise).
        """
        if self.busy:
            raise RuntimeError("this GRUStream is in use by another thread; give each "
                               "thread its own stream")
        self.busy = True
        try:
            if self.isa != grucy_isa or (self.precision and self.lpkind != self._lp_kind()):
                self._pack()    # the kernels were switched (GRUCY_ISA, test hooks)
            return self._step(x)
        finally:
            self.busy = False

    cdef object _step(self, x):
        cdef int B = self.batch_size, H = self.hidden_size, I0 = self.input_size
        cdef bint flat = False
        cdef int typenum = cnp.NPY_DOUBLE if self.dbl else cnp.NPY_FLOAT
        cdef cnp.ndarray xa
        if (type(x) is not np.ndarray or cnp.PyArray_TYPE(<cnp.ndarray>x) != typenum
                or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x)
                or not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x)):   # (">f4": same type)
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
        cdef char* S = self.S
        cdef char* S_prev = self.S_prev
        cdef bint ok, state_ok = True, in_range = True
        # int8: the first layer's input must keep 255 * I0 * max|x| finite in float32
        # (the later layers read outputs, |h| <= max(1, |h0|), and h0 was checked)
        cdef double int8_limit = 3.4028234663852886e38 / (255.0 * I0)
        cdef Py_ssize_t ns = <Py_ssize_t>self.num_layers * B * H
        cdef size_t nbytes = ns * (8 if self.dbl else 4)
        cdef int L = self.num_layers
        # the raw pointers of every layer's snapshot and scratch, taken with the GIL
        cdef Py_ssize_t[:, ::1] ptr = np.empty((L, 4), np.intp)
        cdef int l
        for l in range(L):
            ptr[l, 0] = <Py_ssize_t>cnp.PyArray_DATA(<cnp.ndarray>self.packed[l])
            if self.precision:   # (the blocks start on a multiple of 64 bytes)
                ptr[l, 0] += <Py_ssize_t>((-<size_t>ptr[l, 0]) % 64)
            ptr[l, 1] = <Py_ssize_t>cnp.PyArray_DATA(<cnp.ndarray>self.snapshot[l][2])
            ptr[l, 2] = <Py_ssize_t>cnp.PyArray_DATA(<cnp.ndarray>self.snapshot[l][3])
            ptr[l, 3] = self.snapshot[l][0].shape[1]
        with nogil:
            if self.dbl:
                ok = _all_finite(<double*>xp, <Py_ssize_t>B * I0)
            else:
                ok = _all_finite(<float*>xp, <Py_ssize_t>B * I0)
            if ok and self.precision == LP_INT8:
                in_range = _abs_max_f(<float*>xp, <Py_ssize_t>B * I0) <= int8_limit
            if ok and in_range:
                memcpy(S_prev, S, nbytes)
                if self.dbl:
                    self._run(<double*>xp, <double*>op, ptr)
                    state_ok = _all_finite(<double*>S, ns)
                else:
                    self._run(<float*>xp, <float*>op, ptr)
                    state_ok = _all_finite(<float*>S, ns)
                if not state_ok:
                    memcpy(S, S_prev, nbytes)
        if not ok:
            raise ValueError("x contains NaN or inf")
        if not in_range:
            from ._validation import check_int8_range
            check_int8_range("x", x, I0)
        if not state_ok:
            raise ValueError("the new state is not finite (the inputs or the state are "
                             "too large for these weights); the state is left as it was")
        return out

    cdef void _run(self, floating* x, floating* out, Py_ssize_t[:, ::1] ptr) noexcept nogil:
        """One step of every layer: the forward kernel on T = 1, one thread, the
        snapshot's packed weights."""
        cdef int l, L = self.num_layers, B = self.batch_size, H = self.hidden_size
        cdef int nr = _nr(x)
        cdef int bs[1]
        cdef Py_ssize_t off[2]
        cdef Ctx c
        cdef floating* inp = x
        cdef floating* y
        cdef const Cell* cell = _cell(self.reset_after)
        bs[0] = B
        off[0] = 0
        off[1] = B
        memset(&c, 0, sizeof(Ctx))
        c.T, c.B, c.H, c.elsize = 1, B, H, sizeof(floating)
        c.bs, c.off = bs, off
        c.cell = cell
        c.prepacked = True
        c.gsmall = True
        c.lowp = self.precision
        if c.lowp:
            c.lws = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.lws_arr)
            c.lws += (-<size_t>c.lws) % 64
            c.lws_bytes = self.lws_bytes
            c.xc = <char*>cnp.PyArray_DATA(<cnp.ndarray>self.xc_arr)
            c.xc += (-<size_t>c.xc) % 64
        c.plan.nt, c.plan.groups, c.plan.chunks = 1, 1, 1
        c.npieces[0] = c.npieces[1] = c.npieces[2] = 1
        c.plan.row_lo[0], c.plan.row_lo[1] = 0, B
        c.plan.unit_lo[0], c.plan.unit_lo[1] = 0, H
        c.chunk_off[0] = 0
        c.chunk_off[1] = _fwd_block_size(cell, H, H, nr)
        c.ih_off = c.chunk_off[1]
        c.y_t = <Py_ssize_t>B * H
        c.y_b = H
        c.G, c.A, c.Gh, c.S2 = self.G, self.A, self.Gh, self.S2
        for l in range(L):
            y = out if l == L - 1 else <floating*>self.Y + <Py_ssize_t>l * B * H
            c.I_ = <int>ptr[l, 3]
            if c.lowp:
                c.xsa = <float*>(c.xc + _al(B * _lp_row_bytes(c.lowp, c.I_)))
            c.pk = <void*>ptr[l, 0]
            c.bih = <void*>ptr[l, 1]
            c.bhh = <void*>ptr[l, 2]
            c.X = inp
            c.Y = y
            c.S = <floating*>self.S + <Py_ssize_t>l * B * H
            _fwd_run(x, &c, 0, 1)
            inp = y


# ---------------------------------------------------------------------------------------
# Test and profiling hook of the GEMM itself.

cdef object _packed_operand(str who, const floating[:, ::1] a, const floating[:, ::1] w,
                            bint transposed, floating[:, ::1] c):
    """The checks of c = a @ w.T (``transposed``: w is (N, K)) or a @ w (w is (K, N)) on
    grucy's packed GEMM, then ``w`` packed for it (a 1-D array of a's dtype)."""
    cdef int M = a.shape[0], K = a.shape[1]
    cdef int N = w.shape[0] if transposed else w.shape[1]
    if (w.shape[1] if transposed else w.shape[0]) != K or c.shape[0] != M or c.shape[1] != N:
        raise ValueError(f"{who}: shapes do not match")
    if M < 1 or N < 1 or K < 1:
        raise ValueError(f"{who}: sizes must be positive")
    if grucy_isa == GRUCY_ISA_BLAS:
        raise RuntimeError(f"{who}: the kernels are set to BLAS")
    cdef int nr = _nr(&a[0, 0])
    out = np.empty(grucy_pgemm_size(K, N, nr), np.float32 if floating is float else np.float64)
    cdef floating[::1] P = out
    with nogil:
        if transposed:
            _pack_t(nr, K, N, 0, 1, 0, 0, &w[0, 0], K, &P[0])
        else:
            _pack_n(nr, K, N, &w[0, 0], N, &P[0])
    return out


ctypedef struct _RowsJob:
    int M, N, K, nr, dbl
    const void* a
    const void* P
    void* c


cdef void _rows_job(void* p, int tid, int nt) noexcept nogil:
    """Thread tid's share of gemm_rows: a contiguous block of rows (a row's numbers do
    not depend on the block it is in)."""
    cdef _RowsJob* j = <_RowsJob*>p
    cdef int lo = <int>((<long long>j.M * tid) // nt)
    cdef int hi = <int>((<long long>j.M * (tid + 1)) // nt)
    if hi <= lo:
        return
    if j.dbl:
        grucy_pgemm_d(hi - lo, j.N, j.K, <const double*>j.a + <Py_ssize_t>lo * j.K, j.K,
                      <const double*>j.P, j.nr, <Py_ssize_t>j.K * j.nr,
                      <double*>j.c + <Py_ssize_t>lo * j.N, j.N, False, False)
    else:
        grucy_pgemm_f(hi - lo, j.N, j.K, <const float*>j.a + <Py_ssize_t>lo * j.K, j.K,
                      <const float*>j.P, j.nr, <Py_ssize_t>j.K * j.nr,
                      <float*>j.c + <Py_ssize_t>lo * j.N, j.N, False, False)


def gemm_rows(const floating[:, ::1] a, const floating[:, ::1] w, bint transposed,
              floating[:, ::1] c):
    """c = a @ w.T (``transposed``: w is (N, K)) or c = a @ w (w is (K, N)) on grucy's
    packed GEMM and thread team, the GIL released.

    What grucy.nn.Linear runs: every output is one chain of FMAs over k in order, so a
    row of c does not depend on the other rows of a (BLAS picks its kernel and blocking
    by the number of rows: a readout's row differed by 1e-8 between a batch of 1 and
    one of 16), on the threads nor on the kernel in use (AVX-512, AVX2, portable with
    FMA).  Products under 4 MFLOP run on the calling thread.  Sizes must be positive;
    not under GRUCY_ISA=blas."""
    cdef floating[::1] P = _packed_operand("gemm_rows", a, w, transposed, c)
    cdef int M = a.shape[0], K = a.shape[1], N = c.shape[1], nr = _nr(&a[0, 0])
    cdef _RowsJob job
    job.M, job.N, job.K, job.nr, job.dbl = M, N, K, nr, floating is double
    job.a, job.P, job.c = &a[0, 0], &P[0], &c[0, 0]
    # (a thread per 4 MFLOP and at least 16 rows: below, waking workers costs more)
    cdef double flops = 2.0 * M * N * K
    cdef int want = <int>min(<double>grucy_nthreads, flops / 4e6, M / 16.0)
    cdef int nt
    with nogil:
        nt = grucy_pool_acquire(want)
        grucy_pool_run(_rows_job, &job, nt, 0)
        grucy_pool_release(nt)


def _pgemm_probe(const floating[:, ::1] a, const floating[:, ::1] w, bint transposed,
                 floating[:, ::1] c, int repeats):
    """Pack ``w`` once, then run the GEMM in use ``repeats`` times: c = a @ w.T
    (``transposed``, the forward's shape: w is (N, K)) or c = a @ w (the backward's: w
    is (K, N)).  Returns the seconds of the repeats (packing excluded)."""
    if repeats < 1:
        raise ValueError("_pgemm_probe: repeats must be positive")
    cdef floating[::1] P = _packed_operand("_pgemm_probe", a, w, transposed, c)
    cdef int M = a.shape[0], K = a.shape[1], N = c.shape[1], nr = _nr(&a[0, 0])
    cdef int r
    cdef double t0
    t0 = grucy_now()
    with nogil:
        for r in range(repeats):
            _pgemm(M, N, K, &a[0, 0], K, &P[0], nr, <Py_ssize_t>K * nr, &c[0, 0], N,
                   False, r & 1)
    return grucy_now() - t0


# ---------------------------------------------------------------------------------------
# Test and profiling hooks of the low-precision GEMMs (tests/test_lowp.py compares them
# with a NumPy emulation, bit for bit).

def _bf16_round(const float[::1] x):
    """x rounded to bf16 as VCVTNEPS2BF16 does, as float32 values."""
    out = np.empty(x.shape[0], np.uint32)
    cdef unsigned int[::1] o = out
    cdef const unsigned int* xi = <const unsigned int*>&x[0] if x.shape[0] else NULL
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        o[i] = grucy_bf16_bits(xi[i]) << 16
    return out.view(np.float32)


def _bf16_gemm_probe(const float[:, ::1] a, const float[:, ::1] w, bint transposed,
                     float[:, ::1] c, bint beta=False, int repeats=1, bint a_transposed=False):
    """c (+)= bf16(a) @ bf16(w.T) (``transposed``: w is (N, K)) or bf16(a) @ bf16(w) (w is
    (K, N)), with the bf16 kernel in use; ``a_transposed``: a is given as (K, M) and
    converted through the transposed path.  w is packed and a converted once, then the
    GEMM runs ``repeats`` times (accumulating when ``beta``); returns their seconds."""
    cdef int M = a.shape[1] if a_transposed else a.shape[0]
    cdef int K = a.shape[0] if a_transposed else a.shape[1]
    cdef int N = w.shape[0] if transposed else w.shape[1]
    if (w.shape[1] if transposed else w.shape[0]) != K or c.shape[0] != M or c.shape[1] != N:
        raise ValueError("_bf16_gemm_probe: shapes do not match")
    if repeats < 1 or M < 1 or N < 1 or K < 1:
        raise ValueError("_bf16_gemm_probe: sizes and repeats must be positive")
    cdef int kp = grucy_bf16_kp(K)
    cdef size_t esz = grucy_bf16_esz()
    cdef char[::1] A = np.zeros(M * kp * esz + 64, np.int8)
    cdef char[::1] P = np.zeros(grucy_bf16_pack_bytes(K, N) + 64, np.int8)
    cdef char[::1] tmp = np.zeros(grucy_lp_nr(grucy_bf16_kind) * kp * 4 + 64, np.int8)
    cdef int r
    cdef double t0
    with nogil:
        if a_transposed:
            grucy_bf16_cvt(M, K, &a[0, 0], 1, M, &A[0], kp)
        else:
            grucy_bf16_cvt(M, K, &a[0, 0], K, 1, &A[0], kp)
        if transposed:
            grucy_bf16_pack_t(K, N, 0, 1, 0, 0, &w[0, 0], K, &P[0], &tmp[0], 0, N)
        else:
            grucy_bf16_pack_n(K, N, &w[0, 0], N, &P[0])
    t0 = grucy_now()
    with nogil:
        for r in range(repeats):
            grucy_bf16_gemm(M, N, K, &A[0], kp, &P[0], grucy_bf16_panel_bytes(K),
                            &c[0, 0], N, beta, r & 1)
    return grucy_now() - t0


def _i8_quant_probe(const float[:, ::1] a):
    """The int8 kernel's quantization of the rows of a: (bytes q + 128 (M, K) uint8,
    scales (M,) float32)."""
    cdef int M = a.shape[0], K = a.shape[1]
    cdef int kq = grucy_i8_kq(K)
    out = np.empty((M, kq), np.uint8)
    sa = np.empty(M, np.float32)
    cdef unsigned char[:, ::1] o = out
    cdef float[::1] s = sa
    if M and K:
        with nogil:
            grucy_i8_quant(M, K, &a[0, 0], K, &o[0, 0], kq, &s[0])
    return out[:, :K], sa


def _i8_gemm_probe(const float[:, ::1] a, const signed char[:, ::1] wq,
                   const float[::1] sw, float[:, ::1] c, int repeats=1):
    """c = the int8 product of a (quantized per row by the kernel) and the int8 weights
    wq (N, K) with scales sw (N,) (c[i, j] = a[i] . w[j]); returns the seconds of the
    ``repeats`` GEMMs (quantization and packing excluded)."""
    cdef int M = a.shape[0], K = a.shape[1], N = wq.shape[0]
    if wq.shape[1] != K or sw.shape[0] != N or c.shape[0] != M or c.shape[1] != N:
        raise ValueError("_i8_gemm_probe: shapes do not match")
    if repeats < 1 or M < 1 or N < 1 or K < 1:
        raise ValueError("_i8_gemm_probe: sizes and repeats must be positive")
    cdef int kq = grucy_i8_kq(K)
    cdef unsigned char[:, ::1] A = np.zeros((M, kq), np.uint8)
    cdef float[::1] sa = np.zeros(M, np.float32)
    cdef char[::1] P = np.zeros(grucy_i8_pack_bytes(K, N) + 64, np.int8)
    cdef char[::1] tmp = np.zeros(grucy_lp_nr(grucy_i8_kind) * kq + 64, np.int8)
    cdef int r
    cdef double t0
    cdef int* corr = grucy_i8_corr(&P[0], K, N)
    cdef float* sc = grucy_i8_scale(&P[0], K, N)
    with nogil:
        grucy_i8_quant(M, K, &a[0, 0], K, &A[0, 0], kq, &sa[0])
        grucy_i8_pack_t(K, N, 0, 1, 0, 0, &wq[0, 0], K, &sw[0], &P[0], corr, sc, &tmp[0], 0, N)
    t0 = grucy_now()
    with nogil:
        for r in range(repeats):
            grucy_i8_gemm(M, N, K, &A[0, 0], kq, &sa[0], &P[0], corr, sc, &c[0, 0], N, r & 1)
    return grucy_now() - t0
