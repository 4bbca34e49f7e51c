"""The sweep command: its flags, the checks before any run, the live progress
line, then the files (--json, --csv, --plot) and the ranked table.

    python -m microgpt_fast.sweep --grid learning_rate=0.003,0.01 --repeat 3 --json s.json
    python -m microgpt_fast.sweep --data shakespeare --block-size 32 --steps 300 \
        --grid n_embd=32,64 --batch-size 8 --dtype float32

--data names the bundled names (the default) or shakespeare, or a file; every
run reads it in --data-format (default: the data's own, text for shakespeare)
or the format a --grid gives. The JSON report records the data and its format.

Exit codes: 0; 1 when every run failed; 2 for bad input; 128 + the signal's
number when Ctrl-C, SIGTERM or SIGHUP stopped it (the finished runs are kept).
"""

from __future__ import annotations

import contextlib
import random
import sys
import time

from ..cli import (ClosedReaderSafe, Parser, StopSignals, add_config_flags, add_preset_flag,
                   check_at_least, run_guarded)
from ..config import GPTConfig, RunOptions, TrainConfig, with_preset
from ..data import data_source, load_data, natural_format
from ..kernels import cpu_count, load_kernel
from ..paths import check_output
from ..plots import plot_sweep, pyplot
from ..progress import StatusLine
from .report import format_table, summarize, write_csv, write_json
from .runner import quiet_loggers, run
from .space import SWEEPABLE, SweepError, make_settings, parse_grid, parse_ranges


def build_parser() -> Parser:
    """Every flag of the sweep command, declared here and nowhere else."""
    p = Parser(prog="python -m microgpt_fast.sweep",
               description="Train many settings in parallel and rank them by loss.")
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="values of a config field; several --grid flags make a grid")
    p.add_argument("--range", action="append", default=[], metavar="FIELD=LOW:HIGH[:log]",
                   help="a range to draw a field from (uniform, or log-uniform with :log)")
    p.add_argument("--random", type=int, default=0, metavar="N",
                   help="draw N settings from the --range fields")
    p.add_argument("--search-seed", type=int, default=0, help="seed of the random draws")
    p.add_argument("--repeat", type=int, default=1, metavar="K",
                   help="seeds per setting: --seed, --seed + 1, ...")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: one per core)")
    p.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="send the runs to this Dask scheduler (needs dask[distributed])")
    add_config_flags(p, RunOptions, skip=("engine", "threads", "adapt_threads"))
    # every setting, for every run: the fields a sweep can vary
    add_config_flags(p, GPTConfig, skip=("vocab_size",), note="; the same in every run")
    add_config_flags(p, TrainConfig, note="; the same in every run")
    add_preset_flag(p)
    p.add_argument("--json", metavar="PATH", help="write every run and the summary as JSON")
    p.add_argument("--csv", metavar="PATH", help="write every run as CSV")
    p.add_argument("--plot", metavar="PATH",
                   help="PNG of the loss against each swept field (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    return p


def _dask_client(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise SweepError("--dask needs dask's distributed scheduler: "
                         "pip install -e \".[dask]\"") from None
    try:
        return Client(address, timeout=10)
    except (OSError, TimeoutError, ValueError) as exc:
        raise SweepError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


def _progress_text(done: int, total: int, seconds: float, failed: int, best) -> str:
    """The sweep's progress line: "[41/300] 3.2 s | 1 failed | best 2.3101
    learning_rate=0.0112"; best is (loss, setting) or None, and failures are
    counted only once there are some."""
    text = f"[{done}/{total}] {seconds:.1f} s"
    if failed:
        text += f" | {failed} failed"
    if best:
        text += f" | best {best[0]:.4f} " + " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best[1].items())
    return text


def _stop_sweep() -> None:
    raise KeyboardInterrupt  # run() kills the workers and keeps the finished runs


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # Ctrl-C, SIGTERM and SIGHUP stop a sweep alike; the exit code names the signal
    with StopSignals(_stop_sweep) as stop:
        code = run_guarded(lambda: command(args, stop))
    return stop.exit_code or code


def command(args, stop: StopSignals | None = None) -> int:
    """Run the sweep the parsed args describe, write its files and print its
    table; returns the exit code: 0, 1 when every run failed, 130 when stopped."""
    with contextlib.ExitStack() as cleanup:
        check_at_least(("--workers", args.workers, 1), ("--repeat", args.repeat, 1),
                       ("--random", args.random, 0))
        grid, ranges = parse_grid(args.grid), parse_ranges(args.range)
        if not grid and not ranges:
            raise SweepError("nothing to sweep: give --grid FIELD=V1,V2 or --random N "
                             "with --range FIELD=LOW:HIGH")
        fixed = with_preset(args.preset, {name: getattr(args, name) for name in SWEEPABLE
                                          if getattr(args, name) is not None})
        for flag in ("--json", "--csv", "--plot"):
            check_output(flag, getattr(args, flag[2:]), image=(flag == "--plot"))
        if args.plot:
            pyplot("--plot")
        data_formats = sorted(set(grid.get("data_format", [args.data_format
                                                            or natural_format(args.data)])))
        for data_format in data_formats:
            # a bad file is one error, not one per run
            load_data(args.data, data_format, random.Random(0), args.block_size or 1, 0)
        if not args.dask:
            # the local workers load what --kernel or $MICROGPT_FAST_KERNEL names;
            # Dask workers have their own environment and CPUs
            load_kernel(args.kernel)
        settings = make_settings(grid, ranges, args.random, args.search_seed)
        total = len(settings) * args.repeat
        executor = None
        if args.dask:
            executor = _dask_client(args.dask)
            # a client that lost its scheduler logs a traceback as it tries to
            # reconnect, up to its close: quiet until then (the runs say it failed)
            cleanup.enter_context(quiet_loggers("distributed"))
            cleanup.callback(executor.close)
        where = (f"Dask scheduler {args.dask}" if args.dask
                 else f"{min(args.workers or cpu_count(), total)} worker processes")
        print(f"sweep: {len(settings)} settings x {args.repeat} seeds = {total} runs on {where}; "
              f"data {data_source(args.data)} ({', '.join(data_formats)})", file=sys.stderr)
        line = StatusLine(sys.stderr, enabled=not args.no_progress)
        start = time.perf_counter()
        failed, best = 0, None  # best: (loss, setting)

        def on_result(result, done, total_):
            nonlocal failed, best
            if result["status"] != "ok":
                failed += 1
            loss = result["val_loss"] if result["val_loss"] is not None else result["tail_loss"]
            if loss is not None and (best is None or loss < best[0]):
                best = (loss, result["setting"])
            line.show(_progress_text(done, total_, time.perf_counter() - start, failed, best))

        results = run(grid, ranges, args.random, args.repeat, fixed, args.data, executor,
                      args.workers, args.kernel, args.search_seed, on_result)
        if stop is not None:
            stop.hold()  # a signal from here on: the files are still written
        line.clear()
        elapsed = time.perf_counter() - start
        names = list(grid) + list(ranges)
        rows = summarize(results)
        # the files first: a reader of stdout that went away must not cost them
        if args.json:
            write_json(args.json, results, rows, names, fixed, elapsed,
                       {"data": data_source(args.data), "data_format": data_formats})
        if args.csv:
            write_csv(args.csv, results, names)
        if args.plot and results:
            plot_sweep(args.plot, results, names,
                       [n for n, (_, _, scale) in ranges.items() if scale == "log"])
        n_ok = sum(r["status"] == "ok" for r in results)
        out = ClosedReaderSafe(sys.stdout)  # a reader that went away costs nothing more
        print(format_table(rows, names), file=out)
        print(f"{len(results)} of {total} runs in {elapsed:.1f} s ({n_ok} ok, "
              f"{len(results) - n_ok} failed)"
              + ("; interrupted" if results.interrupted else ""), file=out)
        out.flush()
        if results.interrupted:
            return 130
        if n_ok == 0:
            print(f"error: all {len(results)} runs failed", file=sys.stderr)
            return 1
        return 0
