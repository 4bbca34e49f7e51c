# The C helpers (gemm.h, vexp.h) for the fused floating type.

from cython cimport floating

cdef extern from "gemm.h" nogil:
    void mg_gemm_f32(float* out, Py_ssize_t ldc, const float* a, Py_ssize_t sam,
                     Py_ssize_t sak, const float* b, Py_ssize_t ldb, int M, int N, int K,
                     int accumulate)
    void mg_gemm_f64(double* out, Py_ssize_t ldc, const double* a, Py_ssize_t sam,
                     Py_ssize_t sak, const double* b, Py_ssize_t ldb, int M, int N, int K,
                     int accumulate)

cdef extern from "vexp.h" nogil:
    void mg_vexp_f32(float* x, int n)
    void mg_vexp_f64(double* x, int n)


cdef inline void gemm(floating* out, Py_ssize_t ldc, const floating* a, Py_ssize_t sam,
                      Py_ssize_t sak, const floating* b, Py_ssize_t ldb, int M, int N, int K,
                      bint accumulate) noexcept nogil:
    """out (M, N) (+)= A (M, K) B (K, N), A[m, k] = a[m * sam + k * sak]; see gemm.h."""
    if floating is float:
        mg_gemm_f32(out, ldc, a, sam, sak, b, ldb, M, N, K, accumulate)
    else:
        mg_gemm_f64(out, ldc, a, sam, sak, b, ldb, M, N, K, accumulate)


cdef inline void vexp(floating* x, int n) noexcept nogil:
    """x[i] = exp(x[i]) for i < n; see vexp.h."""
    if floating is float:
        mg_vexp_f32(x, n)
    else:
        mg_vexp_f64(x, n)
