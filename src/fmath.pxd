# Scalar math in the precision of the fused type.

from cython cimport floating
from libc.math cimport log, logf, sqrt, sqrtf


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
