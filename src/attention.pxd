# Causal self-attention over the positions of one document.
#
# qkv (T, 3C) holds q, k, v side by side; head h uses columns h*D .. h*D+D-1 of
# each. Keys are kept transposed, kt (C, T), so that the logits of one query
# against all earlier keys are unit-stride loops over keys.

from cython cimport floating
from simd cimport vexp


cdef inline void attention_forward(floating* out, floating* att, floating* kt,
                                   const floating* qkv, int p0, int p1, int T, int C,
                                   int H, int D, floating inv_sqrt_d) noexcept nogil:
    """Rows p0..p1-1 of out (T, C) and att (H, T, T); rows < p0 are the KV cache.

    logit_u = (q_t . k_u) / sqrt(D) for u <= t, att = softmax(logits),
    out_t = sum_u att_u v_u, per head.
    """
    cdef int t, h, d, u, c
    cdef floating qd, mx, total, inv_total
    cdef floating* w
    cdef const floating* kt_c
    cdef const floating* q_t
    cdef floating* out_t
    for u in range(p0, p1):
        for c in range(C):
            kt[c * T + u] = qkv[u * 3 * C + C + c]
    for t in range(p0, p1):
        q_t = qkv + t * 3 * C
        out_t = out + t * C
        for h in range(H):
            w = att + (h * T + t) * T
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
                if w[u] > mx:
                    mx = w[u]
            for u in range(t + 1):
                w[u] = w[u] - mx
            vexp(w, t + 1)
            total = 0
            for u in range(t + 1):
                total += w[u]
            inv_total = 1 / total
            for u in range(t + 1):
                w[u] = w[u] * inv_total
            for d in range(D):
                out_t[h * D + d] = 0
            for u in range(t + 1):
                for d in range(D):
                    out_t[h * D + d] += w[u] * qkv[u * 3 * C + 2 * C + h * D + d]


cdef inline void attention_backward(floating* dqkv, floating* d_row, const floating* dout,
                                    const floating* att, const floating* qkv, int n, int T,
                                    int C, int H, int D, floating inv_sqrt_d) noexcept nogil:
    """Adds into dqkv (T, 3C) the gradient of rows 0..n-1 given dout (T, C).

    With w = softmax(l): dw_u = dout_t . v_u, dl_u = w_u (dw_u - sum_u' w_u' dw_u'),
    dq_t += dl_u k_u / sqrt(D), dk_u += dl_u q_t / sqrt(D), dv_u += w_u dout_t.
    """
    cdef int t, h, d, u
    cdef floating acc, wd_sum, dl
    cdef const floating* w
    cdef const floating* g
    cdef const floating* q_t
    cdef floating* dq_t
    cdef Py_ssize_t row_u
    for t in range(n):
        q_t = qkv + t * 3 * C
        dq_t = dqkv + t * 3 * C
        for h in range(H):
            w = att + (h * T + t) * T
            g = dout + t * C + h * D
            wd_sum = 0
            for u in range(t + 1):
                row_u = u * 3 * C + h * D
                acc = 0
                for d in range(D):
                    acc += g[d] * qkv[row_u + 2 * C + d]
                    dqkv[row_u + 2 * C + d] += w[u] * g[d]
                d_row[u] = acc
                wd_sum += w[u] * acc
            for u in range(t + 1):
                row_u = u * 3 * C + h * D
                dl = w[u] * (d_row[u] - wd_sum) * inv_sqrt_d
                for d in range(D):
                    dq_t[h * D + d] += dl * qkv[row_u + C + d]
                    dqkv[row_u + C + d] += dl * q_t[h * D + d]
