# Kernel variant "avx2": see setup.py for its flags.
include "engine.pxi"
