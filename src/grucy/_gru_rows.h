/* The fused per-row passes of the GRU, one row of the batch and H hidden units each.
 *
 * Written in C for one reason: `restrict`.  Each gate's slice (r, z, n) is its own
 * pointer, so gcc can prove the loops free of overlap and vectorize them; the same code
 * written in Cython (one pointer with H offsets) stays scalar.  Each kernel is defined
 * once, for float and double, by GRUCY_ROWS below.  Equations: docs/design.md.
 *
 * Naming: x* input projection W_i x (no bias), h* recurrent projection, b* biases, for
 * gates r, z, n.  In the forward passes the x* slots are overwritten with the gates
 * r, z, n that backward reads; h is the state (h_prev in, h_new out).
 */
#ifndef GRUCY_GRU_ROWS_H
#define GRUCY_GRU_ROWS_H

#include <math.h>
#include <stddef.h>
#include "_fastmath.h"

static inline double grucy_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* The build targets baseline x86-64 (SSE2) so that wheels run anywhere; these loops are
 * where wider vectors pay, so GCC compiles each kernel also for AVX2 and AVX-512 and
 * picks the best one for the running CPU when the module loads (an ifunc); without FMA
 * contraction (below) every clone gives the same bits. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(GRUCY_NO_CLONES)
#define GRUCY_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GRUCY_CLONES
#endif

/* No fused multiply-adds in these passes: GCC contracted `n + z * (h - n)` in the vector
 * body of a loop but not in its remainder, so a unit's new state depended on where the
 * row was cut (a chunk of 24 units: units 16-23 differed by an ulp).  Without
 * contraction the vector body, the remainder and every clone (AVX-512, AVX2, SSE2) do the
 * same IEEE operations, so the passes give the same bits on every CPU. */
#if defined(__clang__)
#define GRUCY_NO_CONTRACT _Pragma("clang fp contract(off)")   /* (block-scoped) */
#else
#define GRUCY_NO_CONTRACT
#endif

#define GRUCY_ROWS(T, SFX, SIGMOID, TANH)                                                 \
                                                                                          \
/* reset-after: n = tanh(xn + bin + r * (hn + bhn)); aux = hn + bhn */                    \
GRUCY_CLONES static void grucy_fwd_after_##SFX(                                                 \
    int H, T *restrict xr, T *restrict xz, T *restrict xn,                                \
    const T *restrict hr, const T *restrict hz, const T *restrict hn,                     \
    const T *restrict bir, const T *restrict biz, const T *restrict bin,                  \
    const T *restrict bhr, const T *restrict bhz, const T *restrict bhn,                  \
    T *restrict h, T *restrict y, T *restrict aux)                                        \
{                                                                                         \
    GRUCY_NO_CONTRACT                                                                     \
    for (int j = 0; j < H; j++) {                                                         \
        T r = SIGMOID(xr[j] + bir[j] + hr[j] + bhr[j]);                                   \
        T z = SIGMOID(xz[j] + biz[j] + hz[j] + bhz[j]);                                   \
        T a = hn[j] + bhn[j];                                                             \
        T n = TANH(xn[j] + bin[j] + r * a);                                               \
        T hnew = n + z * (h[j] - n);                                                      \
        h[j] = hnew;                                                                      \
        y[j] = hnew;                                                                      \
        xr[j] = r;                                                                        \
        xz[j] = z;                                                                        \
        xn[j] = n;                                                                        \
        aux[j] = a;                                                                       \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* reset-before, first half: r and z; aux = r * h (the input of W_hn) */                  \
GRUCY_CLONES static void grucy_fwd_before_rz_##SFX(                                             \
    int H, T *restrict xr, T *restrict xz,                                                \
    const T *restrict hr, const T *restrict hz,                                           \
    const T *restrict bir, const T *restrict biz,                                         \
    const T *restrict bhr, const T *restrict bhz,                                         \
    const T *restrict h, T *restrict aux)                                                 \
{                                                                                         \
    GRUCY_NO_CONTRACT                                                                     \
    for (int j = 0; j < H; j++) {                                                         \
        T r = SIGMOID(xr[j] + bir[j] + hr[j] + bhr[j]);                                   \
        xz[j] = SIGMOID(xz[j] + biz[j] + hz[j] + bhz[j]);                                 \
        xr[j] = r;                                                                        \
        aux[j] = r * h[j];                                                                \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* reset-before, second half: hn = W_hn (r * h); z already in xz */                       \
GRUCY_CLONES static void grucy_fwd_before_n_##SFX(                                              \
    int H, const T *restrict z, T *restrict xn, const T *restrict hn,                     \
    const T *restrict bin, const T *restrict bhn, T *restrict h, T *restrict y)           \
{                                                                                         \
    GRUCY_NO_CONTRACT                                                                     \
    for (int j = 0; j < H; j++) {                                                         \
        T n = TANH(xn[j] + bin[j] + hn[j] + bhn[j]);                                      \
        T hnew = n + z[j] * (h[j] - n);                                                   \
        h[j] = hnew;                                                                      \
        y[j] = hnew;                                                                      \
        xn[j] = n;                                                                        \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* reset-after backward.  dh: gradient into h_new in, its direct part dh * z out.        \
 * Writes the hidden-side gate gradients (dr, dz, dhn) and the input-side dn. */          \
GRUCY_CLONES static void grucy_bwd_after_##SFX(                                                 \
    int H, const T *restrict dy, T *restrict dh,                                          \
    const T *restrict r, const T *restrict z, const T *restrict n,                        \
    const T *restrict aux, const T *restrict hp,                                          \
    T *restrict dr, T *restrict dz, T *restrict dhn, T *restrict dxn)                     \
{                                                                                         \
    GRUCY_NO_CONTRACT                                                                     \
    for (int j = 0; j < H; j++) {                                                         \
        T d = dh[j] + dy[j];                                                              \
        T dan = d * (1 - z[j]) * (1 - n[j] * n[j]);                                       \
        dr[j] = dan * aux[j] * r[j] * (1 - r[j]);                                         \
        dz[j] = d * (hp[j] - n[j]) * z[j] * (1 - z[j]);                                   \
        dhn[j] = dan * r[j];                                                              \
        dxn[j] = dan;                                                                     \
        dh[j] = d * z[j];                                                                 \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* reset-before backward, first half: dz and dn (input and hidden side alike) */          \
GRUCY_CLONES static void grucy_bwd_before_zn_##SFX(                                             \
    int H, const T *restrict dy, T *restrict dh,                                          \
    const T *restrict z, const T *restrict n, const T *restrict hp,                       \
    T *restrict dz, T *restrict dn)                                                       \
{                                                                                         \
    GRUCY_NO_CONTRACT                                                                     \
    for (int j = 0; j < H; j++) {                                                         \
        T d = dh[j] + dy[j];                                                              \
        dz[j] = d * (hp[j] - n[j]) * z[j] * (1 - z[j]);                                   \
        dn[j] = d * (1 - z[j]) * (1 - n[j] * n[j]);                                       \
        dh[j] = d * z[j];                                                                 \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* reset-before backward, second half: drh = d(r * h_prev) = dn @ W_hn */                 \
GRUCY_CLONES static void grucy_bwd_before_r_##SFX(                                              \
    int H, const T *restrict drh, T *restrict dh, const T *restrict r,                    \
    const T *restrict hp, T *restrict dr)                                                 \
{                                                                                         \
    GRUCY_NO_CONTRACT                                                                     \
    for (int j = 0; j < H; j++) {                                                         \
        dr[j] = drh[j] * hp[j] * r[j] * (1 - r[j]);                                       \
        dh[j] += drh[j] * r[j];                                                           \
    }                                                                                     \
}

/* float32 is the fast path (vectorized approximations, a few ulp); float64 uses libm so
 * that it agrees with other float64 implementations to rounding. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
GRUCY_ROWS(float, f, grucy_sigmoidf, grucy_tanhf)
GRUCY_ROWS(double, d, grucy_sigmoid, tanh)

/* The tests' probes of _fastmath.h (_gru._fast_expf, _fast_sigmoidf, _fast_tanhf): here,
 * without contraction like the passes, so that they compute what the passes compute.
 * Written in Cython they were contracted on ARM64 (FMA is baseline there): up to 4 ulp
 * and about 1% of the values away from the passes' (and x86's) bits. */
static void grucy_fast_probe_f(int which, const float *restrict x, float *restrict out,
                               ptrdiff_t n)
{
    GRUCY_NO_CONTRACT
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = which == 0 ? grucy_expf(x[i]) : which == 1 ? grucy_sigmoidf(x[i])
                                                           : grucy_tanhf(x[i]);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
