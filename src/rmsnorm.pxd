# rmsnorm(x) = x * (mean(x^2) + 1e-5) ** -0.5, no learnable gain.
#
# A row's sum over c is one chain of dependent additions, so rows are taken 8
# at a time with one accumulator each: the 8 chains overlap in the pipeline,
# and every row still sums c = 0, 1, ... in order, as the original does, each
# product rounded before it is added (fmath.rounded): so a row's sum is the
# same bits in whichever of the 8 chains it runs, whatever the compiler made of
# the vector lanes.

from cython cimport floating
from libc.math cimport sqrt

from fmath cimport muladd, rounded


cdef inline void row_dots(floating* dots, const floating* x, const floating* y, int nr,
                          int C) noexcept nogil:
    """dots[r] = sum_c x[r, c] * y[r, c] for rows r < nr (at most 8), c in order;
    dots[nr..7] repeat the last row's."""
    cdef int r, c
    cdef floating acc[8]
    cdef Py_ssize_t row[8]
    # Always 8 chains, so that they stay in registers; past nr they repeat the
    # last row and are dropped. A row's arithmetic is its own whatever rows
    # share its group (that depends on how documents are shared among threads).
    for r in range(8):
        acc[r] = 0
        row[r] = <Py_ssize_t>min(r, nr - 1) * C
    for c in range(C):
        for r in range(8):
            acc[r] += rounded(x[row[r] + c] * y[row[r] + c])
    for r in range(8):
        dots[r] = acc[r]


cdef inline void rmsnorm_forward(floating* out, floating* scale, const floating* x,
                                 int T, int C) noexcept nogil:
    """out (T, C) = x * scale, scale (T,) = (mean of x^2 + 1e-5) ** -0.5."""
    cdef int t0, t, c, nr, r
    cdef floating s
    cdef floating ss[8]
    cdef floating* out_t
    cdef const floating* x_t
    for t0 in range(0, T, 8):
        nr = min(8, T - t0)
        row_dots(ss, x + t0 * C, x + t0 * C, nr, C)
        # the 8 rows' scales as one vector square root and divide; the original
        # divides by len(x) as a multiply by len(x) ** -1 (and + 1e-5 is fused
        # with it exactly where the CPU has FMA, in every lane: fmath.muladd)
        for r in range(8):
            ss[r] = 1 / sqrt(muladd(ss[r], <floating>1.0 / C, <floating>1e-5))
        for t in range(t0, t0 + nr):
            s = ss[t - t0]
            scale[t] = s
            out_t = out + t * C      # row pointers: gcc vectorizes the loop over c
            x_t = x + t * C
            for c in range(C):
                out_t[c] = x_t[c] * s


cdef inline void rmsnorm_backward(floating* dx, const floating* dout, const floating* x,
                                  const floating* scale, int T, int C) noexcept nogil:
    """Adds into dx: d/dx of out = x * s(x), with ds/dx_c = -s^3 x_c / C.

    dx_c += s * dout_c - (s^3 / C) * x_c * sum_j dout_j x_j
    """
    cdef int t0, t, c, nr, r
    cdef floating s, k
    cdef floating dots[8]
    cdef floating* dx_t
    cdef const floating* g_t
    cdef const floating* x_t
    for t0 in range(0, T, 8):
        nr = min(8, T - t0)
        row_dots(dots, dout + t0 * C, x + t0 * C, nr, C)
        # the 8 rows' k = s^3 dots / C as one vector divide
        for r in range(8):
            s = scale[t0 + min(r, nr - 1)]
            dots[r] = s * s * s * dots[r] / C
        for t in range(t0, t0 + nr):
            s = scale[t]
            k = dots[t - t0]
            dx_t = dx + t * C
            g_t = dout + t * C
            x_t = x + t * C
            for c in range(C):
                dx_t[c] += s * g_t[c] - k * x_t[c]
