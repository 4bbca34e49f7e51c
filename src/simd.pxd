# The C helpers (gemm.h, gemm_bf16.h, vexp.h, verf.h, transpose.h) for the fused
# floating type.

from cython cimport floating

cdef extern from "gemm.h" nogil:
    void mg_gemm_f32(float* out, Py_ssize_t ldc, const float* a, Py_ssize_t sam,
                     Py_ssize_t sak, const float* b, Py_ssize_t ldb, int M, int N, int K,
                     int accumulate)
    void mg_gemm_f64(double* out, Py_ssize_t ldc, const double* a, Py_ssize_t sam,
                     Py_ssize_t sak, const double* b, Py_ssize_t ldb, int M, int N, int K,
                     int accumulate)

cdef extern from "gemm_bf16.h" nogil:
    const bint BF16_PRODUCTS "MG_BF16"   # this variant multiplies weights in bfloat16
    void mg_gemm_bf16(float* out, Py_ssize_t ldc, const float* a, Py_ssize_t sam,
                      Py_ssize_t sak, const float* b, Py_ssize_t ldb, int M, int N, int K,
                      int accumulate)

cdef extern from "transpose.h" nogil:
    void mg_transpose_f32(float* dst, Py_ssize_t ldd, const float* src, Py_ssize_t lds,
                          int rows, int cols)
    void mg_transpose_f64(double* dst, Py_ssize_t ldd, const double* src, Py_ssize_t lds,
                          int rows, int cols)

cdef extern from "vexp.h" nogil:
    void mg_vexp_f32(float* x, int n)
    void mg_vexp_f64(double* x, int n)

cdef extern from "verf.h" nogil:
    void mg_verf_f32(float* x, Py_ssize_t n)
    void mg_verf_f64(double* x, Py_ssize_t n)


cdef inline void gemm(floating* out, Py_ssize_t ldc, const floating* a, Py_ssize_t sam,
                      Py_ssize_t sak, const floating* b, Py_ssize_t ldb, int M, int N, int K,
                      bint accumulate) noexcept nogil:
    """out (M, N) (+)= A (M, K) B (K, N), A[m, k] = a[m * sam + k * sak]; see gemm.h."""
    if floating is float:
        mg_gemm_f32(out, ldc, a, sam, sak, b, ldb, M, N, K, accumulate)
    else:
        mg_gemm_f64(out, ldc, a, sam, sak, b, ldb, M, N, K, accumulate)


cdef inline void weight_gemm(floating* out, Py_ssize_t ldc, const floating* a, Py_ssize_t sam,
                             Py_ssize_t sak, const floating* b, Py_ssize_t ldb, int M, int N,
                             int K, bint accumulate) noexcept nogil:
    """gemm for the linear layers' products: in the avx512_bf16 variant, float32's
    go through gemm_bf16.h (bfloat16 inputs, float32 sums); float64 never does."""
    if floating is float:
        if BF16_PRODUCTS:
            mg_gemm_bf16(out, ldc, a, sam, sak, b, ldb, M, N, K, accumulate)
            return
    gemm(out, ldc, a, sam, sak, b, ldb, M, N, K, accumulate)


cdef inline void vexp(floating* x, int n) noexcept nogil:
    """x[i] = exp(x[i]) for i < n; see vexp.h."""
    if floating is float:
        mg_vexp_f32(x, n)
    else:
        mg_vexp_f64(x, n)


cdef inline void verf(floating* x, Py_ssize_t n) noexcept nogil:
    """x[i] = erf(x[i]) for i < n; see verf.h."""
    if floating is float:
        mg_verf_f32(x, n)
    else:
        mg_verf_f64(x, n)


cdef inline void transpose(floating* dst, Py_ssize_t ldd, const floating* src, Py_ssize_t lds,
                           int rows, int cols) noexcept nogil:
    """dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols; see transpose.h."""
    if floating is float:
        mg_transpose_f32(dst, ldd, src, lds, rows, cols)
    else:
        mg_transpose_f64(dst, ldd, src, lds, rows, cols)
