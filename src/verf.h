/* erf of one vector (vec.h), with exp(-x^2) beside it, for gelu (activation.h);
 * and in place over an array (the tests measure it against math.erf).
 *
 * erf is odd: with a = |x| it is computed as
 *   a < 1:   erf(a) = a + a Q(a^2)         Q ~ erf(a) / a - 1
 *   a >= 1:  erf(a) = 1 - exp(-a^2) G(s)   G ~ erfc(a) exp(a^2), smooth and slowly
 *            varying, in s = k / a + c, the affine map of 1/a in [v_min, 1] onto
 *            [-1, 1]; 1/a is clamped at v_min (a = 6 in double, 4 in float), past
 *            which exp(-a^2) G is below half an ulp of 1 and erf rounds to 1
 * and the sign of x put back. Q and G are polynomials (Horner's rule), weighted
 * minimax fits of erf's own values derived by tools/erf_coefficients.py, which
 * states the method; the fits' own error is 0.1 ulp or less (0.03 in float),
 * the rest is the arithmetic's rounding. Measured on tests/test_activations.py's
 * 183,000 points (magnitudes 1e-300 to 1e10), in double and in float: at most
 * 0.9 ulp from the exact erf with vectors, 1.15 in the scalar builds (whose
 * fma rounds twice); 1.0 ulp from math.erf in double, itself up to 0.99 ulp
 * off (the test holds both dtypes to 2). Both branches are computed for every
 * lane and one is selected, so nothing branches per element. NaN gives NaN;
 * +-inf give +-1.
 */
#ifndef MICROGPT_FAST_VERF_H
#define MICROGPT_FAST_VERF_H

#include <stddef.h>

#include "vec.h"
#include "vexp.h"

/* Q of degree 12 and G of degree 18, highest degree first */
static const double mg_erf_q_f64[] = {
    6.682206028707343e-11, -1.1829068875014577e-09, 1.4786163509966911e-08,
    -1.637058255083037e-07, 1.646308200086179e-06, -1.4925738198942865e-05,
    0.00012055337765746794, -0.0008548327189298854, 0.005223977629090862,
    -0.026866170645619133, 0.11283791670958741, -0.37612638903183876, 0.1283791670955126};
static const double mg_erf_g_f64[] = {
    1.8145971564846456e-09, -1.344255996662182e-08, 4.640518556955924e-08,
    -9.889322225881167e-08, 1.2941514977710602e-07, 1.9669209047690974e-09,
    -6.648145691118052e-07, 2.583516530205216e-06, -6.497878341714848e-06,
    1.0882478522771025e-05, -4.04661188074606e-06, -5.528647194511237e-05,
    0.00026560546355594946, -0.0007383867443260829, 0.001034432226641357,
    0.002821131897906203, -0.03083105050843662, 0.1653626900126145, 0.28972211632346423};
#define MG_ERF_K_f64 2.4
#define MG_ERF_C_f64 (-1.4)
#define MG_ERF_VMIN_f64 0.16666666666666666

/* Q of degree 6 and G of degree 7 */
static const float mg_erf_q_f32[] = {
    7.83463402e-05f, -0.000800462207f, 0.00518774008f, -0.0268535465f, 0.11283581f,
    -0.37612626f, 0.128379166f};
static const float mg_erf_g_f32[] = {
    -1.89880102e-05f, 0.000114731905f, -0.000349540409f, 0.000463224045f, 0.00230785925f,
    -0.0242431201f, 0.143356413f, 0.305952996f};
#define MG_ERF_K_f32 2.66666675f
#define MG_ERF_C_f32 (-1.66666663f)
#define MG_ERF_VMIN_f32 0.25f

#define MG_DEFINE_VERF(T, S)                                                               \
MG_INLINE mg_v##S mg_horner_##S(const T* c, int n, mg_v##S x) {                            \
    mg_v##S p = mg_set1_##S(c[0]);                                                         \
    for (int i = 1; i < n; i++)                                                            \
        p = mg_fma_##S(p, x, mg_set1_##S(c[i]));                                           \
    return p;                                                                              \
}                                                                                          \
                                                                                           \
/* erf(x); *gauss = exp(-x^2) */                                                           \
MG_INLINE mg_v##S mg_erf_gauss_v##S(mg_v##S x, mg_v##S* gauss) {                           \
    const mg_v##S one = mg_set1_##S(1);                                                    \
    mg_v##S a = mg_abs_##S(x);                                                             \
    mg_v##S t = mg_mul_##S(a, a);                                                          \
    mg_v##S q = mg_horner_##S(mg_erf_q_##S, sizeof(mg_erf_q_##S) / sizeof(T), t);          \
    mg_v##S small = mg_fma_##S(a, q, a);                                                   \
    /* v_min first: a NaN 1/a stays NaN */                                                 \
    mg_v##S v = mg_max_##S(mg_set1_##S(MG_ERF_VMIN_##S), mg_div_##S(one, a));              \
    mg_v##S s = mg_fma_##S(v, mg_set1_##S(MG_ERF_K_##S), mg_set1_##S(MG_ERF_C_##S));       \
    mg_v##S g = mg_horner_##S(mg_erf_g_##S, sizeof(mg_erf_g_##S) / sizeof(T), s);          \
    mg_v##S e = mg_exp_v##S(mg_sub_##S(mg_zero_##S(), t));                                 \
    mg_v##S large = mg_fnma_##S(e, g, one);                                                \
    *gauss = e;                                                                            \
    return mg_copysign_##S(mg_where_lt_##S(a, one, small, large), x);                      \
}                                                                                          \
                                                                                           \
static inline void mg_verf_##S(T* x, ptrdiff_t n) {                                        \
    const int L = MG_LANES_##S;                                                            \
    ptrdiff_t i = 0;                                                                       \
    mg_v##S gauss;                                                                         \
    for (; i + L <= n; i += L)                                                             \
        mg_store_##S(x + i, mg_erf_gauss_v##S(mg_load_##S(x + i), &gauss));                \
    if (i < n) {                                                                           \
        mg_mask_##S tail = mg_mask_##S##_n((int)(n - i));                                  \
        mg_mstore_##S(x + i, tail, mg_erf_gauss_v##S(mg_mload_##S(x + i, tail), &gauss));  \
    }                                                                                      \
}

MG_DEFINE_VERF(float, f32)
MG_DEFINE_VERF(double, f64)

#endif
