# Causal self-attention over the positions of one document, head by head.
#
# Pointers are at the document's first row. qkv (n, 3C) holds q, k, v side by
# side; head h uses columns h*D .. h*D+D-1 of each.
#
# Each head's attention weights are kept transposed, keys by positions: for m
# new positions p0 .. p0+m-1 over keys 0 .. p1-1, att holds H blocks of p1 rows
# of lm = padded(m) elements, and att[h * p1 * lm + u * lm + j] is the weight of
# key u for position p0 + j, exactly 0 for keys past the position. So the
# softmax of every position of a head runs at once, down the keys: each
# position's max, sum and scaling are element-wise operations across a row of
# whole vectors (the padding columns compute unused values), and each sum still
# adds the keys in order u = 0, 1, ..., the original's order (the zeros past the
# diagonal add nothing). The products go through the tiled gemm: logits^T =
# K Q^T, out = att V, and every sum over keys or head dims runs in order, term
# for term the original's.

from cython cimport floating

from simd cimport gemm, transpose, vexp


cdef extern from "attention.h" nogil:
    const int ATTENTION_VEC "MG_ATTENTION_VEC"    # the vector path is built (attention.h)
    const int ATT_MAX_NV "MG_ATT_MAX_NV"
    const int ATT_MAX_DEPTH "MG_ATT_MAX_DEPTH"
    void mg_attention_forward_f32(float* out, float* att, float* scratch, const float* qkv,
                                  int p0, int p1, int C, int H, int D, float inv_sqrt_d)
    void mg_attention_forward_f64(double* out, double* att, double* scratch,
                                  const double* qkv, int p0, int p1, int C, int H, int D,
                                  double inv_sqrt_d)
    void mg_attention_backward_f32(float* dqkv, float* scratch, const float* dout,
                                   const float* att, const float* qkv, int n, int C, int H,
                                   int D, float inv_sqrt_d)
    void mg_attention_backward_f64(double* dqkv, double* scratch, const double* dout,
                                   const double* att, const double* qkv, int n, int C, int H,
                                   int D, double inv_sqrt_d)


cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define MICROGPT_FAST_VECTOR_BYTES 64
    #elif defined(__AVX__)
    #define MICROGPT_FAST_VECTOR_BYTES 32
    #else
    #define MICROGPT_FAST_VECTOR_BYTES 16
    #endif
    """
    const int VECTOR_BYTES "MICROGPT_FAST_VECTOR_BYTES"  # of the variant being compiled


cdef inline Py_ssize_t padded(Py_ssize_t m, Py_ssize_t itemsize) noexcept nogil:
    """m rounded up to whole vectors of this build (the row length of att): with
    AVX2 a 7-position document's rows are one 8-float vector, not two."""
    cdef Py_ssize_t lanes = VECTOR_BYTES // itemsize
    return (m + lanes - 1) // lanes * lanes


cdef inline Py_ssize_t small_scratch(int T, int Tp, int C) noexcept nogil:
    """Elements of the vector path's scratch (attention.h) for documents of up to T
    positions (Tp padded), or 0 where no document would take that path."""
    if not ATTENTION_VEC or Tp > 64:
        return 0
    return C * Tp + T * Tp


cdef inline bint _small(Py_ssize_t lanes_needed, int depth, int D,
                        const void* scratch) noexcept nogil:
    """Whether attention.h's vector path takes this document: rows of at most
    ATT_MAX_NV vectors, and every sum within one gemm depth block (its order)."""
    return (scratch != NULL and lanes_needed <= ATT_MAX_NV
            and depth <= ATT_MAX_DEPTH and D <= ATT_MAX_DEPTH)


cdef inline void attention_forward(floating* out, floating* att, floating* qt,
                                   floating* stats, floating* scratch, const floating* qkv,
                                   int p0, int p1, int C, int H, int D,
                                   floating inv_sqrt_d) noexcept nogil:
    """Rows p0..p1-1 of out (n, C), and their weights into att (H, p1, padded(m)),
    m = p1 - p0; rows < p0 of qkv are the KV cache.

    logit_u = (q_t . k_u) / sqrt(D) for u <= t, att = softmax(logits),
    out_t = sum_u att_u v_u, per head. qt (C, m) and stats (2 padded(m),) are
    scratch; so is scratch (small_scratch elements, or NULL), for short
    documents in vector builds: attention.h, the same bits.
    """
    # 64-bit indices: T * T * H exceeds 2**31 for block sizes past 23170
    cdef Py_ssize_t m = p1 - p0, lm = padded(m, sizeof(floating)), u, j, h
    if _small(lm * sizeof(floating) // VECTOR_BYTES, p1, D, scratch):
        if floating is float:
            mg_attention_forward_f32(out, att, scratch, qkv, p0, p1, C, H, D, inv_sqrt_d)
        else:
            mg_attention_forward_f64(out, att, scratch, qkv, p0, p1, C, H, D, inv_sqrt_d)
        return
    cdef Py_ssize_t block = <Py_ssize_t>p1 * lm
    cdef floating x
    cdef floating* a
    cdef floating* mx = stats
    cdef floating* total = stats + lm
    transpose(qt, m, qkv + <Py_ssize_t>p0 * 3 * C, 3 * C, <int>m, C)
    for h in range(H):
        a = att + h * block
        # logits^T (p1, m) = K_h (p1, D) Q_h^T (D, m)
        gemm(a, lm, qkv + C + h * D, 3 * C, 1, qt + h * D * m, m, p1, <int>m, D, False)
        # scaled; keys past a position become -1e30, whose exp is exactly 0
        for j in range(lm):
            mx[j] = a[j] * inv_sqrt_d
        for u in range(p1):
            for j in range(lm):
                x = a[u * lm + j] * inv_sqrt_d
                x = x if u <= p0 + j else <floating>-1e30
                a[u * lm + j] = x
                mx[j] = x if x > mx[j] else mx[j]
        for u in range(p1):
            for j in range(lm):
                a[u * lm + j] = a[u * lm + j] - mx[j]
        vexp(a, <int>block)
        for j in range(lm):
            total[j] = 0
        for u in range(p1):
            for j in range(lm):
                total[j] += a[u * lm + j]
        for j in range(lm):
            total[j] = 1 / total[j]
        for u in range(p1):
            for j in range(lm):
                a[u * lm + j] = a[u * lm + j] * total[j]
        # out_h (m, D) = att_h (m, p1) V_h (p1, D), att_h read from its transpose
        gemm(out + <Py_ssize_t>p0 * C + h * D, C, a, 1, lm, qkv + 2 * C + h * D, 3 * C,
             <int>m, D, p1, False)


cdef inline void attention_backward(floating* dqkv, floating* dout_t, floating* dlt,
                                    floating* stats, floating* scratch, const floating* dout,
                                    const floating* att, const floating* qkv, int n, int C,
                                    int H, int D, floating inv_sqrt_d) noexcept nogil:
    """Adds into dqkv (n, 3C) the gradient of rows 0..n-1 given dout (n, C); att as
    attention_forward left it for p0 = 0, p1 = n.

    With w = softmax(l): dw = dout V^T, dl = w (dw - rowsum(w dw)) / sqrt(D),
    dq += dl K, dk += dl^T Q, dv += w^T dout, all kept transposed (keys by
    rows) like w. dout_t (C, n), dlt (n, padded(n)) and stats (padded(n),) are
    scratch, and scratch as attention_forward's.
    """
    cdef Py_ssize_t ln = padded(n, sizeof(floating)), u, t, h, block = <Py_ssize_t>n * ln
    if _small(ln * sizeof(floating) // VECTOR_BYTES, n, D, scratch):
        if floating is float:
            mg_attention_backward_f32(dqkv, scratch, dout, att, qkv, n, C, H, D, inv_sqrt_d)
        else:
            mg_attention_backward_f64(dqkv, scratch, dout, att, qkv, n, C, H, D, inv_sqrt_d)
        return
    cdef const floating* w
    cdef floating* wd_sum = stats
    transpose(dout_t, n, dout, C, n, C)
    for h in range(H):
        w = att + h * block
        # dw^T (n, n) = V_h (n, D) dout_h^T (D, n)
        gemm(dlt, ln, qkv + 2 * C + h * D, 3 * C, 1, dout_t + h * D * n, n, n, n, D, False)
        # dv_h += w_h^T dout_h
        gemm(dqkv + 2 * C + h * D, 3 * C, w, ln, 1, dout + h * D, C, n, D, n, True)
        # dl = w (dw - sum_u w dw) / sqrt(D), each position's sum over its keys in order
        for t in range(ln):
            wd_sum[t] = 0
        for u in range(n):
            for t in range(ln):
                wd_sum[t] += w[u * ln + t] * dlt[u * ln + t]
        for u in range(n):
            for t in range(ln):
                dlt[u * ln + t] = w[u * ln + t] * (dlt[u * ln + t] - wd_sum[t]) * inv_sqrt_d
        # dq_h += dl K_h (dl read from its transpose), dk_h += dl^T Q_h
        gemm(dqkv + h * D, 3 * C, dlt, 1, ln, qkv + C + h * D, 3 * C, n, D, n, True)
        gemm(dqkv + C + h * D, 3 * C, dlt, ln, 1, qkv + h * D, 3 * C, n, D, n, True)
