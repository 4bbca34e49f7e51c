/* The most float32 multiply-adds one core issues: a loop of independent vector FMAs.
 *
 * A large BLAS product is the usual yardstick of a machine's peak, but a BLAS
 * that does not know the CPU runs an older kernel (OpenBLAS's Haswell one, 256
 * bits wide, on a CPU newer than its tables) and reports half of what the cores
 * can do. This loop is the ceiling itself: MG_FMA_CHAINS accumulators, each
 * updated by one FMA a round, enough independent chains to cover the FMA
 * latency on every unit the core has, at the vector width the variant was
 * compiled for (vec.h), with nothing else to wait for: no loads, no stores.
 *
 *   mg_fma_loop_f32(rounds) = the sum of the accumulators after `rounds` rounds
 *
 * does rounds * MG_FMA_CHAINS * MG_LANES_f32 multiply-adds (2 FLOP each); its
 * result is returned so that the compiler cannot drop the work.
 */
#ifndef MICROGPT_FAST_FMA_PEAK_H
#define MICROGPT_FAST_FMA_PEAK_H

#include "vec.h"

/* 4-cycle FMA latency x 2 units = 8 chains in flight; 12 leaves room for a third unit
   or a longer latency, and with two operand registers fits in AVX2's 16 registers. */
#define MG_FMA_CHAINS 12

static __attribute__((noinline)) double mg_fma_loop_f32(long rounds) {
    mg_vf32 acc[MG_FMA_CHAINS];
    /* multiplier and addend chosen so that the values stay near 1: no overflow or
       denormal slows a chain, whatever the number of rounds */
    const mg_vf32 scale = mg_set1_f32(0.999999f), shift = mg_set1_f32(1e-6f);
    for (int c = 0; c < MG_FMA_CHAINS; c++) acc[c] = mg_set1_f32(1.0f + c * 1e-3f);
    for (long r = 0; r < rounds; r++) {
#pragma GCC unroll 12
        for (int c = 0; c < MG_FMA_CHAINS; c++) acc[c] = mg_fma_f32(acc[c], scale, shift);
    }
    mg_vf32 sum = acc[0];
    for (int c = 1; c < MG_FMA_CHAINS; c++) sum = mg_add_f32(sum, acc[c]);
    float lanes[MG_LANES_f32];
    mg_store_f32(lanes, sum);
    double total = 0;
    for (int i = 0; i < MG_LANES_f32; i++) total += lanes[i];
    return total;
}

#endif
