# Linear layers: out = W x for every row, forward and backward side by side.
#
# The forward pass reads W transposed, wt (nin, nout), so that its inner loop
# runs over outputs o with unit stride and gcc vectorizes it without
# reassociating any sum: out[t, o] accumulates x[t, i] * W[o, i] for i = 0, 1,
# ... in order, exactly as the original's sum() does.

from cython cimport floating


cdef inline void linear_forward(floating* out, const floating* x, const floating* wt,
                                int T, int nin, int nout) noexcept nogil:
    """out (T, nout) = x (T, nin) W^T, with wt = W^T (nin, nout)."""
    cdef int t, i, o
    cdef floating xi
    cdef floating* out_t
    cdef const floating* wt_i
    for t in range(T):
        out_t = out + t * nout
        for o in range(nout):
            out_t[o] = 0
        for i in range(nin):
            xi = x[t * nin + i]
            wt_i = wt + i * nout
            for o in range(nout):
                out_t[o] += xi * wt_i[o]


cdef inline void linear_residual_forward(floating* out, const floating* x, const floating* wt,
                                         const floating* res, int T, int nin,
                                         int nout) noexcept nogil:
    """out (T, nout) = x W^T + res; the residual is added after the full sum."""
    cdef Py_ssize_t k
    linear_forward(out, x, wt, T, nin, nout)
    for k in range(<Py_ssize_t>T * nout):
        out[k] += res[k]


cdef inline void linear_relu_forward(floating* out, const floating* x, const floating* wt,
                                     int T, int nin, int nout) noexcept nogil:
    """out (T, nout) = relu(x W^T)."""
    cdef Py_ssize_t k
    linear_forward(out, x, wt, T, nin, nout)
    for k in range(<Py_ssize_t>T * nout):
        out[k] = out[k] if out[k] > 0 else 0


cdef inline void linear_backward(floating* dx, floating* dw, const floating* dout,
                                 const floating* x, const floating* w,
                                 int T, int nin, int nout) noexcept nogil:
    """Adds into dx (T, nin) += dout W and dw (nout, nin) += dout^T x.

    Both inner loops run over nin with unit stride: dx[t] gathers the rows of
    W (nout, nin), dw[o] gathers the rows of x.
    """
    cdef int t, i, o
    cdef floating g
    cdef floating* dx_t
    cdef floating* dw_o
    cdef const floating* w_o
    cdef const floating* x_t
    for t in range(T):
        dx_t = dx + t * nin
        for o in range(nout):
            g = dout[t * nout + o]
            w_o = w + o * nin
            for i in range(nin):
                dx_t[i] += g * w_o[i]
    for t in range(T):
        x_t = x + t * nin
        for o in range(nout):
            g = dout[t * nout + o]
            dw_o = dw + o * nin
            for i in range(nin):
                dw_o[i] += g * x_t[i]


cdef inline void relu_backward(floating* dh, const floating* h, Py_ssize_t n) noexcept nogil:
    """dh *= (h > 0), where h = relu(pre) so h > 0 exactly when pre > 0."""
    cdef Py_ssize_t k
    for k in range(n):
        if not h[k] > 0:
            dh[k] = 0
