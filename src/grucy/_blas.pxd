# Row-major wrappers over scipy's Fortran BLAS (scipy.linalg.cython_blas), fused over
# float/double.  A row-major (M, N) array is the column-major (N, M) array of its
# transpose, so C = op(A) @ op(B) is computed as C^T = op(B)^T @ op(A)^T.

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """C (m, n) = alpha * op(A) @ op(B) + beta * C, all row-major; m == 1 goes to GEMV."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef char tv
    cdef int inc_a = lda if trans_a else 1
    cdef int one = 1
    if m <= 0 or n <= 0:
        return
    if m == 1:
        # A single row: c = op(B)^T a.  Row-major B (k, n) is column-major (n, k), so
        # op(B) = B needs B^T in column-major terms -> 'N' on the (n, k) matrix.
        tv = b'T' if trans_b else b'N'
        if trans_b:
            if floating is float:
                sgemv(&tv, &k, &n, &alpha, <float*>b, &ldb, <float*>a, &inc_a,
                      &beta, c, &one)
            else:
                dgemv(&tv, &k, &n, &alpha, <double*>b, &ldb, <double*>a, &inc_a,
                      &beta, c, &one)
        else:
            if floating is float:
                sgemv(&tv, &n, &k, &alpha, <float*>b, &ldb, <float*>a, &inc_a,
                      &beta, c, &one)
            else:
                dgemv(&tv, &n, &k, &alpha, <double*>b, &ldb, <double*>a, &inc_a,
                      &beta, c, &one)
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)


cdef inline void colsum(int rows, int cols, const floating* a, int lda,
                        const floating* ones, floating* out) noexcept nogil:
    """out (cols,) += A (rows, cols).sum(axis=0) for row-major A; ``ones`` holds ``rows`` ones."""
    # BLAS forbids a zero increment, so the caller supplies a vector of ones.
    cdef char tn = b'N'
    cdef int inc = 1
    cdef floating unit = 1
    if rows <= 0 or cols <= 0:
        return
    # Column-major, A is (cols, rows) with leading dimension lda: out = 1 * A @ ones + 1 * out.
    if floating is float:
        sgemv(&tn, &cols, &rows, &unit, <float*>a, &lda, <float*>ones, &inc, &unit, out, &inc)
    else:
        dgemv(&tn, &cols, &rows, &unit, <double*>a, &lda, <double*>ones, &inc, &unit, out, &inc)
