/* Register-tiled matrix product for the linear layers (float and double).
 *
 *   out (M, N) = A (M, K) B (K, N)          accumulate == 0
 *   out (M, N) += A (M, K) B (K, N)         accumulate == 1
 *
 * A's element (m, k) is a[m * sam + k * sak], so A may be read transposed
 * (the weight gradient dW = dout^T x). B and out are row-major with row
 * strides ldb and ldc.
 *
 * Every output element has one accumulator that sums k = 0, 1, ..., K-1 in
 * order, whatever the tiling: the result does not depend on M, on the tile
 * shapes or on the instruction set, beyond the fused multiply-add of the
 * AVX2 build. With AVX2 a tile of up to 4 rows by 2 vectors stays in
 * registers across the whole k loop (rows 7 = 4 + 3); elsewhere a plain loop
 * that the compiler vectorizes as far as its flags allow.
 */
#ifndef MICROGPT_FAST_GEMM_H
#define MICROGPT_FAST_GEMM_H

#include <stddef.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

/* Lane masks for the last 1..7 float (or 1..3 double) columns. */
static inline __m256i mg_tail_mask32(int n) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes);
}
static inline __m256i mg_tail_mask64(int n) {
    const __m256i lanes = _mm256_setr_epi64x(0, 1, 2, 3);
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), lanes);
}

/* One tile: MR rows (a compile-time constant after inlining) by NV vectors
 * (1 or 2) of which the last may be partial (mask). */
#define MG_DEFINE_TILE(T, SFX, VT, LANES, LOAD, MLOAD, STORE, MSTORE, SET1, FMA, ADD, ZERO)   \
static inline __attribute__((always_inline)) void                                          \
mg_tile_##SFX(T* out, ptrdiff_t ldc, const T* a, ptrdiff_t sam, ptrdiff_t sak,             \
              const T* b, ptrdiff_t ldb, int K, const int MR, const int NV,                \
              const int masked, __m256i mask, int accumulate) {                           \
    VT acc[4][2];                                                                          \
    for (int r = 0; r < MR; r++) { acc[r][0] = ZERO(); acc[r][1] = ZERO(); }               \
    for (int k = 0; k < K; k++) {                                                          \
        const T* bk = b + k * ldb;                                                         \
        VT b0, b1 = ZERO();                                                                \
        if (NV == 2) {                                                                     \
            b0 = LOAD(bk);                                                                 \
            b1 = masked ? MLOAD(bk + LANES, mask) : LOAD(bk + LANES);                      \
        } else {                                                                           \
            b0 = masked ? MLOAD(bk, mask) : LOAD(bk);                                      \
        }                                                                                  \
        for (int r = 0; r < MR; r++) {                                                     \
            VT ar = SET1(a[r * sam + k * sak]);                                            \
            acc[r][0] = FMA(ar, b0, acc[r][0]);                                            \
            if (NV == 2) acc[r][1] = FMA(ar, b1, acc[r][1]);                               \
        }                                                                                  \
    }                                                                                      \
    for (int r = 0; r < MR; r++) {                                                         \
        T* o = out + r * ldc;                                                              \
        for (int v = 0; v < NV; v++) {                                                     \
            VT x = acc[r][v];                                                              \
            int last = v == NV - 1 && masked;                                              \
            if (accumulate) x = ADD(last ? MLOAD(o + v * LANES, mask) : LOAD(o + v * LANES), x); \
            if (last) MSTORE(o + v * LANES, mask, x); else STORE(o + v * LANES, x);        \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
                                                                                           \
static inline __attribute__((always_inline)) void                                          \
mg_rows_##SFX(T* out, ptrdiff_t ldc, const T* a, ptrdiff_t sam, ptrdiff_t sak,             \
              const T* b, ptrdiff_t ldb, int N, int K, const int MR, int accumulate) {     \
    int n = 0;                                                                             \
    for (; n + 2 * LANES <= N; n += 2 * LANES)                                             \
        mg_tile_##SFX(out + n, ldc, a, sam, sak, b + n, ldb, K, MR, 2, 0, mask_none_##SFX(), accumulate); \
    int rest = N - n;                                                                      \
    if (rest > LANES)                                                                      \
        mg_tile_##SFX(out + n, ldc, a, sam, sak, b + n, ldb, K, MR, 2, rest != 2 * LANES,  \
                      mask_##SFX(rest - LANES), accumulate);                               \
    else if (rest > 0)                                                                     \
        mg_tile_##SFX(out + n, ldc, a, sam, sak, b + n, ldb, K, MR, 1, rest != LANES,      \
                      mask_##SFX(rest), accumulate);                                       \
}                                                                                          \
                                                                                           \
static inline void mg_gemm_##SFX(T* out, ptrdiff_t ldc, const T* a, ptrdiff_t sam,         \
                                 ptrdiff_t sak, const T* b, ptrdiff_t ldb, int M, int N,   \
                                 int K, int accumulate) {                                  \
    int m = 0;                                                                             \
    for (; m + 4 <= M; m += 4)                                                             \
        mg_rows_##SFX(out + m * ldc, ldc, a + m * sam, sam, sak, b, ldb, N, K, 4, accumulate); \
    switch (M - m) {                                                                       \
    case 3: mg_rows_##SFX(out + m * ldc, ldc, a + m * sam, sam, sak, b, ldb, N, K, 3, accumulate); break; \
    case 2: mg_rows_##SFX(out + m * ldc, ldc, a + m * sam, sam, sak, b, ldb, N, K, 2, accumulate); break; \
    case 1: mg_rows_##SFX(out + m * ldc, ldc, a + m * sam, sam, sak, b, ldb, N, K, 1, accumulate); break; \
    }                                                                                      \
}

static inline __m256i mask_none_f32(void) { return _mm256_setzero_si256(); }
static inline __m256i mask_none_f64(void) { return _mm256_setzero_si256(); }
static inline __m256i mask_f32(int n) { return mg_tail_mask32(n); }
static inline __m256i mask_f64(int n) { return mg_tail_mask64(n); }

MG_DEFINE_TILE(float, f32, __m256, 8, _mm256_loadu_ps, _mm256_maskload_ps, _mm256_storeu_ps,
               _mm256_maskstore_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps,
               _mm256_setzero_ps)
MG_DEFINE_TILE(double, f64, __m256d, 4, _mm256_loadu_pd, _mm256_maskload_pd, _mm256_storeu_pd,
               _mm256_maskstore_pd, _mm256_set1_pd, _mm256_fmadd_pd, _mm256_add_pd,
               _mm256_setzero_pd)

#else  /* portable: one row at a time, an axpy over the columns per k */

#define MG_DEFINE_PORTABLE(T, SFX)                                                         \
static inline void mg_gemm_##SFX(T* out, ptrdiff_t ldc, const T* a, ptrdiff_t sam,         \
                                 ptrdiff_t sak, const T* b, ptrdiff_t ldb, int M, int N,   \
                                 int K, int accumulate) {                                  \
    for (int m = 0; m < M; m++) {                                                          \
        T* o = out + m * ldc;                                                              \
        T* acc = o;                                                                        \
        T buf[256];                                                                        \
        /* accumulate: sum into a scratch row first, so out += (sum over k) */             \
        for (int n0 = 0; n0 < N; n0 += 256) {                                              \
            int nn = N - n0 < 256 ? N - n0 : 256;                                          \
            acc = accumulate ? buf : o + n0;                                               \
            for (int j = 0; j < nn; j++) acc[j] = 0;                                       \
            for (int k = 0; k < K; k++) {                                                  \
                T ak = a[m * sam + k * sak];                                               \
                const T* bk = b + k * ldb + n0;                                            \
                for (int j = 0; j < nn; j++) acc[j] += ak * bk[j];                         \
            }                                                                              \
            if (accumulate)                                                                \
                for (int j = 0; j < nn; j++) o[n0 + j] += acc[j];                          \
        }                                                                                  \
    }                                                                                      \
}
MG_DEFINE_PORTABLE(float, f32)
MG_DEFINE_PORTABLE(double, f64)

#endif
#endif
