/* The vector width of the C helpers (gemm.h, vexp.h, verf.h, activation.h, transpose.h,
 * fma_peak.h), in one place.
 *
 * The compiler's target picks it: with AVX-512 (__AVX512F__) 512-bit vectors,
 * with AVX2 and FMA 256-bit ones; elsewhere MG_VEC is 0, gemm.h, vexp.h and
 * transpose.h take their scalar paths, and the layer has one lane (plain float
 * and double, for the helpers written once over it: vexp.h's one-vector exp,
 * verf.h, activation.h; there fma and fnma round twice). Per element type S
 * (f32 for float, f64 for double):
 *
 *   mg_vS, MG_LANES_S       the vector type and its number of lanes
 *   mg_mask_S               which lanes a partial load or store touches;
 *                           mg_mask_S_n(n) selects the first n
 *   load, store, mload, mstore (masked: other lanes read as 0, left as they are),
 *   set1, zero, add, sub, mul, div, fma (a b + c), fnma (c - a b), one rounding each
 *   max(a, b)               b where either is NaN
 *   abs, copysign(y, x)     |y| with the sign of x
 *   round                   to the nearest whole number, ties to even
 *   exp2i                   2^k for whole k in the normal exponent range
 *   keep_ge(y, x, lo)       y where x >= lo, else +0 (also where x is NaN)
 *   where_lt(a, b, x, y)    x where a < b, else y (also where a or b is NaN)
 *
 * and for the transpose, on 64-bit units (casts mg_as_f64, mg_as_f32):
 *
 *   zip_lo_f64(a, b, g)     in every span of 2g lanes: the lower g lanes of a,
 *   zip_hi_f64(a, b, g)     then of b (zip_hi: the upper g); g = 1, 2, 4 < lanes
 *   interleave_lo_f32(a, b) in every 128-bit lane of 4 floats: a0 b0 a1 b1
 *   interleave_hi_f32(a, b) (interleave_hi: a2 b2 a3 b3)
 *
 * Lanes never mix in the arithmetic, so each lane's bits are the same at
 * either width.
 */
#ifndef MICROGPT_FAST_VEC_H
#define MICROGPT_FAST_VEC_H

#if defined(__AVX512F__)
#define MG_VEC 512
#elif defined(__AVX2__) && defined(__FMA__)
#define MG_VEC 256
#else
#define MG_VEC 0
#endif

#define MG_INLINE static inline __attribute__((always_inline))
#if MG_VEC
#include <immintrin.h>
#endif

#if MG_VEC == 512

typedef __m512 mg_vf32;
typedef __m512d mg_vf64;
typedef __mmask16 mg_mask_f32;
typedef __mmask8 mg_mask_f64;
#define MG_LANES_f32 16
#define MG_LANES_f64 8

MG_INLINE mg_mask_f32 mg_mask_f32_n(int n) { return (mg_mask_f32)((1u << n) - 1u); }
MG_INLINE mg_mask_f64 mg_mask_f64_n(int n) { return (mg_mask_f64)((1u << n) - 1u); }
MG_INLINE mg_vf32 mg_load_f32(const float* p) { return _mm512_loadu_ps(p); }
MG_INLINE mg_vf64 mg_load_f64(const double* p) { return _mm512_loadu_pd(p); }
MG_INLINE mg_vf32 mg_mload_f32(const float* p, mg_mask_f32 m) { return _mm512_maskz_loadu_ps(m, p); }
MG_INLINE mg_vf64 mg_mload_f64(const double* p, mg_mask_f64 m) { return _mm512_maskz_loadu_pd(m, p); }
MG_INLINE void mg_store_f32(float* p, mg_vf32 x) { _mm512_storeu_ps(p, x); }
MG_INLINE void mg_store_f64(double* p, mg_vf64 x) { _mm512_storeu_pd(p, x); }
MG_INLINE void mg_mstore_f32(float* p, mg_mask_f32 m, mg_vf32 x) { _mm512_mask_storeu_ps(p, m, x); }
MG_INLINE void mg_mstore_f64(double* p, mg_mask_f64 m, mg_vf64 x) { _mm512_mask_storeu_pd(p, m, x); }
MG_INLINE mg_vf32 mg_set1_f32(float a) { return _mm512_set1_ps(a); }
MG_INLINE mg_vf64 mg_set1_f64(double a) { return _mm512_set1_pd(a); }
MG_INLINE mg_vf32 mg_zero_f32(void) { return _mm512_setzero_ps(); }
MG_INLINE mg_vf64 mg_zero_f64(void) { return _mm512_setzero_pd(); }
MG_INLINE mg_vf32 mg_add_f32(mg_vf32 a, mg_vf32 b) { return _mm512_add_ps(a, b); }
MG_INLINE mg_vf64 mg_add_f64(mg_vf64 a, mg_vf64 b) { return _mm512_add_pd(a, b); }
MG_INLINE mg_vf32 mg_mul_f32(mg_vf32 a, mg_vf32 b) { return _mm512_mul_ps(a, b); }
MG_INLINE mg_vf64 mg_mul_f64(mg_vf64 a, mg_vf64 b) { return _mm512_mul_pd(a, b); }
MG_INLINE mg_vf32 mg_max_f32(mg_vf32 a, mg_vf32 b) { return _mm512_max_ps(a, b); }
MG_INLINE mg_vf64 mg_max_f64(mg_vf64 a, mg_vf64 b) { return _mm512_max_pd(a, b); }
MG_INLINE mg_vf32 mg_sub_f32(mg_vf32 a, mg_vf32 b) { return _mm512_sub_ps(a, b); }
MG_INLINE mg_vf64 mg_sub_f64(mg_vf64 a, mg_vf64 b) { return _mm512_sub_pd(a, b); }
MG_INLINE mg_vf32 mg_div_f32(mg_vf32 a, mg_vf32 b) { return _mm512_div_ps(a, b); }
MG_INLINE mg_vf64 mg_div_f64(mg_vf64 a, mg_vf64 b) { return _mm512_div_pd(a, b); }
/* the sign is the top bit: integer logic on it */
MG_INLINE mg_vf32 mg_abs_f32(mg_vf32 x) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x),
                                                _mm512_set1_epi32(0x7fffffff)));
}
MG_INLINE mg_vf64 mg_abs_f64(mg_vf64 x) {
    return _mm512_castsi512_pd(_mm512_and_si512(_mm512_castpd_si512(x),
                                                _mm512_set1_epi64(0x7fffffffffffffffLL)));
}
MG_INLINE mg_vf32 mg_copysign_f32(mg_vf32 y, mg_vf32 x) {
    __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    return _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_andnot_si512(sign, _mm512_castps_si512(y)),
        _mm512_and_si512(sign, _mm512_castps_si512(x))));
}
MG_INLINE mg_vf64 mg_copysign_f64(mg_vf64 y, mg_vf64 x) {
    __m512i sign = _mm512_set1_epi64((long long)0x8000000000000000uLL);
    return _mm512_castsi512_pd(_mm512_or_si512(
        _mm512_andnot_si512(sign, _mm512_castpd_si512(y)),
        _mm512_and_si512(sign, _mm512_castpd_si512(x))));
}
MG_INLINE mg_vf32 mg_fma_f32(mg_vf32 a, mg_vf32 b, mg_vf32 c) { return _mm512_fmadd_ps(a, b, c); }
MG_INLINE mg_vf64 mg_fma_f64(mg_vf64 a, mg_vf64 b, mg_vf64 c) { return _mm512_fmadd_pd(a, b, c); }
MG_INLINE mg_vf32 mg_fnma_f32(mg_vf32 a, mg_vf32 b, mg_vf32 c) { return _mm512_fnmadd_ps(a, b, c); }
MG_INLINE mg_vf64 mg_fnma_f64(mg_vf64 a, mg_vf64 b, mg_vf64 c) { return _mm512_fnmadd_pd(a, b, c); }
MG_INLINE mg_vf32 mg_round_f32(mg_vf32 x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
MG_INLINE mg_vf64 mg_round_f64(mg_vf64 x) {
    return _mm512_roundscale_pd(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* 2^k: k + bias in the exponent field */
MG_INLINE mg_vf32 mg_exp2i_f32(mg_vf32 k) {
    __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
MG_INLINE mg_vf64 mg_exp2i_f64(mg_vf64 k) {
    __m512i e = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_cvtpd_epi32(k)),
                                 _mm512_set1_epi64(1023));
    return _mm512_castsi512_pd(_mm512_slli_epi64(e, 52));
}
MG_INLINE mg_vf32 mg_keep_ge_f32(mg_vf32 y, mg_vf32 x, mg_vf32 lo) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ), y);
}
MG_INLINE mg_vf64 mg_keep_ge_f64(mg_vf64 y, mg_vf64 x, mg_vf64 lo) {
    return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(x, lo, _CMP_GE_OQ), y);
}
MG_INLINE mg_vf32 mg_where_lt_f32(mg_vf32 a, mg_vf32 b, mg_vf32 x, mg_vf32 y) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x);
}
MG_INLINE mg_vf64 mg_where_lt_f64(mg_vf64 a, mg_vf64 b, mg_vf64 x, mg_vf64 y) {
    return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(a, b, _CMP_LT_OQ), y, x);
}
MG_INLINE mg_vf64 mg_as_f64(mg_vf32 x) { return _mm512_castps_pd(x); }
MG_INLINE mg_vf32 mg_as_f32(mg_vf64 x) { return _mm512_castpd_ps(x); }
MG_INLINE mg_vf32 mg_interleave_lo_f32(mg_vf32 a, mg_vf32 b) { return _mm512_unpacklo_ps(a, b); }
MG_INLINE mg_vf32 mg_interleave_hi_f32(mg_vf32 a, mg_vf32 b) { return _mm512_unpackhi_ps(a, b); }
/* g = 2 has no single shuffle of whole 128-bit blocks: a two-source permute */
MG_INLINE mg_vf64 mg_zip_lo_f64(mg_vf64 a, mg_vf64 b, int g) {
    return g == 1 ? _mm512_unpacklo_pd(a, b)
         : g == 2 ? _mm512_permutex2var_pd(a, _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), b)
         : _mm512_shuffle_f64x2(a, b, _MM_SHUFFLE(1, 0, 1, 0));
}
MG_INLINE mg_vf64 mg_zip_hi_f64(mg_vf64 a, mg_vf64 b, int g) {
    return g == 1 ? _mm512_unpackhi_pd(a, b)
         : g == 2 ? _mm512_permutex2var_pd(a, _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15), b)
         : _mm512_shuffle_f64x2(a, b, _MM_SHUFFLE(3, 2, 3, 2));
}

#elif MG_VEC == 256

typedef __m256 mg_vf32;
typedef __m256d mg_vf64;
typedef __m256i mg_mask_f32;  /* a lane is selected when its sign bit is set */
typedef __m256i mg_mask_f64;
#define MG_LANES_f32 8
#define MG_LANES_f64 4

MG_INLINE mg_mask_f32 mg_mask_f32_n(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
MG_INLINE mg_mask_f64 mg_mask_f64_n(int n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
MG_INLINE mg_vf32 mg_load_f32(const float* p) { return _mm256_loadu_ps(p); }
MG_INLINE mg_vf64 mg_load_f64(const double* p) { return _mm256_loadu_pd(p); }
MG_INLINE mg_vf32 mg_mload_f32(const float* p, mg_mask_f32 m) { return _mm256_maskload_ps(p, m); }
MG_INLINE mg_vf64 mg_mload_f64(const double* p, mg_mask_f64 m) { return _mm256_maskload_pd(p, m); }
MG_INLINE void mg_store_f32(float* p, mg_vf32 x) { _mm256_storeu_ps(p, x); }
MG_INLINE void mg_store_f64(double* p, mg_vf64 x) { _mm256_storeu_pd(p, x); }
MG_INLINE void mg_mstore_f32(float* p, mg_mask_f32 m, mg_vf32 x) { _mm256_maskstore_ps(p, m, x); }
MG_INLINE void mg_mstore_f64(double* p, mg_mask_f64 m, mg_vf64 x) { _mm256_maskstore_pd(p, m, x); }
MG_INLINE mg_vf32 mg_set1_f32(float a) { return _mm256_set1_ps(a); }
MG_INLINE mg_vf64 mg_set1_f64(double a) { return _mm256_set1_pd(a); }
MG_INLINE mg_vf32 mg_zero_f32(void) { return _mm256_setzero_ps(); }
MG_INLINE mg_vf64 mg_zero_f64(void) { return _mm256_setzero_pd(); }
MG_INLINE mg_vf32 mg_add_f32(mg_vf32 a, mg_vf32 b) { return _mm256_add_ps(a, b); }
MG_INLINE mg_vf64 mg_add_f64(mg_vf64 a, mg_vf64 b) { return _mm256_add_pd(a, b); }
MG_INLINE mg_vf32 mg_mul_f32(mg_vf32 a, mg_vf32 b) { return _mm256_mul_ps(a, b); }
MG_INLINE mg_vf64 mg_mul_f64(mg_vf64 a, mg_vf64 b) { return _mm256_mul_pd(a, b); }
MG_INLINE mg_vf32 mg_max_f32(mg_vf32 a, mg_vf32 b) { return _mm256_max_ps(a, b); }
MG_INLINE mg_vf64 mg_max_f64(mg_vf64 a, mg_vf64 b) { return _mm256_max_pd(a, b); }
MG_INLINE mg_vf32 mg_sub_f32(mg_vf32 a, mg_vf32 b) { return _mm256_sub_ps(a, b); }
MG_INLINE mg_vf64 mg_sub_f64(mg_vf64 a, mg_vf64 b) { return _mm256_sub_pd(a, b); }
MG_INLINE mg_vf32 mg_div_f32(mg_vf32 a, mg_vf32 b) { return _mm256_div_ps(a, b); }
MG_INLINE mg_vf64 mg_div_f64(mg_vf64 a, mg_vf64 b) { return _mm256_div_pd(a, b); }
MG_INLINE mg_vf32 mg_abs_f32(mg_vf32 x) {
    return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}
MG_INLINE mg_vf64 mg_abs_f64(mg_vf64 x) {
    return _mm256_and_pd(x, _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL)));
}
MG_INLINE mg_vf32 mg_copysign_f32(mg_vf32 y, mg_vf32 x) {
    __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    return _mm256_or_ps(_mm256_andnot_ps(sign, y), _mm256_and_ps(sign, x));
}
MG_INLINE mg_vf64 mg_copysign_f64(mg_vf64 y, mg_vf64 x) {
    __m256d sign = _mm256_castsi256_pd(_mm256_set1_epi64x((long long)0x8000000000000000uLL));
    return _mm256_or_pd(_mm256_andnot_pd(sign, y), _mm256_and_pd(sign, x));
}
MG_INLINE mg_vf32 mg_fma_f32(mg_vf32 a, mg_vf32 b, mg_vf32 c) { return _mm256_fmadd_ps(a, b, c); }
MG_INLINE mg_vf64 mg_fma_f64(mg_vf64 a, mg_vf64 b, mg_vf64 c) { return _mm256_fmadd_pd(a, b, c); }
MG_INLINE mg_vf32 mg_fnma_f32(mg_vf32 a, mg_vf32 b, mg_vf32 c) { return _mm256_fnmadd_ps(a, b, c); }
MG_INLINE mg_vf64 mg_fnma_f64(mg_vf64 a, mg_vf64 b, mg_vf64 c) { return _mm256_fnmadd_pd(a, b, c); }
MG_INLINE mg_vf32 mg_round_f32(mg_vf32 x) {
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
MG_INLINE mg_vf64 mg_round_f64(mg_vf64 x) {
    return _mm256_round_pd(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
MG_INLINE mg_vf32 mg_exp2i_f32(mg_vf32 k) {
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
MG_INLINE mg_vf64 mg_exp2i_f64(mg_vf64 k) {
    __m256i e = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(k)),
                                 _mm256_set1_epi64x(1023));
    return _mm256_castsi256_pd(_mm256_slli_epi64(e, 52));
}
MG_INLINE mg_vf32 mg_keep_ge_f32(mg_vf32 y, mg_vf32 x, mg_vf32 lo) {
    return _mm256_and_ps(y, _mm256_cmp_ps(x, lo, _CMP_GE_OQ));
}
MG_INLINE mg_vf64 mg_keep_ge_f64(mg_vf64 y, mg_vf64 x, mg_vf64 lo) {
    return _mm256_and_pd(y, _mm256_cmp_pd(x, lo, _CMP_GE_OQ));
}
MG_INLINE mg_vf32 mg_where_lt_f32(mg_vf32 a, mg_vf32 b, mg_vf32 x, mg_vf32 y) {
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ));
}
MG_INLINE mg_vf64 mg_where_lt_f64(mg_vf64 a, mg_vf64 b, mg_vf64 x, mg_vf64 y) {
    return _mm256_blendv_pd(y, x, _mm256_cmp_pd(a, b, _CMP_LT_OQ));
}
MG_INLINE mg_vf64 mg_as_f64(mg_vf32 x) { return _mm256_castps_pd(x); }
MG_INLINE mg_vf32 mg_as_f32(mg_vf64 x) { return _mm256_castpd_ps(x); }
MG_INLINE mg_vf32 mg_interleave_lo_f32(mg_vf32 a, mg_vf32 b) { return _mm256_unpacklo_ps(a, b); }
MG_INLINE mg_vf32 mg_interleave_hi_f32(mg_vf32 a, mg_vf32 b) { return _mm256_unpackhi_ps(a, b); }
MG_INLINE mg_vf64 mg_zip_lo_f64(mg_vf64 a, mg_vf64 b, int g) {
    return g == 1 ? _mm256_unpacklo_pd(a, b) : _mm256_permute2f128_pd(a, b, 0x20);
}
MG_INLINE mg_vf64 mg_zip_hi_f64(mg_vf64 a, mg_vf64 b, int g) {
    return g == 1 ? _mm256_unpackhi_pd(a, b) : _mm256_permute2f128_pd(a, b, 0x31);
}

#else

/* one lane: the same operations on plain numbers (no transpose units) */
typedef float mg_vf32;
typedef double mg_vf64;
typedef int mg_mask_f32;  /* whether the one lane is selected */
typedef int mg_mask_f64;
#define MG_LANES_f32 1
#define MG_LANES_f64 1

MG_INLINE mg_mask_f32 mg_mask_f32_n(int n) { return n > 0; }
MG_INLINE mg_mask_f64 mg_mask_f64_n(int n) { return n > 0; }
MG_INLINE mg_vf32 mg_load_f32(const float* p) { return *p; }
MG_INLINE mg_vf64 mg_load_f64(const double* p) { return *p; }
MG_INLINE mg_vf32 mg_mload_f32(const float* p, mg_mask_f32 m) { return m ? *p : 0.0f; }
MG_INLINE mg_vf64 mg_mload_f64(const double* p, mg_mask_f64 m) { return m ? *p : 0.0; }
MG_INLINE void mg_store_f32(float* p, mg_vf32 x) { *p = x; }
MG_INLINE void mg_store_f64(double* p, mg_vf64 x) { *p = x; }
MG_INLINE void mg_mstore_f32(float* p, mg_mask_f32 m, mg_vf32 x) { if (m) *p = x; }
MG_INLINE void mg_mstore_f64(double* p, mg_mask_f64 m, mg_vf64 x) { if (m) *p = x; }
MG_INLINE mg_vf32 mg_set1_f32(float a) { return a; }
MG_INLINE mg_vf64 mg_set1_f64(double a) { return a; }
MG_INLINE mg_vf32 mg_zero_f32(void) { return 0.0f; }
MG_INLINE mg_vf64 mg_zero_f64(void) { return 0.0; }
MG_INLINE mg_vf32 mg_add_f32(mg_vf32 a, mg_vf32 b) { return a + b; }
MG_INLINE mg_vf64 mg_add_f64(mg_vf64 a, mg_vf64 b) { return a + b; }
MG_INLINE mg_vf32 mg_sub_f32(mg_vf32 a, mg_vf32 b) { return a - b; }
MG_INLINE mg_vf64 mg_sub_f64(mg_vf64 a, mg_vf64 b) { return a - b; }
MG_INLINE mg_vf32 mg_mul_f32(mg_vf32 a, mg_vf32 b) { return a * b; }
MG_INLINE mg_vf64 mg_mul_f64(mg_vf64 a, mg_vf64 b) { return a * b; }
MG_INLINE mg_vf32 mg_div_f32(mg_vf32 a, mg_vf32 b) { return a / b; }
MG_INLINE mg_vf64 mg_div_f64(mg_vf64 a, mg_vf64 b) { return a / b; }
/* max as the vector instructions: b where either is NaN */
MG_INLINE mg_vf32 mg_max_f32(mg_vf32 a, mg_vf32 b) { return a > b ? a : b; }
MG_INLINE mg_vf64 mg_max_f64(mg_vf64 a, mg_vf64 b) { return a > b ? a : b; }
MG_INLINE mg_vf32 mg_fma_f32(mg_vf32 a, mg_vf32 b, mg_vf32 c) { return a * b + c; }
MG_INLINE mg_vf64 mg_fma_f64(mg_vf64 a, mg_vf64 b, mg_vf64 c) { return a * b + c; }
MG_INLINE mg_vf32 mg_fnma_f32(mg_vf32 a, mg_vf32 b, mg_vf32 c) { return c - a * b; }
MG_INLINE mg_vf64 mg_fnma_f64(mg_vf64 a, mg_vf64 b, mg_vf64 c) { return c - a * b; }
MG_INLINE mg_vf32 mg_abs_f32(mg_vf32 x) { return __builtin_fabsf(x); }
MG_INLINE mg_vf64 mg_abs_f64(mg_vf64 x) { return __builtin_fabs(x); }
MG_INLINE mg_vf32 mg_copysign_f32(mg_vf32 y, mg_vf32 x) { return __builtin_copysignf(y, x); }
MG_INLINE mg_vf64 mg_copysign_f64(mg_vf64 y, mg_vf64 x) { return __builtin_copysign(y, x); }
/* adding and taking away 1.5 * 2^(significand bits) leaves x rounded (ties to
 * even, as the current mode rounds) for |x| < 2^22 (float) or 2^51 (double),
 * without a call to libm's rint */
MG_INLINE mg_vf32 mg_round_f32(mg_vf32 x) { return (x + 12582912.0f) - 12582912.0f; }
MG_INLINE mg_vf64 mg_round_f64(mg_vf64 x) {
    return (x + 6755399441055744.0) - 6755399441055744.0;
}
MG_INLINE mg_vf32 mg_exp2i_f32(mg_vf32 k) {
    union { unsigned int u; float f; } bits;
    bits.u = (unsigned int)((int)k + 127) << 23;
    return bits.f;
}
MG_INLINE mg_vf64 mg_exp2i_f64(mg_vf64 k) {
    union { unsigned long long u; double f; } bits;
    bits.u = (unsigned long long)((long long)k + 1023) << 52;
    return bits.f;
}
MG_INLINE mg_vf32 mg_keep_ge_f32(mg_vf32 y, mg_vf32 x, mg_vf32 lo) { return x >= lo ? y : 0.0f; }
MG_INLINE mg_vf64 mg_keep_ge_f64(mg_vf64 y, mg_vf64 x, mg_vf64 lo) { return x >= lo ? y : 0.0; }
MG_INLINE mg_vf32 mg_where_lt_f32(mg_vf32 a, mg_vf32 b, mg_vf32 x, mg_vf32 y) {
    return a < b ? x : y;
}
MG_INLINE mg_vf64 mg_where_lt_f64(mg_vf64 a, mg_vf64 b, mg_vf64 x, mg_vf64 y) {
    return a < b ? x : y;
}

#endif
#endif
