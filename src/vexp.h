/* In-place exp of an array, x[i] = exp(x[i]), for softmax arguments (x <= 0).
 *
 * With AVX2 and FMA: exp(x) = 2^k exp(r), k = round(x / ln 2),
 * r = x - k ln 2 (Cody-Waite: ln 2 split in a high part exact in k * ln2_hi
 * and a low part), |r| <= ln(2) / 2, and exp(r) by its Taylor polynomial
 * (degree 13 in double, 7 in float), evaluated by Horner's rule. Accurate to
 * about one ulp, so float64 still reproduces the original's output. Arguments
 * below the smallest normal result give 0 (as do flushed denormals). With
 * AVX-512 the same steps run on 512-bit vectors.
 * Elsewhere: libm's exp, one element at a time.
 */
#ifndef MICROGPT_FAST_VEXP_H
#define MICROGPT_FAST_VEXP_H

#include <math.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

static inline __m256d mg_exp_pd(__m256d x) {
    const __m256d log2e = _mm256_set1_pd(1.4426950408889634074);
    const __m256d ln2_hi = _mm256_set1_pd(6.93147180369123816490e-01);
    const __m256d ln2_lo = _mm256_set1_pd(1.90821492927058770002e-10);
    const __m256d lowest = _mm256_set1_pd(-708.0);
    __m256d k = _mm256_round_pd(_mm256_mul_pd(x, log2e),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fnmadd_pd(k, ln2_hi, x);
    r = _mm256_fnmadd_pd(k, ln2_lo, r);
    /* 1/n! for n = 13 .. 0 */
    __m256d p = _mm256_set1_pd(1.0 / 6227020800.0);
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 479001600.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 39916800.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 3628800.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 362880.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 40320.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 5040.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 720.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 120.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 24.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 6.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(0.5));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    /* 2^k: k + 1023 in the exponent field (k >= -1021 here, so it stays normal) */
    __m128i k32 = _mm256_cvtpd_epi32(_mm256_max_pd(k, _mm256_set1_pd(-1021.0)));
    __m256i bits = _mm256_slli_epi64(
        _mm256_add_epi64(_mm256_cvtepi32_epi64(k32), _mm256_set1_epi64x(1023)), 52);
    __m256d y = _mm256_mul_pd(p, _mm256_castsi256_pd(bits));
    return _mm256_and_pd(y, _mm256_cmp_pd(x, lowest, _CMP_GE_OQ));
}

static inline __m256 mg_exp_ps(__m256 x) {
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f);
    const __m256 ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    const __m256 lowest = _mm256_set1_ps(-86.0f);
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, log2e),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, ln2_hi, x);
    r = _mm256_fnmadd_ps(k, ln2_lo, r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i k32 = _mm256_cvtps_epi32(_mm256_max_ps(k, _mm256_set1_ps(-125.0f)));
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(k32, _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    return _mm256_and_ps(y, _mm256_cmp_ps(x, lowest, _CMP_GE_OQ));
}

#if defined(__AVX512F__)
/* The same steps on 512-bit vectors, so the same bits in each lane; the tail is a
 * masked load and store. */
static inline __m512d mg_exp_pd512(__m512d x) {
    const __m512d log2e = _mm512_set1_pd(1.4426950408889634074);
    const __m512d ln2_hi = _mm512_set1_pd(6.93147180369123816490e-01);
    const __m512d ln2_lo = _mm512_set1_pd(1.90821492927058770002e-10);
    __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(x, log2e),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fnmadd_pd(k, ln2_hi, x);
    r = _mm512_fnmadd_pd(k, ln2_lo, r);
    __m512d p = _mm512_set1_pd(1.0 / 6227020800.0);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 479001600.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 39916800.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 3628800.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 362880.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 40320.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 5040.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 720.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 120.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 24.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 6.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.5));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    __m256i k32 = _mm512_cvtpd_epi32(_mm512_max_pd(k, _mm512_set1_pd(-1021.0)));
    __m512i bits = _mm512_slli_epi64(
        _mm512_add_epi64(_mm512_cvtepi32_epi64(k32), _mm512_set1_epi64(1023)), 52);
    __m512d y = _mm512_mul_pd(p, _mm512_castsi512_pd(bits));
    return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(x, _mm512_set1_pd(-708.0), _CMP_GE_OQ), y);
}

static inline __m512 mg_exp_ps512(__m512 x) {
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f);
    const __m512 ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, ln2_hi, x);
    r = _mm512_fnmadd_ps(k, ln2_lo, r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512i k32 = _mm512_cvtps_epi32(_mm512_max_ps(k, _mm512_set1_ps(-125.0f)));
    __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(k32, _mm512_set1_epi32(127)), 23);
    __m512 y = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-86.0f), _CMP_GE_OQ), y);
}

static inline void mg_vexp_f64(double* x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm512_storeu_pd(x + i, mg_exp_pd512(_mm512_loadu_pd(x + i)));
    if (i < n) {
        __mmask8 tail = (__mmask8)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_pd(x + i, tail, mg_exp_pd512(_mm512_maskz_loadu_pd(tail, x + i)));
    }
}

static inline void mg_vexp_f32(float* x, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, mg_exp_ps512(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 tail = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(x + i, tail, mg_exp_ps512(_mm512_maskz_loadu_ps(tail, x + i)));
    }
}

#else  /* AVX2 */

static inline void mg_vexp_f64(double* x, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4)
        _mm256_storeu_pd(x + i, mg_exp_pd(_mm256_loadu_pd(x + i)));
    if (i < n) {
        double tail[4] = {0, 0, 0, 0};
        memcpy(tail, x + i, (n - i) * sizeof(double));
        _mm256_storeu_pd(tail, mg_exp_pd(_mm256_loadu_pd(tail)));
        memcpy(x + i, tail, (n - i) * sizeof(double));
    }
}

static inline void mg_vexp_f32(float* x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, mg_exp_ps(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        memcpy(tail, x + i, (n - i) * sizeof(float));
        _mm256_storeu_ps(tail, mg_exp_ps(_mm256_loadu_ps(tail)));
        memcpy(x + i, tail, (n - i) * sizeof(float));
    }
}

#endif  /* AVX-512 */

#else

static inline void mg_vexp_f64(double* x, int n) {
    for (int i = 0; i < n; i++) x[i] = exp(x[i]);
}

static inline void mg_vexp_f32(float* x, int n) {
    for (int i = 0; i < n; i++) x[i] = expf(x[i]);
}

#endif
#endif
