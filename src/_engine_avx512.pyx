# Kernel variant "avx512": see setup.py for its flags.
include "engine.pxi"
