"""Speed of the compiled engine against the pure-Python reference, in one table.

    python -m microgpt_fast.bench                     # exact and throughput modes, every variant
    python -m microgpt_fast.bench --breakdown         # time per op group, per variant,
                                                      # and each step's floor
                                                      # (install with MICROGPT_FAST_PROFILE=1)
    python -m microgpt_fast.bench --n-embd 16 64 128 --threads 1 2 --json out.json --csv out.csv
    python -m microgpt_fast.bench --big shakespeare   # also the n_embd 256 model, on text windows
    python -m microgpt_fast.bench --data shakespeare  # every mode on windows of 17 characters
    python -m microgpt_fast.bench --original microgpt.py   # also time Karpathy's original
    python -m microgpt_fast.bench --torch             # also the same model in PyTorch
                                                      # (pip install -e .[torch])
    python -m microgpt_fast.bench --busy              # also each thread count, fixed and
                                                      # adapting, beside a CPU-bound process

Every configuration is timed in the same run: the reference on the first few
steps, each compiled row over --steps steps after a warm-up, as the median of
--repeats runs. The machine's peak, on the same thread count and in the same
run, is the larger of a large numpy float32 matrix product and a loop of
independent FMAs in the widest variant this CPU runs (peak.py; each the best
of 5 after a warm-up). A row whose repeats differ by more than 20% is flagged: a busy machine.

FLOP count (analytic, per document of n trained positions, one layer of
width C, F = 4C, vocabulary V):
    forward = n * 2 * (4C^2 + 2FC) per layer   (QKV, output, fc1, fc2 products)
            + 2 * C * n(n+1) per layer         (scores and weighted values over u <= t)
            + n * 2 * V * C                    (lm head)
    training = 3 * forward                     (backward costs two forwards)
Norms, softmax, the loss and Adam are not counted.

--original PATH times an unchanged copy of Karpathy's microgpt.py (not shipped
here): it runs in a temporary folder whose input.txt is the bundled names, as
`python -u PATH`; its ms/step is the time between the arrival of its `step 2`
and its `step N` lines (N = --original-steps) divided by N - 2, after which
it is stopped. The exact-mode rows then carry x/orig, their speedup against
it, beside x/step, their speedup against the reference (itself about 1.6x
faster than the original, so x/step understates the speedup over the original).

--busy times each thread count of the throughput mode a second time while a
CPU-bound process (a Python busy loop the bench starts and stops) competes for
a core, over runs 8 times longer: what a busy machine costs a row whose threads
wait for each other. These rows are marked busy (engine `NAME+busy` in the
table, `busy` in JSON and CSV). Beside them, each count of 2 or more is timed
once more with the thread count adapting (CompiledGPT's adapt_threads, the
default of training; every other row keeps its count fixed): `NAME+busy+auto`,
`auto` in JSON and CSV.

--torch times the same model in PyTorch (microgpt_fast.torch_model) beside
each throughput row and the --big row: same initial weights, same documents,
same dtype, batch and thread count, timed as the compiled rows are (a fresh
start from the initial weights per run, a warm-up run excluded, the median
of --repeats). Two rows each: `torch`, eager, and `torch.compile`, the whole
step (forward, gradient, Adam) compiled as one graph with static padded
shapes; its compile time, the first call, is reported apart (compile s).
x/torch on a torch row is its us/doc over ours (the last variant's, same
shape and threads): how many times faster ours is.

--breakdown runs each variant's profiling build (`<variant>_prof`) and prints
its op groups' us per step and its floor: the linear layers' FLOPs (the
forward count above less attention's, times 3) at the FMA loop's peak, plus
the embedding, norms, attention and Adam as they measured, split evenly over
the threads. A step of that model on that variant cannot beat the floor
without those op groups running faster.
"""

from __future__ import annotations

import argparse
import csv
import gc
import importlib
import json
import math
import os
import random
import re
import selectors
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

import numpy as np

from .cli import Interrupted, Parser, add_config_flags, run_guarded
from .config import Adam, GPTConfig, RunOptions, TrainConfig, init_params
from .data import bundled_path, load_data, load_text, natural_format
from .engine import CompiledGPT
from .kernels import (BY_NAME_ONLY, PROFILE_HINT, Kernel, KernelError, available_kernels,
                      cpu_count, load_kernel, profiling_built)
from .paths import check_output
from .peak import fma_peak, matmul_peak, peak_gflops
from .plots import plot_bench, pyplot
from .reference import ReferenceGPT


@dataclass
class Row:
    engine: str          # "reference" or the compiled kernel variant
    dtype: str
    threads: int
    batch: int
    n_embd: int
    n_layer: int
    block_size: int
    steps: int           # steps per timed run
    us_per_step: float   # median over repeats
    us_per_doc: float
    tokens_per_s: float
    gflops: float
    peak_pct: float      # of the float32 peak at the same thread count (peak.py)
    speedup_step: float  # reference us/step (same shape, batch 1) / us/step
    speedup_doc: float   # reference us/doc (same shape) / us/doc
    speedup_original: float = math.nan  # original us/step / us/step (exact mode, --original)
    busy: bool = False   # timed beside a CPU-bound competitor process (--busy)
    auto: bool = False   # the engine adapted its thread count, up to `threads` (--busy)
    spread: float = 0.0  # (slowest - fastest) / fastest over the timed repeats
    vs_torch: float = math.nan   # a torch row's us/doc / ours (last variant, same shape)
    compile_s: float = math.nan  # torch.compile rows: seconds of the first call


# repeats that differ by more than this were disturbed (a busy machine): the
# table flags their row, and the peak line its thread count
SPREAD_FLAG = 0.2

# the two measurements of the machine's peak (peak.py), as the peak lines name them
PEAK_SOURCES = {"fma": "FMA loop", "matmul": "numpy matmul"}


def linear_flops(cfg: GPTConfig, n: int) -> float:
    """FLOPs of the linear layers' products (QKV, output, MLP, lm head), forward and
    backward, over one document of n positions."""
    C, F, V, L = cfg.n_embd, cfg.mlp_ratio * cfg.n_embd, cfg.vocab_size, cfg.n_layer
    return 3.0 * n * 2 * (L * (4 * C * C + 2 * F * C) + V * C)


def train_flops(cfg: GPTConfig, n: int) -> float:
    """FLOPs of forward and backward over one document of n positions (see above):
    the linear layers' and attention's products."""
    C, L = cfg.n_embd, cfg.n_layer
    return linear_flops(cfg, n) + 3.0 * L * 2 * C * n * (n + 1)


def time_reference(ds, cfg: GPTConfig, steps: int):
    """Seconds per step and per position of the reference on steps 0..steps-1, batch 1.

    The objects this process holds before (the bench's modules, numpy, PyTorch
    under --torch, the data) are frozen out of the garbage collector's passes
    while it runs (gc.freeze), as a process running the reference alone would
    not hold them: each collection during its scalar graph's growth walked them
    all, and with PyTorch imported a step took twice as long."""
    docs, ids = ds.batches(0, steps, 1)
    gc.freeze()
    try:
        model = ReferenceGPT(cfg, init_params(cfg, random.Random(0)))
        t0 = time.perf_counter()
        for s in range(steps):
            model.train_step([docs.doc_tokens(int(ids[s]))], s, steps)
        seconds = time.perf_counter() - t0
    finally:
        gc.unfreeze()
    positions = int(ds.positions(cfg.block_size, 1, 0, steps).sum())
    return seconds / steps, seconds / positions


def time_compiled(ds, cfg: GPTConfig, kernel: Kernel, dtype: str, threads: int, batch: int,
                  steps: int, repeats: int, lr: float, adapt: bool = False):
    """Median seconds of `steps` steps from a fresh model, after one warm-up run;
    on `threads` threads, or adapting their count when `adapt` (CompiledGPT's
    adapt_threads, its default).

    Returns (median seconds, the model of the last run, the spread of the runs:
    (slowest - fastest) / fastest)."""
    params = init_params(cfg, random.Random(0))
    times, model = timed_runs(
        lambda: CompiledGPT(cfg, params, dtype, threads, batch, kernel, adapt), ds, steps,
        repeats, lr)
    return statistics.median(times), model, (max(times) - min(times)) / min(times)


def timed_runs(fresh_model, ds, steps: int, repeats: int, lr: float):
    """Seconds of `steps` training steps of each of `repeats` runs, every run on
    the model fresh_model() returns at its initial weights, after one warm-up run
    (caches, pages, the thread pool; a compiled torch step's compilation).
    Returns (the runs' seconds, the last run's model)."""
    times = []
    for r in range(repeats + 1):
        model = fresh_model()
        t0 = time.perf_counter()
        model.train(ds, 0, steps, steps, Adam(learning_rate=lr))
        if r > 0:
            times.append(time.perf_counter() - t0)
    return times, model


TORCH_ENGINES = {"torch": False, "torch.compile": True}  # row name -> compiled


def import_torch_model():
    """microgpt_fast.torch_model, or ValueError (one error line) without PyTorch."""
    try:
        torch_model = importlib.import_module("microgpt_fast.torch_model")
    except ImportError as exc:
        raise ValueError(f"--torch needs PyTorch, which is not importable here ({exc}); "
                         "install it with: pip install -e .[torch]") from None
    return torch_model


def time_torch(torch_model, ds, cfg: GPTConfig, dtype: str, threads: int, batch: int,
               steps: int, repeats: int, lr: float, compiled: bool):
    """time_compiled's measurement of the PyTorch model: the median seconds of
    `steps` steps from the initial weights, after one warm-up run (for a
    compiled step, its compilation). Returns (median seconds, the model)."""
    params = init_params(cfg, random.Random(0))
    model = torch_model.TorchGPT(cfg, params, dtype, threads, batch, compiled)
    start = model.params

    def fresh_model():
        # one model, compiled once, set back for each run: weights, m = v = 0
        model.set_state(start)
        return model

    times, _ = timed_runs(fresh_model, ds, steps, repeats, lr)
    return statistics.median(times), model


# the original's progress line: print(f"step {step+1:4d} / {num_steps:4d} | loss ...",
# end='\r'); \r or \n may end it
STEP_LINE = re.compile(rb"step\s+(\d+)\s*/\s*(\d+)\s*\|\s*loss")
STOP_GRACE_S = 2.0  # from terminate to kill


class EarlyExit(Exception):
    """The original's output ended before the step the bench waits for."""


def spawn(command: list[str], **kwargs) -> subprocess.Popen:
    """Every process the bench starts (the original, a competitor) starts here."""
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, **kwargs)


@contextmanager
def raising_on_termination():
    """SIGTERM and SIGHUP raise Interrupted inside the block (as Ctrl-C raises
    KeyboardInterrupt), so that the block's cleanup stops the processes the
    bench started instead of leaving them behind; a signal ignored stays so."""
    def interrupt(signum, frame):
        raise Interrupted(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for num in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if num is not None and signal.getsignal(num) is not signal.SIG_IGN:
                previous[num] = signal.signal(num, interrupt)
    try:
        yield
    finally:
        for num, handler in previous.items():
            signal.signal(num, handler)


def stop(proc: subprocess.Popen) -> None:
    """End proc: terminate, kill after STOP_GRACE_S, and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_original(path: str) -> None:
    """ValueError unless path is a readable regular file (before any measurement)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError(f"--original {path}: not a regular file")
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"--original {path}: {exc.strerror or exc}") from None


def time_original(path: str, steps: int, timeout: float) -> float:
    """Seconds per step of the script at path (Karpathy's microgpt.py), run as
    `python -u path` in a temporary folder whose input.txt is the bundled names:
    the time between the arrival of its `step 2` and `step steps` lines over
    steps - 2 (step 1 holds the start-up). The script is stopped once step
    `steps` arrives, or on any error or interrupt. ValueError when it exits
    before that or does not get there within timeout seconds."""
    with (raising_on_termination(),
          tempfile.TemporaryDirectory(prefix="microgpt-original-") as folder,
          open(os.path.join(folder, "stderr.txt"), "w+b") as errors):
        shutil.copyfile(bundled_path("names"), os.path.join(folder, "input.txt"))
        proc = spawn([sys.executable, "-u", os.path.abspath(path)], cwd=folder,
                     stdout=subprocess.PIPE, stderr=errors,
                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            arrived = read_steps(proc, steps, timeout)
        except EarlyExit as exc:
            stop(proc)  # all its stderr is written
            errors.seek(0)
            last = [ln for ln in errors.read().decode(errors="replace").splitlines()
                    if ln.strip()]
            raise ValueError(f"--original {path}: {exc}"
                             + (f" ({last[-1].strip()})" if last else "")) from None
        except TimeoutError as exc:
            raise ValueError(f"--original {path}: {exc}") from None
        finally:
            stop(proc)
            proc.stdout.close()
    if 2 not in arrived:
        raise ValueError(f"--original {path}: printed step {steps} but no step 2 line")
    return (arrived[steps] - arrived[2]) / (steps - 2)


def read_steps(proc: subprocess.Popen, steps: int, timeout: float) -> dict[int, float]:
    """perf_counter time at which each `step k / n | loss` line of proc's stdout
    arrived, read until step `steps` arrives. EarlyExit when proc's output ends
    first, TimeoutError when timeout seconds pass first."""
    arrived: dict[int, float] = {}
    pending = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while steps not in arrived:
            left = deadline - time.monotonic()
            if left <= 0:
                last = max(arrived, default=None)
                raise TimeoutError(f"no step line within {timeout:g} s" if last is None else
                                   f"reached step {last}, not {steps}, within {timeout:g} s")
            if not sel.select(left):
                continue
            chunk = os.read(fd, 1 << 16)
            now = time.perf_counter()
            if not chunk:
                try:
                    code = proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    code = "none yet"
                last = max(arrived, default=None)
                raise EarlyExit(f"output ended (exit code {code}) "
                                + ("before any step line" if last is None else
                                   f"after step {last}, before step {steps}"))
            *lines, pending = re.split(rb"[\r\n]", pending + chunk)
            for line in lines:
                m = STEP_LINE.search(line)
                if m:
                    arrived.setdefault(int(m[1]), now)
    return arrived


# --busy rows run this many times the steps of the quiet rows: the adaptive
# thread count (engine.pxi, Adaptive) settles over its first few segments of ~5 ms
BUSY_RUN_LENGTH = 8

# a busy loop that ends itself once its parent (the bench) is gone, however
# that ended (even SIGKILL): its parent then changes
SPIN = """import os
parent = os.getppid()
print("spinning", flush=True)
while os.getppid() == parent:
    for _ in range(1 << 20):
        pass
"""


@contextmanager
def competitor():
    """A CPU-bound process (a Python busy loop) running while inside the block,
    stopped when it ends, whatever way it ends; yields the process once its loop
    spins (interpreter start-up outlasts a short warm-up run)."""
    with raising_on_termination():
        proc = spawn([sys.executable, "-c", SPIN], stdout=subprocess.PIPE)
        try:
            if not proc.stdout.readline():
                raise OSError(f"the competitor process ended at once (exit code {proc.wait()})")
            yield proc
        finally:
            stop(proc)
            proc.stdout.close()


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m microgpt_fast.bench", description=__doc__.split("\n\n")[0])
    add_config_flags(p, RunOptions, skip=("engine", "kernel", "threads", "adapt_threads"))  # --data
    add_config_flags(p, TrainConfig, skip=[f.name for f in fields(TrainConfig)
                                           if f.name != "data_format"])
    p.add_argument("--variants", nargs="+", default=None,
                   help="kernel variants (default: every one this CPU runs; avx512_bf16 has "
                        "float32 rows only, its float64 being avx512's)")
    p.add_argument("--n-embd", type=int, nargs="+", default=[16, 64],
                   help="widths of the throughput mode")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="thread counts of the throughput mode (default: 1 and every core)")
    p.add_argument("--batch-size", type=int, default=16, help="batch of the throughput mode")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the throughput mode")
    p.add_argument("--no-exact", action="store_true",
                   help="skip the exact mode (float64, batch 1, n_embd 16, 1 thread)")
    p.add_argument("--steps", type=int, default=1000, help="steps per exact-mode run")
    p.add_argument("--throughput-docs", type=int, default=4000,
                   help="documents per throughput-mode run at n_embd 16 (fewer for wider models)")
    p.add_argument("--peak-size", type=int, default=2048, metavar="N",
                   help="side of the float32 matrices whose numpy product gives the peak")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per row (median)")
    p.add_argument("--reference-steps", type=int, default=3,
                   help="steps of the pure-Python reference per width (0: skip)")
    p.add_argument("--big", metavar="NAME|PATH", default=None,
                   help="also time the big model (n_embd 256, n_layer 4, block 64, batch 32, "
                        "float32) on windows of 65 characters of this text (the text format), "
                        "e.g. shakespeare: on the most vectorized variant, and on avx512_bf16 "
                        "where it is among the variants")
    p.add_argument("--big-steps", type=int, default=10, help="steps per big-model run")
    p.add_argument("--original", metavar="PATH", default=None,
                   help="also time this unchanged copy of Karpathy's microgpt.py (run in a "
                        "temporary folder with the bundled names as its input.txt), and give "
                        "the exact mode's speedup against it (x/orig)")
    p.add_argument("--original-steps", type=int, default=20, metavar="N",
                   help="time the original from its step 2 line to its step N line, then "
                        "stop it")
    p.add_argument("--original-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="give up on the original when its step N line has not come by then")
    p.add_argument("--torch", action="store_true",
                   help="also time the same model in PyTorch, eager and torch.compile, beside "
                        "each throughput row and the --big row (needs PyTorch: "
                        "pip install -e .[torch])")
    p.add_argument("--busy", action="store_true",
                   help="also time each throughput thread count while a CPU-bound process "
                        "the bench starts competes for a core (rows marked +busy), and each "
                        "count of 2+ adapting the threads it uses (+busy+auto)")
    p.add_argument("--breakdown", action="store_true",
                   help="time per op group for each variant, and the floor of its step: "
                        "the linear layers at the FMA loop's peak plus the other op groups "
                        "as measured (needs the profiling builds: install with "
                        "MICROGPT_FAST_PROFILE=1)")
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    p.add_argument("--csv", metavar="PATH", help="write the rows as CSV")
    p.add_argument("--plot", metavar="PATH",
                   help="PNG of us/doc and speedup against n_embd per variant (needs matplotlib)")
    return p


def speedup_text(x: float) -> str:
    """A speedup for the table: two decimals below 100 (the reference against the
    original is about 1.6), whole numbers above; blank when there is none."""
    return "" if math.isnan(x) else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def print_table(rows: list[Row], out=sys.stdout) -> None:
    """One line per row; the x/orig column only when some row has it (--original),
    x/torch and compile s only with torch rows (--torch); a row whose repeats
    spread by more than SPREAD_FLAG ends in a flag, explained under the table."""
    with_original = any(not math.isnan(r.speedup_original) for r in rows)
    with_torch = any(r.engine in TORCH_ENGINES for r in rows)
    width = max([10] + [len(r.engine) + 5 * r.busy + 5 * r.auto for r in rows])
    head = (f"{'engine':<{width}} {'dtype':<7} {'thr':>3} {'batch':>5} {'C':>4} {'L':>2} "
            f"{'us/step':>11} {'us/doc':>10} {'tokens/s':>10} {'GFLOP/s':>8} {'%peak':>6} "
            f"{'x/step':>9} {'x/doc':>9}" + (f" {'x/orig':>9}" if with_original else "")
            + (f" {'x/torch':>8} {'compile s':>9}" if with_torch else ""))
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        engine = r.engine + "+busy" * r.busy + "+auto" * r.auto
        print(f"{engine:<{width}} {r.dtype:<7} {r.threads:>3} {r.batch:>5} {r.n_embd:>4} "
              f"{r.n_layer:>2} {r.us_per_step:>11.1f} {r.us_per_doc:>10.2f} "
              f"{r.tokens_per_s:>10.3g} {r.gflops:>8.2f} {r.peak_pct:>6.1f} "
              f"{speedup_text(r.speedup_step):>9} {speedup_text(r.speedup_doc):>9}"
              + (f" {speedup_text(r.speedup_original):>9}" if with_original else "")
              + (f" {speedup_text(r.vs_torch):>8} "
                 f"{'' if math.isnan(r.compile_s) else f'{r.compile_s:.1f}':>9}"
                 if with_torch else "")
              + (f"  ! spread {100 * r.spread:.0f}%" if r.spread > SPREAD_FLAG else ""),
              file=out)
    if any(r.engine in BY_NAME_ONLY for r in rows):
        print("avx512_bf16's GFLOP/s count its bfloat16 multiply-adds, up to twice float32's "
              "a cycle: its %peak, of float32's peak, can pass 100", file=out)
    if any(r.spread > SPREAD_FLAG for r in rows):
        print(f"! the row's timed repeats differed by more than {100 * SPREAD_FLAG:.0f}% "
              f"(slowest against fastest): the machine was busy; compare it with care",
              file=out)


# the op groups that are not the linear layers' products, which a step's floor
# (breakdown) takes as measured
OTHER_GROUPS = ("embed+norm", "attention")


def step_floor(linear: float, fma_gflops: float, other_us: float, threads: int,
               bf16: bool) -> float:
    """The floor of a step in us: its linear layers' FLOPs at the FMA loop's peak
    (twice that for bfloat16 products, two multiply-adds a lane per instruction),
    plus the other work (other_us, summed over threads) split evenly over the threads."""
    return linear / (fma_gflops * (2 if bf16 else 1) * 1e3) + other_us / threads


def breakdown(ds, variants, dtype, threads, batch, n_embd, steps, fma_gflops,
              out=sys.stdout) -> dict:
    """Microseconds per step of each op group, forward and backward, per variant, and
    each variant's floor (step_floor) beside its wall time; fma_gflops: the FMA loop's
    peak on `threads` threads."""
    cfg = GPTConfig(vocab_size=ds.vocab_size, n_embd=n_embd)
    result = {}
    bf16 = False  # whether a variant's products are bfloat16 ones
    print(f"\nbreakdown: {dtype}, batch {batch}, n_embd {n_embd}, {threads} thread(s), "
          f"{steps} steps; us per step, summed over threads (then each thread's time in "
          f"its documents, the first phase, and in its weight blocks, the other three)",
          file=out)
    for name in variants:
        kernel = load_kernel(f"{name}_prof")
        model = CompiledGPT(cfg, init_params(cfg, random.Random(0)), dtype, threads, batch,
                            kernel)
        warm = min(steps, 50)
        model.train(ds, 0, warm, steps)
        model.op_times(reset=True)
        t0 = time.perf_counter()
        model.train(ds, warm, steps - warm, steps)
        n = steps - warm
        wall = (time.perf_counter() - t0) / n * 1e6
        times = model.op_times()
        result[name] = {phase: {g: t / n * 1e6 for g, t in times[phase].items()}
                        for phase in ("forward", "backward")}
        result[name].update({"adam": times["adam"] / n * 1e6, "wall_us_per_step": wall})
        linear = sum(linear_flops(cfg, p) for p in ds.positions(cfg.block_size, batch, warm,
                                                                   n).tolist()) / n
        other = result[name]["adam"] + sum(result[name][phase][g] for g in OTHER_GROUPS
                                           for phase in ("forward", "backward"))
        in_bf16 = kernel.module.bf16_products()
        result[name]["floor_us_per_step"] = step_floor(linear, fma_gflops, other,
                                                       model.threads, in_bf16)
        bf16 = bf16 or in_bf16
        # each thread's time in a step's documents and weight phases: how well the
        # load is balanced
        for th in range(model.threads):
            mine = model.op_times(thread=th)
            busy = (sum(mine["forward"].values()) + sum(mine["backward"].values())
                    + mine["adam"])
            result[name][f"thread {th} documents"] = (busy - mine["weight_blocks"]) / n * 1e6
            result[name][f"thread {th} weights"] = mine["weight_blocks"] / n * 1e6
    names = list(variants)
    w = max(10, 1 + max(map(len, names)))  # a column per variant
    print(f"{'op group':<22}" + "".join(f"{v:>{w}}" for v in names), file=out)
    for phase in ("forward", "backward"):
        for g in load_kernel(f"{names[0]}_prof").module.TIMER_GROUPS:
            print(f"{phase[0] + 'wd ' + g:<22}"
                  + "".join(f"{result[v][phase][g]:>{w}.2f}" for v in names), file=out)
    print(f"{'adam (+transpose)':<22}" + "".join(f"{result[v]['adam']:>{w}.2f}" for v in names),
          file=out)
    # the threads each model really ran (never more than the cores or the documents)
    for key in [k for k in result[names[0]] if k.startswith("thread ")]:
        print(f"{key:<22}" + "".join(f"{result[v][key]:>{w}.2f}" for v in names), file=out)
    print(f"{'wall us/step':<22}" + "".join(f"{result[v]['wall_us_per_step']:>{w}.2f}"
                                               for v in names), file=out)
    print(f"{'floor us/step':<22}" + "".join(f"{result[v]['floor_us_per_step']:>{w}.2f}"
                                                for v in names), file=out)
    print(f"floor: the linear layers' FLOPs at the FMA loop's peak ({fma_gflops:.1f} GFLOP/s"
          f"{', twice that for bfloat16 products' if bf16 else ''}"
          f"), plus {', '.join(OTHER_GROUPS)} and adam as measured above, split evenly over "
          f"the threads (the loss's softmax and the barriers' waits count as free): a faster "
          f"step needs those op groups faster", file=out)
    return result


def run(args, out=None) -> dict:
    out = out or sys.stdout  # at call time: a caller may have redirected it
    # fail before the measurements, not after them
    for flag in ("json", "csv", "plot"):
        check_output("--" + flag, getattr(args, flag), image=flag == "plot")
    if args.plot:
        pyplot("--plot")
    torch_model = import_torch_model() if args.torch else None
    if args.original is not None:
        check_original(args.original)
        if args.data not in (None, "names"):
            raise ValueError("--original trains on the names (its input.txt): the exact mode "
                             "it is compared with needs them too; leave --data out")
        if args.original_steps < 3:
            raise ValueError(f"--original-steps must be >= 3 (the time from step 2 to step N), "
                             f"got {args.original_steps}")
        if not args.original_timeout > 0:
            raise ValueError(f"--original-timeout must be > 0, got {args.original_timeout:g}")
    # every model of the exact and throughput modes has the default block size
    ds = load_data(args.data, args.data_format or natural_format(args.data), random.Random(42),
                   GPTConfig().block_size, 42)
    variants = args.variants or available_kernels()
    for v in variants:
        load_kernel(v)  # a clear error for an unknown or unavailable variant
    # avx512_bf16's float64 is avx512's: float64 rows only for the others (unless alone)
    float64_variants = [v for v in variants if v not in BY_NAME_ONLY] or variants
    # PyTorch is measured beside the most vectorized of the plain float32 variants, and
    # the big model on it and on avx512_bf16
    main_variant = float64_variants[-1]
    big_variants = [main_variant] + [v for v in variants if v != main_variant
                                     and v in BY_NAME_ONLY]
    if args.breakdown and not profiling_built(variants):
        raise KernelError(f"--breakdown needs the profiling builds, which this install "
                          f"lacks: {PROFILE_HINT}")
    asked = sorted(set(args.threads or [1, cpu_count()]))
    if any(t < 1 for t in asked) or args.repeats < 1 or args.steps < 1 or args.peak_size < 1:
        raise ValueError("threads, repeats, steps and peak size must be >= 1")
    # a model never gets more threads than cores: one row per count that can run
    threads = sorted({min(t, cpu_count()) for t in asked})
    capped = [t for t in asked if t > cpu_count()]
    if capped:
        print(f"threads: {', '.join(map(str, capped))} capped to {cpu_count()}, the cores "
              f"of this machine", file=out)
    # the peaks for the same thread counts (BLAS with 64 threads on 2 cores only crawls)
    counts = sorted(set(threads) | {1})
    measured = {"fma": {t: fma_peak(t) for t in counts},
                "matmul": {t: matmul_peak(t, args.peak_size) for t in counts}}
    peaks = {t: max(m[t][0] for m in measured.values()) for t in counts}
    print("peak float32 GFLOP/s (best of 5 after a warm-up; %peak is of the larger):", file=out)
    for source, by_count in measured.items():
        print(f"  {PEAK_SOURCES[source] + ':':<14}"
              + ", ".join(f"{t} thread{'s' if t > 1 else ''}: {p:.1f}"
                          + (f" (! spread {100 * sp:.0f}%)" if sp > SPREAD_FLAG else "")
                          for t, (p, sp) in by_count.items()),
              file=out)

    reference = {}  # n_embd -> (s/step, s/position)
    widths = ([16] if not args.no_exact else []) + list(args.n_embd)
    if args.reference_steps > 0:
        for C in sorted(set(widths)):
            cfg = GPTConfig(vocab_size=ds.vocab_size, n_embd=C)
            reference[C] = time_reference(ds, cfg, args.reference_steps)
            print(f"reference n_embd {C}: {reference[C][0] * 1e3:.1f} ms/step over "
                  f"{args.reference_steps} steps", file=out)

    original = None  # s/step of --original, before anything else loads the machine
    if args.original is not None:
        original = time_original(args.original, args.original_steps, args.original_timeout)
        print(f"original {args.original}: {original * 1e3:.1f} ms/step over steps 2.."
              f"{args.original_steps}", file=out)

    rows: list[Row] = []

    def add_row(engine, cfg, dtype, nthreads, batch, steps, seconds, data=ds, first=0,
                busy=False, auto=False, spread=0.0, compile_s=math.nan):
        positions = data.positions(cfg.block_size, batch, first, steps).tolist()
        flops = sum(train_flops(cfg, n) for n in positions)
        us_step = seconds / steps * 1e6
        us_doc = us_step / batch
        ref_shape = cfg.n_layer == 1 and cfg.block_size == 16
        ref = reference.get(cfg.n_embd) if ref_shape else None
        ref_doc = ref[1] * np.mean(positions) * 1e6 if ref else float("nan")
        peak = peaks.get(nthreads) or peaks.setdefault(
            nthreads, peak_gflops(nthreads, args.peak_size))
        gflops = flops / seconds / 1e9
        rows.append(Row(engine, dtype, nthreads, batch, cfg.n_embd, cfg.n_layer, cfg.block_size,
                        steps, us_step, us_doc, len(positions) and sum(positions) / seconds,
                        gflops, 100 * gflops / peak,
                        ref[0] * 1e6 / us_step if ref else float("nan"),
                        ref_doc / us_doc if ref else float("nan"),
                        # the original runs the exact mode's shape: batch 1, float64, C 16
                        original * 1e6 / us_step if original and batch == 1 and ref_shape
                        and cfg.n_embd == 16 and dtype == "float64" else math.nan,
                        busy, auto, spread, compile_s=compile_s))

    def add_torch_rows(cfg, dtype, nthreads, batch, steps, repeats, lr, data=ds):
        """The torch and torch.compile rows beside the row just added (ours, on
        main_variant), each with its us/doc over ours."""
        ours = rows[-1]
        for engine, compiled in TORCH_ENGINES.items():
            seconds, model = time_torch(torch_model, data, cfg, dtype, nthreads, batch, steps,
                                        repeats, lr, compiled)
            add_row(engine, cfg, dtype, model.threads, batch, steps, seconds, data,
                    compile_s=model.compile_seconds if compiled else math.nan)
            rows[-1].vs_torch = rows[-1].us_per_doc / ours.us_per_doc

    for C, (s_step, s_pos) in reference.items():
        cfg = GPTConfig(vocab_size=ds.vocab_size, n_embd=C)
        n = args.reference_steps
        add_row("reference", cfg, "float64", 1, 1, n, s_step * n)
    if original is not None:
        # its timed interval holds steps 3..N (1-based): documents 2..N-1
        n = args.original_steps - 2
        add_row("original", GPTConfig(vocab_size=ds.vocab_size), "float64", 1, 1, n,
                original * n, first=2)
    if not args.no_exact:
        cfg = GPTConfig(vocab_size=ds.vocab_size)
        for v in float64_variants:
            seconds, _, spread = time_compiled(ds, cfg, load_kernel(v), "float64", 1, 1,
                                               args.steps, args.repeats, 0.01)
            add_row(v, cfg, "float64", 1, 1, args.steps, seconds, spread=spread)
    for C in args.n_embd:
        cfg = GPTConfig(vocab_size=ds.vocab_size, n_embd=C)
        steps = max(5, args.throughput_docs * 16 // (C * args.batch_size))
        for v in variants if args.dtype == "float32" else float64_variants:
            for t in threads:
                seconds, model, spread = time_compiled(ds, cfg, load_kernel(v), args.dtype,
                                                       t, args.batch_size, steps,
                                                       args.repeats, 0.01)
                add_row(v, cfg, args.dtype, model.threads, args.batch_size, steps, seconds,
                        spread=spread)
                if torch_model is not None and v == main_variant:
                    add_torch_rows(cfg, args.dtype, model.threads, args.batch_size, steps,
                                   args.repeats, 0.01)
            if args.busy:
                # longer runs: the adaptive count settles over its first ~0.1 s
                busy_steps = BUSY_RUN_LENGTH * steps
                with competitor():
                    for t, adapt in [(t, False) for t in threads] + [(t, True) for t in threads
                                                                     if t >= 2]:
                        seconds, model, spread = time_compiled(
                            ds, cfg, load_kernel(v), args.dtype, t, args.batch_size,
                            busy_steps, args.repeats, 0.01, adapt)
                        add_row(v, cfg, args.dtype, model.threads, args.batch_size,
                                busy_steps, seconds, busy=True, auto=adapt, spread=spread)
    if args.big:
        big = load_text(args.big, 64, 42)
        cfg = GPTConfig(vocab_size=big.vocab_size, n_embd=256, n_layer=4, block_size=64)
        for v in big_variants:
            for t in threads:
                # lr 1e-3: with the original's 0.01 this model diverges (that is the model)
                seconds, model, spread = time_compiled(big, cfg, load_kernel(v), "float32", t,
                                                       32, args.big_steps, args.repeats, 1e-3)
                add_row(v, cfg, "float32", model.threads, 32, args.big_steps, seconds, big,
                        spread=spread)
                if torch_model is not None and v == main_variant:
                    add_torch_rows(cfg, "float32", model.threads, 32, args.big_steps,
                                   args.repeats, 1e-3, big)

    print(file=out)
    print_table(rows, out)
    result = {"rows": [asdict(r) for r in rows], "peak_gflops": peaks,
              **{f"{source}_peak": {t: {"gflops": p, "spread": sp} for t, (p, sp) in by.items()}
                 for source, by in measured.items()},
              "threads_capped": capped}
    if original is not None:
        result["original"] = {"path": args.original, "ms_per_step": original * 1e3,
                              "steps": [2, args.original_steps]}
    if args.breakdown:
        result["breakdown"] = breakdown(ds, variants, args.dtype, max(threads),
                                        args.batch_size, args.n_embd[0], 400,
                                        measured["fma"][max(threads)][0], out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
            w.writeheader()
            for r in rows:
                w.writerow(asdict(r))
    if args.plot:
        plot_bench(args.plot, rows)
    return result


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: command(args))


def command(args) -> int:
    """Measure and print as the parsed args say; returns the exit code."""
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
