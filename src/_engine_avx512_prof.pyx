# Kernel variant "avx512_prof": "avx512" with the op-group timers compiled in.
include "engine.pxi"
