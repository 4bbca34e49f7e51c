"""python -m microgpt_fast.sweep: the sweep command (see cli.py)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
