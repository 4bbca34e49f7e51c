# rmsnorm(x) = x * (mean(x^2) + 1e-5) ** -0.5, no learnable gain.

from cython cimport floating
from libc.math cimport sqrt


cdef inline void rmsnorm_forward(floating* out, floating* scale, const floating* x,
                                 int T, int C) noexcept nogil:
    """out (T, C) = x * scale, scale (T,) = (mean of x^2 + 1e-5) ** -0.5."""
    cdef int t, c
    cdef floating ss, s
    cdef const floating* x_t
    for t in range(T):
        x_t = x + t * C
        ss = 0
        for c in range(C):
            ss += x_t[c] * x_t[c]
        # the original divides by len(x) as a multiply by len(x) ** -1
        s = 1 / sqrt(ss * (<floating>1.0 / C) + <floating>1e-5)
        scale[t] = s
        for c in range(C):
            out[t * C + c] = x_t[c] * s


cdef inline void rmsnorm_backward(floating* dx, const floating* dout, const floating* x,
                                  const floating* scale, int T, int C) noexcept nogil:
    """Adds into dx: d/dx of out = x * s(x), with ds/dx_c = -s^3 x_c / C.

    dx_c += s * dout_c - (s^3 / C) * x_c * sum_j dout_j x_j
    """
    cdef int t, c
    cdef floating s, dot, k
    cdef const floating* x_t
    cdef const floating* g_t
    for t in range(T):
        x_t = x + t * C
        g_t = dout + t * C
        s = scale[t]
        dot = 0
        for c in range(C):
            dot += g_t[c] * x_t[c]
        k = s * s * s * dot / C
        for c in range(C):
            dx[t * C + c] += s * g_t[c] - k * x_t[c]
