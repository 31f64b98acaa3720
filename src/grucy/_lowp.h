/* Low-precision GEMMs: bf16 operands with float32 accumulation, and int8 (u8 x s8) with
 * int32 accumulation.  Same role and contract as _pgemm.h (a weight packed once per call,
 * every output ONE chain over k in order, so results depend on no thread count, batch
 * position or vector width); only the arithmetic of a chain differs.  docs/design.md,
 * section 6, says why; tests/test_lowp.py checks every kernel against a NumPy emulation
 * of the arithmetic below, bit for bit.
 *
 * bf16 (what VDPBF16PS does, Intel SDM; AMD Zen 4/5 do the same, checked here on 4e6
 * random pairs including denormals and signed zeros).
 *   Conversion of a float32 x to bf16 (VCVTNEPS2BF16): zero or denormal -> zero of x's
 *   sign; inf kept; NaN -> quiet NaN; otherwise round to nearest even.  Weights and the
 *   A rows are converted once per use, and never hold a denormal.
 *   The chain of C[i][j]: acc = +0; for each pair p = 0, 1, ... of k (K odd: a zero
 *   pads the last pair)
 *       acc = ftz(fma(a[2p+1], b[2p+1], acc));  acc = ftz(fma(a[2p], b[2p], acc))
 *   -- the odd element first, each step one IEEE float32 FMA rounded to nearest even,
 *   results below 2^-126 in magnitude flushed to a zero of their sign (ftz).  The product
 *   of two bf16 values is exact in float32, so a step is also the float32 add of acc and
 *   the product.  Then C = acc, or C + acc (an ordinary float32 add) when accumulating.
 *   Kernels: "avx512bf16" (VDPBF16PS), and exact emulations: "avx512" and "avx2" run
 *   the float32 kernels of _pgemm.h on the bf16 values as floats, pair-swapped so that
 *   the chain takes the odd element first, with MXCSR's flush-to-zero and
 *   denormals-are-zero bits set (the same flush, checked against VDPBF16PS on edge
 *   cases); "portable" does each step in float64 and flushes in C (any CPU).
 *
 * int8 (dynamic quantization, as fbgemm and oneDNN do it, per row instead of per
 *   tensor so that a row's result does not depend on the other rows).
 *   A row x of K floats: amax = max |x|; if 127 / amax is finite, inv = 127 / amax and
 *   q[k] = round_half_even(x[k] * inv) (float32 products), clamped to [-127, 127],
 *   stored as the byte q + 128 (VPDPBUSD multiplies unsigned by signed bytes), scale
 *   sa = amax / 127; otherwise (amax = 0, or so small that 127 / amax overflows) q = 0
 *   and sa = 0.
 *   A weight row w (an output column): int8 values and a float32 scale sw, quantized
 *   once (grucy.quantize; symmetric, per output channel).
 *   C[i][j] = ((float)(S - 128 * colsum_j) * sa_i) * sw_j, two float32 products in that
 *   order, where S = sum over k of (q[k] + 128) * w[k] in exact int32 arithmetic (so
 *   the order of the sum does not matter) and colsum_j = sum over k of w[k].
 *   Kernels: "avx512vnni" (VPDPBUSD) and int32-vector emulations ("avx512", "avx2",
 *   "portable"); integer sums are exact, so they agree by construction.
 *
 * Layouts (NR = grucy_nr(isa, 4) columns per panel, as the float32 kernel of the ISA):
 *   bf16 native: A rows of uint16 (K padded to even, KP); a packed (K, N) operand is
 *     panels of KP/2 rows of NR uint32 words (the pair k = 2p, 2p+1 of a column: low
 *     half element 2p, high half 2p+1).
 *   bf16 emulated: A rows of float (the bf16 values, pairs swapped: element 2p+1 first),
 *     KP of them; panels of KP rows of NR floats, rows swapped in pairs the same way.
 *   Either way rows k0.. (k0 even) of a packed operand start k0 * NR * esz bytes in.
 *   int8: A rows of uint8 (K padded to a multiple of 4, KQ, with zeros); panels of KQ/4
 *     rows of NR words (4 bytes of a column: k = 4r .. 4r + 3), then per padded column
 *     128 * colsum (int32) and the scale sw (float32).
 */
#ifndef GRUCY_LOWP_H
#define GRUCY_LOWP_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "_pgemm.h"

enum { GRUCY_LP_PORTABLE = 0, GRUCY_LP_AVX2 = 1, GRUCY_LP_AVX512 = 2, GRUCY_LP_NATIVE = 3 };

#if GRUCY_X86
#include <cpuid.h>
#define GRUCY_T_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define GRUCY_T_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#endif
#define GRUCY_AI __attribute__((always_inline)) static inline

/* The CPU's AVX512_BF16 (bf16 = 1) or AVX512_VNNI (bf16 = 0), with AVX-512 usable. */
static int grucy_cpu_has_lowp(int bf16)
{
#if GRUCY_X86
    unsigned a, b, c, d;
    if (grucy_isa_best() != GRUCY_ISA_AVX512) return 0;
    if (bf16) {
        if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
        return (a >> 5) & 1;
    }
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (c >> 11) & 1;
#else
    (void)bf16;
    return 0;
#endif
}

static int grucy_bf16_kind = GRUCY_LP_PORTABLE, grucy_i8_kind = GRUCY_LP_PORTABLE;

/* The panel width of a kind: the float32 kernel's of the same vector width. */
static inline int grucy_lp_nr(int kind)
{
    return grucy_nr(kind == GRUCY_LP_NATIVE ? GRUCY_ISA_AVX512 : kind, 4);
}

/* Choose the kernels: the native instructions when the CPU has them and `native` allows,
 * else the emulation of vector width `isa` (GRUCY_ISA_* of _pgemm.h; BLAS: the best). */
static void grucy_lp_select(int isa, int native)
{
    if (isa == GRUCY_ISA_BLAS) isa = grucy_isa_best();
    grucy_bf16_kind = native && isa == GRUCY_ISA_AVX512 && grucy_cpu_has_lowp(1)
                      ? GRUCY_LP_NATIVE : isa;
    grucy_i8_kind = native && isa == GRUCY_ISA_AVX512 && grucy_cpu_has_lowp(0)
                    ? GRUCY_LP_NATIVE : isa;
}

/* ====================================================================================
 * bf16
 * ==================================================================================== */

/* VCVTNEPS2BF16 on one value (its bits in, the bf16 bits out). */
static inline uint32_t grucy_bf16_bits(uint32_t x)
{
    uint32_t e = x & 0x7f800000u;
    if (e == 0) return (x >> 16) & 0x8000u;
    if (e == 0x7f800000u) return (x & 0x7fffffu) ? ((x >> 16) | 0x40u) : (x >> 16);
    return (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
}

static inline uint32_t grucy_f32_bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline float grucy_bits_f32(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

/* x rounded to bf16, as a float. */
static inline float grucy_bf16_round(float x)
{
    return grucy_bits_f32(grucy_bf16_bits(grucy_f32_bits(x)) << 16);
}

static inline int grucy_bf16_kp(int K) { return (K + 1) & ~1; }
/* Bytes of one A element and of one packed (k, j) value. */
static inline size_t grucy_bf16_esz(void) { return grucy_bf16_kind == GRUCY_LP_NATIVE ? 2 : 4; }
/* Bytes of a packed (K, N) operand, and of one panel. */
static inline size_t grucy_bf16_panel_bytes(int K)
{
    return (size_t)grucy_bf16_kp(K) * grucy_lp_nr(grucy_bf16_kind) * grucy_bf16_esz();
}
static inline size_t grucy_bf16_pack_bytes(int K, int N)
{
    int nr = grucy_lp_nr(grucy_bf16_kind);
    return (size_t)((N + nr - 1) / nr) * grucy_bf16_panel_bytes(K);
}

/* Element (i, k) of A: A[i * ars + k * acs]. */
#define GRUCY_A(A, i, k) (A)[(ptrdiff_t)(i) * ars + (ptrdiff_t)(k) * acs]

/* The 32-bit word at column `col` of row i of the converted matrix: native, the pair
 * col = p (low half element 2p); emulated, element col ^ 1 as a rounded float. */
static inline uint32_t grucy_bf16_word(int native, int K, const float* A, ptrdiff_t ars,
                                       ptrdiff_t acs, int i, int col)
{
    if (native) {
        uint32_t lo = 2 * col < K ? grucy_bf16_bits(grucy_f32_bits(GRUCY_A(A, i, 2 * col))) : 0;
        uint32_t hi = 2 * col + 1 < K
            ? grucy_bf16_bits(grucy_f32_bits(GRUCY_A(A, i, 2 * col + 1))) : 0;
        return lo | (hi << 16);
    }
    return (col ^ 1) < K ? grucy_bf16_bits(grucy_f32_bits(GRUCY_A(A, i, col ^ 1))) << 16 : 0;
}

#if GRUCY_X86
/* Native conversion of contiguous rows (acs = 1): VCVTNEPS2BF16, 16 values at a time. */
GRUCY_T_BF16 static void grucy_bf16_cvt_rows_native(int M, int K, const float* A,
                                                    ptrdiff_t lda, uint16_t* out, int ldo)
{
    int i, k;
    for (i = 0; i < M; i++) {
        const float* a = A + (ptrdiff_t)i * lda;
        uint16_t* o = out + (ptrdiff_t)i * ldo;
        for (k = 0; k + 16 <= K; k += 16)
            _mm256_storeu_si256((__m256i*)(o + k),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(a + k)));
        if (k < K) {
            __mmask16 m = (__mmask16)((1u << (K - k)) - 1);
            __m256i v = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, a + k));
            _mm256_mask_storeu_epi16(o + k, m, v);
        }
        if (K & 1) o[K] = 0;
    }
}

/* 16 words of pairs: word i = (bf16(lo[i]), bf16(hi[i])) for the lanes of mask m. */
GRUCY_T_BF16 GRUCY_AI __m512i grucy_bf16_pairs16(const float* lo, const float* hi,
                                                  __mmask16 m)
{
    const __m512i l = _mm512_cvtepu16_epi32(
        (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, lo)));
    if (hi == NULL) return l;
    const __m512i h = _mm512_cvtepu16_epi32(
        (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, hi)));
    return _mm512_or_si512(l, _mm512_slli_epi32(h, 16));
}

/* Transpose 16 x 16 words in registers. */
GRUCY_T_BF16 GRUCY_AI void grucy_tr16(__m512i r[16])
{
    __m512i t[16], u[16];
    int i, c;
    for (i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (i = 0; i < 4; i++) {   /* u[4g + c], lane L: rows 4g .. 4g+3 at column 4L + c */
        u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (c = 0; c < 4; c++) {
        const __m512i a = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88);
        const __m512i b = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xdd);
        const __m512i e = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88);
        const __m512i d = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xdd);
        r[c] = _mm512_shuffle_i32x4(a, e, 0x88);
        r[8 + c] = _mm512_shuffle_i32x4(a, e, 0xdd);
        r[4 + c] = _mm512_shuffle_i32x4(b, d, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(b, d, 0xdd);
    }
}

/* Native conversion of a transposed matrix: out row i = column i of D (K rows of ldd
 * floats), as pairs; 16 x 16 blocks of words transposed in registers. */
GRUCY_T_BF16 static void grucy_bf16_cvt_cols_native(int M, int K, const float* D,
                                                    ptrdiff_t ldd, uint16_t* out, int ldo)
{
    const int K2 = (K + 1) / 2;
    const ptrdiff_t ldw = ldo / 2;
    uint32_t* o = (uint32_t*)out;
    int i0, q0, q, ii;
    for (i0 = 0; i0 < M; i0 += 16) {
        const int mi = M - i0 < 16 ? M - i0 : 16;
        const __mmask16 m = (__mmask16)((1u << mi) - 1);
        for (q0 = 0; q0 < K2; q0 += 16) {
            const int mq = K2 - q0 < 16 ? K2 - q0 : 16;
            const __mmask16 mqk = (__mmask16)((1u << mq) - 1);
            __m512i r[16];
            for (q = 0; q < 16; q++) {
                const int k = 2 * (q0 + q);
                r[q] = q >= mq ? _mm512_setzero_si512()
                     : grucy_bf16_pairs16(D + k * ldd + i0,
                                          k + 1 < K ? D + (k + 1) * ldd + i0 : NULL, m);
            }
            grucy_tr16(r);
            for (ii = 0; ii < mi; ii++)
                _mm512_mask_storeu_epi32(o + (i0 + ii) * ldw + q0, mqk, r[ii]);
        }
    }
}

/* Native pack of a row-major (K, N) operand: word rows of pairs of W rows. */
GRUCY_T_BF16 static void grucy_bf16_pack_n_native(int K, int N, const float* W, int ldw,
                                                  uint32_t* P)
{
    const int K2 = (K + 1) / 2;
    int p, r, j;
    for (p = 0; p * 32 < N; p++) {
        const int w = N - p * 32 < 32 ? N - p * 32 : 32;
        const __mmask16 m0 = w >= 16 ? 0xffff : (__mmask16)((1u << w) - 1);
        const __mmask16 m1 = w >= 32 ? 0xffff : w > 16 ? (__mmask16)((1u << (w - 16)) - 1) : 0;
        for (r = 0; r < K2; r++) {
            const float* lo = W + (ptrdiff_t)(2 * r) * ldw + p * 32;
            const float* hi = 2 * r + 1 < K ? lo + ldw : NULL;
            uint32_t* dst = P + ((size_t)p * K2 + r) * 32;
            _mm512_storeu_si512(dst, grucy_bf16_pairs16(lo, hi, m0));
            _mm512_storeu_si512(dst + 16, grucy_bf16_pairs16(lo + 16, hi ? hi + 16 : NULL, m1));
        }
    }
    (void)j;
}
#endif

/* A (M, K) -> the A format of the kernel in use, rows of `ldo` elements (>= KP).  A is
 * read as A[i * ars + k * acs]: row-major (acs = 1) or transposed (ars = 1). */
static void grucy_bf16_cvt(int M, int K, const float* A, ptrdiff_t ars, ptrdiff_t acs,
                           void* out, int ldo)
{
    const int native = grucy_bf16_kind == GRUCY_LP_NATIVE;
    const int ncol = native ? grucy_bf16_kp(K) / 2 : grucy_bf16_kp(K);
    const int ldw = native ? ldo / 2 : ldo;        /* row length in 32-bit words */
    uint32_t* o = (uint32_t*)out;
    int i, c, i0, c0, ii, cc;
#if GRUCY_X86
    if (native && acs == 1) {
        grucy_bf16_cvt_rows_native(M, K, A, ars, (uint16_t*)out, ldo);
        return;
    }
    if (native && ars == 1) {
        grucy_bf16_cvt_cols_native(M, K, A, acs, (uint16_t*)out, ldo);
        return;
    }
#endif
    if (acs == 1) {          /* emulated, row-major */
        for (i = 0; i < M; i++)
            for (c = 0; c < ncol; c++)
                o[(ptrdiff_t)i * ldw + c] = grucy_bf16_word(native, K, A, ars, acs, i, c);
        return;
    }
    /* transposed: 16 x 16 blocks, read along i (contiguous in A), written along c */
    for (i0 = 0; i0 < M; i0 += 16) {
        const int mi = M - i0 < 16 ? M - i0 : 16;
        for (c0 = 0; c0 < ncol; c0 += 16) {
            const int mc = ncol - c0 < 16 ? ncol - c0 : 16;
            uint32_t tmp[16][16];
            for (cc = 0; cc < mc; cc++)
                for (ii = 0; ii < mi; ii++)
                    tmp[cc][ii] = grucy_bf16_word(native, K, A, ars, acs, i0 + ii, c0 + cc);
            for (ii = 0; ii < mi; ii++)
                for (cc = 0; cc < mc; cc++)
                    o[(ptrdiff_t)(i0 + ii) * ldw + c0 + cc] = tmp[cc][ii];
        }
    }
}

/* 32-bit words packed as in _pgemm.h's grucy_pack_t / grucy_pack_n (bitwise moves). */
GRUCY_PACK_DEFINE(uint32_t, u32)

static void grucy_pack_t_w32(int nr, int K, int c, int g0, int ng, int H, int j0,
                             const uint32_t* W, int ldw, uint32_t* P)
{
#if GRUCY_X86
    if (nr % 8 == 0 && __builtin_cpu_supports("avx2")) {   /* shuffles only: bitwise */
        grucy_pack_t_f_avx2(nr, K, c, g0, ng, H, j0, (const float*)W, ldw, (float*)P);
        return;
    }
#endif
    grucy_pack_t_u32(nr, K, c, g0, ng, H, j0, W, ldw, P);
}

/* Pack B[k][j] = W[row(j) * ldw + k] (B = W^T; rows of W selected as grucy_pack_t_f
 * does: column j is row (g0 + j / c) * H + j0 + j % c), panels p0 .. p1 - 1 of the
 * block at P (any range: threads pack parts of one block).  Panel by panel: the panel's
 * rows converted to the A format in tmp (NR * KP floats), then transposed word by word. */
static void grucy_bf16_pack_t(int K, int c, int g0, int ng, int H, int j0, const float* W,
                              int ldw, void* P, void* tmp, int p0, int p1)
{
    const int nr = grucy_lp_nr(grucy_bf16_kind), kp = grucy_bf16_kp(K), N = ng * c;
    const int words = grucy_bf16_kind == GRUCY_LP_NATIVE ? kp / 2 : kp;
    int p, jj, w, j;
    for (p = p0; p < p1 && p * nr < N; p++) {
        w = N - p * nr < nr ? N - p * nr : nr;
        for (jj = 0; jj < w; jj++) {
            j = p * nr + jj;
            grucy_bf16_cvt(1, K, W + (ptrdiff_t)((g0 + j / c) * H + j0 + j % c) * ldw, ldw, 1,
                           (uint32_t*)tmp + (size_t)jj * words, kp);
        }
        grucy_pack_t_w32(nr, words, w, 0, 1, 0, 0, (const uint32_t*)tmp, words,
                         (uint32_t*)P + (size_t)p * words * nr);
    }
}

/* Pack B[k][j] = W[k * ldw + j], K rows and N columns. */
static void grucy_bf16_pack_n(int K, int N, const float* W, int ldw, void* P)
{
    const int nr = grucy_lp_nr(grucy_bf16_kind), kp = grucy_bf16_kp(K);
    const int native = grucy_bf16_kind == GRUCY_LP_NATIVE;
    const int rows = native ? kp / 2 : kp;       /* word rows per panel */
    uint32_t* o = (uint32_t*)P;
    int p, r, j, w;
#if GRUCY_X86
    if (native) {
        grucy_bf16_pack_n_native(K, N, W, ldw, o);
        return;
    }
#endif
    for (p = 0; p * nr < N; p++) {
        w = N - p * nr < nr ? N - p * nr : nr;
        for (r = 0; r < rows; r++) {
            uint32_t* dst = o + (size_t)p * rows * nr + (size_t)r * nr;
            const float* src = W + p * nr;
            if (native) {
                const int k0 = 2 * r, k1 = 2 * r + 1;
                for (j = 0; j < w; j++) {
                    uint32_t lo = grucy_bf16_bits(grucy_f32_bits(src[(ptrdiff_t)k0 * ldw + j]));
                    uint32_t hi = k1 < K ? grucy_bf16_bits(
                        grucy_f32_bits(src[(ptrdiff_t)k1 * ldw + j])) : 0;
                    dst[j] = lo | (hi << 16);
                }
            } else {
                const int k = r ^ 1;
                if (k < K)
                    for (j = 0; j < w; j++)
                        dst[j] = grucy_bf16_bits(grucy_f32_bits(src[(ptrdiff_t)k * ldw + j]))
                                 << 16;
                else
                    for (j = 0; j < w; j++) dst[j] = 0;
            }
            for (j = w; j < nr; j++) dst[j] = 0;
        }
    }
}

#if GRUCY_X86
/* ---- the VDPBF16PS kernel: MR = 8 rows x 2 vectors of 16 columns ---------------------- */
GRUCY_T_BF16 GRUCY_AI void grucy_bf16n_store(float* c, __m512 v0, __m512 v1, int w, int beta)
{
    const __mmask16 m0 = w >= 16 ? 0xffff : (__mmask16)((1u << w) - 1);
    const __mmask16 m1 = w >= 32 ? 0xffff : w > 16 ? (__mmask16)((1u << (w - 16)) - 1) : 0;
    if (beta) {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, c));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, c + 16));
    }
    _mm512_mask_storeu_ps(c, m0, v0);
    _mm512_mask_storeu_ps(c + 16, m1, v1);
}

GRUCY_T_BF16 GRUCY_AI void grucy_bf16n_block(const int R, int K2, const uint32_t* A,
                                             ptrdiff_t lda, const uint32_t* P, float* C,
                                             size_t ldc, int w, int beta)
{
    __m512 c0[8], c1[8];
    int i, k;
    _Pragma("GCC unroll 8")
    for (i = 0; i < R; i++) { c0[i] = _mm512_setzero_ps(); c1[i] = _mm512_setzero_ps(); }
    for (k = 0; k < K2; k++) {
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512(P + (ptrdiff_t)k * 32);
        const __m512bh w1 = (__m512bh)_mm512_loadu_si512(P + (ptrdiff_t)k * 32 + 16);
        _Pragma("GCC unroll 8")
        for (i = 0; i < R; i++) {
            const __m512bh a = (__m512bh)_mm512_set1_epi32((int)A[i * lda + k]);
            c0[i] = _mm512_dpbf16_ps(c0[i], a, w0);
            c1[i] = _mm512_dpbf16_ps(c1[i], a, w1);
        }
    }
    _Pragma("GCC unroll 8")
    for (i = 0; i < R; i++) grucy_bf16n_store(C + i * ldc, c0[i], c1[i], w, beta);
}

/* One or two rows times up to four panels (eight independent chains per row). */
GRUCY_T_BF16 GRUCY_AI void grucy_bf16n_wide(const int R, const int NP, int K2,
                                            const uint32_t* A, ptrdiff_t lda,
                                            const uint32_t* P, ptrdiff_t pstride, float* C,
                                            size_t ldc, int wlast, int beta)
{
    __m512 c[2][8];
    int i, k, q;
    _Pragma("GCC unroll 8")
    for (q = 0; q < 2 * NP; q++) { c[0][q] = _mm512_setzero_ps(); c[1][q] = _mm512_setzero_ps(); }
    for (k = 0; k < K2; k++) {
        const __m512bh a0 = (__m512bh)_mm512_set1_epi32((int)A[k]);
        const __m512bh a1 = (__m512bh)_mm512_set1_epi32((int)A[R > 1 ? lda + k : k]);
        _Pragma("GCC unroll 8")
        for (q = 0; q < 2 * NP; q++) {
            const __m512bh wv = (__m512bh)_mm512_loadu_si512(
                P + (ptrdiff_t)(q / 2) * pstride + (ptrdiff_t)k * 32 + (q % 2) * 16);
            c[0][q] = _mm512_dpbf16_ps(c[0][q], a0, wv);
            if (R > 1) c[1][q] = _mm512_dpbf16_ps(c[1][q], a1, wv);
        }
    }
    for (i = 0; i < R; i++)
        for (q = 0; q < NP; q++)
            grucy_bf16n_store(C + i * ldc + q * 32, c[i][2 * q], c[i][2 * q + 1],
                              q == NP - 1 ? wlast : 32, beta);
}

#define GRUCY_BF16N_REST(R)                                                                \
    case R: grucy_bf16n_block(R, K2, A + (ptrdiff_t)i * lda, lda, pp, cp + (size_t)i * ldc, \
                              ldc, w, beta); break;

/* C (M, N) (+)= A @ B: A native-format rows (lda in uint16, even), B packed panels of
 * `pstride` uint32 words. */
GRUCY_T_BF16 static void grucy_bf16n_gemm(int M, int N, int K, const uint16_t* A16, int lda16,
                                          const uint32_t* B, ptrdiff_t pstride, float* C,
                                          int ldc, int beta, int backwards)
{
    const uint32_t* A = (const uint32_t*)A16;
    const ptrdiff_t lda = lda16 / 2;
    const int K2 = (K + 1) / 2, np = (N + 31) / 32;
    int q, p, i, w;
    if (M <= 2) {
        for (q = 0; q < np; q += 4) {
            const int n4 = np - q < 4 ? np - q : 4;
            const int wl = N - (q + n4 - 1) * 32;
            const int w4 = wl < 32 ? wl : 32;
            const uint32_t* pp = B + (ptrdiff_t)q * pstride;
            float* cp = C + q * 32;
            switch (n4 * 2 + M) {
            case 3: grucy_bf16n_wide(1, 1, K2, A, lda, pp, pstride, cp, ldc, w4, beta); break;
            case 4: grucy_bf16n_wide(2, 1, K2, A, lda, pp, pstride, cp, ldc, w4, beta); break;
            case 5: grucy_bf16n_wide(1, 2, K2, A, lda, pp, pstride, cp, ldc, w4, beta); break;
            case 6: grucy_bf16n_wide(2, 2, K2, A, lda, pp, pstride, cp, ldc, w4, beta); break;
            case 7: grucy_bf16n_wide(1, 3, K2, A, lda, pp, pstride, cp, ldc, w4, beta); break;
            case 8: grucy_bf16n_wide(2, 3, K2, A, lda, pp, pstride, cp, ldc, w4, beta); break;
            case 9: grucy_bf16n_wide(1, 4, K2, A, lda, pp, pstride, cp, ldc, w4, beta); break;
            default: grucy_bf16n_wide(2, 4, K2, A, lda, pp, pstride, cp, ldc, w4, beta); break;
            }
        }
        return;
    }
    for (q = 0; q < np; q++) {
        p = backwards ? np - 1 - q : q;
        w = N - p * 32 < 32 ? N - p * 32 : 32;
        const uint32_t* pp = B + (ptrdiff_t)p * pstride;
        float* cp = C + p * 32;
        for (i = 0; i + 8 <= M; i += 8)
            grucy_bf16n_block(8, K2, A + (ptrdiff_t)i * lda, lda, pp, cp + (size_t)i * ldc,
                              ldc, w, beta);
        switch (M - i) {
        GRUCY_BF16N_REST(7) GRUCY_BF16N_REST(6) GRUCY_BF16N_REST(5) GRUCY_BF16N_REST(4)
        GRUCY_BF16N_REST(3) GRUCY_BF16N_REST(2) GRUCY_BF16N_REST(1)
        default: break;
        }
    }
}

#define GRUCY_FTZ_ON(saved) do { saved = _mm_getcsr(); _mm_setcsr(saved | 0x8040u); } while (0)
#define GRUCY_FTZ_OFF(saved) _mm_setcsr(saved)
#else
#define GRUCY_FTZ_ON(saved) ((void)(saved = 0))
#define GRUCY_FTZ_OFF(saved) ((void)(saved))
#endif

/* The portable emulation, plain C: each step in float64 (the product of two bf16 values
 * is exact there, and the float64 sum of it and a float32, rounded to float32, is the
 * FMA's result), then the flush.  Exact on any CPU, FMA or not, x86 or not. */
static void grucy_bf16e_portable(int M, int N, int K, const float* A, int lda, const float* B,
                                 ptrdiff_t pstride, float* C, int ldc, int beta, int backwards)
{
    const int nr = grucy_lp_nr(grucy_bf16_kind), kp = grucy_bf16_kp(K);
    const int np = (N + nr - 1) / nr;
    int q, p, i, j, k, w;
    float acc[64];
    for (q = 0; q < np; q++) {
        p = backwards ? np - 1 - q : q;
        w = N - p * nr < nr ? N - p * nr : nr;
        for (i = 0; i < M; i++) {
            const float* a = A + (ptrdiff_t)i * lda;
            for (j = 0; j < nr; j++) acc[j] = 0.0f;
            for (k = 0; k < kp; k++) {
                const double ak = a[k];
                const float* b = B + (ptrdiff_t)p * pstride + (ptrdiff_t)k * nr;
                for (j = 0; j < nr; j++) {
                    const float s = (float)((double)acc[j] + ak * (double)b[j]);
                    acc[j] = fabsf(s) < FLT_MIN ? copysignf(0.0f, s) : s;
                }
            }
            float* c = C + (ptrdiff_t)i * ldc + p * nr;
            for (j = 0; j < w; j++) c[j] = beta ? c[j] + acc[j] : acc[j];
        }
    }
}

#if GRUCY_X86   /* only the x86 bf16 emulation asks (no unused-function warning on ARM64) */
/* Whether a float32 kernel of _pgemm.h fuses its multiply-adds (the compiler contracts
 * them: GCC does from -O1 on, not in a -O0 debug build): one chain of K = 2 whose FMA
 * result, -2^-24, differs from the separately rounded 0. */
static int grucy_kernel_fuses(grucy_pgemm_f_t fn, int nr)
{
    float A[2] = {1.0f + 0x1p-12f, -(1.0f + 0x1p-12f)}, B[128], C[64];
    int j;
    for (j = 0; j < 2 * nr; j++) B[j] = j % nr == 0 ? 1.0f + 0x1p-12f : 0.0f;
    fn(1, 1, 2, A, 2, B, nr, 2 * nr, C, 1, 0, 0);
    return C[0] == -0x1p-24f;
}
static int grucy_bf16e_fuses[3] = {-1, -1, -1};
#endif

/* The emulation at AVX2 / AVX-512 width: the float32 kernel of _pgemm.h on the rounded,
 * pair-swapped values, with MXCSR's flush-to-zero and denormals-are-zero bits set (the
 * same flush as VDPBF16PS's); the accumulation into C (beta) done after, without.  A
 * build whose kernels do not fuse (a debug build) would round the products below 2^-126
 * to zero first: then the plain C loop above does the steps instead. */
static void grucy_bf16e_gemm(int M, int N, int K, const float* A, int lda, const float* B,
                             ptrdiff_t pstride, float* C, int ldc, int beta, int backwards)
{
    const int nr = grucy_lp_nr(grucy_bf16_kind), kp = grucy_bf16_kp(K);
    grucy_pgemm_f_t fn = NULL;
    float* out = C;
    int ldo = ldc, i, j;
    unsigned saved;
#if GRUCY_X86
    if (grucy_bf16_kind == GRUCY_LP_AVX512) fn = grucy_pgemm_f_avx512;
    else if (grucy_bf16_kind == GRUCY_LP_AVX2) fn = grucy_pgemm_f_avx2;
    if (fn != NULL && grucy_bf16e_fuses[grucy_bf16_kind] < 0)
        grucy_bf16e_fuses[grucy_bf16_kind] = grucy_kernel_fuses(fn, nr);
    if (fn != NULL && !grucy_bf16e_fuses[grucy_bf16_kind]) fn = NULL;
#endif
    if (fn == NULL) {
        grucy_bf16e_portable(M, N, K, A, lda, B, pstride, C, ldc, beta, backwards);
        return;
    }
    if (beta) {
        out = (float*)malloc((size_t)M * N * sizeof(float));
        if (out == NULL) abort();
        ldo = N;
    }
    GRUCY_FTZ_ON(saved);
    fn(M, N, kp, A, lda, B, nr, pstride, out, ldo, 0, backwards);
    GRUCY_FTZ_OFF(saved);
    if (beta) {
        for (i = 0; i < M; i++)
            for (j = 0; j < N; j++) C[(ptrdiff_t)i * ldc + j] += out[(ptrdiff_t)i * N + j];
        free(out);
    }
}

/* C (M, N) (+)= A @ B with A in the A format of the kernel in use (rows of lda elements)
 * and B packed (grucy_bf16_pack_*), panels pstride_bytes apart. */
static void grucy_bf16_gemm(int M, int N, int K, const void* A, int lda, const void* B,
                            ptrdiff_t pstride_bytes, float* C, int ldc, int beta,
                            int backwards)
{
    if (M <= 0 || N <= 0) return;
#if GRUCY_X86
    if (grucy_bf16_kind == GRUCY_LP_NATIVE) {
        grucy_bf16n_gemm(M, N, K, (const uint16_t*)A, lda, (const uint32_t*)B,
                         pstride_bytes / 4, C, ldc, beta, backwards);
        return;
    }
#endif
    grucy_bf16e_gemm(M, N, K, (const float*)A, lda, (const float*)B, pstride_bytes / 4, C,
                     ldc, beta, backwards);
}

/* ====================================================================================
 * int8
 * ==================================================================================== */

static inline int grucy_i8_kq(int K) { return (K + 3) & ~3; }
static inline size_t grucy_i8_panel_bytes(int K)
{
    return (size_t)grucy_i8_kq(K) * grucy_lp_nr(grucy_i8_kind);
}
/* Panels, then per padded column 128 * colsum (int32) and the scale (float). */
static inline size_t grucy_i8_pack_bytes(int K, int N)
{
    int nr = grucy_lp_nr(grucy_i8_kind), np = (N + nr - 1) / nr;
    return (size_t)np * grucy_i8_panel_bytes(K) + (size_t)np * nr * 8;
}

/* One row: q + 128 as bytes (KQ of them, zero-padded) and its scale. */
static inline void grucy_i8_quant_row_c(int K, const float* x, uint8_t* o, float* sa)
{
    float amax = 0.0f, inv;
    int k;
    for (k = 0; k < K; k++) {
        float a = fabsf(x[k]);
        amax = a > amax ? a : amax;
    }
    inv = 127.0f / amax;
    if (!(amax > 0.0f) || !(inv <= FLT_MAX)) {
        for (k = 0; k < K; k++) o[k] = 128;
        *sa = 0.0f;
    } else {
        for (k = 0; k < K; k++) {
            /* round half to even: adding and subtracting 1.5 * 2^23 (|v| <= 127.5) */
            float v = x[k] * inv;
            float r = (v + 12582912.0f) - 12582912.0f;
            r = r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r;
            o[k] = (uint8_t)((int)r + 128);
        }
        *sa = amax / 127.0f;
    }
    for (; k < grucy_i8_kq(K); k++) o[k] = 0;
}

#if GRUCY_X86
GRUCY_T_VNNI static void grucy_i8_quant_row_avx512(int K, const float* x, uint8_t* o,
                                                   float* sa)
{
    __m512 m = _mm512_setzero_ps();
    int k;
    for (k = 0; k + 16 <= K; k += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + k)));
    if (k < K)
        m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(
            (__mmask16)((1u << (K - k)) - 1), x + k)));
    const float amax = _mm512_reduce_max_ps(m);
    const float inv = 127.0f / amax;
    if (!(amax > 0.0f) || !(inv <= FLT_MAX)) {
        memset(o, 128, (size_t)K);
        *sa = 0.0f;
    } else {
        const __m512 vi = _mm512_set1_ps(inv);
        const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
        const __m512i off = _mm512_set1_epi32(128);
        for (k = 0; k < K; k += 16) {
            const __mmask16 mk = K - k >= 16 ? 0xffff : (__mmask16)((1u << (K - k)) - 1);
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, x + k), vi));
            q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), off);
            _mm_mask_storeu_epi8(o + k, mk, _mm512_cvtepi32_epi8(q));
        }
        *sa = amax / 127.0f;
    }
    for (k = K; k < grucy_i8_kq(K); k++) o[k] = 0;
}
#endif

/* Rows of A (M, K) quantized: out rows of ldo bytes (>= KQ), scales sa[i]. */
static void grucy_i8_quant(int M, int K, const float* A, ptrdiff_t lda, uint8_t* out,
                           int ldo, float* sa)
{
    int i;
    for (i = 0; i < M; i++) {
#if GRUCY_X86
        if (grucy_i8_kind == GRUCY_LP_NATIVE) {
            grucy_i8_quant_row_avx512(K, A + i * lda, out + (ptrdiff_t)i * ldo, sa + i);
            continue;
        }
#endif
        grucy_i8_quant_row_c(K, A + i * lda, out + (ptrdiff_t)i * ldo, sa + i);
    }
}

/* Pack the int8 weight rows selected as grucy_bf16_pack_t does (column j: row
 * (g0 + j / c) * H + j0 + j % c of W (rows of ldw bytes, K used), scale sw[row]): panels
 * p0 .. p1 - 1 of the block at P, 128 * colsum and the scale of each column at corr[j]
 * and scale[j] (zeros up to the last panel's end).  tmp: NR * KQ bytes. */
static void grucy_i8_pack_t(int K, int c, int g0, int ng, int H, int j0, const int8_t* W,
                            int ldw, const float* sw, void* P, int32_t* corr, float* scale,
                            void* tmp, int p0, int p1)
{
    const int nr = grucy_lp_nr(grucy_i8_kind), kq = grucy_i8_kq(K), N = ng * c;
    int8_t* t = (int8_t*)tmp;
    int p, jj, j, k, w;
    for (p = p0; p < p1 && p * nr < N; p++) {
        w = N - p * nr < nr ? N - p * nr : nr;
        for (jj = 0; jj < nr; jj++) {
            j = p * nr + jj;
            if (jj >= w) { corr[j] = 0; scale[j] = 0.0f; continue; }
            const int row = (g0 + j / c) * H + j0 + j % c;
            const int8_t* src = W + (ptrdiff_t)row * ldw;
            int32_t s = 0;
            for (k = 0; k < K; k++) s += src[k];
            memcpy(t + (size_t)jj * kq, src, (size_t)K);
            memset(t + (size_t)jj * kq + K, 0, (size_t)(kq - K));
            corr[j] = 128 * s;
            scale[j] = sw[row];
        }
        grucy_pack_t_w32(nr, kq / 4, w, 0, 1, 0, 0, (const uint32_t*)t, kq / 4,
                         (uint32_t*)P + (size_t)p * (kq / 4) * nr);
    }
}

/* Where the column data of a packed (K, N) int8 operand start (panels first). */
static inline int32_t* grucy_i8_corr(void* P, int K, int N)
{
    const int nr = grucy_lp_nr(grucy_i8_kind), np = (N + nr - 1) / nr;
    return (int32_t*)((char*)P + (size_t)np * grucy_i8_panel_bytes(K));
}
static inline float* grucy_i8_scale(void* P, int K, int N)
{
    const int nr = grucy_lp_nr(grucy_i8_kind), np = (N + nr - 1) / nr;
    return (float*)(grucy_i8_corr(P, K, N) + (size_t)np * nr);
}

#if GRUCY_X86
/* ---- the VPDPBUSD kernel: MR = 8 rows x 2 vectors of 16 columns ----------------------- */
GRUCY_T_VNNI GRUCY_AI void grucy_i8n_store(float* c, __m512i a0, __m512i a1, float sa,
                                           const int32_t* corr, const float* sc, int w)
{
    const __mmask16 m0 = w >= 16 ? 0xffff : (__mmask16)((1u << w) - 1);
    const __mmask16 m1 = w >= 32 ? 0xffff : w > 16 ? (__mmask16)((1u << (w - 16)) - 1) : 0;
    const __m512 s = _mm512_set1_ps(sa);
    __m512 v0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(a0, _mm512_loadu_si512(corr)));
    __m512 v1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(a1, _mm512_loadu_si512(corr + 16)));
    v0 = _mm512_mul_ps(_mm512_mul_ps(v0, s), _mm512_loadu_ps(sc));
    v1 = _mm512_mul_ps(_mm512_mul_ps(v1, s), _mm512_loadu_ps(sc + 16));
    _mm512_mask_storeu_ps(c, m0, v0);
    _mm512_mask_storeu_ps(c + 16, m1, v1);
}

GRUCY_T_VNNI GRUCY_AI void grucy_i8n_block(const int R, int K4, const uint32_t* A,
                                           ptrdiff_t lda, const float* sa, const uint32_t* P,
                                           const int32_t* corr, const float* sc, float* C,
                                           size_t ldc, int w)
{
    __m512i c0[8], c1[8];
    int i, k;
    _Pragma("GCC unroll 8")
    for (i = 0; i < R; i++) { c0[i] = _mm512_setzero_si512(); c1[i] = _mm512_setzero_si512(); }
    for (k = 0; k < K4; k++) {
        const __m512i w0 = _mm512_loadu_si512(P + (ptrdiff_t)k * 32);
        const __m512i w1 = _mm512_loadu_si512(P + (ptrdiff_t)k * 32 + 16);
        _Pragma("GCC unroll 8")
        for (i = 0; i < R; i++) {
            const __m512i a = _mm512_set1_epi32((int)A[i * lda + k]);
            c0[i] = _mm512_dpbusd_epi32(c0[i], a, w0);
            c1[i] = _mm512_dpbusd_epi32(c1[i], a, w1);
        }
    }
    _Pragma("GCC unroll 8")
    for (i = 0; i < R; i++) grucy_i8n_store(C + i * ldc, c0[i], c1[i], sa[i], corr, sc, w);
}

GRUCY_T_VNNI GRUCY_AI void grucy_i8n_wide(const int R, const int NP, int K4,
                                          const uint32_t* A, ptrdiff_t lda, const float* sa,
                                          const uint32_t* P, ptrdiff_t pstride,
                                          const int32_t* corr, const float* sc, float* C,
                                          size_t ldc, int wlast)
{
    __m512i c[2][8];
    int i, k, q;
    _Pragma("GCC unroll 8")
    for (q = 0; q < 2 * NP; q++) { c[0][q] = _mm512_setzero_si512(); c[1][q] = _mm512_setzero_si512(); }
    for (k = 0; k < K4; k++) {
        const __m512i a0 = _mm512_set1_epi32((int)A[k]);
        const __m512i a1 = _mm512_set1_epi32((int)A[R > 1 ? lda + k : k]);
        _Pragma("GCC unroll 8")
        for (q = 0; q < 2 * NP; q++) {
            const __m512i wv = _mm512_loadu_si512(
                P + (ptrdiff_t)(q / 2) * pstride + (ptrdiff_t)k * 32 + (q % 2) * 16);
            c[0][q] = _mm512_dpbusd_epi32(c[0][q], a0, wv);
            if (R > 1) c[1][q] = _mm512_dpbusd_epi32(c[1][q], a1, wv);
        }
    }
    for (i = 0; i < R; i++)
        for (q = 0; q < NP; q++)
            grucy_i8n_store(C + i * ldc + q * 32, c[i][2 * q], c[i][2 * q + 1], sa[i],
                            corr + q * 32, sc + q * 32, q == NP - 1 ? wlast : 32);
}

#define GRUCY_I8N_REST(R)                                                                  \
    case R: grucy_i8n_block(R, K4, A + (ptrdiff_t)i * lda, lda, sa + i, pp, corr + p * 32, \
                            sc + p * 32, cp + (size_t)i * ldc, ldc, w); break;

GRUCY_T_VNNI static void grucy_i8n_gemm(int M, int N, int K, const uint8_t* A8, int lda8,
                                        const float* sa, const uint32_t* B, ptrdiff_t pstride,
                                        const int32_t* corr, const float* sc, float* C,
                                        int ldc, int backwards)
{
    const uint32_t* A = (const uint32_t*)A8;
    const ptrdiff_t lda = lda8 / 4;
    const int K4 = (K + 3) / 4, np = (N + 31) / 32;
    int q, p, i, w;
    if (M <= 2) {
        for (q = 0; q < np; q += 4) {
            const int n4 = np - q < 4 ? np - q : 4;
            const int wl = N - (q + n4 - 1) * 32;
            const int w4 = wl < 32 ? wl : 32;
            const uint32_t* pp = B + (ptrdiff_t)q * pstride;
            const int32_t* cq = corr + q * 32;
            const float* sq = sc + q * 32;
            float* cp = C + q * 32;
            switch (n4 * 2 + M) {
            case 3: grucy_i8n_wide(1, 1, K4, A, lda, sa, pp, pstride, cq, sq, cp, ldc, w4); break;
            case 4: grucy_i8n_wide(2, 1, K4, A, lda, sa, pp, pstride, cq, sq, cp, ldc, w4); break;
            case 5: grucy_i8n_wide(1, 2, K4, A, lda, sa, pp, pstride, cq, sq, cp, ldc, w4); break;
            case 6: grucy_i8n_wide(2, 2, K4, A, lda, sa, pp, pstride, cq, sq, cp, ldc, w4); break;
            case 7: grucy_i8n_wide(1, 3, K4, A, lda, sa, pp, pstride, cq, sq, cp, ldc, w4); break;
            case 8: grucy_i8n_wide(2, 3, K4, A, lda, sa, pp, pstride, cq, sq, cp, ldc, w4); break;
            case 9: grucy_i8n_wide(1, 4, K4, A, lda, sa, pp, pstride, cq, sq, cp, ldc, w4); break;
            default: grucy_i8n_wide(2, 4, K4, A, lda, sa, pp, pstride, cq, sq, cp, ldc, w4); break;
            }
        }
        return;
    }
    for (q = 0; q < np; q++) {
        p = backwards ? np - 1 - q : q;
        w = N - p * 32 < 32 ? N - p * 32 : 32;
        const uint32_t* pp = B + (ptrdiff_t)p * pstride;
        float* cp = C + p * 32;
        for (i = 0; i + 8 <= M; i += 8)
            grucy_i8n_block(8, K4, A + (ptrdiff_t)i * lda, lda, sa + i, pp, corr + p * 32,
                            sc + p * 32, cp + (size_t)i * ldc, ldc, w);
        switch (M - i) {
        GRUCY_I8N_REST(7) GRUCY_I8N_REST(6) GRUCY_I8N_REST(5) GRUCY_I8N_REST(4)
        GRUCY_I8N_REST(3) GRUCY_I8N_REST(2) GRUCY_I8N_REST(1)
        default: break;
        }
    }
}
#endif

/* ---- the emulation: int32 vectors (GCC/Clang vector extensions), any width --------- */
#define GRUCY_I8E_DEFINE(NAME, TARGET, VB)                                                 \
typedef int32_t NAME##_vi __attribute__((vector_size(VB)));                                \
typedef int32_t NAME##_viu __attribute__((vector_size(VB), aligned(4), may_alias));        \
typedef float NAME##_vf __attribute__((vector_size(VB)));                                  \
typedef float NAME##_vfu __attribute__((vector_size(VB), aligned(4), may_alias));          \
TARGET static void NAME(int M, int N, int K, const uint8_t* A, int lda, const float* sa,  \
                        const uint32_t* B, ptrdiff_t pstride, const int32_t* corr,         \
                        const float* sc, float* C, int ldc, int backwards)                 \
{                                                                                          \
    enum { L = VB / 4 };                                                                   \
    const int K4 = (K + 3) / 4, np = (N + 2 * L - 1) / (2 * L);                            \
    int q, p, i, i0, k, j, w, R;                                                           \
    for (q = 0; q < np; q++) {                                                             \
        p = backwards ? np - 1 - q : q;                                                    \
        w = N - p * 2 * L < 2 * L ? N - p * 2 * L : 2 * L;                                 \
        const uint32_t* pp = B + (ptrdiff_t)p * pstride;                                   \
        for (i0 = 0; i0 < M; i0 += 4) {                                                    \
            NAME##_vi c0[4], c1[4];                                                        \
            R = M - i0 < 4 ? M - i0 : 4;                                                   \
            for (i = 0; i < 4; i++) { c0[i] = (NAME##_vi){0}; c1[i] = (NAME##_vi){0}; }     \
            for (k = 0; k < K4; k++) {                                                     \
                const NAME##_vi w0 = *(const NAME##_viu*)(pp + (ptrdiff_t)k * 2 * L);      \
                const NAME##_vi w1 = *(const NAME##_viu*)(pp + (ptrdiff_t)k * 2 * L + L);  \
                const NAME##_vi b00 = (w0 << 24) >> 24, b01 = (w0 << 16) >> 24;            \
                const NAME##_vi b02 = (w0 << 8) >> 24, b03 = w0 >> 24;                     \
                const NAME##_vi b10 = (w1 << 24) >> 24, b11 = (w1 << 16) >> 24;            \
                const NAME##_vi b12 = (w1 << 8) >> 24, b13 = w1 >> 24;                     \
                for (i = 0; i < R; i++) {                                                  \
                    const uint8_t* a = A + (ptrdiff_t)(i0 + i) * lda + 4 * k;              \
                    const int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];              \
                    c0[i] += a0 * b00 + a1 * b01 + a2 * b02 + a3 * b03;                    \
                    c1[i] += a0 * b10 + a1 * b11 + a2 * b12 + a3 * b13;                    \
                }                                                                          \
            }                                                                              \
            for (i = 0; i < R; i++) {                                                      \
                const int32_t* cr = corr + p * 2 * L;                                      \
                const float* sp = sc + p * 2 * L;                                          \
                float tmp[2 * L];                                                          \
                NAME##_vf v0 = __builtin_convertvector(c0[i] - *(const NAME##_viu*)cr,     \
                                                       NAME##_vf);                         \
                NAME##_vf v1 = __builtin_convertvector(c1[i] - *(const NAME##_viu*)(cr + L), \
                                                       NAME##_vf);                         \
                v0 = (v0 * sa[i0 + i]) * *(const NAME##_vfu*)sp;                           \
                v1 = (v1 * sa[i0 + i]) * *(const NAME##_vfu*)(sp + L);                     \
                *(NAME##_vfu*)tmp = v0;                                                    \
                *(NAME##_vfu*)(tmp + L) = v1;                                              \
                float* crow = C + (ptrdiff_t)(i0 + i) * ldc + p * 2 * L;                   \
                for (j = 0; j < w; j++) crow[j] = tmp[j];                                  \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
}

GRUCY_I8E_DEFINE(grucy_i8e_portable, GRUCY_T_PORTABLE, 16)
#if GRUCY_X86
GRUCY_I8E_DEFINE(grucy_i8e_avx2, GRUCY_T_AVX2, 32)
GRUCY_I8E_DEFINE(grucy_i8e_avx512, GRUCY_T_AVX512, 64)
#endif

/* C (M, N) = the int8 product of quantized rows A (lda bytes apart, scales sa) and the
 * packed weights B (grucy_i8_pack_t of K rows: panels at B, column data corr, sc). */
static void grucy_i8_gemm(int M, int N, int K, const uint8_t* A, int lda, const float* sa,
                          const void* B, const int32_t* corr, const float* sc, float* C,
                          int ldc, int backwards)
{
    const ptrdiff_t pstride = (ptrdiff_t)(grucy_i8_panel_bytes(K) / 4);
    const uint32_t* P = (const uint32_t*)B;
    if (M <= 0 || N <= 0) return;
    switch (grucy_i8_kind) {
#if GRUCY_X86
    case GRUCY_LP_NATIVE:
        grucy_i8n_gemm(M, N, K, A, lda, sa, P, pstride, corr, sc, C, ldc, backwards); return;
    case GRUCY_LP_AVX512:
        grucy_i8e_avx512(M, N, K, A, lda, sa, P, pstride, corr, sc, C, ldc, backwards); return;
    case GRUCY_LP_AVX2:
        grucy_i8e_avx2(M, N, K, A, lda, sa, P, pstride, corr, sc, C, ldc, backwards); return;
#endif
    default:
        grucy_i8e_portable(M, N, K, A, lda, sa, P, pstride, corr, sc, C, ldc, backwards);
    }
}

#endif
