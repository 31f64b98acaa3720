/* A small GEMM whose right operand is packed once and reused at every time step.
 *
 * Why: the recurrent products h @ W_hh^T (forward) and dG @ W_hh (backward) multiply a
 * small block of rows (the batch) by the same weight matrix T times.  A BLAS GEMM call
 * re-packs the weight into its cache-friendly layout on every call; with B = 32 that
 * packing is a quarter of the CPU time (bench/README.md, "Profile").  scipy's BLAS has
 * no API to keep a packed operand (MKL's cblas_sgemm_pack is not in the BLAS standard),
 * so the kernels pack W_hh themselves once per sequence and run this register-blocked
 * AVX-512 kernel on it.  On CPUs without AVX-512 grucy_pgemm_available() is 0 and the
 * kernels call BLAS instead.
 *
 * Layout of a packed (K, N) operand B: panels of NR = 2 vectors of columns, each panel
 * K rows of NR contiguous values, zero-padded on the right; panel p starts at
 * P + p * pstride (pstride = K_packed * NR, so a range of rows k0.. of a packed
 * operand is P + k0 * NR with the same pstride).
 *
 * C (M, N) = A (M, K) @ B (+ C when beta), A and C row-major with leading dimensions
 * lda, ldc.  The sum over k runs in order 0..K-1 with one FMA per term, the same for
 * every M, N and thread count.  Panels are visited first to last, or last to first when
 * ``backwards``: a recurrence alternating the two finds the panels it used last still
 * in L1 (a weight a little larger than L1, e.g. 48 KB at H = 64, no longer misses in
 * full at every step); the results are the same either way.
 */
#ifndef GRUCY_PGEMM_H
#define GRUCY_PGEMM_H

#include <stddef.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(GRUCY_NO_PGEMM)
#define GRUCY_PGEMM 1
#include <immintrin.h>
#define GRUCY_AVX512 __attribute__((target("avx512f")))
#define GRUCY_AVX512_INLINE __attribute__((target("avx512f"), always_inline)) static inline
#else
#define GRUCY_PGEMM 0
#endif

#define GRUCY_MR 8              /* rows of A per register block */

static int grucy_pgemm_available(void)
{
#if GRUCY_PGEMM
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

/* Values of a packed (K, N) operand: K * N rounded up to whole panels. */
static inline size_t grucy_pgemm_size(int K, int N, int nr)
{
    return (size_t)K * (size_t)((N + nr - 1) / nr) * (size_t)nr;
}

/* GRUCY_PGEMM_DEFINE(T, SFX, V, L, MASK, SET1, LOADU, FMADD, MASKZ_LOADU, MASK_STOREU,
 * ADD, ZERO): the packing routines and the kernel for element type T with vectors V of
 * L lanes; NR = 2L. */
#define GRUCY_PGEMM_COMMON(T, SFX, L)                                                      \
                                                                                           \
enum { grucy_pgemm_nr_##SFX = 2 * (L) };                                                   \
                                                                                           \
/* Pack B[k][j] = W[j * ldw + k] (B = W^T: rows of W become columns); rows of W are      \
 * taken in runs of c: column j is row (g0 + j / c) * H + j0 + j % c, i.e. gates         \
 * g0, g0 + 1, ... of units j0 .. j0 + c - 1 (ng gates, N = ng * c columns). */          \
static void grucy_pack_t_##SFX(int K, int c, int g0, int ng, int H, int j0,               \
                               const T* W, int ldw, T* P)                                 \
{                                                                                          \
    const int NR = 2 * (L), N = ng * c;                                                    \
    int j, k;                                                                              \
    for (j = 0; j < (N + NR - 1) / NR * NR; j++) {                                         \
        T* dst = P + (size_t)(j / NR) * K * NR + j % NR;                                   \
        if (j < N) {                                                                       \
            const T* src = W + (size_t)((g0 + j / c) * H + j0 + j % c) * ldw;             \
            for (k = 0; k < K; k++) dst[(size_t)k * NR] = src[k];                          \
        } else {                                                                           \
            for (k = 0; k < K; k++) dst[(size_t)k * NR] = 0;                               \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* Pack B[k][j] = W[k * ldw + j], K rows and N columns. */                                 \
static void grucy_pack_n_##SFX(int K, int N, const T* W, int ldw, T* P)                   \
{                                                                                          \
    const int NR = 2 * (L);                                                                \
    int p, j, k, nr;                                                                       \
    for (p = 0; p * NR < N; p++) {                                                         \
        nr = N - p * NR < NR ? N - p * NR : NR;                                            \
        for (k = 0; k < K; k++) {                                                          \
            T* dst = P + (size_t)p * K * NR + (size_t)k * NR;                              \
            const T* src = W + (size_t)k * ldw + p * NR;                                   \
            for (j = 0; j < nr; j++) dst[j] = src[j];                                      \
            for (; j < NR; j++) dst[j] = 0;                                                \
        }                                                                                  \
    }                                                                                      \
}

#if GRUCY_PGEMM

/* One case of the remainder dispatch in grucy_pgemm_*: a block of R rows. */
#define GRUCY_PGEMM_REST(SFX, R)                                                           \
    case R: grucy_pgemm_block_##SFX(R, K, A + (size_t)i * lda, lda, pp,                    \
                                    cp + (size_t)i * ldc, ldc, m0, m1, beta); break;

#define GRUCY_PGEMM_DEFINE(T, SFX, V, L, MASK, SET1, LOADU, FMADD, MASKZ_LOADU,            \
                           MASK_STOREU, ADD, ZERO)                                         \
GRUCY_PGEMM_COMMON(T, SFX, L)                                                              \
                                                                                           \
/* One register block: rows 0..MR-1 of A times one packed panel (2 vectors). */            \
GRUCY_AVX512_INLINE void grucy_pgemm_block_##SFX(                                          \
    const int MR, int K, const T* A, size_t lda, const T* P, T* C, size_t ldc,            \
    MASK m0, MASK m1, int beta)                                                            \
{                                                                                          \
    V c0[GRUCY_MR], c1[GRUCY_MR];                                                          \
    int i, k;                                                                              \
    _Pragma("GCC unroll 8")                                                                \
    for (i = 0; i < MR; i++) { c0[i] = ZERO(); c1[i] = ZERO(); }                           \
    for (k = 0; k < K; k++) {                                                              \
        const V w0 = LOADU(P + (size_t)k * 2 * (L));                                       \
        const V w1 = LOADU(P + (size_t)k * 2 * (L) + (L));                                 \
        _Pragma("GCC unroll 8")                                                            \
        for (i = 0; i < MR; i++) {                                                         \
            const V a = SET1(A[i * lda + k]);                                              \
            c0[i] = FMADD(a, w0, c0[i]);                                                   \
            c1[i] = FMADD(a, w1, c1[i]);                                                   \
        }                                                                                  \
    }                                                                                      \
    _Pragma("GCC unroll 8")                                                                \
    for (i = 0; i < MR; i++) {                                                             \
        T* c = C + i * ldc;                                                                \
        if (beta) {                                                                        \
            c0[i] = ADD(c0[i], MASKZ_LOADU(m0, c));                                        \
            c1[i] = ADD(c1[i], MASKZ_LOADU(m1, c + (L)));                                  \
        }                                                                                  \
        MASK_STOREU(c, m0, c0[i]);                                                         \
        MASK_STOREU(c + (L), m1, c1[i]);                                                   \
    }                                                                                      \
}                                                                                          \
                                                                                           \
GRUCY_AVX512 static void grucy_pgemm_##SFX(int M, int N, int K, const T* A, int lda,      \
                                           const T* P, size_t pstride, T* C, int ldc,     \
                                           int beta, int backwards)                       \
{                                                                                          \
    const int NR = 2 * (L), np = (N + NR - 1) / NR;                                        \
    const MASK full = (MASK)~(MASK)0;                                                      \
    int q, p, i, nr;                                                                       \
    MASK m0, m1;                                                                           \
    for (q = 0; q < np; q++) {                                                             \
        p = backwards ? np - 1 - q : q;                                                    \
        nr = N - p * NR < NR ? N - p * NR : NR;                                            \
        m0 = nr >= (L) ? full : (MASK)((1u << nr) - 1);                                    \
        m1 = nr >= NR ? full : nr <= (L) ? (MASK)0 : (MASK)((1u << (nr - (L))) - 1);       \
        const T* pp = P + (size_t)p * pstride;                                             \
        T* cp = C + p * NR;                                                                \
        for (i = 0; i + GRUCY_MR <= M; i += GRUCY_MR)                                      \
            grucy_pgemm_block_##SFX(GRUCY_MR, K, A + (size_t)i * lda, lda, pp,             \
                                    cp + (size_t)i * ldc, ldc, m0, m1, beta);              \
        switch (M - i) {  /* the last M % MR rows, with MR a constant each time */    \
        GRUCY_PGEMM_REST(SFX, 7) GRUCY_PGEMM_REST(SFX, 6) GRUCY_PGEMM_REST(SFX, 5)          \
        GRUCY_PGEMM_REST(SFX, 4) GRUCY_PGEMM_REST(SFX, 3) GRUCY_PGEMM_REST(SFX, 2)          \
        GRUCY_PGEMM_REST(SFX, 1)                                                           \
        default: break;                                                                    \
        }                                                                                  \
    }                                                                                      \
}

GRUCY_PGEMM_DEFINE(float, f, __m512, 16, __mmask16, _mm512_set1_ps, _mm512_loadu_ps,
                   _mm512_fmadd_ps, _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps,
                   _mm512_add_ps, _mm512_setzero_ps)
GRUCY_PGEMM_DEFINE(double, d, __m512d, 8, __mmask8, _mm512_set1_pd, _mm512_loadu_pd,
                   _mm512_fmadd_pd, _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd,
                   _mm512_add_pd, _mm512_setzero_pd)

#else  /* no AVX-512 kernel on this compiler/platform: never called (available() == 0) */

GRUCY_PGEMM_COMMON(float, f, 16)
GRUCY_PGEMM_COMMON(double, d, 8)
static void grucy_pgemm_f(int M, int N, int K, const float* A, int lda, const float* P,
                          size_t pstride, float* C, int ldc, int beta, int backwards) {}
static void grucy_pgemm_d(int M, int N, int K, const double* A, int lda, const double* P,
                          size_t pstride, double* C, int ldc, int beta, int backwards) {}

#endif
#endif
