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
    >>> [(r["setting"], r["seed"], r["final_loss"]) for r in results]

By default run() starts its own worker processes (python -m
microgpt_fast.sweep_worker, fresh interpreters that never import the caller's
__main__, so a script needs no `if __name__ == "__main__"` guard); it also
takes any concurrent.futures-style executor, a dask.distributed Client
included. A run that fails (the loss diverges, a setting is invalid, its
worker process dies) is reported, not fatal.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import csv
import itertools
import json
import logging
import math
import os
import random
import selectors
import site
import statistics
import subprocess
import sys
import time
from dataclasses import fields

from .cli import ClosedReaderSafe, Parser, StopSignals, check_at_least, run_guarded
from .config import GPTConfig, TrainConfig, configs_from
from .data import DataError, load_dataset
from .kernels import VARIANTS, KernelError, cpu_count, load_kernel
from .paths import check_output

MODEL_FIELDS = tuple(f.name for f in fields(GPTConfig) if f.name != "vocab_size")
# threads is always 1 (a run per core); sampling is not part of a sweep
TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig)
                     if f.name not in ("threads", "temperature", "num_samples"))
SWEEPABLE = MODEL_FIELDS + TRAIN_FIELDS
_DEFAULTS = {**GPTConfig().to_dict(), **TrainConfig().to_dict()}


class SweepError(ValueError):
    """A sweep that cannot start (bad grid syntax, unknown field); one line."""


# -- what to run ------------------------------------------------------------

def _field_type(name: str) -> type:
    if name not in SWEEPABLE:
        raise SweepError(f"unknown field {name!r}: choose from {', '.join(SWEEPABLE)}")
    return type(_DEFAULTS[name])


def _parse_value(name: str, text: str):
    kind = _field_type(name)
    try:
        # an int field takes only what int() parses: through float(), "1e30" or
        # "32.5" would quietly become some other integer
        return kind(text)
    except ValueError:
        raise SweepError(f"{name}: {text!r} is not a valid {kind.__name__}") from None


def _split_assignment(flag: str, text: str) -> tuple[str, str]:
    name, sep, values = text.partition("=")
    if not sep or not name.strip() or not values.strip():
        raise SweepError(f"{flag} expects FIELD=VALUES, got {text!r}")
    return name.strip(), values.strip()


def parse_grid(items: list[str]) -> dict[str, list]:
    """["learning_rate=0.003,0.01", "n_embd=16,32"] -> {"learning_rate": [...], ...}."""
    grid = {}
    for item in items:
        name, values = _split_assignment("--grid", item)
        if name in grid:
            raise SweepError(f"--grid names {name} twice")
        parts = [v.strip() for v in values.split(",")]
        if any(not p for p in parts):
            raise SweepError(f"--grid {name}: empty value in {values!r}")
        grid[name] = [_parse_value(name, p) for p in parts]
    return grid


def parse_ranges(items: list[str]) -> dict[str, tuple]:
    """["learning_rate=1e-4:1e-1:log"] -> {"learning_rate": (1e-4, 1e-1, "log")}."""
    ranges = {}
    for item in items:
        name, spec = _split_assignment("--range", item)
        parts = spec.split(":")
        scale = "lin"
        if len(parts) == 3:
            scale = parts.pop()
        if len(parts) != 2 or scale not in ("lin", "log"):
            raise SweepError(f"--range expects FIELD=LOW:HIGH[:log|lin], got {item!r}")
        if _field_type(name) is str:
            raise SweepError(f"--range {name}: only numeric fields have ranges; use --grid")
        low, high = (_parse_value(name, p.strip()) for p in parts)
        ranges[name] = check_range(name, (low, high, scale))
    return ranges


def check_range(name: str, spec) -> tuple:
    """(low, high, "lin"|"log") with low <= high (and low > 0 for log), or SweepError."""
    kind = _field_type(name)
    try:
        low, high, scale = spec
    except (TypeError, ValueError):
        raise SweepError(f"range of {name} must be (low, high, 'lin' or 'log')") from None
    if kind is str or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                              and math.isfinite(x) for x in (low, high)):
        raise SweepError(f"range of {name}: low and high must be finite numbers")
    if scale not in ("lin", "log"):
        raise SweepError(f"range of {name}: scale must be 'lin' or 'log', got {scale!r}")
    if not low <= high:
        raise SweepError(f"range of {name}: low {low} is above high {high}")
    if scale == "log" and low <= 0:
        raise SweepError(f"range of {name}: a log range needs low > 0")
    return kind(low), kind(high), scale


def draw_setting(ranges: dict[str, tuple], rng: random.Random) -> dict:
    """One random setting: uniform, or log-uniform, in each range (ints rounded)."""
    setting = {}
    for name, (low, high, scale) in ranges.items():
        if scale == "log":
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        if isinstance(low, int):
            value = min(high, max(low, round(value)))
        setting[name] = value
    return setting


def make_settings(grid: dict[str, list] | None = None, ranges: dict[str, tuple] | None = None,
                  n_random: int = 0, search_seed: int = 0) -> list[dict]:
    """Every grid point, crossed with n_random draws from the ranges (if any)."""
    grid, ranges = dict(grid or {}), dict(ranges or {})
    for name, values in grid.items():
        _field_type(name)
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or not values:
            raise SweepError(f"grid of {name} must be a non-empty list of values")
    ranges = {name: check_range(name, spec) for name, spec in ranges.items()}
    if not (isinstance(n_random, int) and n_random >= 0):
        raise SweepError(f"the number of random settings must be >= 0, got {n_random!r}")
    overlap = set(grid) & set(ranges)
    if overlap:
        raise SweepError(f"{', '.join(sorted(overlap))} is both in --grid and --range")
    if ranges and n_random < 1:
        raise SweepError("--range needs --random N (how many settings to draw)")
    if n_random and not ranges:
        raise SweepError("--random needs at least one --range")
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if not ranges:
        return points
    rng = random.Random(search_seed)
    draws = [draw_setting(ranges, rng) for _ in range(n_random)]
    return [{**p, **d} for p in points for d in draws]


# -- one run, in a worker -----------------------------------------------------

def _result(task: dict, status: str = "ok", error: str | None = None) -> dict:
    """A run's result before (or without) its numbers."""
    return {"id": task["id"], "setting": task["setting"], "seed": task["seed"],
            "status": status, "final_loss": None, "val_loss": None, "steps": None,
            "seconds": None, "error": error}


def _describe(exc: BaseException) -> str:
    """An exception as one line: "CommClosedError: in <...>", or its name alone."""
    text = str(exc).replace("\n", " ").strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_one(task: dict) -> dict:
    """Train one setting with one seed; never raises for a failing run.

    task: {"id", "setting", "seed", "fixed", "data", "kernel"}; returns the task's
    id, setting and seed with status ("ok", "diverged", "error"), final_loss (mean
    loss of the last tenth of the steps), val_loss (when val_fraction > 0),
    seconds (wall time of the whole run) and error (a message, or None).
    """
    from .trainer import Trainer, TrainingDiverged  # in the worker process

    t0 = time.perf_counter()
    values = {**task["fixed"], **task["setting"], "seed": task["seed"]}
    result = _result(task)
    try:
        config, tc = configs_from(values, threads=1, num_samples=0)
        trainer = Trainer(config, tc, data=task["data"], kernel=task["kernel"])
        losses = trainer.train()
        result["steps"] = len(losses)
        result["final_loss"] = float(losses[-max(1, len(losses) // 10):].mean())
        if tc.val_fraction > 0:
            result["val_loss"] = trainer.evaluate()
    except TrainingDiverged as exc:
        result.update(status="diverged", error=str(exc))
    except (ValueError, DataError, KernelError, MemoryError) as exc:
        result.update(status="error", error=str(exc) or type(exc).__name__)
    result["seconds"] = time.perf_counter() - t0
    return result


def _checked(result, task: dict) -> dict:
    """result, or a failed run of task in its place when result is not one: an
    "ok" run always has a float final_loss."""
    if not isinstance(result, dict):
        return _result(task, "error", f"not a run's result: {type(result).__name__}")
    if result.get("status") == "ok" and not isinstance(result.get("final_loss"), float):
        return {**result, "status": "error", "error": "the run reported no final loss"}
    return result


# -- local worker processes ---------------------------------------------------

def _plain(value):
    """JSON for the numpy scalars a grid may hold (np.int64 is no int to json)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a setting value")


def _worker_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one single-threaded run per core
    # the workers import this very package, wherever the caller found it (an
    # in-place build, a folder added to sys.path); site-packages they find anyway,
    # and it must not go ahead of the standard library
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in site.getsitepackages() + [site.getusersitepackages()]:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


class _Worker:
    """One `python -m microgpt_fast.sweep_worker` process and the task it holds.

    It runs in its own session, so a terminal's Ctrl-C reaches only the sweep,
    which then kills it; its stderr is drained (a full pipe would stop it) and
    the last of it kept to say why it died."""

    def __init__(self, env: dict):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "microgpt_fast.sweep_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
        self.task = None
        self.partial = b""  # stdout after the last complete line
        self.stderr_tail = b""

    def send(self, task: dict) -> None:
        self.task = task
        try:
            self.process.stdin.write(json.dumps(task, default=_plain).encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died: the end of its stdout reports the task

    def read_results(self) -> list | None:
        """The results it wrote since the last call, or None at the end of its stdout."""
        data = os.read(self.process.stdout.fileno(), 65536)
        if not data:
            return None
        *lines, self.partial = (self.partial + data).split(b"\n")
        results = []
        for line in lines:
            try:
                results.append(json.loads(line))
            except ValueError:
                results.append(None)  # _checked makes it a failed run
        return results

    def read_stderr(self) -> bool:
        """Keep the last of its stderr; False at the end of it."""
        data = os.read(self.process.stderr.fileno(), 65536)
        self.stderr_tail = (self.stderr_tail + data)[-4096:]
        return bool(data)

    def death(self) -> str:
        """Why it ended (its stdout did): "worker process 123 died (killed by signal 9)"."""
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:  # closed its stdout yet lives on
            self.process.kill()
            code = self.process.wait()
        while self.read_stderr():  # the rest of what it said, now that it is gone
            pass
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        said = self.stderr_tail.decode(errors="replace").strip().splitlines()
        if said and code >= 0:
            how += f": {said[-1].strip()[:200]}"
        return f"worker process {self.process.pid} died ({how})"

    def stop(self, at_once: bool) -> None:
        """End the process: at once (it may be mid-run), or by closing its stdin."""
        if not at_once:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=1)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            with contextlib.suppress(OSError):
                stream.close()


def _run_on_workers(tasks: list[dict], workers: int, report) -> None:
    """Run the tasks on `workers` local worker processes, report(result) as each
    finishes. A worker that dies fails the run it held and is replaced. On any
    exit (Ctrl-C raises KeyboardInterrupt here) the workers are ended: at once
    unless every run is done."""
    queue = collections.deque(tasks)
    env = _worker_env()
    selector = selectors.DefaultSelector()
    pool = []

    def start_worker():
        worker = _Worker(env)
        pool.append(worker)
        selector.register(worker.process.stdout, selectors.EVENT_READ, (worker, "stdout"))
        selector.register(worker.process.stderr, selectors.EVENT_READ, (worker, "stderr"))

    def retire(worker):
        selector.unregister(worker.process.stdout)
        with contextlib.suppress(KeyError):  # already unregistered at the end of stderr
            selector.unregister(worker.process.stderr)
        pool.remove(worker)

    finished = False
    try:
        for _ in range(min(workers, len(tasks))):
            start_worker()
        while queue or any(worker.task is not None for worker in pool):
            for worker in pool:
                if worker.task is None and queue:
                    worker.send(queue.popleft())
            # a short timeout: Ctrl-C is seen at once even where select() is not interrupted
            for key, _ in selector.select(timeout=0.2):
                worker, stream = key.data
                if worker not in pool:  # died earlier in this batch
                    continue
                if stream == "stderr":
                    if not worker.read_stderr():
                        selector.unregister(worker.process.stderr)
                    continue
                results = worker.read_results()
                if results is None:
                    retire(worker)
                    if worker.task is not None:
                        report(_result(worker.task, "error", worker.death()))
                    worker.stop(at_once=True)
                    if queue:
                        start_worker()
                    continue
                for result in results:
                    if worker.task is not None:
                        task, worker.task = worker.task, None
                        report(_checked(result, task))
        finished = True
    finally:
        for worker in pool:
            worker.stop(at_once=not finished)
        selector.close()


# -- the sweep ----------------------------------------------------------------

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
                    result = _checked(future.result(), task)
                except Exception as exc:  # the worker itself failed (killed, lost)
                    result = _result(task, "error", _describe(exc))
                report(result)
    finally:
        for future in pending:
            future.cancel()


@contextlib.contextmanager
def _quiet_loggers(library: str):
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


def run(grid: dict[str, list] | None = None, ranges: dict[str, tuple] | None = None,
        n_random: int = 0, repeat: int = 1, fixed: dict | None = None, data=None,
        executor=None, workers: int | None = None, kernel: str | None = None,
        search_seed: int = 0, on_result=None) -> list[dict]:
    """Train every setting repeat times and return one result per run (see run_one),
    in the order they finished.

    grid: {field: [values]}; ranges: {field: (low, high, "lin"|"log")} with
    n_random draws; fixed: other config fields for every run (seed is the first
    seed). executor: any object with submit() returning concurrent.futures
    futures; a dask.distributed Client is used through its get_executor().
    Without one, `workers` local worker processes run the sweep (default: one
    per core); a worker that dies fails the run it held, and a new one takes
    its place. on_result(result, done, total) is called as each run finishes.
    On KeyboardInterrupt the workers are killed, the queued runs cancelled and
    the finished ones returned; `interrupted` is then set on the list.
    """
    fixed = dict(fixed or {})
    for name in fixed:
        _field_type(name)
    if not (isinstance(repeat, int) and repeat >= 1):
        raise SweepError(f"repeat must be >= 1, got {repeat!r}")
    if workers is not None and not (isinstance(workers, int) and workers >= 1):
        raise SweepError(f"workers must be >= 1, got {workers!r}")
    settings = make_settings(grid, ranges, n_random, search_seed)
    if executor is None:
        load_kernel(kernel)  # a bad name (or $MICROGPT_FAST_KERNEL) fails once, not every run
    first_seed = fixed.pop("seed", _DEFAULTS["seed"])
    data = None if data is None else os.path.abspath(os.fspath(data))
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
            _run_on_workers(tasks, workers or cpu_count(), report)
        elif hasattr(executor, "get_executor"):  # a dask.distributed Client
            with _quiet_loggers("distributed"):
                _run_on_executor(tasks, executor.get_executor(), report)
        else:
            _run_on_executor(tasks, executor, report)
    except KeyboardInterrupt:
        results.interrupted = True
    return results


class SweepResults(list):
    """The finished runs; interrupted is True when Ctrl-C stopped the sweep."""

    interrupted = False


def summarize(results: list[dict]) -> list[dict]:
    """One row per setting: runs, failures, mean and spread (sample standard
    deviation) of final and validation loss over its seeds, and seconds per run;
    sorted by validation loss where there is one, else by final loss, failed
    settings last."""
    by_setting = {}
    for r in results:
        key = json.dumps(r["setting"], sort_keys=True)
        by_setting.setdefault(key, []).append(r)
    rows = []
    for runs in by_setting.values():
        ok = [r for r in runs if r["status"] == "ok"]

        def stats(name):
            values = [r[name] for r in ok if r[name] is not None]
            if not values:
                return None, None
            return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

        final, final_sd = stats("final_loss")
        val, val_sd = stats("val_loss")
        seconds = [r["seconds"] for r in runs if r["seconds"] is not None]
        failed = [r for r in runs if r["status"] != "ok"]
        rows.append({"setting": runs[0]["setting"], "runs": len(runs), "ok": len(ok),
                     "final_loss": final, "final_loss_sd": final_sd,
                     "val_loss": val, "val_loss_sd": val_sd,
                     "seconds_per_run": statistics.fmean(seconds) if seconds else None,
                     "failure": (f"{failed[0]['status']}: {failed[0]['error']}" if failed
                                 else None)})

    def order(row):
        loss = row["val_loss"] if row["val_loss"] is not None else row["final_loss"]
        return (loss is None, loss if loss is not None else 0.0)

    return sorted(rows, key=order)


def format_table(rows: list[dict], fields_: list[str]) -> str:
    def num(x, sd=None):
        if x is None:
            return "-"
        return f"{x:.4f}" + (f" ± {sd:.4f}" if sd is not None else "")

    def value(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    header = ["rank"] + fields_ + ["runs", "final loss", "val loss", "s/run", "note"]
    lines = []
    for i, row in enumerate(rows):
        lines.append([str(i + 1)] + [value(row["setting"].get(f, "")) for f in fields_]
                     + [f"{row['ok']}/{row['runs']}", num(row["final_loss"], row["final_loss_sd"]),
                        num(row["val_loss"], row["val_loss_sd"]),
                        "-" if row["seconds_per_run"] is None else f"{row['seconds_per_run']:.3f}",
                        row["failure"] or ""])
    widths = [max(len(h), *(len(line[j]) for line in lines)) if lines else len(h)
              for j, h in enumerate(header)]
    def join(cells):  # numbers to the right, the note to the left
        return "  ".join([c.rjust(w) for c, w in zip(cells[:-1], widths)]
                         + [cells[-1]]).rstrip()

    out = [join(header)]
    out.append("-" * len(out[0]))
    out += [join(line) for line in lines]
    return "\n".join(out)


def write_csv(path: str, results: list[dict], fields_: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "seed"] + fields_ + ["status", "final_loss", "val_loss", "seconds",
                                               "error"])
        for r in sorted(results, key=lambda r: r["id"]):
            w.writerow([r["id"], r["seed"]] + [r["setting"].get(f, "") for f in fields_]
                       + [r["status"], r["final_loss"], r["val_loss"], r["seconds"],
                          r["error"] or ""])


def plot(path: str, results: list[dict], fields_: list[str], log_fields=()) -> None:
    """Loss of every run (dots) and the mean per value (line) against each swept field."""
    from .plots import pyplot

    plt = pyplot("--plot")
    ok = [r for r in results if r["status"] == "ok"]
    use_val = any(r["val_loss"] is not None for r in ok)
    loss_key = "val_loss" if use_val else "final_loss"
    fig, axes = plt.subplots(1, max(1, len(fields_)), figsize=(4.5 * max(1, len(fields_)), 4),
                             squeeze=False)
    for ax, name in zip(axes[0], fields_):
        xs = [r["setting"][name] for r in ok]
        ys = [r[loss_key] for r in ok]
        ax.plot(xs, ys, "o", alpha=0.4, markersize=4)
        means = {}
        for x, y in zip(xs, ys):
            means.setdefault(x, []).append(y)
        if not all(isinstance(x, str) for x in means):
            line = sorted((x, statistics.fmean(v)) for x, v in means.items())
            ax.plot([p[0] for p in line], [p[1] for p in line], "-", linewidth=1.5)
        numeric = [x for x in means if isinstance(x, (int, float))]
        if name in log_fields or (numeric and min(numeric) > 0
                                  and max(numeric) >= 20 * min(numeric)):
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("validation loss" if use_val else "final loss")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"microgpt_fast sweep: {len(ok)} runs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line -------------------------------------------------------------

def build_parser() -> Parser:
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
    p.add_argument("--data", metavar="PATH", default=None,
                   help="UTF-8 text, one document a line (default: the bundled names.txt)")
    p.add_argument("--kernel", choices=VARIANTS, default=None,
                   help="compiled kernel variant (default: the best this CPU runs)")
    for name in SWEEPABLE:
        default = _DEFAULTS[name]
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=None,
                       metavar=type(default).__name__.upper(),
                       help=f"{name} of every run (default: {default})")
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
        fixed = {name: getattr(args, name) for name in SWEEPABLE
                 if getattr(args, name) is not None}
        for flag in ("--json", "--csv", "--plot"):
            check_output(flag, getattr(args, flag[2:]), image=(flag == "--plot"))
        if args.plot:
            from .plots import pyplot
            pyplot("--plot")
        if args.data is not None:
            load_dataset(args.data, random.Random(0))  # a bad file is one error, not one per run
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
            cleanup.enter_context(_quiet_loggers("distributed"))
            cleanup.callback(executor.close)
        where = (f"Dask scheduler {args.dask}" if args.dask
                 else f"{min(args.workers or cpu_count(), total)} worker processes")
        print(f"sweep: {len(settings)} settings x {args.repeat} seeds = {total} runs on {where}",
              file=sys.stderr)
        show = not args.no_progress and sys.stderr.isatty()
        start = time.perf_counter()
        best = [None]
        failed = [0]

        def on_result(result, done, total_):
            if result["status"] != "ok":
                failed[0] += 1
            loss = result["val_loss"] if result["val_loss"] is not None else result["final_loss"]
            if loss is not None and (best[0] is None or loss < best[0][0]):
                best[0] = (loss, result["setting"])
            if show:
                line = f"[{done}/{total_}] {time.perf_counter() - start:.1f} s"
                if failed[0]:
                    line += f" | {failed[0]} failed"
                if best[0]:
                    line += f" | best {best[0][0]:.4f} " + " ".join(
                        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in best[0][1].items())
                sys.stderr.write("\r\033[K" + line[:200])
                sys.stderr.flush()

        results = run(grid, ranges, args.random, args.repeat, fixed, args.data, executor,
                      args.workers, args.kernel, args.search_seed, on_result)
        if stop is not None:
            stop.hold()  # a signal from here on: the files are still written
        if show:
            sys.stderr.write("\r\033[K")
        elapsed = time.perf_counter() - start
        names = list(grid) + list(ranges)
        rows = summarize(results)
        # the files first: a reader of stdout that went away must not cost them
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"swept": names, "fixed": fixed, "elapsed_s": elapsed,
                           "interrupted": results.interrupted, "settings": rows,
                           "runs": sorted(results, key=lambda r: r["id"])}, f, indent=1)
                f.write("\n")
        if args.csv:
            write_csv(args.csv, results, names)
        if args.plot and results:
            plot(args.plot, results, names,
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


if __name__ == "__main__":
    sys.exit(main())
