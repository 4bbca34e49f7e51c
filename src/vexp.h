/* In-place exp of an array, x[i] = exp(x[i]), for softmax arguments (x <= 0),
 * and mg_exp_vS, the exp of one vector (x <= 0), for the activations.
 *
 * With vectors (vec.h): exp(x) = 2^k exp(r), k = round(x / ln 2),
 * r = x - k ln 2 (Cody-Waite: ln 2 split in a high part exact in k * ln2_hi
 * and a low part), |r| <= ln(2) / 2, and exp(r) by its Taylor polynomial
 * (degree 13 in double, 7 in float), evaluated by Horner's rule. Accurate to
 * about one ulp, so float64 still reproduces the original's output. Arguments
 * below the smallest normal result give 0 (as do flushed denormals). The
 * last partial vector is a masked load and store.
 * Elsewhere: the array exp is libm's, one element at a time (the softmax of
 * the scalar builds keeps libm's bits); mg_exp_vS is the same method on
 * vec.h's one lane (fma and fnma rounding twice there).
 */
#ifndef MICROGPT_FAST_VEXP_H
#define MICROGPT_FAST_VEXP_H

#include <math.h>

#include "vec.h"

/* 1/n! for n = 13 .. 0 */
static const double mg_exp_taylor_f64[] = {
    1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
    1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0,
    1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0};
#define MG_EXP_LOG2E_f64 1.4426950408889634074
#define MG_EXP_LN2_HI_f64 6.93147180369123816490e-01
#define MG_EXP_LN2_LO_f64 1.90821492927058770002e-10
#define MG_EXP_LOWEST_f64 (-708.0) /* exp(-708) is just above the smallest normal */
#define MG_EXP_MIN_K_f64 (-1021.0) /* keeps 2^k normal */

/* 1/n! for n = 7 .. 0 */
static const float mg_exp_taylor_f32[] = {
    1.0f / 5040.0f, 1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
#define MG_EXP_LOG2E_f32 1.44269504088896341f
#define MG_EXP_LN2_HI_f32 0.693359375f
#define MG_EXP_LN2_LO_f32 (-2.12194440e-4f)
#define MG_EXP_LOWEST_f32 (-86.0f)
#define MG_EXP_MIN_K_f32 (-125.0f)

#define MG_DEFINE_EXP(T, S)                                                                \
MG_INLINE mg_v##S mg_exp_v##S(mg_v##S x) {                                                 \
    mg_v##S k = mg_round_##S(mg_mul_##S(x, mg_set1_##S(MG_EXP_LOG2E_##S)));               \
    mg_v##S r = mg_fnma_##S(k, mg_set1_##S(MG_EXP_LN2_HI_##S), x);                        \
    r = mg_fnma_##S(k, mg_set1_##S(MG_EXP_LN2_LO_##S), r);                                \
    const int n = sizeof(mg_exp_taylor_##S) / sizeof(T);                                  \
    mg_v##S p = mg_set1_##S(mg_exp_taylor_##S[0]);                                         \
    for (int i = 1; i < n; i++)                                                            \
        p = mg_fma_##S(p, r, mg_set1_##S(mg_exp_taylor_##S[i]));                           \
    mg_v##S y = mg_mul_##S(p, mg_exp2i_##S(mg_max_##S(k, mg_set1_##S(MG_EXP_MIN_K_##S)))); \
    return mg_keep_ge_##S(y, x, mg_set1_##S(MG_EXP_LOWEST_##S));                           \
}

MG_DEFINE_EXP(float, f32)
MG_DEFINE_EXP(double, f64)

#if MG_VEC

#define MG_DEFINE_VEXP(T, S)                                                               \
static inline void mg_vexp_##S(T* x, int n) {                                              \
    const int L = MG_LANES_##S;                                                            \
    int i = 0;                                                                             \
    for (; i + L <= n; i += L)                                                             \
        mg_store_##S(x + i, mg_exp_v##S(mg_load_##S(x + i)));                              \
    if (i < n) {                                                                           \
        mg_mask_##S tail = mg_mask_##S##_n(n - i);                                         \
        mg_mstore_##S(x + i, tail, mg_exp_v##S(mg_mload_##S(x + i, tail)));                \
    }                                                                                      \
}

MG_DEFINE_VEXP(float, f32)
MG_DEFINE_VEXP(double, f64)

#else

static inline void mg_vexp_f64(double* x, int n) {
    for (int i = 0; i < n; i++) x[i] = exp(x[i]);
}

static inline void mg_vexp_f32(float* x, int n) {
    for (int i = 0; i < n; i++) x[i] = expf(x[i]);
}

#endif
#endif
