# Kernel variant "novec": see setup.py for its flags.
include "engine.pxi"
