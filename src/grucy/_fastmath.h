/* Branch-free float32 exp, sigmoid and tanh that gcc can vectorize (plain arithmetic,
 * no calls, no lookup tables).  glibc's expf/tanhf are scalar unless the whole module
 * is built with -ffast-math; its tanhf (via expm1f) alone took a fifth of an inference
 * pass at B=64, H=512.  Accuracy: a few float32 ulp over the whole range (tested
 * against numpy in tests/test_fastmath.py).  Polynomials from Cephes (S. Moshier).
 */
#ifndef GRUCY_FASTMATH_H
#define GRUCY_FASTMATH_H

#include <stdint.h>
#include <string.h>

static inline float grucy_expf(float x)
{
    /* exp(x) = 2^k exp(r), k = round(x / ln 2), |r| <= ln(2) / 2 */
    const float hi = 88.37626f, lo = -87.33654f;   /* 2^k stays a normal float */
    const float round_magic = 12582912.0f;          /* 1.5 * 2^23: round to nearest */
    float k, r, p;
    int32_t ki;
    uint32_t bits;
    float scale;
    x = x > hi ? hi : x;
    x = x < lo ? lo : x;
    k = (x * 1.44269504088896341f + round_magic) - round_magic;
    r = x - k * 0.693359375f;        /* ln 2 split in two for an exact product */
    r = r + k * 2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    ki = (int32_t)k;
    bits = (uint32_t)(ki + 127) << 23;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float grucy_sigmoidf(float x)
{
    return 1.0f / (1.0f + grucy_expf(-x));
}

static inline float grucy_tanhf(float x)
{
    /* Small |x|: odd polynomial (no cancellation); otherwise 1 - 2 / (exp(2|x|) + 1). */
    float ax = x < 0.0f ? -x : x;
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z
                     - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z
                   - 3.33332819422e-1f) * z * x + x;
    float large = 1.0f - 2.0f / (grucy_expf(2.0f * ax) + 1.0f);
    large = x < 0.0f ? -large : large;
    return ax < 0.625f ? small : large;
}

#endif
