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

    Rows go 8 at a time: their max and sum chains run side by side (each row
    still takes v = 0, 1, ... in order: only comparisons and additions, so the
    grouping cannot change a bit), and one vexp covers all 8 rows. There are
    always 8 chains, so that they stay in registers; past the last row they
    repeat it and are dropped.
    """
    cdef int t0, t, v, r, nr
    cdef floating inv_total
    cdef floating mx[8]
    cdef floating total[8]
    cdef floating target_logit[8]
    cdef Py_ssize_t row[8]
    cdef floating* g
    cdef double loss = 0
    for t0 in range(0, T, 8):
        nr = min(8, T - t0)
        for r in range(8):
            row[r] = <Py_ssize_t>(t0 + min(r, nr - 1)) * V
            mx[r] = logits[row[r]]
        for r in range(nr):
            target_logit[r] = logits[row[r] + targets[t0 + r]]
        for v in range(V):
            for r in range(8):
                mx[r] = logits[row[r] + v] if logits[row[r] + v] > mx[r] else mx[r]
        for r in range(nr):
            for v in range(V):
                dlogits[(t0 + r) * V + v] = logits[(t0 + r) * V + v] - mx[r]
        vexp(dlogits + t0 * V, nr * V)
        for r in range(8):
            total[r] = 0
        for v in range(V):
            for r in range(8):
                total[r] += dlogits[row[r] + v]
        for r in range(nr):
            t = t0 + r
            g = dlogits + t * V
            inv_total = 1 / total[r]
            loss += flog(total[r]) + mx[r] - target_logit[r]
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
