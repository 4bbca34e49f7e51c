# A learned per-channel gain after a norm (GPTConfig.norm_gain):
# out[t, c] = y[t, c] * g[c], y the normalized row.
#
# The gain's gradient is a sum over every row of a step, taken like the other
# weight gradients in the weight phase (engine.pxi, phase B) from the norm
# output's gradient and y, which the forward and backward passes keep.

from cython cimport floating


cdef inline void gain_forward(floating* out, const floating* y, const floating* g, int T,
                              int C) noexcept nogil:
    """out (T, C) = y * g, g (C,)."""
    cdef int t, c
    cdef floating* out_t
    cdef const floating* y_t
    for t in range(T):
        out_t = out + <Py_ssize_t>t * C
        y_t = y + <Py_ssize_t>t * C
        for c in range(C):
            out_t[c] = y_t[c] * g[c]


cdef inline void gain_backward_input(floating* dy, const floating* dout, const floating* g,
                                     int T, int C) noexcept nogil:
    """dy (T, C) = dout * g: the gradient of the normalized rows (set, not added)."""
    gain_forward(dy, dout, g, T, C)


cdef inline void gain_backward_weight(floating* dg, const floating* dout, const floating* y,
                                      int R, int C) noexcept nogil:
    """dg (C,) = sum over rows r = 0, 1, ... in order of dout[r] * y[r], for the R rows of
    dout and y (R, C); each channel's lane adds its rows in that order, whatever the
    vector width."""
    cdef int r, c
    cdef const floating* g_r
    cdef const floating* y_r
    for c in range(C):
        dg[c] = 0
    for r in range(R):
        g_r = dout + <Py_ssize_t>r * C
        y_r = y + <Py_ssize_t>r * C
        for c in range(C):
            dg[c] += g_r[c] * y_r[c]
