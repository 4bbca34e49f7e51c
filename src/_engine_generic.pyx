# Kernel variant "generic": see setup.py for its flags.
include "engine.pxi"
