"""Running a sweep: its settings made into tasks, one per seed, and sent to the
local worker processes or to any concurrent.futures-style executor (a Dask
client included); the results come back as each run finishes.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import logging

from ..data import data_source
from ..kernels import cpu_count, load_kernel
from .pool import run_on_workers
from .space import DEFAULTS, SweepError, field_type, make_settings
from .task import blank_result, checked, describe, run_one


class SweepResults(list):
    """The finished runs; interrupted is True when Ctrl-C stopped the sweep."""

    interrupted = False


def run(grid: dict[str, list] | None = None, ranges: dict[str, tuple] | None = None,
        n_random: int = 0, repeat: int = 1, fixed: dict | None = None, data=None,
        executor=None, workers: int | None = None, kernel: str | None = None,
        search_seed: int = 0, on_result=None) -> list[dict]:
    """Train every setting repeat times and return one result per run (see run_one),
    in the order they finished.

    grid: {field: [values]}; ranges: {field: (low, high, "lin"|"log")} with
    n_random draws; fixed: other config fields for every run (seed is the first
    seed). data: a bundled dataset's name ("names", the default, or
    "shakespeare") or a file, read in each run's data_format (by default the
    data's own: text for shakespeare, lines otherwise). executor: any object
    with submit() returning concurrent.futures futures; a dask.distributed
    Client is used through its get_executor(). Without one, `workers` local
    worker processes run the sweep (default: one per core); a worker that dies
    fails the run it held, and a new one takes its place. on_result(result,
    done, total) is called as each run finishes. On KeyboardInterrupt the
    workers are killed, the queued runs cancelled and the finished ones
    returned; `interrupted` is then set on the list.
    """
    fixed = dict(fixed or {})
    for name in fixed:
        field_type(name)
    if not (isinstance(repeat, int) and repeat >= 1):
        raise SweepError(f"repeat must be >= 1, got {repeat!r}")
    if workers is not None and not (isinstance(workers, int) and workers >= 1):
        raise SweepError(f"workers must be >= 1, got {workers!r}")
    settings = make_settings(grid, ranges, n_random, search_seed)
    if executor is None:
        load_kernel(kernel)  # a bad name (or $MICROGPT_FAST_KERNEL) fails once, not every run
    first_seed = fixed.pop("seed", DEFAULTS["seed"])
    data = data_source(data)  # a name, or a path that workers elsewhere can open
    tasks = [{"id": i, "setting": setting, "seed": setting.get("seed", first_seed) + k,
              "fixed": fixed, "data": data, "kernel": kernel}
             for i, (setting, k) in enumerate(itertools.product(settings, range(repeat)))]
    results = SweepResults()

    def report(result):
        results.append(result)
        if on_result is not None:
            on_result(result, len(results), len(tasks))

    try:
        if executor is None:
            run_on_workers(tasks, workers or cpu_count(), report)
        elif hasattr(executor, "get_executor"):  # a dask.distributed Client
            with quiet_loggers("distributed"):
                _run_on_executor(tasks, executor.get_executor(), report)
        else:
            _run_on_executor(tasks, executor, report)
    except KeyboardInterrupt:
        results.interrupted = True
    return results


def _run_on_executor(tasks: list[dict], executor, report) -> None:
    """Submit every task to a concurrent.futures-style executor, report(result)
    as each finishes; on any exit the runs not yet started are cancelled."""
    pending = {}
    try:
        pending = {executor.submit(run_one, task): task for task in tasks}
        while pending:
            done, _ = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            for future in done:
                task = pending.pop(future)
                try:
                    result = checked(future.result(), task)
                except Exception as exc:  # the worker itself failed (killed, lost)
                    result = blank_result(task, "error", describe(exc))
                report(result)
    finally:
        for future in pending:
            future.cancel()


@contextlib.contextmanager
def quiet_loggers(library: str):
    """Silence a library's loggers (and restore them after): a run that fails is
    one line of the table, not also the library's traceback."""
    names = {library} | {name for name in logging.root.manager.loggerDict
                         if name.startswith(library + ".")}
    loggers = [logging.getLogger(name) for name in sorted(names)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
