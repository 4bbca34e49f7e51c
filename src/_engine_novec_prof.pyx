# Kernel variant "novec_prof": "novec" with the op-group timers compiled in.
include "engine.pxi"
