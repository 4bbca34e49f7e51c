# Adam with bias correction, one flat loop over a contiguous run of parameters;
# and the gradient's global-norm clipping, which needs the whole gradient first.

from cython cimport floating
from libc.math cimport sqrt
from fmath cimport fsqrt


cdef struct AdamOptions:
    # the settings of every step (config.Adam); the rate is each step's own
    double beta1, beta2, eps
    double weight_decay    # decoupled (AdamW): p *= 1 - lr_t * weight_decay; 0: off
    double grad_clip       # the gradient's global L2 norm is clipped to this; 0: off


cdef inline void adam_update(floating* params, floating* m, floating* v, const floating* grads,
                             const floating* grads2, Py_ssize_t n, floating lr_t,
                             floating beta1, floating beta2, floating bias1, floating bias2,
                             floating eps, floating grad_scale,
                             floating shrink) noexcept nogil:
    """Update params[:n] and the moments m[:n], v[:n] from the gradient
    g = grads[:n], or g = grads[:n] + grads2[:n] when grads2 is not NULL (the
    sum of two gradient groups' partials, fused into the one pass).

    bias1 = 1 - beta1 ** (step + 1), bias2 = 1 - beta2 ** (step + 1);
    g *= grad_scale (the clipping); p *= shrink (the weight decay, 1 - lr_t *
    weight_decay); then p -= lr_t * (m / bias1) / (sqrt(v / bias2) + eps).
    A grad_scale and shrink of 1 change no bit, so the plain loop serves them.
    """
    cdef Py_ssize_t i
    cdef floating g
    cdef bint two = grads2 != NULL  # invariant: gcc makes one vector loop of each kind
    cdef bint scaled = grad_scale != 1 or shrink != 1  # invariant too: off by default
    # m / bias1 and v / bias2 folded into two constants: one sqrt and one
    # divide per parameter remain, the floor of the exact mode.
    cdef floating step_size = lr_t / bias1, inv_bias2 = 1 / bias2
    for i in range(n):
        g = grads[i]
        if two:
            g = g + grads2[i]
        if scaled:
            g = g * grad_scale
            params[i] = params[i] * shrink
        m[i] = beta1 * m[i] + (1 - beta1) * g
        v[i] = beta2 * v[i] + (1 - beta2) * (g * g)
        params[i] -= step_size * m[i] / (fsqrt(v[i] * inv_bias2) + eps)


cdef inline double _square(const floating* grads, const floating* grads2,
                           Py_ssize_t i) noexcept nogil:
    """g * g in double, g = grads[i] (+ grads2[i]) summed as adam_update sums it."""
    cdef floating g = grads[i]
    if grads2 != NULL:
        g = g + grads2[i]
    return <double>g * <double>g


cdef inline double sum_of_squares(const floating* grads, const floating* grads2,
                                  Py_ssize_t n) noexcept nogil:
    """The sum of g * g over g = grads[:n] (+ grads2[:n] when not NULL), in double.

    Eight running sums, lane j taking elements j, j + 8, ..., then added
    pairwise: an order fixed by n alone (the same bits for any thread count),
    whose eight independent additions pipeline where one running sum would
    wait on each add."""
    cdef double lanes[8]
    cdef Py_ssize_t i, j, whole = n - n % 8
    for j in range(8):
        lanes[j] = 0
    for i in range(0, whole, 8):
        for j in range(8):
            lanes[j] += _square(grads, grads2, i + j)
    for i in range(whole, n):
        lanes[i - whole] += _square(grads, grads2, i)
    return (((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
            + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])))


cdef inline double clip_scale(const double* block_squares, int n_blocks,
                              double grad_clip) noexcept nogil:
    """min(1, grad_clip / (norm + 1e-6)) (PyTorch's clip_grad_norm_), norm the
    square root of the blocks' sums of squares added in block order."""
    cdef double total = 0, scale
    cdef int k
    for k in range(n_blocks):
        total += block_squares[k]
    scale = grad_clip / (sqrt(total) + 1e-6)
    return scale if scale < 1 else 1.0
