/* Causal self-attention of one short document in one call (float and double;
 * vector builds only, see attention.pxd).
 *
 * attention.pxd's general path multiplies each head's small matrices with the
 * tiled gemm: at head size 4 and a handful of positions that is six calls per
 * head, each mostly setup, between scalar softmax loops. Here a document takes
 * one call: the products whose rows are positions (the logits and their
 * gradient) run across a row of lm = NV vectors of positions, the others
 * across head dims, 4 rows at a time so that their chains overlap, and the
 * softmax and its gradient work on whole vectors of positions. Only the
 * queries (forward) and the output's gradient (backward) are transposed, once
 * per document for all heads.
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
/* R rows (a constant after inlining) of mg_att_mac, one vector of columns. */          \
static inline __attribute__((always_inline)) void                                          \
mg_att_mac_tile_##S(T* out, ptrdiff_t ldo, const T* a, ptrdiff_t sar, ptrdiff_t sak,       \
                    const T* b, ptrdiff_t ldb, int K, int full, mg_mask_##S mask,          \
                    const int add, const int R) {                                          \
    mg_v##S acc[4];                                                                        \
    for (int i = 0; i < R; i++) acc[i] = mg_zero_##S();                                    \
    for (int k = 0; k < K; k++) {                                                          \
        const T* bk = b + k * ldb;                                                         \
        mg_v##S x = full ? mg_load_##S(bk) : mg_mload_##S(bk, mask);                       \
        for (int i = 0; i < R; i++)                                                        \
            acc[i] = mg_fma_##S(mg_set1_##S(a[i * sar + k * sak]), x, acc[i]);             \
    }                                                                                      \
    for (int i = 0; i < R; i++) {                                                          \
        T* o = out + i * ldo;                                                              \
        mg_v##S y = acc[i];                                                                \
        if (add) y = mg_add_##S(full ? mg_load_##S(o) : mg_mload_##S(o, mask), y);         \
        if (full) mg_store_##S(o, y); else mg_mstore_##S(o, mask, y);                      \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* out (M, W) (+)= A (M, K) B (K, W), A[r, k] = a[r * sar + k * sak], B's rows ldb  */    \
/* apart: the gemm's own arithmetic (an accumulator from 0, one FMA per k in order, */    \
/* then stored, or added to out), 4 rows at a time so that their chains overlap.    */    \
static inline __attribute__((always_inline)) void                                          \
mg_att_mac_##S(T* out, ptrdiff_t ldo, const T* a, ptrdiff_t sar, ptrdiff_t sak,            \
               const T* b, ptrdiff_t ldb, int M, int K, int W, const int add) {            \
    const int L = MG_LANES_##S;                                                            \
    for (int w0 = 0; w0 < W; w0 += L) {                                                    \
        const int full = W - w0 >= L;                                                      \
        const mg_mask_##S mask = mg_mask_##S##_n(full ? 0 : W - w0);                       \
        int r = 0;                                                                         \
        for (; r + 4 <= M; r += 4)                                                         \
            mg_att_mac_tile_##S(out + r * ldo + w0, ldo, a + r * sar, sar, sak, b + w0,    \
                                ldb, K, full, mask, add, 4);                               \
        T* o = out + r * ldo + w0;                                                         \
        const T* ar = a + r * sar;                                                         \
        switch (M - r) {                                                                   \
        case 3: mg_att_mac_tile_##S(o, ldo, ar, sar, sak, b + w0, ldb, K, full, mask, add, 3); break; \
        case 2: mg_att_mac_tile_##S(o, ldo, ar, sar, sak, b + w0, ldb, K, full, mask, add, 2); break; \
        case 1: mg_att_mac_tile_##S(o, ldo, ar, sar, sak, b + w0, ldb, K, full, mask, add, 1); break; \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* One head, rows p0..p1-1 (m = p1 - p0): a (p1, lm) the weights, keys by positions   */  \
/* (attention.pxd); qt (D, lm) this head's queries transposed; out (m, ldo) its       */  \
/* output columns.                                                                     */  \
static inline __attribute__((always_inline)) void                                          \
mg_att_head_fwd_##S(T* out, ptrdiff_t ldo, T* a, const T* qt, const T* k, const T* v,      \
                    ptrdiff_t ld, int p0, int p1, int D, T inv_sqrt_d, const T* lane_index, \
                    const int NV) {                                                        \
    const int L = MG_LANES_##S;                                                            \
    const ptrdiff_t lm = (ptrdiff_t)NV * L;                                                \
    mg_v##S mx[MG_ATT_MAX_NV], total[MG_ATT_MAX_NV], idx[MG_ATT_MAX_NV];                   \
    const mg_v##S masked = mg_set1_##S((T)-1e30), scale = mg_set1_##S(inv_sqrt_d);         \
    for (int j = 0; j < NV; j++) {                                                         \
        idx[j] = mg_load_##S(lane_index + j * L);                                          \
        total[j] = mg_zero_##S();                                                          \
    }                                                                                      \
    /* logits^T (p1, lm) = K Q^T, every position of a key in one row */                   \
    mg_att_mac_##S(a, lm, k, ld, 1, qt, lm, p1, D, (int)lm, 0);                            \
    /* scaled, -1e30 past each position (key u is past position p0 + lane exactly */       \
    /* when lane < u - p0), and each position's max */                                     \
    for (int u = 0; u < p1; u++) {                                                         \
        mg_v##S past = mg_set1_##S((T)(u - p0));                                           \
        for (int j = 0; j < NV; j++) {                                                     \
            mg_v##S x = mg_mul_##S(mg_load_##S(a + u * lm + j * L), scale);                \
            x = mg_where_lt_##S(idx[j], past, masked, x);                                  \
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
    /* out (m, D) = att V, att read from its transpose */                                  \
    mg_att_mac_##S(out, ldo, a, 1, lm, v, ld, p1 - p0, p1, D, 0);                          \
}                                                                                          \
                                                                                           \
/* One head's gradients, n positions, added into dqkv (n, 3C) at its columns: w (n, ln) */ \
/* its weights (keys by positions), dt (D, ln) its output's gradient transposed, dout  */ \
/* (n, ldo) the same as rows; dl (n, ln) scratch.                                      */ \
static inline __attribute__((always_inline)) void                                          \
mg_att_head_bwd_##S(T* dqkv, T* dl, const T* w, const T* dt, const T* q, const T* k,       \
                    const T* v, const T* dout, ptrdiff_t ld, ptrdiff_t ldo, int n, int D,   \
                    T inv_sqrt_d, const int NV) {                                          \
    const int L = MG_LANES_##S;                                                            \
    const ptrdiff_t ln = (ptrdiff_t)NV * L, C = ld / 3;                                    \
    mg_v##S wd_sum[MG_ATT_MAX_NV];                                                         \
    const mg_v##S scale = mg_set1_##S(inv_sqrt_d);                                         \
    /* dv += w^T dout */                                                                   \
    mg_att_mac_##S(dqkv + 2 * C, ld, w, ln, 1, dout, ldo, n, n, D, 1);                     \
    /* dw^T (n, ln) = V dout^T, then each position's sum_u w dw, keys in order */          \
    mg_att_mac_##S(dl, ln, v, ld, 1, dt, ln, n, D, (int)ln, 0);                            \
    for (int j = 0; j < NV; j++) wd_sum[j] = mg_zero_##S();                                \
    for (int u = 0; u < n; u++)                                                            \
        for (int j = 0; j < NV; j++)                                                       \
            wd_sum[j] = mg_fma_##S(mg_load_##S(w + u * ln + j * L),                        \
                                   mg_load_##S(dl + u * ln + j * L), wd_sum[j]);           \
    /* dl = w (dw - sum_u w dw) / sqrt(D) */                                               \
    for (int u = 0; u < n; u++)                                                            \
        for (int j = 0; j < NV; j++) {                                                     \
            mg_v##S wu = mg_load_##S(w + u * ln + j * L);                                  \
            mg_v##S x = mg_sub_##S(mg_load_##S(dl + u * ln + j * L), wd_sum[j]);           \
            mg_store_##S(dl + u * ln + j * L, mg_mul_##S(mg_mul_##S(wu, x), scale));       \
        }                                                                                  \
    /* dq += dl K (dl read from its transpose), dk += dl^T Q */                            \
    mg_att_mac_##S(dqkv, ld, dl, 1, ln, k, ld, n, n, D, 1);                                \
    mg_att_mac_##S(dqkv + C, ld, dl, ln, 1, q, ld, n, n, D, 1);                            \
}                                                                                          \
                                                                                           \
static inline void mg_att_lanes_##S(T* lane_index) {                                       \
    for (int i = 0; i < MG_ATT_MAX_NV * MG_LANES_##S; i++) lane_index[i] = (T)i;           \
}                                                                                          \
                                                                                           \
/* Rows p0..p1-1 of out (m, C), m = p1 - p0, and their weights into att (H, p1, lm);    */ \
/* lm = padded(m) <= MG_ATT_MAX_NV vectors, p1 and D <= MG_ATT_MAX_DEPTH.               */ \
/* scratch: C lm elements.                                                               */ \
static void mg_attention_forward_##S(T* out, T* att, T* scratch, const T* qkv, int p0,     \
                                     int p1, int C, int H, int D, T inv_sqrt_d) {          \
    const int L = MG_LANES_##S, m = p1 - p0, nv = (m + L - 1) / L;                         \
    const ptrdiff_t lm = (ptrdiff_t)nv * L, ld = 3 * (ptrdiff_t)C;                         \
    T lane_index[MG_ATT_MAX_NV * MG_LANES_##S];                                            \
    T* qt = scratch;                                                                       \
    mg_att_lanes_##S(lane_index);                                                          \
    mg_transpose_##S(qt, lm, qkv + p0 * ld, ld, m, C);                                     \
    for (int h = 0; h < H; h++) {                                                          \
        T* a = att + (ptrdiff_t)h * p1 * lm;                                               \
        const T* q = qt + (ptrdiff_t)h * D * lm;                                           \
        const T* k = qkv + C + h * D;                                                      \
        const T* v = qkv + 2 * C + h * D;                                                  \
        T* o = out + p0 * (ptrdiff_t)C + h * D;                                            \
        switch (nv) {                                                                      \
        case 1: mg_att_head_fwd_##S(o, C, a, q, k, v, ld, p0, p1, D, inv_sqrt_d, lane_index, 1); break; \
        case 2: mg_att_head_fwd_##S(o, C, a, q, k, v, ld, p0, p1, D, inv_sqrt_d, lane_index, 2); break; \
        case 3: mg_att_head_fwd_##S(o, C, a, q, k, v, ld, p0, p1, D, inv_sqrt_d, lane_index, 3); break; \
        default: mg_att_head_fwd_##S(o, C, a, q, k, v, ld, p0, p1, D, inv_sqrt_d, lane_index, 4); \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* Adds into dqkv (n, 3C) the gradient of rows 0..n-1 given dout (n, C); att as the     */ \
/* forward left it for p0 = 0, p1 = n; ln = padded(n) <= MG_ATT_MAX_NV vectors.         */ \
/* scratch: C ln + n ln elements.                                                        */ \
static void mg_attention_backward_##S(T* dqkv, T* scratch, const T* dout, const T* att,    \
                                      const T* qkv, int n, int C, int H, int D,            \
                                      T inv_sqrt_d) {                                      \
    const int L = MG_LANES_##S, nv = (n + L - 1) / L;                                      \
    const ptrdiff_t ln = (ptrdiff_t)nv * L, ld = 3 * (ptrdiff_t)C;                         \
    T* dt = scratch;                   /* (C, ln) dout transposed */                       \
    T* dl = dt + C * ln;               /* (n, ln) */                                       \
    mg_transpose_##S(dt, ln, dout, C, n, C);                                               \
    for (int h = 0; h < H; h++) {                                                          \
        const T* w = att + (ptrdiff_t)h * n * ln;                                          \
        const T* t = dt + (ptrdiff_t)h * D * ln;                                           \
        const T* q = qkv + h * D;                                                          \
        T* g = dqkv + h * D;                                                               \
        switch (nv) {                                                                      \
        case 1: mg_att_head_bwd_##S(g, dl, w, t, q, q + C, q + 2 * C, dout + h * D, ld, C, \
                                    n, D, inv_sqrt_d, 1); break;                           \
        case 2: mg_att_head_bwd_##S(g, dl, w, t, q, q + C, q + 2 * C, dout + h * D, ld, C, \
                                    n, D, inv_sqrt_d, 2); break;                           \
        case 3: mg_att_head_bwd_##S(g, dl, w, t, q, q + C, q + 2 * C, dout + h * D, ld, C, \
                                    n, D, inv_sqrt_d, 3); break;                           \
        default: mg_att_head_bwd_##S(g, dl, w, t, q, q + C, q + 2 * C, dout + h * D, ld,   \
                                     C, n, D, inv_sqrt_d, 4);                              \
        }                                                                                  \
    }                                                                                      \
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
