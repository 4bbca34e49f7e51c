# Adam with bias correction, one flat loop over a contiguous run of parameters.

from cython cimport floating
from fmath cimport fsqrt


cdef inline void adam_update(floating* params, floating* m, floating* v, const floating* grads,
                             const floating* grads2, Py_ssize_t n, floating lr_t,
                             floating beta1, floating beta2, floating bias1, floating bias2,
                             floating eps) noexcept nogil:
    """Update params[:n] and the moments m[:n], v[:n] from the gradient
    g = grads[:n], or g = grads[:n] + grads2[:n] when grads2 is not NULL (the
    sum of two gradient groups' partials, fused into the one pass).

    bias1 = 1 - beta1 ** (step + 1), bias2 = 1 - beta2 ** (step + 1);
    p -= lr_t * (m / bias1) / (sqrt(v / bias2) + eps).
    """
    cdef Py_ssize_t i
    cdef floating g
    cdef bint two = grads2 != NULL  # invariant: gcc makes one vector loop of each kind
    # m / bias1 and v / bias2 folded into two constants: one sqrt and one
    # divide per parameter remain, the floor of the exact mode.
    cdef floating step_size = lr_t / bias1, inv_bias2 = 1 / bias2
    for i in range(n):
        g = grads[i]
        if two:
            g = g + grads2[i]
        m[i] = beta1 * m[i] + (1 - beta1) * g
        v[i] = beta2 * v[i] + (1 - beta2) * (g * g)
        params[i] -= step_size * m[i] / (fsqrt(v[i] * inv_bias2) + eps)
