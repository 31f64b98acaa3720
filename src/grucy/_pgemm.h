/* GEMMs whose right operand is packed once and reused: every product with a weight.
 *
 * Why: the recurrent products h @ W_hh^T (forward) and dG @ W_hh (backward) multiply a
 * small block of rows (the batch) by the same weight matrix T times.  A BLAS GEMM call
 * re-packs the weight into its cache-friendly layout on every call (a quarter of the
 * CPU time at B = 32, bench/README.md), and scipy's BLAS has no API to keep a packed
 * operand.  So grucy packs W_hh and W_ih once per call and runs its own register-blocked
 * kernel on them, for the recurrent steps, the input projection and dX.
 *
 * The contract that makes results independent of threads, batch and CPU: every output
 * C[i][j] is ONE chain of fused multiply-adds over k = 0, 1, ..., K-1, starting from 0
 * (then C[i][j] + chain when accumulating).  No blocking over K, no partial sums.  A
 * row's results therefore do not depend on the other rows, on how rows or columns are
 * split between threads, on the register block it lands in, or on the vector width:
 * the AVX-512, AVX2 and portable kernels below give the same bits (the portable kernel
 * on a CPU without FMA rounds the product separately; ARM64 has FMA).
 *
 * One source, three instantiations (GCC/Clang vector extensions compiled for each
 * target; `acc + a * w` is contracted to an FMA, see -ffp-contract in setup.py):
 *   avx512: 16 float lanes, MR = 8 rows x 2 vectors (16 accumulators of 32 registers)
 *   avx2:    8 float lanes, MR = 6 rows x 2 vectors (12 of 16 registers)
 *   portable: 4 float lanes (SSE2, NEON), MR = 6 rows x 2 vectors
 * chosen at load time from the CPU (grucy_isa_select) or GRUCY_ISA.
 *
 * Layout of a packed (K, N) operand B: panels of NR = 2 vectors of columns, each panel
 * K rows of NR contiguous values, zero-padded on the right; panel p starts at
 * P + p * pstride (pstride = K_packed * NR, so rows k0.. of a packed operand start at
 * P + k0 * NR with the same pstride).  NR depends on the ISA (grucy_nr).
 *
 * C (M, N) = A (M, K) @ B (+ C when beta), A and C row-major with leading dimensions
 * lda, ldc.  Panels are visited first to last, or last to first when ``backwards``: a
 * recurrence alternating the two finds the panels it used last still in L1.
 */
#ifndef GRUCY_PGEMM_H
#define GRUCY_PGEMM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__clang__)
#define GRUCY_CONTRACT _Pragma("clang fp contract(fast)")    /* (block-scoped) */
#else
#define GRUCY_CONTRACT
#endif

enum { GRUCY_ISA_PORTABLE = 0, GRUCY_ISA_AVX2 = 1, GRUCY_ISA_AVX512 = 2,
       GRUCY_ISA_BLAS = 3 };

/* An unoptimised build (GRUCY_DEBUG=1: -O0) would not contract `acc + a * w` into one
 * FMA, so its products would round differently: the GEMM is optimised in every build. */
#if defined(__GNUC__) && !defined(__clang__) && !defined(__OPTIMIZE__)
#define GRUCY_GEMM_OPT , optimize("O2")
#else
#define GRUCY_GEMM_OPT
#endif
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(GRUCY_NO_X86)
#define GRUCY_X86 1
#include <immintrin.h>
#define GRUCY_T_AVX512 __attribute__((target("avx512f") GRUCY_GEMM_OPT))
#define GRUCY_T_AVX2 __attribute__((target("avx2,fma") GRUCY_GEMM_OPT))
#else
#define GRUCY_X86 0
#endif
#if defined(__GNUC__) && !defined(__clang__) && !defined(__OPTIMIZE__)
#define GRUCY_T_PORTABLE __attribute__((optimize("O2")))
#else
#define GRUCY_T_PORTABLE
#endif

/* The CPU's best kernel (what GRUCY_ISA may choose at most). */
static int grucy_isa_best(void)
{
#if GRUCY_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return GRUCY_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GRUCY_ISA_AVX2;
#endif
    return GRUCY_ISA_PORTABLE;
}

/* Panel width (columns) of a packed operand for this ISA and element size. */
static inline int grucy_nr(int isa, int elsize)
{
    int vbytes = isa == GRUCY_ISA_AVX512 ? 64 : isa == GRUCY_ISA_AVX2 ? 32 : 16;
    return 2 * vbytes / elsize;
}

/* Values of a packed (K, N) operand: K * N rounded up to whole panels. */
static inline size_t grucy_pgemm_size(int K, int N, int nr)
{
    return (size_t)K * (size_t)((N + nr - 1) / nr) * (size_t)nr;
}

/* Packing, for element type T (the layout above, any NR). */
#define GRUCY_PACK_DEFINE(T, SFX)                                                          \
/* Pack B[k][j] = W[j * ldw + k] (B = W^T: rows of W become columns); rows of W are      \
 * taken in runs of c: column j is row (g0 + j / c) * H + j0 + j % c, i.e. gates         \
 * g0, g0 + 1, ... of units j0 .. j0 + c - 1 (ng gates, N = ng * c columns). */          \
static void grucy_pack_t_##SFX(int nr, int K, int c, int g0, int ng, int H, int j0,      \
                               const T* W, int ldw, T* P)                                 \
{                                                                                          \
    const int N = ng * c;                                                                  \
    int j, k;                                                                              \
    for (j = 0; j < (N + nr - 1) / nr * nr; j++) {                                         \
        T* dst = P + (size_t)(j / nr) * K * nr + j % nr;                                   \
        if (j < N) {                                                                       \
            const T* src = W + (size_t)((g0 + j / c) * H + j0 + j % c) * ldw;             \
            for (k = 0; k < K; k++) dst[(size_t)k * nr] = src[k];                          \
        } else {                                                                           \
            for (k = 0; k < K; k++) dst[(size_t)k * nr] = 0;                               \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* Pack B[k][j] = W[k * ldw + j], K rows and N columns. */                                 \
static void grucy_pack_n_##SFX(int nr, int K, int N, const T* W, int ldw, T* P)          \
{                                                                                          \
    int p, j, k, w;                                                                        \
    for (p = 0; p * nr < N; p++) {                                                         \
        w = N - p * nr < nr ? N - p * nr : nr;                                             \
        for (k = 0; k < K; k++) {                                                          \
            T* dst = P + (size_t)p * K * nr + (size_t)k * nr;                              \
            const T* src = W + (size_t)k * ldw + p * nr;                                   \
            for (j = 0; j < w; j++) dst[j] = src[j];                                       \
            for (; j < nr; j++) dst[j] = 0;                                                \
        }                                                                                  \
    }                                                                                      \
}

GRUCY_PACK_DEFINE(float, f_scalar)
GRUCY_PACK_DEFINE(double, d)

/* The transposing pack of float weights (W_hh^T, W_ih^T: every forward call, every
 * stream refresh) in 8 x 8 blocks transposed in AVX2 registers: the value-by-value loop
 * wrote 8 KB-strided columns and took 15 us for a 384 x 128 weight, three times a whole
 * one-step forward. */
#if GRUCY_X86
__attribute__((target("avx2"))) static void grucy_pack_t_f_avx2(
    int nr, int K, int c, int g0, int ng, int H, int j0, const float* W, int ldw, float* P)
{
    const int N = ng * c, Np = (N + nr - 1) / nr * nr, K8 = K / 8 * 8;
    int j, k, r;
    for (j = 0; j < Np; j += 8) {
        float* dst = P + (size_t)(j / nr) * K * nr + j % nr;
        const float* src[8];
        if (j + 8 > N) {  /* the last columns and the zero padding, value by value */
            for (r = 0; r < 8; r++) {
                const float* s = j + r < N
                    ? W + (size_t)((g0 + (j + r) / c) * H + j0 + (j + r) % c) * ldw : NULL;
                for (k = 0; k < K; k++) dst[(size_t)k * nr + r] = s ? s[k] : 0.0f;
            }
            continue;
        }
        for (r = 0; r < 8; r++)
            src[r] = W + (size_t)((g0 + (j + r) / c) * H + j0 + (j + r) % c) * ldw;
        for (k = 0; k < K8; k += 8) {
            __m256 a0 = _mm256_loadu_ps(src[0] + k), a1 = _mm256_loadu_ps(src[1] + k);
            __m256 a2 = _mm256_loadu_ps(src[2] + k), a3 = _mm256_loadu_ps(src[3] + k);
            __m256 a4 = _mm256_loadu_ps(src[4] + k), a5 = _mm256_loadu_ps(src[5] + k);
            __m256 a6 = _mm256_loadu_ps(src[6] + k), a7 = _mm256_loadu_ps(src[7] + k);
            __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
            __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
            __m256 t4 = _mm256_unpacklo_ps(a4, a5), t5 = _mm256_unpackhi_ps(a4, a5);
            __m256 t6 = _mm256_unpacklo_ps(a6, a7), t7 = _mm256_unpackhi_ps(a6, a7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float* d = dst + (size_t)k * nr;
            _mm256_storeu_ps(d + 0 * (size_t)nr, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(d + 1 * (size_t)nr, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(d + 2 * (size_t)nr, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(d + 3 * (size_t)nr, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(d + 4 * (size_t)nr, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(d + 5 * (size_t)nr, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(d + 6 * (size_t)nr, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(d + 7 * (size_t)nr, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
        for (; k < K; k++)
            for (r = 0; r < 8; r++) dst[(size_t)k * nr + r] = src[r][k];
    }
}
#endif

static void grucy_pack_t_f(int nr, int K, int c, int g0, int ng, int H, int j0,
                           const float* W, int ldw, float* P)
{
#if GRUCY_X86
    if (nr % 8 == 0 && __builtin_cpu_supports("avx2")) {
        grucy_pack_t_f_avx2(nr, K, c, g0, ng, H, j0, W, ldw, P);
        return;
    }
#endif
    grucy_pack_t_f_scalar(nr, K, c, g0, ng, H, j0, W, ldw, P);
}
static void grucy_pack_n_f(int nr, int K, int N, const float* W, int ldw, float* P)
{
    grucy_pack_n_f_scalar(nr, K, N, W, ldw, P);
}

/* The kernel for element type T on one ISA: vectors of VB bytes, MR rows per block.
 * A is read as A[i * ars + k * acs] (row-major: ars = lda, acs = 1; transposed, for the
 * weight gradients dW = dG^T X: ars = 1, acs = lda); B as panels: value (k, j) of panel p
 * at B + p * pstride + k * bk + j (packed: bk = NR, pstride = K * NR; a row-major (K, N)
 * array read in place: bk = ldb, pstride = NR, every panel full). */
#define GRUCY_PGEMM_REST(NAME, MR, R)                                                      \
    case R: if (R < MR) NAME##_block(R, K, A + (ptrdiff_t)i * ars, ars, acs, pp, bk,       \
                                     cp + (size_t)i * ldc, ldc, w, beta); break;

#define GRUCY_PGEMM_DEFINE(T, NAME, TARGET, VB, MR)                                        \
typedef T NAME##_v __attribute__((vector_size(VB)));                                       \
typedef T NAME##_vu __attribute__((vector_size(VB), aligned(sizeof(T)), may_alias));       \
                                                                                           \
/* Rows 0..R-1 of A times one panel; w: the panel's valid columns. */                      \
TARGET __attribute__((always_inline)) static inline void NAME##_block(                     \
    const int R, int K, const T* A, const ptrdiff_t ars, const ptrdiff_t acs, const T* P,  \
    ptrdiff_t bk, T* C, size_t ldc, int w, int beta)                                       \
{                                                                                          \
    GRUCY_CONTRACT                                                                         \
    enum { L = VB / sizeof(T) };                                                           \
    NAME##_v c0[MR], c1[MR];                                                               \
    int i, j, k;                                                                           \
    _Pragma("GCC unroll 8")                                                                \
    for (i = 0; i < R; i++) { c0[i] = (NAME##_v){0}; c1[i] = (NAME##_v){0}; }              \
    for (k = 0; k < K; k++) {                                                              \
        const NAME##_v w0 = *(const NAME##_vu*)(P + (ptrdiff_t)k * bk);                    \
        const NAME##_v w1 = *(const NAME##_vu*)(P + (ptrdiff_t)k * bk + L);                \
        _Pragma("GCC unroll 8")                                                            \
        for (i = 0; i < R; i++) {                                                          \
            const T a = A[i * ars + (ptrdiff_t)k * acs];                                   \
            c0[i] = c0[i] + a * w0;                                                        \
            c1[i] = c1[i] + a * w1;                                                        \
        }                                                                                  \
    }                                                                                      \
    if (w == 2 * L) {                                                                      \
        _Pragma("GCC unroll 8")                                                            \
        for (i = 0; i < R; i++) {                                                          \
            T* c = C + i * ldc;                                                            \
            if (beta) {                                                                    \
                c0[i] = c0[i] + *(NAME##_vu*)c;                                            \
                c1[i] = c1[i] + *(NAME##_vu*)(c + L);                                      \
            }                                                                              \
            *(NAME##_vu*)c = c0[i];                                                        \
            *(NAME##_vu*)(c + L) = c1[i];                                                  \
        }                                                                                  \
    } else {  /* the last panel: the same sums, copied column by column */                \
        T tmp[2 * L];                                                                      \
        for (i = 0; i < R; i++) {                                                          \
            T* c = C + i * ldc;                                                            \
            *(NAME##_vu*)tmp = c0[i];                                                      \
            *(NAME##_vu*)(tmp + L) = c1[i];                                                \
            for (j = 0; j < w; j++) c[j] = beta ? tmp[j] + c[j] : tmp[j];                  \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* One or two rows times up to four panels at once: with a single row a panel's two    \
 * accumulators wait on each other's FMA latency (35 GFLOP/s at M = 1, K = 64);         \
 * eight independent chains keep the units busy.  Each output is the same chain. */      \
TARGET __attribute__((always_inline)) static inline void NAME##_wide(                      \
    const int R, const int NP, int K, const T* A, const ptrdiff_t ars,                     \
    const ptrdiff_t acs, const T* P, ptrdiff_t bk, ptrdiff_t pstride, T* C, size_t ldc,    \
    int wlast, int beta)                                                                   \
{                                                                                          \
    GRUCY_CONTRACT                                                                         \
    enum { L = VB / sizeof(T) };                                                           \
    NAME##_v c[2][8];                                                                      \
    int i, j, k, q;                                                                        \
    _Pragma("GCC unroll 8")                                                                \
    for (q = 0; q < 2 * NP; q++) { c[0][q] = (NAME##_v){0}; c[1][q] = (NAME##_v){0}; }    \
    for (k = 0; k < K; k++) {                                                              \
        _Pragma("GCC unroll 8")                                                            \
        for (q = 0; q < 2 * NP; q++) {                                                     \
            const NAME##_v wv = *(const NAME##_vu*)(P + (ptrdiff_t)(q / 2) * pstride      \
                                                    + (ptrdiff_t)k * bk + (q % 2) * L);    \
            c[0][q] = c[0][q] + A[(ptrdiff_t)k * acs] * wv;                                \
            if (R > 1) c[1][q] = c[1][q] + A[ars + (ptrdiff_t)k * acs] * wv;               \
        }                                                                                  \
    }                                                                                      \
    for (i = 0; i < R; i++) {                                                              \
        T* crow = C + i * ldc;                                                             \
        for (q = 0; q < NP; q++) {                                                         \
            int w = q == NP - 1 ? wlast : 2 * L;                                           \
            T tmp[2 * L];                                                                  \
            *(NAME##_vu*)tmp = c[i][2 * q];                                                \
            *(NAME##_vu*)(tmp + L) = c[i][2 * q + 1];                                      \
            for (j = 0; j < w; j++)                                                        \
                crow[q * 2 * L + j] = beta ? tmp[j] + crow[q * 2 * L + j] : tmp[j];        \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
                                                                                           \
TARGET __attribute__((always_inline)) static inline void NAME##_body(                      \
    int M, int N, int K, const T* A, const ptrdiff_t ars, const ptrdiff_t acs, const T* B, \
    ptrdiff_t bk, ptrdiff_t pstride, T* C, int ldc, int beta, int backwards)               \
{                                                                                          \
    enum { L = VB / sizeof(T) };                                                           \
    const int np = (N + 2 * L - 1) / (2 * L);                                              \
    int q, p, i, w;                                                                        \
    if (M <= 2) {  /* one or two rows: four panels at a time */                           \
        for (q = 0; q < np; q += 4) {                                                      \
            const int n4 = np - q < 4 ? np - q : 4;                                        \
            const int wl = N - (q + n4 - 1) * 2 * L;                                       \
            const int w4 = wl < 2 * L ? wl : 2 * L;                                        \
            const T* pp = B + (ptrdiff_t)q * pstride;                                      \
            T* cp = C + q * 2 * L;                                                         \
            switch (n4 * 2 + M) {                                                          \
            case 3: NAME##_wide(1, 1, K, A, ars, acs, pp, bk, pstride, cp, ldc, w4, beta); break; \
            case 4: NAME##_wide(2, 1, K, A, ars, acs, pp, bk, pstride, cp, ldc, w4, beta); break; \
            case 5: NAME##_wide(1, 2, K, A, ars, acs, pp, bk, pstride, cp, ldc, w4, beta); break; \
            case 6: NAME##_wide(2, 2, K, A, ars, acs, pp, bk, pstride, cp, ldc, w4, beta); break; \
            case 7: NAME##_wide(1, 3, K, A, ars, acs, pp, bk, pstride, cp, ldc, w4, beta); break; \
            case 8: NAME##_wide(2, 3, K, A, ars, acs, pp, bk, pstride, cp, ldc, w4, beta); break; \
            case 9: NAME##_wide(1, 4, K, A, ars, acs, pp, bk, pstride, cp, ldc, w4, beta); break; \
            default: NAME##_wide(2, 4, K, A, ars, acs, pp, bk, pstride, cp, ldc, w4, beta); break; \
            }                                                                              \
        }                                                                                  \
        return;                                                                            \
    }                                                                                      \
    for (q = 0; q < np; q++) {                                                             \
        p = backwards ? np - 1 - q : q;                                                    \
        w = N - p * 2 * L < 2 * L ? N - p * 2 * L : 2 * L;                                 \
        const T* pp = B + (ptrdiff_t)p * pstride;                                          \
        T* cp = C + p * 2 * L;                                                             \
        for (i = 0; i + MR <= M; i += MR)                                                  \
            NAME##_block(MR, K, A + (ptrdiff_t)i * ars, ars, acs, pp, bk,                  \
                         cp + (size_t)i * ldc, ldc, w, beta);                              \
        switch (M - i) {  /* the last M % MR rows, R a constant in each case */           \
        GRUCY_PGEMM_REST(NAME, MR, 7) GRUCY_PGEMM_REST(NAME, MR, 6)                        \
        GRUCY_PGEMM_REST(NAME, MR, 5) GRUCY_PGEMM_REST(NAME, MR, 4)                        \
        GRUCY_PGEMM_REST(NAME, MR, 3) GRUCY_PGEMM_REST(NAME, MR, 2)                        \
        GRUCY_PGEMM_REST(NAME, MR, 1)                                                      \
        default: break;                                                                    \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* A row-major (M, K), leading dimension lda. */                                           \
TARGET static void NAME(int M, int N, int K, const T* A, int lda, const T* B,             \
                        ptrdiff_t bk, ptrdiff_t pstride, T* C, int ldc, int beta,          \
                        int backwards)                                                     \
{                                                                                          \
    NAME##_body(M, N, K, A, lda, 1, B, bk, pstride, C, ldc, beta, backwards);              \
}                                                                                          \
                                                                                           \
/* A transposed: A[i][k] = A[k * lda + i] (A is a (K, M) array). */                        \
TARGET static void NAME##_at(int M, int N, int K, const T* A, int lda, const T* B,        \
                             ptrdiff_t bk, ptrdiff_t pstride, T* C, int ldc, int beta,     \
                             int backwards)                                                \
{                                                                                          \
    NAME##_body(M, N, K, A, 1, lda, B, bk, pstride, C, ldc, beta, backwards);              \
}

GRUCY_PGEMM_DEFINE(float, grucy_pgemm_f_portable, GRUCY_T_PORTABLE, 16, 6)
GRUCY_PGEMM_DEFINE(double, grucy_pgemm_d_portable, GRUCY_T_PORTABLE, 16, 6)
#if GRUCY_X86
GRUCY_PGEMM_DEFINE(float, grucy_pgemm_f_avx2, GRUCY_T_AVX2, 32, 6)
GRUCY_PGEMM_DEFINE(double, grucy_pgemm_d_avx2, GRUCY_T_AVX2, 32, 6)
GRUCY_PGEMM_DEFINE(float, grucy_pgemm_f_avx512, GRUCY_T_AVX512, 64, 8)
GRUCY_PGEMM_DEFINE(double, grucy_pgemm_d_avx512, GRUCY_T_AVX512, 64, 8)
#endif

typedef void (*grucy_pgemm_f_t)(int, int, int, const float*, int, const float*, ptrdiff_t,
                                ptrdiff_t, float*, int, int, int);
typedef void (*grucy_pgemm_d_t)(int, int, int, const double*, int, const double*,
                                ptrdiff_t, ptrdiff_t, double*, int, int, int);

/* The kernels in use (grucy_isa_select): A row-major, and A transposed. */
static int grucy_isa = GRUCY_ISA_PORTABLE;
static grucy_pgemm_f_t grucy_pgemm_f = grucy_pgemm_f_portable;
static grucy_pgemm_d_t grucy_pgemm_d = grucy_pgemm_d_portable;
static grucy_pgemm_f_t grucy_pgemm_at_f = grucy_pgemm_f_portable_at;
static grucy_pgemm_d_t grucy_pgemm_at_d = grucy_pgemm_d_portable_at;

#define GRUCY_USE(ISA)                                                                     \
    grucy_pgemm_f = grucy_pgemm_f_##ISA; grucy_pgemm_d = grucy_pgemm_d_##ISA;              \
    grucy_pgemm_at_f = grucy_pgemm_f_##ISA##_at; grucy_pgemm_at_d = grucy_pgemm_d_##ISA##_at;

/* Use the kernels of `isa` (GRUCY_ISA_BLAS: the kernels call BLAS for every product;
 * the portable kernels stay selected for the streaming snapshot).  Returns 0, or -1
 * when this CPU or build cannot run them. */
static int grucy_isa_select(int isa)
{
    if (isa != GRUCY_ISA_BLAS && isa > grucy_isa_best())
        return -1;
    grucy_isa = isa;
    switch (isa) {
#if GRUCY_X86
    case GRUCY_ISA_AVX512: GRUCY_USE(avx512) break;
    case GRUCY_ISA_AVX2: GRUCY_USE(avx2) break;
#endif
    default: GRUCY_USE(portable)
    }
    return 0;
}

/* Panel width of the kernels in use. */
static inline int grucy_nr_f(void) { return grucy_nr(grucy_isa, 4); }
static inline int grucy_nr_d(void) { return grucy_nr(grucy_isa, 8); }

#endif
