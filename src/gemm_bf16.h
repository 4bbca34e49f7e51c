/* The linear layers' float32 products in bfloat16, with float32 sums (the
 * avx512_bf16 variant: AVX-512 with its BF16 extension).
 *
 *   out (M, N) = A (M, K) B (K, N)          accumulate == 0
 *   out (M, N) += A (M, K) B (K, N)         accumulate == 1
 *
 * the same call as gemm.h's mg_gemm_f32 (A's element (m, k) is
 * a[m * sam + k * sak]; B and out row-major, ldb and ldc apart). Every element
 * of A and B is rounded to bfloat16 (8 bits of mantissa, the nearest, ties to
 * even), and VDPBF16PS multiplies them two depths at a time into float32
 * accumulators: one instruction does the work of two float32 FMAs, so a core
 * can do twice the multiply-adds. The products of two bfloat16 numbers are
 * exact in float32; only the inputs' rounding and the float32 sums differ from
 * gemm.h's result.
 *
 * The operands are converted as they are packed, per block of depths. B
 * first, all of it, in panels of 32 columns (on the heap: B is read from
 * memory once, and the panels stay in L2), each word a pair (k, k + 1) of one
 * column, so that one 512-bit vector holds a pair of rows of 16 columns. Then
 * A, MG_MP_BF rows at a time (on the stack), each word a pair of depths of one
 * row, rows apart by one word (a transposed A, the weight gradient's) or by
 * the depth (a row-major A). An odd depth is padded with a zero pair half. A
 * tile of up to 8 rows by a panel's 32 columns stays in 16 registers across
 * the depths, and goes across every panel before the next 8 rows, so that
 * the output's rows are written whole, in order (the hidden layer of n_embd
 * 256 is 8 MB, far past the caches).
 *
 * As in gemm.h, each output element has one accumulator per block of MG_KC
 * depths, which takes the pairs in order; blocks are added to the output in
 * order. So the result depends on M, N and K alone, never on the tiling or
 * on the thread: any thread count gives the same bits.
 *
 * Built where the compiler targets AVX512-BF16 (__AVX512BF16__), where
 * MG_BF16 is 1; elsewhere MG_BF16 is 0 and mg_gemm_bf16 is never called.
 */
#ifndef MICROGPT_FAST_GEMM_BF16_H
#define MICROGPT_FAST_GEMM_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "gemm.h"

#if defined(__AVX512BF16__) && defined(__AVX512BW__)

#include <immintrin.h>

#define MG_BF16 1
#define MG_MP_BF 64      /* rows of A packed at a time */
#define MG_MR_BF 8       /* rows of a tile: 8 x 2 accumulators */
#define MG_PAIRS_BF (MG_KC / 2)
#define MG_PREFETCH_PAIRS 8  /* how far ahead a transposed A's rows are fetched */

/* The first n of 16 lanes (none for n <= 0, all for n >= 16): vec.h's mask, clamped. */
static inline __attribute__((always_inline)) __mmask16 mg_bf16_lanes(int n) {
    return mg_mask_f32_n(n <= 0 ? 0 : n >= 16 ? 16 : n);
}

/* The columns of panel j (32 wide) that N columns fill: 32 but in the last. */
static inline int mg_bf16_cols(int N, int j) {
    return N - 32 * j < 32 ? N - 32 * j : 32;
}

/* Two rows of 16 floats (the depths k and k + 1 of 16 columns or rows) as 16
   words, each the bfloat16 pair (k in the low half, k + 1 in the high half). */
static inline __attribute__((always_inline)) __m512i
mg_bf16_pairs(__m512 even, __m512 odd) {
    /* cvtne2ps puts odd's 16 values in the upper half, even's in the lower */
    const __m512i zip = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10,
                                         25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
                                         19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(zip, (__m512i)_mm512_cvtne2ps_pbh(odd, even));
}

/* Columns n0 .. n0 + 31 of B's depths 0 .. kc - 1 into panel[pair][32 words];
   columns past N and the odd depth's partner are 0. */
static inline void mg_bf16_pack_b(int32_t* panel, const float* b, ptrdiff_t ldb, int kc,
                                  int cols) {
    const __mmask16 m0 = mg_bf16_lanes(cols), m1 = mg_bf16_lanes(cols - 16);
    for (int p = 0; p < (kc + 1) / 2; p++) {
        const float* even = b + 2 * p * ldb;
        const float* odd = even + ldb;
        const int has_odd = 2 * p + 1 < kc;
        for (int h = 0; h < 2; h++) {
            const __mmask16 m = h ? m1 : m0;
            __m512 e = _mm512_maskz_loadu_ps(m, even + 16 * h);
            __m512 o = has_odd ? _mm512_maskz_loadu_ps(m, odd + 16 * h) : _mm512_setzero_ps();
            _mm512_storeu_si512(panel + 32 * p + 16 * h, mg_bf16_pairs(e, o));
        }
    }
}

/* Rows 0 .. mp - 1 of A's depths 0 .. kc - 1 into packed, pair p of row r at
   word p * MG_MP_BF + r (a transposed A: sam == 1, each depth's rows adjacent in
   memory) or r * pairs + p (any other A), pairs = (kc + 1) / 2. */
static inline void mg_bf16_pack_a(int32_t* packed, const float* a, ptrdiff_t sam,
                                  ptrdiff_t sak, int mp, int kc) {
    const int pairs = (kc + 1) / 2;
    if (sam == 1) {
        for (int p = 0; p < pairs; p++) {
            const float* even = a + 2 * p * sak;
            const float* odd = even + sak;
            const int has_odd = 2 * p + 1 < kc;
            /* each depth is a row of its own, far from the last: fetch ahead */
            if (p + MG_PREFETCH_PAIRS < pairs)
                for (int r = 0; r < mp; r += 16) {
                    _mm_prefetch((const char*)(even + 2 * MG_PREFETCH_PAIRS * sak + r),
                                 _MM_HINT_T0);
                    _mm_prefetch((const char*)(odd + 2 * MG_PREFETCH_PAIRS * sak + r),
                                 _MM_HINT_T0);
                }
            for (int r = 0; r < mp; r += 16) {
                const __mmask16 m = mg_bf16_lanes(mp - r);
                __m512 e = _mm512_maskz_loadu_ps(m, even + r);
                __m512 o = has_odd ? _mm512_maskz_loadu_ps(m, odd + r) : _mm512_setzero_ps();
                _mm512_mask_storeu_epi32(packed + p * MG_MP_BF + r, m, mg_bf16_pairs(e, o));
            }
        }
    } else if (sak == 1) {
        /* a row's bfloat16 values in order are its pairs in order */
        for (int r = 0; r < mp; r++) {
            const float* row = a + r * sam;
            uint16_t* out = (uint16_t*)(packed + r * pairs);
            /* rows far apart (the hidden layer's, 4 KB, a page each) restart the
               hardware's prefetch: fetch two rows ahead */
            if (r + 2 < mp)
                for (int k = 0; k < kc; k += 16)
                    _mm_prefetch((const char*)(row + 2 * sam + k), _MM_HINT_T0);
            for (int k = 0; k < kc; k += 32) {
                const int n = kc - k < 32 ? kc - k : 32;
                __m512i v = (__m512i)_mm512_cvtne2ps_pbh(
                    _mm512_maskz_loadu_ps(mg_bf16_lanes(n - 16), row + k + 16),
                    _mm512_maskz_loadu_ps(mg_bf16_lanes(n), row + k));
                /* whole words: an odd depth's last word takes its zero partner */
                const int words = (n + 1) / 2;
                _mm512_mask_storeu_epi32(out + k, mg_bf16_lanes(words), v);
            }
        }
    } else {
        for (int r = 0; r < mp; r++)
            for (int k = 0; k < 2 * pairs; k++) {
                float x = k < kc ? a[r * sam + k * sak] : 0.0f;
                ((uint16_t*)(packed + r * pairs))[k] =
                    (uint16_t)_mm_cvtsi128_si32((__m128i)_mm_cvtneps_pbh(_mm_set1_ps(x)));
            }
    }
}

/* One tile: R rows (a constant after inlining) by the panel's 32 columns, of which
   `cols` are stored; A's pair p of row r at a[r * ar + p * ap]. */
static inline __attribute__((always_inline)) void
mg_bf16_tile(float* out, ptrdiff_t ldc, const int32_t* a, ptrdiff_t ar, ptrdiff_t ap,
             const int32_t* panel, int pairs, int cols, int accumulate, const int R) {
    __m512 acc[MG_MR_BF][2];
    for (int r = 0; r < R; r++) {
        acc[r][0] = _mm512_setzero_ps();
        acc[r][1] = _mm512_setzero_ps();
    }
    for (int p = 0; p < pairs; p++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + 32 * p);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(panel + 32 * p + 16);
        for (int r = 0; r < R; r++) {
            const __m512bh x = (__m512bh)_mm512_set1_epi32(a[r * ar + p * ap]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);
        }
    }
    const __mmask16 m0 = mg_bf16_lanes(cols), m1 = mg_bf16_lanes(cols - 16);
    for (int r = 0; r < R; r++) {
        float* o = out + r * ldc;
        __m512 y0 = acc[r][0], y1 = acc[r][1];
        if (accumulate) {
            y0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, o), y0);
            y1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, o + 16), y1);
        }
        _mm512_mask_storeu_ps(o, m0, y0);
        _mm512_mask_storeu_ps(o + 16, m1, y1);
    }
}

/* Rows 0 .. mp - 1 against n_panels panels (N columns), panel_words apart: one
   tile of rows at a time across all of them, so that each tile's output rows are
   written whole, in order; A's layout (ar, ap) a constant after inlining. */
static inline __attribute__((always_inline)) void
mg_bf16_rows(float* out, ptrdiff_t ldc, const int32_t* a, ptrdiff_t ar, ptrdiff_t ap,
             const int32_t* panels, ptrdiff_t panel_words, int n_panels, int N, int mp,
             int pairs, int accumulate) {
    for (int r = 0; r < mp; r += MG_MR_BF) {
        const int rows = mp - r < MG_MR_BF ? mp - r : MG_MR_BF;
        for (int j = 0; j < n_panels; j++) {
            const int cols = mg_bf16_cols(N, j);
            float* o = out + r * ldc + 32 * j;
            const int32_t* ar0 = a + r * ar;
            const int32_t* panel = panels + j * panel_words;
            switch (rows) {
            case 8: mg_bf16_tile(o, ldc, ar0, ar, ap, panel, pairs, cols, accumulate, 8); break;
            case 7: mg_bf16_tile(o, ldc, ar0, ar, ap, panel, pairs, cols, accumulate, 7); break;
            case 6: mg_bf16_tile(o, ldc, ar0, ar, ap, panel, pairs, cols, accumulate, 6); break;
            case 5: mg_bf16_tile(o, ldc, ar0, ar, ap, panel, pairs, cols, accumulate, 5); break;
            case 4: mg_bf16_tile(o, ldc, ar0, ar, ap, panel, pairs, cols, accumulate, 4); break;
            case 3: mg_bf16_tile(o, ldc, ar0, ar, ap, panel, pairs, cols, accumulate, 3); break;
            case 2: mg_bf16_tile(o, ldc, ar0, ar, ap, panel, pairs, cols, accumulate, 2); break;
            case 1: mg_bf16_tile(o, ldc, ar0, ar, ap, panel, pairs, cols, accumulate, 1); break;
            }
        }
    }
}

/* A packed strip of mp rows against the panels: A's layout as mg_bf16_pack_a left
   it, a transposed A's (sam == 1) or a row's pairs adjacent. */
static inline void
mg_bf16_strip(float* out, ptrdiff_t ldc, const int32_t* packed, ptrdiff_t sam,
              const int32_t* panels, ptrdiff_t panel_words, int n_panels, int N, int mp,
              int pairs, int accumulate) {
    if (sam == 1)
        mg_bf16_rows(out, ldc, packed, 1, MG_MP_BF, panels, panel_words, n_panels, N, mp,
                     pairs, accumulate);
    else
        mg_bf16_rows(out, ldc, packed, pairs, 1, panels, panel_words, n_panels, N, mp,
                     pairs, accumulate);
}

static __attribute__((noinline)) void
mg_gemm_bf16(float* out, ptrdiff_t ldc, const float* a, ptrdiff_t sam, ptrdiff_t sak,
             const float* b, ptrdiff_t ldb, int M, int N, int K, int accumulate) {
    int32_t packed[MG_MP_BF * MG_PAIRS_BF] __attribute__((aligned(64)));
    int32_t one_panel[MG_PAIRS_BF * 32] __attribute__((aligned(64)));
    const int n_panels = (N + 31) / 32;
    const ptrdiff_t panel_words = (ptrdiff_t)MG_PAIRS_BF * 32;
    /* Every panel of a depth block, converted once for all the strips of A: B is
       read from memory once, and its panels stay in L2. Without the memory, each
       strip converts each panel again, into one_panel: the same numbers. */
    int32_t* panels = n_panels == 1 ? one_panel
        : (int32_t*)aligned_alloc(64, (size_t)n_panels * panel_words * sizeof(int32_t));
    for (int k0 = 0; k0 < K || (k0 == 0 && !accumulate); k0 += MG_KC) {
        const int kc = K - k0 < MG_KC ? K - k0 : MG_KC;
        const int pairs = (kc + 1) / 2;
        const int acc = accumulate || k0 > 0;
        if (panels)
            for (int j = 0; j < n_panels; j++)
                mg_bf16_pack_b(panels + j * panel_words, b + k0 * ldb + 32 * j, ldb, kc,
                               mg_bf16_cols(N, j));
        for (int m0 = 0; m0 < M; m0 += MG_MP_BF) {
            const int mp = M - m0 < MG_MP_BF ? M - m0 : MG_MP_BF;
            mg_bf16_pack_a(packed, a + m0 * sam + k0 * sak, sam, sak, mp, kc);
            if (panels) {
                mg_bf16_strip(out + m0 * ldc, ldc, packed, sam, panels, panel_words, n_panels,
                              N, mp, pairs, acc);
                continue;
            }
            for (int j = 0; j < n_panels; j++) {  /* no memory: one panel at a time */
                const int cols = mg_bf16_cols(N, j);
                mg_bf16_pack_b(one_panel, b + k0 * ldb + 32 * j, ldb, kc, cols);
                mg_bf16_strip(out + m0 * ldc + 32 * j, ldc, packed, sam, one_panel,
                              panel_words, 1, cols, mp, pairs, acc);
            }
        }
    }
    if (panels != one_panel)
        free(panels);
}

#else

#define MG_BF16 0
static inline void mg_gemm_bf16(float* out, ptrdiff_t ldc, const float* a, ptrdiff_t sam,
                                ptrdiff_t sak, const float* b, ptrdiff_t ldb, int M, int N,
                                int K, int accumulate) {}

#endif
#endif
