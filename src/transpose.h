/* Matrix transpose for the transposed weight copy (float and double).
 *
 *   dst[c * ldd + r] = src[r * lds + c]    for r < rows, c < cols
 *
 * A plain double loop reads one strided element per store, a cache line per
 * element once the rows are long; with vectors (vec.h) the matrix goes in
 * square tiles of one vector's lanes (8 x 8 floats, 4 x 4 doubles with AVX2;
 * twice that with AVX-512): each tile's rows are loaded as vectors, transposed
 * in registers by shuffles, and stored as whole vectors. The edges that do not
 * fill a tile take the plain loop. Only copies: the result is the same bits on
 * every path.
 */
#ifndef MICROGPT_FAST_TRANSPOSE_H
#define MICROGPT_FAST_TRANSPOSE_H

#include <stddef.h>

#include "vec.h"

#define MG_DEFINE_TRANSPOSE_PLAIN(T, S)                                                    \
static inline void mg_transpose_plain_##S(T* dst, ptrdiff_t ldd, const T* src,             \
                                          ptrdiff_t lds, int r0, int r1, int c0, int c1) { \
    for (int c = c0; c < c1; c++)                                                          \
        for (int r = r0; r < r1; r++)                                                      \
            dst[c * ldd + r] = src[r * lds + c];                                           \
}

MG_DEFINE_TRANSPOSE_PLAIN(float, f32)
MG_DEFINE_TRANSPOSE_PLAIN(double, f64)

#if MG_VEC

/* A square of 64-bit units, n = MG_LANES_f64: v[i] holds row i, then column i.
 * The transpose swaps the two off-diagonal g x g blocks of every 2g x 2g block,
 * for g = 1, 2, 4, ...: one zip of each pair of rows g apart. */
MG_INLINE void mg_transpose_units(mg_vf64* v) {
    const int n = MG_LANES_f64;
    /* unrolled in full, so that v stays in registers */
#pragma GCC unroll 4
    for (int g = 1; g < n; g *= 2)
#pragma GCC unroll 8
        for (int i = 0; i < n; i++)
            if (!(i & g)) {
                mg_vf64 lo = mg_zip_lo_f64(v[i], v[i + g], g);
                v[i + g] = mg_zip_hi_f64(v[i], v[i + g], g);
                v[i] = lo;
            }
}

/* The tiles are left to the compiler to inline or not: forcing them in changes
 * how gcc compiles the callers, down to where it fuses their multiply-adds,
 * and so the bits of their results. */
static inline void mg_transpose_tile_f64(double* dst, ptrdiff_t ldd, const double* src,
                                         ptrdiff_t lds) {
    mg_vf64 v[MG_LANES_f64];
    for (int i = 0; i < MG_LANES_f64; i++) v[i] = mg_load_f64(src + i * lds);
    mg_transpose_units(v);
    for (int i = 0; i < MG_LANES_f64; i++) mg_store_f64(dst + i * ldd, v[i]);
}

/* Rows 2k and 2k + 1 interleaved: each 64-bit unit then holds one column of both
 * rows, and those units are transposed as above. In each 128-bit lane, the low
 * interleave has columns 0 and 1 of the lane's four, the high one 2 and 3: unit
 * j of the low half is column 4 (j / 2) + j % 2, of the high half two further. */
static inline void mg_transpose_tile_f32(float* dst, ptrdiff_t ldd, const float* src,
                                         ptrdiff_t lds) {
    const int n = MG_LANES_f64;
    mg_vf64 lo[MG_LANES_f64], hi[MG_LANES_f64];
    for (int k = 0; k < n; k++) {
        mg_vf32 a = mg_load_f32(src + 2 * k * lds), b = mg_load_f32(src + (2 * k + 1) * lds);
        lo[k] = mg_as_f64(mg_interleave_lo_f32(a, b));
        hi[k] = mg_as_f64(mg_interleave_hi_f32(a, b));
    }
    mg_transpose_units(lo);
    mg_transpose_units(hi);
    for (int j = 0; j < n; j++) {
        int c = 4 * (j / 2) + j % 2;
        mg_store_f32(dst + c * ldd, mg_as_f32(lo[j]));
        mg_store_f32(dst + (c + 2) * ldd, mg_as_f32(hi[j]));
    }
}

#define MG_DEFINE_TRANSPOSE(T, S)                                                          \
static inline void mg_transpose_##S(T* dst, ptrdiff_t ldd, const T* src, ptrdiff_t lds,    \
                                    int rows, int cols) {                                  \
    const int E = MG_LANES_##S;                                                            \
    int r_full = rows - rows % E, c_full = cols - cols % E;                                \
    for (int r = 0; r < r_full; r += E)                                                    \
        for (int c = 0; c < c_full; c += E)                                                \
            mg_transpose_tile_##S(dst + c * ldd + r, ldd, src + r * lds + c, lds);         \
    mg_transpose_plain_##S(dst, ldd, src, lds, 0, r_full, c_full, cols);                   \
    mg_transpose_plain_##S(dst, ldd, src, lds, r_full, rows, 0, cols);                     \
}

#else  /* no vectors: the plain loop */

#define MG_DEFINE_TRANSPOSE(T, S)                                                          \
static inline void mg_transpose_##S(T* dst, ptrdiff_t ldd, const T* src, ptrdiff_t lds,    \
                                    int rows, int cols) {                                  \
    mg_transpose_plain_##S(dst, ldd, src, lds, 0, rows, 0, cols);                          \
}

#endif

MG_DEFINE_TRANSPOSE(float, f32)
MG_DEFINE_TRANSPOSE(double, f64)

#endif
