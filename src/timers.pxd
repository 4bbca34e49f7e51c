# Per-thread timers of the op groups, compiled in only by the profiling
# variants (setup.py defines MICROGPT_FAST_PROFILE=1 for "<variant>_prof").
# Elsewhere PROFILE is the constant 0 and the compiler removes every timer.

from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

cdef extern from *:
    """
    #ifndef MICROGPT_FAST_PROFILE
    #define MICROGPT_FAST_PROFILE 0
    #endif
    """
    const int PROFILE "MICROGPT_FAST_PROFILE"

# Op groups; the forward ones, then the backward ones in the same order.
cdef enum:
    T_EMBED_NORM = 0      # embedding and rmsnorms
    T_PROJECTIONS = 1     # QKV and output projections
    T_ATTENTION = 2       # attention scores, softmax and weighted values
    T_MLP = 3             # fc1, relu, fc2
    T_HEAD_LOSS = 4       # lm head and cross-entropy
    T_BACKWARD = 5        # add to a group for its backward pass
    T_ADAM = 10           # Adam and the transposed copy of the weights
    T_WEIGHT_BLOCKS = 11  # a step's weight phases: partial gradients, Adam, copies
    N_TIMERS = 16         # per thread, a cache line and a half apart


cdef inline double now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline double lap(double* timers, int group, double since) noexcept nogil:
    """Add the time since `since` to timers[group]; returns now (0 when not profiling)."""
    cdef double t
    if PROFILE:
        t = now()
        timers[group] += t - since
        return t
    return 0
