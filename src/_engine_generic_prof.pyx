# Kernel variant "generic_prof": "generic" with the op-group timers compiled in.
include "engine.pxi"
