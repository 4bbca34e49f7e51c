# Adam with bias correction, one flat loop over a block of the parameter buffer.

from cython cimport floating
from fmath cimport fsqrt


cdef inline void adam_update(floating* params, floating* m, floating* v, floating* grads,
                             Py_ssize_t grad_stride, int n_slots, Py_ssize_t i0,
                             Py_ssize_t i1, floating lr_t, floating beta1, floating beta2,
                             floating bias1, floating bias2, floating eps) noexcept nogil:
    """Update params[i0:i1] from the gradient summed over n_slots slot buffers.

    grads holds n_slots buffers of grad_stride elements; they are added in slot
    order (the same order for any thread count) and zeroed for the next step.
    bias1 = 1 - beta1 ** (step + 1), bias2 = 1 - beta2 ** (step + 1).
    """
    cdef Py_ssize_t i
    cdef int s
    cdef floating g
    # m_hat = m / bias1 and v_hat = v / bias2 folded into two constants: one
    # sqrt and one divide per parameter remain, the floor of the exact mode.
    cdef floating step_size = lr_t / bias1, inv_bias2 = 1 / bias2
    for s in range(1, n_slots):
        for i in range(i0, i1):
            grads[i] += grads[s * grad_stride + i]
            grads[s * grad_stride + i] = 0
    for i in range(i0, i1):
        g = grads[i]
        grads[i] = 0
        m[i] = beta1 * m[i] + (1 - beta1) * g
        v[i] = beta2 * v[i] + (1 - beta2) * (g * g)
        params[i] -= step_size * m[i] / (fsqrt(v[i] * inv_bias2) + eps)
