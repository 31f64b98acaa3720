"""NumPy emulations of grucy's low-precision arithmetic (src/grucy/_lowp.h), the oracle of
tests/test_lowp.py: written from the definitions, sharing no code with the kernels.

bf16: VCVTNEPS2BF16 conversion; each output one chain over the pairs of k, the odd
element first, every step an IEEE float32 FMA with results below 2^-126 flushed to zero
(VDPBF16PS).  A step's product of two bf16 values is exact in float64, and the float64
sum of two float32 values rounded to float32 is the correctly rounded float32 sum, so
float64 arithmetic then a cast gives the FMA's result exactly.

int8: per-row dynamic quantization of the activations (u8 = q + 128), int8 weights per
output channel with a float32 scale, exact integer sums, then two float32 products.
"""

from __future__ import annotations

import numpy as np

FLT_MIN = np.float32(2.0 ** -126)


def bf16_bits(x):
    """VCVTNEPS2BF16 of float32 values: the bf16 bit patterns (uint32 holding 16 bits)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    e = u & 0x7F800000
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    special = np.where(u & 0x7FFFFF, (u >> 16) | 0x40, u >> 16)   # NaN quieted, inf kept
    out = np.where(e == 0, (u >> 16) & 0x8000, np.where(e == 0x7F800000, special, rounded))
    return (out & 0xFFFF).astype(np.uint32).reshape(np.shape(x))


def bf16_round(x):
    """float32 values rounded to bf16 (as float32)."""
    return (bf16_bits(x) << 16).astype(np.uint32).view(np.float32)


def _ftz(s):
    return np.where(np.abs(s) < FLT_MIN, np.copysign(np.float32(0), s), s).astype(np.float32)


def bf16_matmul(a, b, c=None):
    """a (M, K) @ b (K, N) in the bf16 kernels' arithmetic; + c when given (accumulate)."""
    a = bf16_round(np.asarray(a, np.float32)).astype(np.float64)
    b = bf16_round(np.asarray(b, np.float32)).astype(np.float64)
    M, K = a.shape
    N = b.shape[1]
    if K % 2:
        a = np.concatenate([a, np.zeros((M, 1))], 1)
        b = np.concatenate([b, np.zeros((1, N))], 0)
        K += 1
    acc = np.zeros((M, N), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for p in range(K // 2):
            for k in (2 * p + 1, 2 * p):
                acc = _ftz((acc.astype(np.float64) + a[:, k:k + 1] * b[k:k + 1, :])
                           .astype(np.float32))
    if c is not None:
        acc = (np.asarray(c, np.float32) + acc).astype(np.float32)
    return acc


def int8_quantize_rows(a):
    """Per-row dynamic quantization: (q (M, K) int32 in [-127, 127], scales (M,))."""
    a = np.asarray(a, np.float32)
    amax = np.max(np.abs(a), axis=1) if a.shape[1] else np.zeros(a.shape[0], np.float32)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = (np.float32(127) / amax).astype(np.float32)
    ok = (amax > 0) & np.isfinite(inv)
    v = (a * np.where(ok, inv, np.float32(0))[:, None]).astype(np.float32)
    q = np.clip(np.rint(v), -127, 127).astype(np.int32)
    q[~ok] = 0
    sa = np.where(ok, (amax / np.float32(127)).astype(np.float32), np.float32(0))
    return q, sa.astype(np.float32)


def int8_quantize_weights(w):
    """Symmetric per-output-channel (row) quantization of w (N, K): (int8, scales)."""
    w = np.asarray(w, np.float32)
    sw = (np.max(np.abs(w), axis=1) / np.float32(127)).astype(np.float32)
    safe = np.where(sw > 0, sw, np.float32(1))
    q = np.where(sw[:, None] > 0, np.rint(w / safe[:, None]), 0)
    return np.clip(q, -127, 127).astype(np.int8), sw


def int8_matmul(a, wq, sw):
    """The int8 kernels' a (M, K) @ w.T with w given quantized (wq (N, K) int8, sw)."""
    q, sa = int8_quantize_rows(a)
    w = np.asarray(wq).astype(np.int64)
    S = (q + 128).astype(np.int64) @ w.T - 128 * w.sum(1)[None, :]
    assert np.abs(S).max(initial=0) < 2**31
    return ((S.astype(np.float32) * sa[:, None]).astype(np.float32)
            * sw[None, :]).astype(np.float32)
