# Causal self-attention over the positions of one document, head by head.
#
# Pointers are at the document's first row. qkv (n, 3C) holds q, k, v side by
# side; head h uses columns h*D .. h*D+D-1 of each. att (n, H, T) holds row t's
# softmax weights over keys u < T, exactly 0 for u > t. Each head's products
# go through the tiled gemm: logits = Q K^T, out = att V; the weights past
# the diagonal are exact zeros, so every sum equals the original's sum over
# u <= t, term for term.

from cython cimport floating

from simd cimport gemm, vexp


cdef inline void attention_forward(floating* out, floating* att, floating* kt,
                                   const floating* qkv, int p0, int p1, int T, int C,
                                   int H, int D, floating inv_sqrt_d) noexcept nogil:
    """Rows p0..p1-1 of out (n, C) and att; rows < p0 of qkv are the KV cache.

    logit_u = (q_t . k_u) / sqrt(D) for u <= t, att = softmax(logits),
    out_t = sum_u att_u v_u, per head. kt (C, T) is scratch for K transposed.
    """
    # 64-bit indices: T * T * H exceeds 2**31 for block sizes past 23170
    cdef Py_ssize_t t, h, u, c, HT = <Py_ssize_t>H * T
    cdef floating mx, total, inv_total
    cdef floating* w
    for u in range(p1):
        for c in range(C):
            kt[c * T + u] = qkv[u * 3 * C + C + c]
    # logits of head h: (rows p0..p1-1) x (keys 0..p1-1) = Q_h K_h^T
    for h in range(H):
        gemm(att + (p0 * H + h) * T, HT, qkv + <Py_ssize_t>p0 * 3 * C + h * D, 3 * C, 1,
             kt + h * D * T, T, p1 - p0, p1, D, False)
    # softmax over u <= t; every other entry of the row becomes exp(-huge) = 0
    for t in range(p0, p1):
        for h in range(H):
            w = att + (t * H + h) * T
            mx = w[0] * inv_sqrt_d
            for u in range(t + 1):
                w[u] = w[u] * inv_sqrt_d
                mx = w[u] if w[u] > mx else mx
            for u in range(t + 1):
                w[u] = w[u] - mx
            for u in range(t + 1, T):
                w[u] = -1e30
    for t in range(p0, p1):
        vexp(att + t * HT, <int>HT)
    for t in range(p0, p1):
        for h in range(H):
            w = att + (t * H + h) * T
            total = 0
            for u in range(t + 1):
                total += w[u]
            inv_total = 1 / total
            for u in range(t + 1):
                w[u] = w[u] * inv_total
    # out_h = att_h V_h
    for h in range(H):
        gemm(out + p0 * C + h * D, C, att + (p0 * H + h) * T, HT, 1,
             qkv + 2 * C + h * D, 3 * C, p1 - p0, D, p1, False)


cdef inline void attention_backward(floating* dqkv, floating* vt, floating* dl,
                                    const floating* dout, const floating* att,
                                    const floating* qkv, int n, int T, int C, int H, int D,
                                    floating inv_sqrt_d) noexcept nogil:
    """Adds into dqkv (n, 3C) the gradient of rows 0..n-1 given dout (n, C).

    With w = softmax(l): dw = dout V^T, dl = w (dw - rowsum(w dw)) / sqrt(D),
    dq += dl K, dk += dl^T Q, dv += w^T dout. vt (C, T) and dl (T, T) are scratch.
    """
    cdef Py_ssize_t t, h, u, c, HT = <Py_ssize_t>H * T
    cdef floating wd_sum
    cdef const floating* w
    cdef floating* g
    for u in range(n):
        for c in range(C):
            vt[c * T + u] = qkv[u * 3 * C + 2 * C + c]
    for h in range(H):
        # dw (n, n) = dout_h V_h^T
        gemm(dl, T, dout + h * D, C, 1, vt + h * D * T, T, n, n, D, False)
        # dv_h += att_h^T dout_h
        gemm(dqkv + 2 * C + h * D, 3 * C, att + h * T, 1, HT, dout + h * D, C, n, D, n, True)
        for t in range(n):
            w = att + (t * H + h) * T
            g = dl + t * T
            wd_sum = 0
            for u in range(t + 1):
                wd_sum += w[u] * g[u]
            for u in range(t + 1):
                g[u] = w[u] * (g[u] - wd_sum) * inv_sqrt_d
            for u in range(t + 1, n):
                g[u] = 0
        # dq_h += dl K_h, dk_h += dl^T Q_h
        gemm(dqkv + h * D, 3 * C, dl, T, 1, qkv + C + h * D, 3 * C, n, D, n, True)
        gemm(dqkv + C + h * D, 3 * C, dl, 1, T, qkv + h * D, 3 * C, n, D, n, True)
