/* Register-tiled matrix product for the linear layers (float and double).
 *
 *   out (M, N) = A (M, K) B (K, N)          accumulate == 0
 *   out (M, N) += A (M, K) B (K, N)         accumulate == 1
 *
 * A's element (m, k) is a[m * sam + k * sak], so A may be read transposed
 * (the weight gradient dW = dout^T x). B and out are row-major with row
 * strides ldb and ldc.
 *
 * Each output element has one accumulator per block of KC depths that sums
 * k in order; blocks are added to the output in order. The result depends on
 * M, N, K alone, never on the tiling of rows or columns or on the thread that
 * computes it. With K <= KC (every product of the default model) each output
 * is the plain sum over k = 0, 1, ..., K-1, the original's order.
 *
 * With AVX2 (AVX-512) a tile of up to 6 (8) rows by 2 vectors stays in
 * registers across its k loop; the last rows take at most two tiles
 * (7 = 4 + 3 on AVX2). Columns are the outer loop,
 * so one panel of B (KC rows by 2 vectors) stays in L1 while every row of A
 * passes over it (copied to contiguous rows first where B's row stride is a
 * multiple of 4 KB); a strided A is first packed, KC depths of MP rows at a
 * time, into a contiguous buffer on the stack (of MP_COPY rows, on the heap,
 * where B's panels are copied: each copy then serves 256 rows, not 32).
 * Elsewhere a plain loop that the compiler vectorizes as far as its flags allow.
 */
#ifndef MICROGPT_FAST_GEMM_H
#define MICROGPT_FAST_GEMM_H

#include <stddef.h>
#include <stdlib.h>

#include "transpose.h"
#include "vec.h"

#define MG_KC 256  /* depths per block */
#define MG_MP 32   /* rows of A packed at a time */
#define MG_MP_COPY 256  /* the same where B's panels are copied (below) */
/* A B whose row stride is a multiple of 4 KB (1024 floats: the MLP of n_embd 256)
   puts every row of a column panel in the same few L1 sets, so the panel cannot
   stay in L1 while the rows of A pass over it; from MG_PACK_B_ROWS rows of A on,
   the panel is copied to contiguous rows first (the same numbers, the same sums). */
#define MG_ALIASING_STRIDE 4096
#define MG_PACK_B_ROWS 32
#define MG_B_ALIASES(ldb, T) (((ldb) * (ptrdiff_t)sizeof(T)) % MG_ALIASING_STRIDE == 0)

#if MG_VEC
/* MR rows x 2 vectors of accumulators: 16 of AVX-512's 32 registers, 12 of AVX2's 16 */
#define MG_MR (MG_VEC == 512 ? 8 : 6)

#define MG_DEFINE_GEMM(T, S)                                                               \
/* One tile: MR rows (a constant after inlining) by NV vectors (1 or 2), the last     */   \
/* of them partial when masked.                                                        */   \
static inline __attribute__((always_inline)) void                                          \
mg_tile_##S(T* out, ptrdiff_t ldc, const T* a, ptrdiff_t sam, ptrdiff_t sak,               \
            const T* b, ptrdiff_t ldb, int K, const int MR, const int NV,                  \
            const int masked, mg_mask_##S mask, int accumulate) {                         \
    const int L = MG_LANES_##S;                                                            \
    mg_v##S acc[MG_MR][2];                                                                 \
    for (int r = 0; r < MR; r++) { acc[r][0] = mg_zero_##S(); acc[r][1] = mg_zero_##S(); } \
    for (int k = 0; k < K; k++) {                                                          \
        const T* bk = b + k * ldb;                                                         \
        mg_v##S b0, b1 = mg_zero_##S();                                                    \
        if (NV == 2) {                                                                     \
            b0 = mg_load_##S(bk);                                                          \
            b1 = masked ? mg_mload_##S(bk + L, mask) : mg_load_##S(bk + L);                \
        } else {                                                                           \
            b0 = masked ? mg_mload_##S(bk, mask) : mg_load_##S(bk);                        \
        }                                                                                  \
        for (int r = 0; r < MR; r++) {                                                     \
            mg_v##S ar = mg_set1_##S(a[r * sam + k * sak]);                                \
            acc[r][0] = mg_fma_##S(ar, b0, acc[r][0]);                                     \
            if (NV == 2) acc[r][1] = mg_fma_##S(ar, b1, acc[r][1]);                        \
        }                                                                                  \
    }                                                                                      \
    for (int r = 0; r < MR; r++) {                                                         \
        T* o = out + r * ldc;                                                              \
        for (int v = 0; v < NV; v++) {                                                     \
            mg_v##S x = acc[r][v];                                                         \
            int last = v == NV - 1 && masked;                                              \
            if (accumulate)                                                                \
                x = mg_add_##S(last ? mg_mload_##S(o + v * L, mask) : mg_load_##S(o + v * L), x); \
            if (last) mg_mstore_##S(o + v * L, mask, x); else mg_store_##S(o + v * L, x);  \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* Rows 0..M-1 of one column panel (1 or 2 vectors wide), tiles of MR rows. */            \
static inline __attribute__((always_inline)) void                                          \
mg_panel_##S(T* out, ptrdiff_t ldc, const T* a, ptrdiff_t sam, ptrdiff_t sak,              \
             const T* b, ptrdiff_t ldb, int M, int K, const int NV, const int masked,      \
             mg_mask_##S mask, int accumulate) {                                           \
    int m = 0;                                                                             \
    for (; m + MG_MR <= M; m += MG_MR)                                                     \
        mg_tile_##S(out + m * ldc, ldc, a + m * sam, sam, sak, b, ldb, K, MG_MR, NV,       \
                    masked, mask, accumulate);                                             \
    /* the last rows in at most two tiles: 7 = 4 + 3, not 4 + 1 + 1 + 1 */                 \
    int rest = M - m;                                                                      \
    T* o = out + m * ldc;                                                                  \
    const T* am = a + m * sam;                                                             \
    if (rest > 4) {                                                                        \
        mg_tile_##S(o, ldc, am, sam, sak, b, ldb, K, 4, NV, masked, mask, accumulate);     \
        o += 4 * ldc; am += 4 * sam; rest -= 4;                                            \
    }                                                                                      \
    switch (rest) {                                                                        \
    case 4: mg_tile_##S(o, ldc, am, sam, sak, b, ldb, K, 4, NV, masked, mask, accumulate); break; \
    case 3: mg_tile_##S(o, ldc, am, sam, sak, b, ldb, K, 3, NV, masked, mask, accumulate); break; \
    case 2: mg_tile_##S(o, ldc, am, sam, sak, b, ldb, K, 2, NV, masked, mask, accumulate); break; \
    case 1: mg_tile_##S(o, ldc, am, sam, sak, b, ldb, K, 1, NV, masked, mask, accumulate); break; \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* One block of depths: columns outer, so each B panel serves every row. */                \
static inline __attribute__((always_inline)) void                                          \
mg_block_impl_##S(T* out, ptrdiff_t ldc, const T* a, ptrdiff_t sam, ptrdiff_t sak,         \
                  const T* b, ptrdiff_t ldb, int M, int N, int K, int accumulate) {        \
    const int L = MG_LANES_##S;                                                            \
    /* B's rows share L1 sets: copy each full panel to contiguous rows first */            \
    const int copy = M >= MG_PACK_B_ROWS && MG_B_ALIASES(ldb, T);                          \
    T panel[MG_KC * 2 * MG_LANES_##S] __attribute__((aligned(64)));                       \
    int n = 0;                                                                             \
    for (; n + 2 * L <= N; n += 2 * L) {                                                   \
        if (copy)                                                                          \
            for (int k = 0; k < K; k++) {                                                  \
                mg_store_##S(panel + k * 2 * L, mg_load_##S(b + k * ldb + n));             \
                mg_store_##S(panel + k * 2 * L + L, mg_load_##S(b + k * ldb + n + L));     \
            }                                                                              \
        mg_panel_##S(out + n, ldc, a, sam, sak, copy ? panel : b + n, copy ? 2 * L : ldb,  \
                     M, K, 2, 0, mg_mask_##S##_n(0), accumulate);                          \
    }                                                                                      \
    int rest = N - n;                                                                      \
    if (rest > L)                                                                          \
        mg_panel_##S(out + n, ldc, a, sam, sak, b + n, ldb, M, K, 2, 1,                    \
                     mg_mask_##S##_n(rest - L), accumulate);                               \
    else if (rest == L)                                                                    \
        mg_panel_##S(out + n, ldc, a, sam, sak, b + n, ldb, M, K, 1, 0, mg_mask_##S##_n(0), \
                     accumulate);                                                          \
    else if (rest > 0)                                                                     \
        mg_panel_##S(out + n, ldc, a, sam, sak, b + n, ldb, M, K, 1, 1,                    \
                     mg_mask_##S##_n(rest), accumulate);                                   \
}                                                                                          \
                                                                                           \
/* A's layout made a constant: a tile then reads A through one pointer per row             \
   (sak == 1) or one pointer and constant offsets (sam == 1), with no index                \
   left to spill from its registers. */                                                    \
static __attribute__((noinline)) void                                                      \
mg_block_##S(T* out, ptrdiff_t ldc, const T* a, ptrdiff_t sam, ptrdiff_t sak, const T* b,  \
             ptrdiff_t ldb, int M, int N, int K, int accumulate) {                         \
    if (sak == 1)                                                                          \
        mg_block_impl_##S(out, ldc, a, sam, 1, b, ldb, M, N, K, accumulate);               \
    else if (sam == 1)                                                                     \
        mg_block_impl_##S(out, ldc, a, 1, sak, b, ldb, M, N, K, accumulate);               \
    else                                                                                   \
        mg_block_impl_##S(out, ldc, a, sam, sak, b, ldb, M, N, K, accumulate);             \
}                                                                                          \
                                                                                           \
/* A strided A (the transposed operand of a weight gradient): copy MP rows by     */   \
/* kc depths at a time into contiguous rows, then multiply. Where each column      */   \
/* panel of B is copied too (a 4 KB row stride), up to MG_MP_COPY rows at a time,  */   \
/* on the heap, so that each copy serves more rows (the same numbers).             */   \
static __attribute__((noinline)) void                                                      \
mg_packed_##S(T* out, ptrdiff_t ldc, const T* a, ptrdiff_t sam, ptrdiff_t sak,             \
              const T* b, ptrdiff_t ldb, int M, int N, int kc, int acc) {                  \
    T on_stack[MG_MP * MG_KC];                                                             \
    T* packed = on_stack;                                                                  \
    int strip = MG_MP;                                                                     \
    if (M > MG_MP && MG_B_ALIASES(ldb, T)) {                                               \
        T* big = (T*)malloc((size_t)MG_MP_COPY * kc * sizeof(T));                          \
        if (big) { packed = big; strip = MG_MP_COPY; }                                     \
    }                                                                                      \
    for (int m0 = 0; m0 < M; m0 += strip) {                                                \
        int mp = M - m0 < strip ? M - m0 : strip;                                          \
        if (sam == 1)  /* A's columns are rows of memory: a tiled transpose */             \
            mg_transpose_##S(packed, kc, a + m0, sak, kc, mp);                             \
        else                                                                               \
            for (int r = 0; r < mp; r++)                                                   \
                for (int k = 0; k < kc; k++)                                               \
                    packed[r * kc + k] = a[(m0 + r) * sam + k * sak];                      \
        mg_block_##S(out + m0 * ldc, ldc, packed, kc, 1, b, ldb, mp, N, kc, acc);          \
    }                                                                                      \
    if (packed != on_stack)                                                                \
        free(packed);                                                                      \
}                                                                                          \
                                                                                           \
static inline void mg_gemm_##S(T* out, ptrdiff_t ldc, const T* a, ptrdiff_t sam,           \
                               ptrdiff_t sak, const T* b, ptrdiff_t ldb, int M, int N,     \
                               int K, int accumulate) {                                    \
    for (int k0 = 0; k0 < K || (k0 == 0 && !accumulate); k0 += MG_KC) {                   \
        int kc = K - k0 < MG_KC ? K - k0 : MG_KC;                                          \
        int acc = accumulate || k0 > 0;                                                    \
        /* packing pays once A is read by many column panels over many depths */           \
        if (sak != 1 && kc >= 32 && N > 2 * MG_LANES_##S)                                  \
            mg_packed_##S(out, ldc, a + k0 * sak, sam, sak, b + k0 * ldb, ldb, M, N, kc, acc); \
        else                                                                               \
            mg_block_##S(out, ldc, a + k0 * sak, sam, sak, b + k0 * ldb, ldb, M, N, kc, acc); \
    }                                                                                      \
}

MG_DEFINE_GEMM(float, f32)
MG_DEFINE_GEMM(double, f64)

#else  /* portable: one row at a time, an axpy over the columns per k */

#define MG_DEFINE_PORTABLE(T, S)                                                           \
static inline void mg_gemm_##S(T* out, ptrdiff_t ldc, const T* a, ptrdiff_t sam,           \
                               ptrdiff_t sak, const T* b, ptrdiff_t ldb, int M, int N,     \
                               int K, int accumulate) {                                    \
    T buf[256];                                                                            \
    for (int m = 0; m < M; m++) {                                                          \
        T* o = out + m * ldc;                                                              \
        for (int n0 = 0; n0 < N; n0 += 256) {                                              \
            int nn = N - n0 < 256 ? N - n0 : 256;                                          \
            /* accumulate: sum into a scratch row first, so out += (sum over k) */         \
            T* acc = accumulate ? buf : o + n0;                                            \
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
