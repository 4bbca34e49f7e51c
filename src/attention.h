/* Causal self-attention of one document with vectors across positions, for short
 * documents (float and double; vector builds only, see attention.pxd).
 *
 * attention.pxd's general path multiplies each head's small matrices with the
 * tiled gemm: at head size 4 and a handful of positions that is a dozen calls
 * per head, each mostly setup, and products vectorized over 4 head dims. Here
 * every product of a head runs across a row of lm = NV vectors of positions
 * (or of keys) instead, with the other operand broadcast, and the softmax works
 * on those rows while they are fresh. Products whose sum runs over positions
 * (dk and dv) read a transposed copy of the weights or their gradient, so that
 * keys fill the lanes; the results come out transposed (head dims by lanes) and
 * go back to rows with one transpose per document.
 *
 * Every element is computed exactly as the gemm computes it: an accumulator
 * that starts at 0 and takes one FMA per term, terms in the same order (head
 * dims d = 0, 1, ..., keys or positions 0, 1, ...), then stored, or added to
 * the output; the softmax's steps are attention.pxd's, lane for lane. So the
 * bits are the general path's: float64 stays the original's.
 */
#ifndef MICROGPT_FAST_ATTENTION_H
#define MICROGPT_FAST_ATTENTION_H

#include <stddef.h>

#include "transpose.h"
#include "vec.h"
#include "vexp.h"

#if MG_VEC

#define MG_ATTENTION_VEC 1
#define MG_ATT_MAX_NV 4   /* widest row of positions, in vectors */
#define MG_ATT_MAX_DEPTH 256  /* the gemm's depth block: one accumulator per sum up to it */

#define MG_DEFINE_ATTENTION(T, S)                                                          \
/* One head, rows p0..p1-1: a (p1, lm) the weights, keys by positions (attention.pxd);  */ \
/* qt (D, lm) this head's queries transposed; ot (D, lm) takes its output transposed.   */ \
static inline __attribute__((always_inline)) void                                          \
mg_att_head_fwd_##S(T* a, const T* qt, T* ot, const T* k, const T* v, ptrdiff_t ld,       \
                    int p0, int p1, int D, T inv_sqrt_d, const T* lane_index,              \
                    const int NV) {                                                        \
    const int L = MG_LANES_##S;                                                            \
    const ptrdiff_t lm = (ptrdiff_t)NV * L;                                                \
    mg_v##S mx[MG_ATT_MAX_NV], total[MG_ATT_MAX_NV], idx[MG_ATT_MAX_NV];                   \
    const mg_v##S masked = mg_set1_##S((T)-1e30), scale = mg_set1_##S(inv_sqrt_d);         \
    for (int j = 0; j < NV; j++) {                                                         \
        idx[j] = mg_load_##S(lane_index + j * L);                                          \
        total[j] = mg_zero_##S();                                                          \
    }                                                                                      \
    /* logits_u = (k_u . q) / sqrt(D), -1e30 past each position, and their max */          \
    for (int u = 0; u < p1; u++) {                                                         \
        mg_v##S acc[MG_ATT_MAX_NV];                                                        \
        for (int j = 0; j < NV; j++) acc[j] = mg_zero_##S();                               \
        for (int d = 0; d < D; d++) {                                                      \
            mg_v##S kd = mg_set1_##S(k[u * ld + d]);                                       \
            for (int j = 0; j < NV; j++)                                                   \
                acc[j] = mg_fma_##S(kd, mg_load_##S(qt + d * lm + j * L), acc[j]);         \
        }                                                                                  \
        /* key u is past position p0 + lane exactly when lane < u - p0 */                  \
        mg_v##S past = mg_set1_##S((T)(u - p0));                                           \
        for (int j = 0; j < NV; j++) {                                                     \
            mg_v##S x = mg_where_lt_##S(idx[j], past, masked, mg_mul_##S(acc[j], scale));  \
            mx[j] = u == 0 ? x : mg_max_##S(x, mx[j]);                                     \
            mg_store_##S(a + u * lm + j * L, x);                                           \
        }                                                                                  \
    }                                                                                      \
    for (int u = 0; u < p1; u++)                                                           \
        for (int j = 0; j < NV; j++) {                                                     \
            mg_v##S e = mg_exp_v##S(mg_sub_##S(mg_load_##S(a + u * lm + j * L), mx[j]));   \
            mg_store_##S(a + u * lm + j * L, e);                                           \
            total[j] = mg_add_##S(total[j], e);                                            \
        }                                                                                  \
    for (int j = 0; j < NV; j++) total[j] = mg_div_##S(mg_set1_##S((T)1), total[j]);       \
    for (int u = 0; u < p1; u++)                                                           \
        for (int j = 0; j < NV; j++)                                                       \
            mg_store_##S(a + u * lm + j * L,                                               \
                         mg_mul_##S(mg_load_##S(a + u * lm + j * L), total[j]));           \
    /* out^T (D, lm) = V^T att^T: head dim d of every position, keys in order */           \
    for (int d = 0; d < D; d++) {                                                          \
        mg_v##S acc[MG_ATT_MAX_NV];                                                        \
        for (int j = 0; j < NV; j++) acc[j] = mg_zero_##S();                               \
        for (int u = 0; u < p1; u++) {                                                     \
            mg_v##S vd = mg_set1_##S(v[u * ld + d]);                                       \
            for (int j = 0; j < NV; j++)                                                   \
                acc[j] = mg_fma_##S(vd, mg_load_##S(a + u * lm + j * L), acc[j]);          \
        }                                                                                  \
        for (int j = 0; j < NV; j++) mg_store_##S(ot + d * lm + j * L, acc[j]);            \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* rows (D, lm) of out^T: sum over keys u of b[u, d] * x[u] (x rows of lm), in order */    \
static inline __attribute__((always_inline)) void                                          \
mg_att_sum_rows_##S(T* out, const T* b, ptrdiff_t ldb, const T* x, int n, int D,          \
                    const int NV) {                                                        \
    const int L = MG_LANES_##S;                                                            \
    const ptrdiff_t lm = (ptrdiff_t)NV * L;                                                \
    for (int d = 0; d < D; d++) {                                                          \
        mg_v##S acc[MG_ATT_MAX_NV];                                                        \
        for (int j = 0; j < NV; j++) acc[j] = mg_zero_##S();                               \
        for (int u = 0; u < n; u++) {                                                      \
            mg_v##S bd = mg_set1_##S(b[u * ldb + d]);                                      \
            for (int j = 0; j < NV; j++)                                                   \
                acc[j] = mg_fma_##S(bd, mg_load_##S(x + u * lm + j * L), acc[j]);          \
        }                                                                                  \
        for (int j = 0; j < NV; j++) mg_store_##S(out + d * lm + j * L, acc[j]);           \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* One head's gradients, n positions: w (n, ln) its weights (keys by positions),        */ \
/* dt (D, ln) its output's gradient transposed; dl, dlt, wt (n, ln) scratch; gq, gk, gv */ \
/* (D, ln) take dq, dk, dv transposed (head dims by positions or keys).                 */ \
static inline __attribute__((always_inline)) void                                          \
mg_att_head_bwd_##S(T* gq, T* gk, T* gv, T* dl, T* dlt, T* wt, const T* w, const T* dt,    \
                    const T* q, const T* k, const T* v, const T* dout, ptrdiff_t ld,       \
                    ptrdiff_t ldo, int n, int D, T inv_sqrt_d, const int NV) {             \
    const int L = MG_LANES_##S;                                                            \
    const ptrdiff_t ln = (ptrdiff_t)NV * L;                                                \
    mg_v##S wd_sum[MG_ATT_MAX_NV];                                                         \
    const mg_v##S scale = mg_set1_##S(inv_sqrt_d);                                         \
    for (int j = 0; j < NV; j++) wd_sum[j] = mg_zero_##S();                                \
    /* dw_u = v_u . dout (over head dims), and each position's sum_u w dw in order */     \
    for (int u = 0; u < n; u++) {                                                          \
        mg_v##S acc[MG_ATT_MAX_NV];                                                        \
        for (int j = 0; j < NV; j++) acc[j] = mg_zero_##S();                               \
        for (int d = 0; d < D; d++) {                                                      \
            mg_v##S vd = mg_set1_##S(v[u * ld + d]);                                       \
            for (int j = 0; j < NV; j++)                                                   \
                acc[j] = mg_fma_##S(vd, mg_load_##S(dt + d * ln + j * L), acc[j]);         \
        }                                                                                  \
        for (int j = 0; j < NV; j++) {                                                     \
            mg_store_##S(dl + u * ln + j * L, acc[j]);                                     \
            wd_sum[j] = mg_fma_##S(mg_load_##S(w + u * ln + j * L), acc[j], wd_sum[j]);    \
        }                                                                                  \
    }                                                                                      \
    /* dl = w (dw - sum_u w dw) / sqrt(D) */                                               \
    for (int u = 0; u < n; u++)                                                            \
        for (int j = 0; j < NV; j++) {                                                     \
            mg_v##S wu = mg_load_##S(w + u * ln + j * L);                                  \
            mg_v##S x = mg_sub_##S(mg_load_##S(dl + u * ln + j * L), wd_sum[j]);           \
            mg_store_##S(dl + u * ln + j * L, mg_mul_##S(mg_mul_##S(wu, x), scale));       \
        }                                                                                  \
    /* dq^T = K^T dl: over keys, positions in the lanes */                                 \
    mg_att_sum_rows_##S(gq, k, ld, dl, n, D, NV);                                          \
    /* dk^T = Q^T dl^T and dv^T = dout^T w^T: over positions, keys in the lanes */         \
    mg_transpose_##S(dlt, ln, dl, ln, n, n);                                               \
    mg_att_sum_rows_##S(gk, q, ld, dlt, n, D, NV);                                         \
    mg_transpose_##S(wt, ln, w, ln, n, n);                                                 \
    mg_att_sum_rows_##S(gv, dout, ldo, wt, n, D, NV);                                      \
}                                                                                          \
                                                                                           \
static inline void mg_att_lanes_##S(T* lane_index) {                                       \
    for (int i = 0; i < MG_ATT_MAX_NV * MG_LANES_##S; i++) lane_index[i] = (T)i;           \
}                                                                                          \
                                                                                           \
/* Rows p0..p1-1 of out (m, C), m = p1 - p0, and their weights into att (H, p1, lm);    */ \
/* lm = padded(m) <= MG_ATT_MAX_NV vectors, p1 and D <= MG_ATT_MAX_DEPTH.               */ \
/* scratch: 2 C lm elements.                                                             */ \
static void mg_attention_forward_##S(T* out, T* att, T* scratch, const T* qkv, int p0,     \
                                     int p1, int C, int H, int D, T inv_sqrt_d) {          \
    const int L = MG_LANES_##S, m = p1 - p0, nv = (m + L - 1) / L;                         \
    const ptrdiff_t lm = (ptrdiff_t)nv * L, ld = 3 * (ptrdiff_t)C;                         \
    T lane_index[MG_ATT_MAX_NV * MG_LANES_##S];                                            \
    T* qt = scratch;                                                                       \
    T* ot = scratch + C * lm;                                                              \
    mg_att_lanes_##S(lane_index);                                                          \
    mg_transpose_##S(qt, lm, qkv + p0 * ld, ld, m, C);                                     \
    for (int h = 0; h < H; h++) {                                                          \
        T* a = att + (ptrdiff_t)h * p1 * lm;                                               \
        const T* q = qt + (ptrdiff_t)h * D * lm;                                           \
        const T* k = qkv + C + h * D;                                                      \
        const T* v = qkv + 2 * C + h * D;                                                  \
        T* o = ot + (ptrdiff_t)h * D * lm;                                                 \
        switch (nv) {                                                                      \
        case 1: mg_att_head_fwd_##S(a, q, o, k, v, ld, p0, p1, D, inv_sqrt_d, lane_index, 1); break; \
        case 2: mg_att_head_fwd_##S(a, q, o, k, v, ld, p0, p1, D, inv_sqrt_d, lane_index, 2); break; \
        case 3: mg_att_head_fwd_##S(a, q, o, k, v, ld, p0, p1, D, inv_sqrt_d, lane_index, 3); break; \
        default: mg_att_head_fwd_##S(a, q, o, k, v, ld, p0, p1, D, inv_sqrt_d, lane_index, 4); \
        }                                                                                  \
    }                                                                                      \
    mg_transpose_##S(out + p0 * (ptrdiff_t)C, C, ot, lm, C, m);                            \
}                                                                                          \
                                                                                           \
/* Adds into dqkv (n, 3C) the gradient of rows 0..n-1 given dout (n, C); att as the     */ \
/* forward left it for p0 = 0, p1 = n; ln = padded(n) <= MG_ATT_MAX_NV vectors.         */ \
/* scratch: 3 n ln + 4 C ln + 3 n C elements.                                            */ \
static void mg_attention_backward_##S(T* dqkv, T* scratch, const T* dout, const T* att,    \
                                      const T* qkv, int n, int C, int H, int D,            \
                                      T inv_sqrt_d) {                                      \
    const int L = MG_LANES_##S, nv = (n + L - 1) / L;                                      \
    const ptrdiff_t ln = (ptrdiff_t)nv * L, ld = 3 * (ptrdiff_t)C;                         \
    T* dt = scratch;                   /* (C, ln) dout transposed */                       \
    T* g = dt + C * ln;                /* (3C, ln) dq, dk, dv transposed */                \
    T* dl = g + 3 * C * ln;            /* (n, ln) */                                       \
    T* dlt = dl + n * ln;              /* (n, ln) */                                       \
    T* wt = dlt + n * ln;              /* (n, ln) */                                       \
    T* rows = wt + n * ln;             /* (n, 3C) g back in rows */                        \
    mg_transpose_##S(dt, ln, dout, C, n, C);                                               \
    for (int h = 0; h < H; h++) {                                                          \
        const T* w = att + (ptrdiff_t)h * n * ln;                                          \
        const T* t = dt + (ptrdiff_t)h * D * ln;                                           \
        const T* q = qkv + h * D;                                                          \
        T* gq = g + (ptrdiff_t)h * D * ln;                                                 \
        T* gk = gq + C * ln;                                                               \
        T* gv = gk + C * ln;                                                               \
        switch (nv) {                                                                      \
        case 1: mg_att_head_bwd_##S(gq, gk, gv, dl, dlt, wt, w, t, q, q + C, q + 2 * C,    \
                                    dout + h * D, ld, C, n, D, inv_sqrt_d, 1); break;      \
        case 2: mg_att_head_bwd_##S(gq, gk, gv, dl, dlt, wt, w, t, q, q + C, q + 2 * C,    \
                                    dout + h * D, ld, C, n, D, inv_sqrt_d, 2); break;      \
        case 3: mg_att_head_bwd_##S(gq, gk, gv, dl, dlt, wt, w, t, q, q + C, q + 2 * C,    \
                                    dout + h * D, ld, C, n, D, inv_sqrt_d, 3); break;      \
        default: mg_att_head_bwd_##S(gq, gk, gv, dl, dlt, wt, w, t, q, q + C, q + 2 * C,   \
                                     dout + h * D, ld, C, n, D, inv_sqrt_d, 4);            \
        }                                                                                  \
    }                                                                                      \
    /* the gemm's accumulate: dqkv + sum, added to the finished sums */                    \
    mg_transpose_##S(rows, ld, g, ln, 3 * C, n);                                           \
    for (ptrdiff_t i = 0; i < n * ld; i++) dqkv[i] = dqkv[i] + rows[i];                    \
}

MG_DEFINE_ATTENTION(float, f32)
MG_DEFINE_ATTENTION(double, f64)

#else  /* scalar builds keep attention.pxd's general path (libm's exp) */

#define MG_ATTENTION_VEC 0
#define MG_ATT_MAX_NV 0
#define MG_ATT_MAX_DEPTH 0
static inline void mg_attention_forward_f32(float* out, float* att, float* scratch,
                                            const float* qkv, int p0, int p1, int C, int H,
                                            int D, float inv_sqrt_d) {}
static inline void mg_attention_forward_f64(double* out, double* att, double* scratch,
                                            const double* qkv, int p0, int p1, int C, int H,
                                            int D, double inv_sqrt_d) {}
static inline void mg_attention_backward_f32(float* dqkv, float* scratch, const float* dout,
                                             const float* att, const float* qkv, int n, int C,
                                             int H, int D, float inv_sqrt_d) {}
static inline void mg_attention_backward_f64(double* dqkv, double* scratch,
                                             const double* dout, const double* att,
                                             const double* qkv, int n, int C, int H, int D,
                                             double inv_sqrt_d) {}

#endif
#endif
