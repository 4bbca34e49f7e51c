# Softmax cross-entropy of the next token, forward and backward in one pass.

from cython cimport floating
from libc.math cimport exp
from fmath cimport flog
from simd cimport vexp


cdef inline double xent_forward_backward(floating* dlogits, const floating* logits,
                                         const int* targets, int T, int V,
                                         floating grad_scale) noexcept nogil:
    """Sum over rows of -log softmax(logits[t])[targets[t]]; dlogits (T, V) is set
    (dlogits may be logits itself).

    The loss is computed as log-sum-exp minus the target logit, so it stays
    finite even when the target's probability underflows.
    dlogits[t] = (softmax(logits[t]) - onehot(targets[t])) * grad_scale.
    """
    cdef int t, v
    cdef floating mx, total, inv_total, target_logit
    cdef const floating* l
    cdef floating* g
    cdef double loss = 0
    for t in range(T):
        l = logits + t * V
        g = dlogits + t * V     # may be the same memory as l
        target_logit = l[targets[t]]
        mx = l[0]
        for v in range(V):
            if l[v] > mx:
                mx = l[v]
        for v in range(V):
            g[v] = l[v] - mx
        vexp(g, V)
        total = 0
        for v in range(V):
            total += g[v]
        inv_total = 1 / total
        loss += flog(total) + mx - target_logit
        for v in range(V):
            g[v] = g[v] * inv_total * grad_scale
        g[targets[t]] -= grad_scale
    return loss


cdef inline void softmax_temperature(double* probs, const floating* logits, int V,
                                     double temperature) noexcept nogil:
    """probs (V,) = softmax(logits / temperature), in the original's order of operations."""
    cdef int v
    cdef double inv_t = 1.0 / temperature, mx, total, inv_total
    for v in range(V):
        probs[v] = logits[v] * inv_t
    mx = probs[0]
    for v in range(V):
        if probs[v] > mx:
            mx = probs[v]
    total = 0
    for v in range(V):
        probs[v] = exp(probs[v] - mx)
        total += probs[v]
    inv_total = 1.0 / total
    for v in range(V):
        probs[v] = probs[v] * inv_total
