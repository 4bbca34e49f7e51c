# Causal self-attention over the positions of one document.
#
# Pointers are at the document's first row. qkv (n, 3C) holds q, k, v side by
# side; head h uses columns h*D .. h*D+D-1 of each. att (n, H, T) holds row t's
# softmax weights over keys u <= t. Keys are copied transposed, kt (C, T), so
# that the logits of one query against all earlier keys are unit-stride loops.

from cython cimport floating
from simd cimport vexp


cdef inline void attention_forward(floating* out, floating* att, floating* kt,
                                   const floating* qkv, int p0, int p1, int T, int C,
                                   int H, int D, floating inv_sqrt_d) noexcept nogil:
    """Rows p0..p1-1 of out (n, C) and att; rows < p0 of qkv are the KV cache.

    logit_u = (q_t . k_u) / sqrt(D) for u <= t, att = softmax(logits),
    out_t = sum_u att_u v_u, per head.
    """
    cdef int t, h, d, u, c
    cdef floating qd, mx, total, inv_total
    cdef floating* w
    cdef const floating* kt_c
    cdef const floating* q_t
    cdef const floating* v_u
    cdef floating* out_h
    for u in range(p1):
        for c in range(C):
            kt[c * T + u] = qkv[u * 3 * C + C + c]
    for t in range(p0, p1):
        q_t = qkv + t * 3 * C
        for h in range(H):
            w = att + (t * H + h) * T
            for u in range(t + 1):
                w[u] = 0
            for d in range(D):
                qd = q_t[h * D + d]
                kt_c = kt + (h * D + d) * T
                for u in range(t + 1):
                    w[u] += qd * kt_c[u]
            mx = w[0] * inv_sqrt_d
            for u in range(t + 1):
                w[u] = w[u] * inv_sqrt_d
                mx = w[u] if w[u] > mx else mx
            for u in range(t + 1):
                w[u] = w[u] - mx
            vexp(w, t + 1)
            total = 0
            for u in range(t + 1):
                total += w[u]
            inv_total = 1 / total
            for u in range(t + 1):
                w[u] = w[u] * inv_total
            out_h = out + t * C + h * D
            for d in range(D):
                out_h[d] = 0
            for u in range(t + 1):
                v_u = qkv + u * 3 * C + 2 * C + h * D
                for d in range(D):
                    out_h[d] += w[u] * v_u[d]


cdef inline void attention_backward(floating* dqkv, floating* d_row, const floating* dout,
                                    const floating* att, const floating* qkv, int n, int T,
                                    int C, int H, int D, floating inv_sqrt_d) noexcept nogil:
    """Adds into dqkv (n, 3C) the gradient of rows 0..n-1 given dout (n, C).

    With w = softmax(l): dw_u = dout_t . v_u, dl_u = w_u (dw_u - sum_u' w_u' dw_u'),
    dq_t += dl_u k_u / sqrt(D), dk_u += dl_u q_t / sqrt(D), dv_u += w_u dout_t.
    """
    cdef int t, h, d, u
    cdef floating acc, wd_sum, dl
    cdef const floating* w
    cdef const floating* g
    cdef const floating* q_h
    cdef floating* dq_h
    cdef const floating* k_u
    cdef const floating* v_u
    cdef floating* dk_u
    cdef floating* dv_u
    for t in range(n):
        for h in range(H):
            w = att + (t * H + h) * T
            g = dout + t * C + h * D
            q_h = qkv + t * 3 * C + h * D
            dq_h = dqkv + t * 3 * C + h * D
            wd_sum = 0
            for u in range(t + 1):
                v_u = qkv + u * 3 * C + 2 * C + h * D
                dv_u = dqkv + u * 3 * C + 2 * C + h * D
                acc = 0
                for d in range(D):
                    acc += g[d] * v_u[d]
                    dv_u[d] += w[u] * g[d]
                d_row[u] = acc
                wd_sum += w[u] * acc
            for u in range(t + 1):
                k_u = qkv + u * 3 * C + C + h * D
                dk_u = dqkv + u * 3 * C + C + h * D
                dl = w[u] * (d_row[u] - wd_sum) * inv_sqrt_d
                for d in range(D):
                    dq_h[d] += dl * k_u[d]
                    dk_u[d] += dl * q_h[d]
