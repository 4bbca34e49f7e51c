"""A local worker of a sweep: one JSON task a line on stdin, one JSON result a
line on stdout (see task.run_one), until stdin closes.

    python -m microgpt_fast.sweep.worker

pool.run_on_workers starts these as fresh interpreters, so the caller's
__main__ (a script without an `if __name__ == "__main__"` guard) is never
imported here, and nothing of the parent's OpenMP state is inherited. The parent sets
OMP_NUM_THREADS=1: every run is single-threaded, one worker per core.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

from .task import blank_result, describe, run_one

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the sweep process dies, even by kill -9,
    so that no worker trains on for nobody; elsewhere the worker ends when it
    next reads the closed stdin."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _run_safely(task: dict) -> dict:
    """run_one's result; an unexpected exception is a failed run, not a dead worker."""
    try:
        return run_one(task)
    except Exception as exc:
        return blank_result(task, "error", describe(exc))


def main() -> int:
    _die_with_parent()
    # Ctrl-C at a terminal is the parent's to handle (it kills the workers);
    # the workers run in their own session, this covers a signal sent to them anyway
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # results go to a private copy of stdout; anything a run prints goes to stderr
    # instead of into the middle of a result line
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for line in sys.stdin:
        if not line.strip():
            continue
        result = _run_safely(json.loads(line))
        try:
            channel.write(json.dumps(result) + "\n")
            channel.flush()
        except BrokenPipeError:  # the sweep went away
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
