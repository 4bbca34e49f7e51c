# Kernel variant "avx2_prof": "avx2" with the op-group timers compiled in.
include "engine.pxi"
