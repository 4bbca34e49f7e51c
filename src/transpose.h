/* Matrix transpose for the transposed weight copy (float and double).
 *
 *   dst[c * ldd + r] = src[r * lds + c]    for r < rows, c < cols
 *
 * A plain double loop reads one strided element per store, a cache line per
 * element once the rows are long; with AVX the matrix goes in square tiles
 * (8 x 8 floats, 4 x 4 doubles): each tile's rows are loaded as vectors,
 * transposed in registers by unpack and lane shuffles, and stored as whole
 * vectors. The edges that do not fill a tile take the plain loop. Only copies:
 * the result is the same bits on every path.
 */
#ifndef MICROGPT_FAST_TRANSPOSE_H
#define MICROGPT_FAST_TRANSPOSE_H

#include <stddef.h>

#define MG_DEFINE_TRANSPOSE_EDGES(T, S)                                                    \
static inline void mg_transpose_plain_##S(T* dst, ptrdiff_t ldd, const T* src,             \
                                          ptrdiff_t lds, int r0, int r1, int c0, int c1) { \
    for (int c = c0; c < c1; c++)                                                          \
        for (int r = r0; r < r1; r++)                                                      \
            dst[c * ldd + r] = src[r * lds + c];                                           \
}

MG_DEFINE_TRANSPOSE_EDGES(float, f32)
MG_DEFINE_TRANSPOSE_EDGES(double, f64)

#if defined(__AVX__)
#include <immintrin.h>

static inline void mg_transpose_tile_f32(float* dst, ptrdiff_t ldd, const float* src,
                                         ptrdiff_t lds) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    /* pairs of rows interleaved: t0 = r0[0] r1[0] r0[1] r1[1] | r0[4] r1[4] r0[5] r1[5] */
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    /* quads: s0 = column 0 of rows 0-3 | column 4 of rows 0-3, and so on */
    __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    /* 128-bit halves joined: column c of rows 0-3 and of rows 4-7 */
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
}

static inline void mg_transpose_tile_f64(double* dst, ptrdiff_t ldd, const double* src,
                                         ptrdiff_t lds) {
    __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + lds);
    __m256d r2 = _mm256_loadu_pd(src + 2 * lds), r3 = _mm256_loadu_pd(src + 3 * lds);
    /* t0 = r0[0] r1[0] r0[2] r1[2], t1 = r0[1] r1[1] r0[3] r1[3] */
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}

#define MG_TILE_f32 8
#define MG_TILE_f64 4

#define MG_DEFINE_TRANSPOSE(T, S)                                                          \
static inline void mg_transpose_##S(T* dst, ptrdiff_t ldd, const T* src, ptrdiff_t lds,    \
                                    int rows, int cols) {                                  \
    const int E = MG_TILE_##S;                                                             \
    int r_full = rows - rows % E, c_full = cols - cols % E;                                \
    for (int r = 0; r < r_full; r += E)                                                    \
        for (int c = 0; c < c_full; c += E)                                                \
            mg_transpose_tile_##S(dst + c * ldd + r, ldd, src + r * lds + c, lds);         \
    mg_transpose_plain_##S(dst, ldd, src, lds, 0, r_full, c_full, cols);                   \
    mg_transpose_plain_##S(dst, ldd, src, lds, r_full, rows, 0, cols);                     \
}

#else  /* no AVX: the plain loop */

#define MG_DEFINE_TRANSPOSE(T, S)                                                          \
static inline void mg_transpose_##S(T* dst, ptrdiff_t ldd, const T* src, ptrdiff_t lds,    \
                                    int rows, int cols) {                                  \
    mg_transpose_plain_##S(dst, ldd, src, lds, 0, rows, 0, cols);                          \
}

#endif

MG_DEFINE_TRANSPOSE(float, f32)
MG_DEFINE_TRANSPOSE(double, f64)

#endif
