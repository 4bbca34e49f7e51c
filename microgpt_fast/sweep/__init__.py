"""Hyperparameter sweeps: many short training runs in worker processes.

    python -m microgpt_fast.sweep --grid learning_rate=0.003,0.01,0.03 --grid n_embd=16,32
    python -m microgpt_fast.sweep --random 50 --range learning_rate=1e-4:1e-1:log \\
        --range beta2=0.9:0.999 --repeat 3 --steps 2000 --json sweep.json --plot sweep.png
    python -m microgpt_fast.sweep --grid n_layer=1,2 --dask tcp://scheduler:8786

Each setting (a point of the grid, crossed with each random draw from the
ranges) is trained --repeat times with seeds --seed, --seed + 1, ...; every
run is single-threaded, one worker process per core by default, and workers
are reused for many runs. Any field of GPTConfig or TrainConfig can be swept;
the other flags apply to every run.

    >>> from microgpt_fast import sweep
    >>> results = sweep.run({"learning_rate": [0.003, 0.01]}, repeat=2)
    >>> [(r["setting"], r["seed"], r["tail_loss"]) for r in results]

By default run() starts its own worker processes (python -m
microgpt_fast.sweep.worker, fresh interpreters that never import the caller's
__main__, so a script needs no `if __name__ == "__main__"` guard); it also
takes any concurrent.futures-style executor, a dask.distributed Client
included. A run that fails (the loss diverges, a setting is invalid, its
worker process dies) is reported, not fatal.

The package, one concern a module: space (the fields, --grid and --range, the
settings), task (one run: run_one and its result), pool (the local worker
processes), worker (what each of them runs), runner (run(): the pool or an
executor), report (summary, table, CSV, JSON), cli (the command). The figure
is plots.plot_sweep.
"""

from ..plots import plot_sweep as plot
from .cli import build_parser, command, main
from .report import format_table, summarize, write_csv, write_json
from .runner import SweepResults, run
from .space import (MODEL_FIELDS, SWEEPABLE, TRAIN_FIELDS, SweepError, check_range,
                    draw_setting, make_settings, parse_grid, parse_ranges)
from .task import run_one

__all__ = ["run", "run_one", "SweepResults", "SweepError", "summarize", "format_table",
           "write_csv", "write_json", "plot", "parse_grid", "parse_ranges", "check_range",
           "draw_setting", "make_settings", "MODEL_FIELDS", "TRAIN_FIELDS", "SWEEPABLE",
           "build_parser", "command", "main"]
