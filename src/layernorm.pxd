# layernorm(x) = (x - mean(x)) * (var(x) + 1e-5) ** -0.5, where var is the biased
# variance (the mean of the squared deviations); no learnable bias.
#
# Each row's two sums (of x, then of its squared deviations) add c = 0, 1, ...
# in order, as the reference's sum() does. As in rmsnorm.pxd, rows go 8 at a
# time with one accumulator each, so that the 8 dependent chains overlap in
# the pipeline; a row's arithmetic is its own whatever rows share its group
# (products are rounded before they are added, the mean before it is
# subtracted: fmath.rounded).

from cython cimport floating
from libc.math cimport sqrt

from fmath cimport muladd, rounded
from rmsnorm cimport row_dots


cdef inline void row_sums(floating* sums, const floating* x, int nr, int C) noexcept nogil:
    """sums[r] = sum_c x[r, c] for rows r < nr (at most 8), c in order; sums[nr..7]
    repeat the last row's (see row_dots)."""
    cdef int r, c
    cdef floating acc[8]
    cdef Py_ssize_t row[8]
    for r in range(8):
        acc[r] = 0
        row[r] = <Py_ssize_t>min(r, nr - 1) * C
    for c in range(C):
        for r in range(8):
            acc[r] += x[row[r] + c]
    for r in range(8):
        sums[r] = acc[r]


cdef inline void layernorm_forward(floating* out, floating* scale, const floating* x,
                                   int T, int C) noexcept nogil:
    """out (T, C) = (x - mean) * scale, scale (T,) = (mean of (x - mean)^2 + 1e-5) ** -0.5.

    out is the normalized row, which the backward pass reads (it holds the
    deviations until they are scaled)."""
    cdef int t0, t, c, nr, r
    cdef floating mu, s
    cdef floating sums[8]
    cdef floating* out_t
    cdef const floating* x_t
    for t0 in range(0, T, 8):
        nr = min(8, T - t0)
        # mean = sum(x) / C, the division a multiply by C ** -1 as in the reference
        row_sums(sums, x + <Py_ssize_t>t0 * C, nr, C)
        for t in range(t0, t0 + nr):
            mu = rounded(sums[t - t0] * (<floating>1.0 / C))
            out_t = out + <Py_ssize_t>t * C
            x_t = x + <Py_ssize_t>t * C
            for c in range(C):
                out_t[c] = x_t[c] - mu
        row_dots(sums, out + <Py_ssize_t>t0 * C, out + <Py_ssize_t>t0 * C, nr, C)
        for r in range(8):
            sums[r] = 1 / sqrt(muladd(sums[r], <floating>1.0 / C, <floating>1e-5))
        for t in range(t0, t0 + nr):
            s = sums[t - t0]
            scale[t] = s
            out_t = out + <Py_ssize_t>t * C
            for c in range(C):
                out_t[c] = out_t[c] * s


cdef inline void layernorm_backward(floating* dx, const floating* dout, const floating* y,
                                    const floating* scale, int T, int C) noexcept nogil:
    """Adds into dx: d/dx of y = (x - mean) * s(x), from y itself (the forward's out)
    and s. With dy/dx through the mean and through s (ds/dx_c = -s^3 (x_c - mean) / C):

    dx_c += s * (dout_c - mean_j dout_j - y_c * mean_j dout_j y_j)
    """
    cdef int t0, t, c, nr, r
    cdef floating s, a, b
    cdef floating means[8]
    cdef floating dots[8]
    cdef floating* dx_t
    cdef const floating* g_t
    cdef const floating* y_t
    for t0 in range(0, T, 8):
        nr = min(8, T - t0)
        row_sums(means, dout + <Py_ssize_t>t0 * C, nr, C)
        row_dots(dots, dout + <Py_ssize_t>t0 * C, y + <Py_ssize_t>t0 * C, nr, C)
        for r in range(8):
            means[r] = means[r] / C
            dots[r] = dots[r] / C
        for t in range(t0, t0 + nr):
            s = scale[t]
            a = means[t - t0]
            b = dots[t - t0]
            dx_t = dx + <Py_ssize_t>t * C
            g_t = dout + <Py_ssize_t>t * C
            y_t = y + <Py_ssize_t>t * C
            for c in range(C):
                dx_t[c] += s * (g_t[c] - a - y_t[c] * b)
