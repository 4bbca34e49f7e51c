# Linear layers: out = W x for every row, forward and backward side by side.
#
# All the products go through the register-tiled gemm (simd.pxd, gemm.h), or in
# the avx512_bf16 variant's float32 through its bfloat16 one (gemm_bf16.h).
# The forward pass reads W transposed, wt (nin, nout), so that B's rows are
# contiguous over outputs. Each output sums x[t, i] * W[o, i] for i = 0, 1, ...
# in order, exactly as the original's sum() does.

from cython cimport floating
from libc.string cimport memcpy

from simd cimport weight_gemm


cdef inline void linear_forward(floating* out, const floating* x, const floating* wt,
                                int T, int nin, int nout) noexcept nogil:
    """out (T, nout) = x (T, nin) W^T, with wt = W^T (nin, nout)."""
    weight_gemm(out, nout, x, nin, 1, wt, nout, T, nout, nin, False)


cdef inline void linear_residual_forward(floating* out, const floating* x, const floating* wt,
                                         const floating* res, int T, int nin,
                                         int nout) noexcept nogil:
    """out (T, nout) = x W^T + res; the residual is added to the finished sum."""
    memcpy(out, res, <size_t>T * nout * sizeof(floating))
    weight_gemm(out, nout, x, nin, 1, wt, nout, T, nout, nin, True)


cdef inline void linear_relu_forward(floating* out, const floating* x, const floating* wt,
                                     int T, int nin, int nout) noexcept nogil:
    """out (T, nout) = relu(x W^T)."""
    cdef Py_ssize_t k
    weight_gemm(out, nout, x, nin, 1, wt, nout, T, nout, nin, False)
    for k in range(<Py_ssize_t>T * nout):
        out[k] = out[k] if out[k] > 0 else 0


cdef inline void linear_backward_input(floating* dx, const floating* dout, const floating* w,
                                       int T, int nin, int nout) noexcept nogil:
    """dx (T, nin) = dout (T, nout) W, with W (nout, nin) as stored.

    Written, not added to a zeroed dx: the same numbers (0 + s is s, but for
    the sign of an exact zero sum) without a pass to clear dx and one to read
    it back."""
    weight_gemm(dx, nin, dout, nout, 1, w, nin, T, nin, nout, False)


cdef inline void linear_backward_weight(floating* dw, const floating* dout, const floating* x,
                                        int R, int nin, int nout, int o0,
                                        int o1) noexcept nogil:
    """dw (o1 - o0, nin) = rows o0..o1-1 of dout^T x, summed over all R rows in order.

    dout (R, nout) and x (R, nin) hold every row of a step, so the product has
    R rows of depth, and each weight's gradient is the same sum whichever
    thread computes it.
    """
    weight_gemm(dw, nin, dout + o0, 1, nout, x, nin, o1 - o0, nin, R, False)


cdef inline void relu_backward(floating* dh, const floating* h, Py_ssize_t n) noexcept nogil:
    """dh *= (h > 0), where h = relu(pre) so h > 0 exactly when pre > 0."""
    cdef Py_ssize_t k
    for k in range(n):
        dh[k] = dh[k] if h[k] > 0 else 0  # a select, so the loop vectorizes
