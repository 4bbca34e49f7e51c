# Scalar math in the precision of the fused type.

from cython cimport floating
from libc.math cimport log, logf, sqrt, sqrtf

cdef extern from *:
    """
    /* x as it is, but opaque to the optimizer: a product passed through here is
     * rounded before any add that follows, never fused with it into one FMA
     * (gcc fuses a * b + c whenever FMA instructions exist and it sees both,
     * which depends on how it vectorized and inlined the code around them). */
    #if defined(__FMA__) && (defined(__x86_64__) || defined(__i386__))
    #define MG_ROUNDED(x) __extension__ ({ __typeof__(x) mg_v_ = (x); \
                                          __asm__("" : "+x"(mg_v_)); mg_v_; })
    #else
    #define MG_ROUNDED(x) (x)
    #endif
    /* a * b + c rounded once where the CPU has FMA instructions (what gcc's
     * fusing gives there when it happens), twice elsewhere: the same in every
     * vector lane and every inlined copy. */
    #if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
    #define MG_MULADD_F32(a, b, c) __builtin_fmaf(a, b, c)
    #define MG_MULADD_F64(a, b, c) __builtin_fma(a, b, c)
    #else
    #define MG_MULADD_F32(a, b, c) ((a) * (b) + (c))
    #define MG_MULADD_F64(a, b, c) ((a) * (b) + (c))
    #endif
    """
    float rounded_f32 "MG_ROUNDED"(float x) noexcept nogil
    double rounded_f64 "MG_ROUNDED"(double x) noexcept nogil
    float muladd_f32 "MG_MULADD_F32"(float a, float b, float c) noexcept nogil
    double muladd_f64 "MG_MULADD_F64"(double a, double b, double c) noexcept nogil


cdef inline floating flog(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating fsqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating rounded(floating x) noexcept nogil:
    """x, never fused with what follows (see MG_ROUNDED): a sum of such products
    takes the same rounding steps in every vector lane and every inlined copy."""
    if floating is float:
        return rounded_f32(x)
    else:
        return rounded_f64(x)


cdef inline floating muladd(floating a, floating b, floating c) noexcept nogil:
    """a * b + c, fused exactly where the CPU has FMA (see MG_MULADD_F64)."""
    if floating is float:
        return muladd_f32(a, b, c)
    else:
        return muladd_f64(a, b, c)
