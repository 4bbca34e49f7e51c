/* Flush-to-zero and denormals-are-zero for the calling thread.
 *
 * Adam's moments of rarely used rows decay into the subnormal range, where x86
 * arithmetic is many times slower. Training sets FTZ and DAZ on entry to its
 * parallel region, in every thread, and restores each thread's mode on exit.
 * Other architectures keep their default mode.
 */
#ifndef MICROGPT_FAST_DENORMALS_H
#define MICROGPT_FAST_DENORMALS_H

#if defined(__x86_64__) || defined(_M_X64) || defined(__SSE2__)
#include <xmmintrin.h>
static inline unsigned int mg_flush_denormals_begin(void) {
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040);  /* FTZ (bit 15) | DAZ (bit 6) */
    return old;
}
static inline void mg_flush_denormals_end(unsigned int old) { _mm_setcsr(old); }
#else
static inline unsigned int mg_flush_denormals_begin(void) { return 0; }
static inline void mg_flush_denormals_end(unsigned int old) { (void)old; }
#endif

#endif
