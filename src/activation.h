/* The smooth MLP activations, gelu and silu, over an array: each element's value
 * in place over the pre-activation, and its derivative beside it (what the
 * backward pass multiplies the gradient by; activation.pxd).
 *
 *   gelu(x) = x Phi(x),   Phi(x) = (1 + erf(x / sqrt 2)) / 2     (exact, verf.h's erf)
 *   gelu'(x) = Phi(x) + x exp(-x^2 / 2) / sqrt(2 pi)   (the erf hands back the exp)
 *   silu(x) = x s(x),     s(x) = 1 / (1 + exp(-x))
 *   silu'(x) = s(x) (1 + x (1 - s(x)))
 * The sigmoid comes from e = exp(-|x|), which never overflows: 1 / (1 + e) and
 * e / (1 + e) are s(x) and 1 - s(x) for x >= 0, the other way round below.
 * Written once over vec.h's layer (one lane in the scalar builds); the last
 * partial vector is a masked load and store.
 */
#ifndef MICROGPT_FAST_ACTIVATION_H
#define MICROGPT_FAST_ACTIVATION_H

#include <stddef.h>

#include "vec.h"
#include "vexp.h"
#include "verf.h"

#define MG_SQRT1_2_f64 0.70710678118654752440
#define MG_INV_SQRT_2PI_f64 0.39894228040143267794
#define MG_SQRT1_2_f32 0.707106781f
#define MG_INV_SQRT_2PI_f32 0.398942280f

/* mg_NAME_S(h, slope, n): h[i] = NAME(h[i]), slope[i] = NAME'(the old h[i]) */
#define MG_DEFINE_ACTIVATION_LOOP(T, S, NAME)                                              \
static inline void mg_##NAME##_##S(T* h, T* slope, ptrdiff_t n) {                          \
    const int L = MG_LANES_##S;                                                            \
    ptrdiff_t i = 0;                                                                       \
    mg_v##S y, dy;                                                                         \
    for (; i + L <= n; i += L) {                                                           \
        mg_##NAME##_v##S(mg_load_##S(h + i), &y, &dy);                                     \
        mg_store_##S(h + i, y);                                                            \
        mg_store_##S(slope + i, dy);                                                       \
    }                                                                                      \
    if (i < n) {                                                                           \
        mg_mask_##S tail = mg_mask_##S##_n((int)(n - i));                                  \
        mg_##NAME##_v##S(mg_mload_##S(h + i, tail), &y, &dy);                              \
        mg_mstore_##S(h + i, tail, y);                                                     \
        mg_mstore_##S(slope + i, tail, dy);                                                \
    }                                                                                      \
}

#define MG_DEFINE_ACTIVATIONS(T, S)                                                        \
MG_INLINE void mg_gelu_v##S(mg_v##S x, mg_v##S* y, mg_v##S* dy) {                          \
    const mg_v##S half = mg_set1_##S(0.5);                                                 \
    mg_v##S gauss;                                                                         \
    mg_v##S erf = mg_erf_gauss_v##S(mg_mul_##S(x, mg_set1_##S(MG_SQRT1_2_##S)), &gauss);   \
    mg_v##S cdf = mg_fma_##S(erf, half, half);                                             \
    *y = mg_mul_##S(x, cdf);                                                               \
    *dy = mg_fma_##S(mg_mul_##S(x, gauss), mg_set1_##S(MG_INV_SQRT_2PI_##S), cdf);         \
}                                                                                          \
                                                                                           \
MG_INLINE void mg_silu_v##S(mg_v##S x, mg_v##S* y, mg_v##S* dy) {                          \
    const mg_v##S one = mg_set1_##S(1), zero = mg_zero_##S();                              \
    mg_v##S e = mg_exp_v##S(mg_sub_##S(zero, mg_abs_##S(x)));                              \
    mg_v##S r = mg_div_##S(one, mg_add_##S(one, e));                                       \
    mg_v##S er = mg_mul_##S(e, r);                                                         \
    mg_v##S s = mg_where_lt_##S(x, zero, er, r);                                           \
    mg_v##S s_rest = mg_where_lt_##S(x, zero, r, er);  /* 1 - s */                         \
    *y = mg_mul_##S(x, s);                                                                 \
    *dy = mg_mul_##S(s, mg_fma_##S(x, s_rest, one));                                       \
}                                                                                          \
                                                                                           \
MG_DEFINE_ACTIVATION_LOOP(T, S, gelu)                                                      \
MG_DEFINE_ACTIVATION_LOOP(T, S, silu)

MG_DEFINE_ACTIVATIONS(float, f32)
MG_DEFINE_ACTIVATIONS(double, f64)

#endif
