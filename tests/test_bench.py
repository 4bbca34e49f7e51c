"""The benchmark command runs, prints its table, and writes JSON and CSV."""

from __future__ import annotations

import csv
import gc
import importlib.util
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from microgpt_fast import bench, peak
from microgpt_fast.config import GPTConfig
from microgpt_fast.kernels import (VARIANTS, KernelError, available_kernels, cpu_count,
                                   load_kernel)

from helpers import (assert_cli_error, call_main, cli_env, env_without, needs_profiling,
                     run_bench)

QUICK = ["--variants", "generic", "--n-embd", "16", "--threads", "1", "--steps", "20",
         "--throughput-docs", "64", "--repeats", "1", "--reference-steps", "1",
         "--peak-size", "256"]


def test_bench_table_json_csv(tmp_path):
    result = run_bench(QUICK + ["--json", "b.json", "--csv", "b.csv"], tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "us/step" in out and "GFLOP/s" in out and "x/doc" in out
    assert "breakdown:" not in out
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    engines = [(r["engine"], r["dtype"], r["batch"]) for r in rows]
    assert ("reference", "float64", 1) in engines
    assert ("generic", "float64", 1) in engines       # exact mode
    assert ("generic", "float32", 16) in engines      # throughput mode
    exact = next(r for r in rows if r["engine"] == "generic" and r["batch"] == 1)
    assert exact["us_per_step"] > 0 and exact["speedup_doc"] > 1 and exact["gflops"] > 0
    with open(tmp_path / "b.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)


def test_threads_past_the_cores_are_capped_and_said(tmp_path):
    """--threads beyond the cores: one row per count that ran, and a line naming
    what was capped (instead of rows labelled with the core count twice)."""
    many = cpu_count() + 1
    result = run_bench(QUICK + ["--no-exact", "--reference-steps", "0", "--threads", "1",
                                str(many), "--json", "b.json"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"threads: {many} capped to {cpu_count()}" in result.stdout
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert sorted(r["threads"] for r in rows) == sorted({1, cpu_count()})


def test_peak_is_the_best_repeat_and_reports_the_spread(monkeypatch):
    """The peak is what the machine can do: the fastest of the timed products
    (the warm-up one not counted), with the spread of the rest beside it."""
    # a start and an end for each timed product: 2, 1, 4, 1.5 and 3 s
    stamps = iter([0.0, 2.0, 10.0, 11.0, 20.0, 24.0, 30.0, 31.5, 40.0, 43.0])
    fake_clock = stamps.__next__
    monkeypatch.setattr(peak.time, "perf_counter", fake_clock)
    gflops, spread = peak.matmul_peak(1, n=8, repeats=5)
    assert gflops == pytest.approx(2 * 8 ** 3 / 1.0 / 1e9)
    assert spread == pytest.approx((4.0 - 1.0) / 1.0)


def test_the_reference_is_timed_with_the_earlier_objects_frozen_out_of_gc(monkeypatch,
                                                                          names_ds):
    """The bench's own objects (PyTorch's among them) stay out of the collector's
    passes while the reference runs, and are handed back after it."""
    seen = []
    train_step = bench.ReferenceGPT.train_step

    def recording(self, *args, **kwargs):
        seen.append(gc.get_freeze_count())
        return train_step(self, *args, **kwargs)

    monkeypatch.setattr(bench.ReferenceGPT, "train_step", recording)
    before = gc.get_freeze_count()
    bench.time_reference(names_ds, GPTConfig(vocab_size=names_ds.vocab_size, n_embd=4), 2)
    assert len(seen) == 2 and min(seen) > before
    assert gc.get_freeze_count() == before


# float32 lanes of each variant's vectors (vec.h): 1 for a variant without them
FMA_LANES = {"novec": 1, "generic": 1, "avx2": 8, "avx512": 16, "avx512_bf16": 16}


@pytest.mark.parametrize("name", available_kernels())
def test_fma_loop_counts_the_multiply_adds_of_its_vector_width(name):
    """fma_peak.h's loop does rounds x 12 chains x lanes multiply-adds per thread,
    2 FLOP each, on as many threads as OpenMP grants (at most the ones asked)."""
    loop = load_kernel(name).module.fma_loop
    assert loop(1, 10) == 2 * 10 * 12 * FMA_LANES[name]
    two = loop(2, 10) / (2 * 10 * 12 * FMA_LANES[name])
    assert two == (2 if load_kernel(name).module.openmp_enabled() else 1)


@pytest.mark.parametrize("threads, rounds", [(0, 10), (-1, 10), (1, -1)])
def test_fma_loop_refuses_bad_counts(threads, rounds):
    with pytest.raises(ValueError, match="need threads >= 1 and rounds >= 0"):
        load_kernel().module.fma_loop(threads, rounds)
    if rounds >= 0:
        with pytest.raises(ValueError, match="threads must be >= 1"):
            peak.fma_peak(threads)


def test_the_peak_is_the_larger_of_the_fma_loop_and_the_product(monkeypatch):
    monkeypatch.setattr(peak, "matmul_peak", lambda threads, n, repeats: (100.0, 0.0))
    monkeypatch.setattr(peak, "fma_peak", lambda threads, repeats: (250.0, 0.1))
    assert peak.peak_gflops(1) == 250.0
    monkeypatch.setattr(peak, "matmul_peak", lambda threads, n, repeats: (300.0, 0.0))
    assert peak.peak_gflops(1) == 300.0


def test_fma_peak_is_a_rate_of_the_widest_variant():
    gflops, spread = peak.fma_peak(1, repeats=2, seconds=0.002)
    assert gflops > 0 and spread >= 0


def test_rows_with_a_large_spread_are_flagged():
    def row(spread):
        return bench.Row("avx2", "float32", 1, 16, 16, 1, 16, 10, 100.0, 6.25, 1e5, 1.0,
                         10.0, math.nan, math.nan, spread=spread)
    out = io.StringIO()
    bench.print_table([row(0.05), row(0.5)], out)
    lines = out.getvalue().splitlines()
    assert "!" not in lines[2] and lines[3].endswith("! spread 50%")
    assert lines[4].startswith("! ") and "busy" in lines[4]
    quiet = io.StringIO()
    bench.print_table([row(0.05)], quiet)
    assert "!" not in quiet.getvalue()


@needs_profiling
def test_bench_breakdown(tmp_path):
    result = run_bench(QUICK + ["--no-exact", "--reference-steps", "0", "--json", "b.json",
                                "--breakdown"], tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "breakdown:" in out and "fwd attention" in out and "adam (+transpose)" in out
    # each thread's documents and weight phases add up to the op groups summed over threads
    parts = json.loads((tmp_path / "b.json").read_text())["breakdown"]["generic"]
    threads = sorted({k.split()[1] for k in parts if k.startswith("thread ")})
    assert threads and "thread 0 documents" in out
    by_thread = sum(parts[f"thread {th} {p}"] for th in threads for p in ("documents", "weights"))
    by_group = (sum(parts["forward"].values()) + sum(parts["backward"].values())
                + parts["adam"])
    assert by_thread == pytest.approx(by_group, rel=1e-9)
    # the floor: generic's products run far below the FMA loop's peak, and the op
    # groups it takes as measured are a part of the threads' busy time
    assert "floor us/step" in out and "linear layers' FLOPs at the FMA loop's peak" in out
    assert 0 < parts["floor_us_per_step"] < parts["wall_us_per_step"]


def test_step_floor_counts_the_linear_layers_at_the_peak():
    """One position of the default model: QKV and output (4 C^2), the MLP (2 F C) and
    the lm head (V C) multiply-adds, two FLOPs each, three times (forward, and the
    input and weight gradients); attention's products are the rest of train_flops."""
    cfg = GPTConfig(vocab_size=27, n_embd=16)
    assert bench.linear_flops(cfg, 1) == 3 * 2 * (4 * 256 + 2 * 64 * 16 + 27 * 16)
    assert bench.train_flops(cfg, 3) - bench.linear_flops(cfg, 3) == 3 * 2 * 16 * 3 * 4
    # 21024 FLOPs at 1 GFLOP/s: 21.024 us, plus 30 us of other work over 2 threads
    assert bench.step_floor(21024, 1.0, 30.0, 2, False) == pytest.approx(21.024 + 15)
    assert bench.step_floor(21024, 1.0, 30.0, 2, True) == pytest.approx(10.512 + 15)


def test_bench_unknown_variant_is_one_line_error(tmp_path):
    result = run_bench(["--variants", "nope"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown kernel" in result.stderr


def test_bench_torch_without_torch_is_one_line_error(tmp_path, monkeypatch):
    """With PyTorch not importable (a None entry in sys.modules makes its import
    fail), --torch says how to install it, before any measurement."""
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "microgpt_fast.torch_model", None)
    result = call_main(bench.main, QUICK + ["--torch"], tmp_path)
    assert_cli_error(result, "--torch", "pip install -e .[torch]")
    assert result.stdout == ""


def test_bench_plot_without_matplotlib_is_one_line_error(tmp_path):
    """With matplotlib hidden, --plot says how to install it."""
    env = env_without(tmp_path, "matplotlib")
    result = run_bench(QUICK + ["--no-exact", "--plot", "b.png"], tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "pip install" in result.stderr


def test_breakdown_without_profiling_builds_is_one_line_error(tmp_path, monkeypatch):
    """With the _prof modules missing (as after a plain install), --breakdown says how
    to get them, before any measurement; the plain variants still load."""
    for v in VARIANTS:
        monkeypatch.setitem(sys.modules, f"microgpt_fast._engine_{v}_prof", None)
    result = call_main(bench.main, QUICK + ["--breakdown"], tmp_path)
    assert_cli_error(result, "--breakdown", "MICROGPT_FAST_PROFILE=1")
    assert result.stdout == ""  # not even the peak line: nothing was measured
    assert "generic" in available_kernels() and load_kernel("generic").name == "generic"
    with pytest.raises(KernelError, match="MICROGPT_FAST_PROFILE=1"):
        load_kernel("generic_prof")


@needs_profiling
def test_breakdown_with_more_threads_than_cores(tmp_path):
    """--threads beyond the cores: the rows are the threads that really ran."""
    result = run_bench(["--variants", "generic", "--n-embd", "16", "--threads", "64", "--no-exact",
                        "--throughput-docs", "32", "--repeats", "1", "--reference-steps", "0",
                        "--peak-size", "256", "--breakdown"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "thread 0 documents" in result.stdout and "thread 63" not in result.stdout


def test_bench_on_text_windows(tmp_path):
    """--data shakespeare reads the text format: every document of every row is a
    window of 16 predictions (the default block); lines of the play average fewer.
    Also --plot (where matplotlib is installed), on this run rather than one of its
    own."""
    plot = ["--plot", "b.png"] if importlib.util.find_spec("matplotlib") else []
    result = run_bench(QUICK + ["--data", "shakespeare", "--no-exact", "--json", "b.json"]
                       + plot, tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["engine"] for r in rows] == ["reference", "generic"]
    for r in rows:  # positions per document = tokens/s x s/doc
        assert r["tokens_per_s"] * r["us_per_doc"] / 1e6 == pytest.approx(16)
    if plot:
        assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


FAKE_ORIGINAL = Path(__file__).parent / "data" / "fake_microgpt.py"


@pytest.fixture
def spawned(monkeypatch):
    """The processes the bench starts, as it starts them."""
    procs = []

    def record(command, **kwargs):
        procs.append(real_spawn(command, **kwargs))
        return procs[-1]

    real_spawn = bench.spawn
    monkeypatch.setattr(bench, "spawn", record)
    return procs


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_original_is_timed_from_step_2_to_step_n(tmp_path, monkeypatch, spawned):
    """The stand-in sleeps 50 ms before each step line: that is its ms/step; the
    exact mode's x/orig is the original's us/step over the row's."""
    monkeypatch.setenv("FAKE_MICROGPT_SLEEP", "0.05")
    result = call_main(bench.main, QUICK + ["--original", FAKE_ORIGINAL, "--original-steps", "10",
                                            "--json", "b.json"], tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    ms = data["original"]["ms_per_step"]
    assert 49 <= ms <= 120, ms  # a loaded machine only adds
    rows = {(r["engine"], r["batch"]): r for r in data["rows"]}
    orig = rows[("original", 1)]
    assert orig["us_per_step"] == pytest.approx(ms * 1e3) and orig["steps"] == 8
    exact = rows[("generic", 1)]
    assert exact["speedup_original"] == pytest.approx(ms * 1e3 / exact["us_per_step"])
    assert math.isnan(rows[("generic", 16)]["speedup_original"])  # not the original's shape
    assert "x/orig" in result.stdout and "ms/step over steps 2..10" in result.stdout
    assert len(spawned) == 1 and all(gone(p.pid) for p in spawned)  # stopped at step 10


@pytest.mark.parametrize("mode, flags, words", [
    ("early", [], ["exit code 1", "after step 3", "fake failure after step 3"]),
    # the silent stand-in never prints a step line: a short timeout cannot be missed
    ("silent", ["--original-timeout", "0.3"], ["no step line within 0.3 s"]),
])
def test_original_that_fails_is_one_line_error(tmp_path, monkeypatch, spawned, mode, flags,
                                               words):
    monkeypatch.setenv("FAKE_MICROGPT", mode)
    result = call_main(bench.main, QUICK + ["--original", FAKE_ORIGINAL] + flags, tmp_path)
    assert_cli_error(result, "--original", *words)
    assert len(spawned) == 1 and all(gone(p.pid) for p in spawned)


def test_original_interrupted_is_stopped(tmp_path, monkeypatch, spawned):
    """Ctrl-C while the original runs: exit 130, and the original is gone."""
    monkeypatch.setenv("FAKE_MICROGPT_SLEEP", "0.01")
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        result = call_main(bench.main, QUICK + ["--original", FAKE_ORIGINAL,
                                                "--original-steps", "999"], tmp_path)
    finally:
        timer.cancel()
    assert result.returncode == 130, result.stderr
    assert len(spawned) == 1 and all(gone(p.pid) for p in spawned)


def test_bad_original_path_is_one_line_error(tmp_path, spawned):
    script = tmp_path / "m.py"
    script.write_text("print('never run')\n")
    cases = [(["--original", tmp_path / "none.py"], "No such file"),
             (["--original", tmp_path], "not a regular file"),
             (["--original", script, "--original-steps", "2"], "--original-steps"),
             (["--original", script, "--data", "shakespeare"], "names")]
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "locked.py"
        locked.write_text("")
        locked.chmod(0)
        cases.append((["--original", locked], "Permission denied"))
    for flags, word in cases:
        result = call_main(bench.main, QUICK + flags, tmp_path)
        assert_cli_error(result, word)
        assert result.stdout == ""  # before any measurement
    assert spawned == []


BUSY = QUICK + ["--no-exact", "--reference-steps", "0", "--threads", "1", "2", "--busy"]


def test_busy_rows_run_beside_a_competitor(tmp_path, monkeypatch, spawned):
    """--busy adds a marked row for each thread count, and one adapting the count
    for each count of 2+, timed while the competitor runs (and only those); the
    competitor is gone afterwards."""
    running = []  # per time_compiled call: whether a competitor ran

    def timed(*args, **kwargs):
        running.append(any(p.poll() is None for p in spawned))
        return real_time(*args, **kwargs)

    real_time = bench.time_compiled
    monkeypatch.setattr(bench, "time_compiled", timed)
    result = call_main(bench.main, BUSY + ["--json", "b.json", "--csv", "b.csv"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [(r["threads"], r["busy"], r["auto"]) for r in rows] == [
        (1, False, False), (2, False, False), (1, True, False), (2, True, False),
        (2, True, True)]
    assert rows[2]["steps"] == 8 * rows[0]["steps"]  # longer runs beside the competitor
    assert running == [False, False, True, True, True]
    assert "generic+busy " in result.stdout and "generic+busy+auto" in result.stdout
    with open(tmp_path / "b.csv") as f:
        assert [(r["busy"], r["auto"]) for r in csv.DictReader(f)] == [
            ("False", "False"), ("False", "False"), ("True", "False"), ("True", "False"),
            ("True", "True")]
    assert len(spawned) == 1 and all(gone(p.pid) for p in spawned)


def test_busy_competitor_stopped_on_interrupt(tmp_path, monkeypatch, spawned):
    def interrupted(*args, **kwargs):
        if any(p.poll() is None for p in spawned):
            raise KeyboardInterrupt
        return real_time(*args, **kwargs)

    real_time = bench.time_compiled
    monkeypatch.setattr(bench, "time_compiled", interrupted)
    result = call_main(bench.main, BUSY, tmp_path)
    assert result.returncode == 130
    assert len(spawned) == 1 and all(gone(p.pid) for p in spawned)


def running(pid: int) -> bool:
    """pid names a live process (a zombie waiting for an absent reaper is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def child_of(pid: int, timeout: float) -> int | None:
    """The first child process of pid within timeout seconds, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                             text=True).stdout.split()
        if out:
            return int(out[0])
        time.sleep(0.05)
    return None


@pytest.mark.skipif(not os.path.isdir("/proc") or shutil.which("ps") is None,
                    reason="needs /proc and ps")
@pytest.mark.parametrize("flags, sig, code", [
    (["--original", FAKE_ORIGINAL, "--original-steps", "999"], signal.SIGTERM, 128 + 15),
    # busy rows run 8 times the documents: a signal waits for the train call in progress
    (BUSY + ["--threads", "2", "--throughput-docs", "5000"], signal.SIGTERM, 128 + 15),
    (BUSY + ["--threads", "2", "--throughput-docs", "5000"], signal.SIGKILL, -9),
])
def test_killed_bench_leaves_no_process(tmp_path, flags, sig, code):
    """The bench stopped by SIGTERM stops what it started (the original, the
    competitor) and exits 143; stopped by SIGKILL, it cannot, and the competitor
    ends itself once its parent is gone."""
    bench_proc = subprocess.Popen(
        [sys.executable, "-m", "microgpt_fast.bench", *map(str, QUICK + flags)],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        child = child_of(bench_proc.pid, 60)
        assert child is not None, "the bench started no process"
        time.sleep(0.3)
        bench_proc.send_signal(sig)
        _, err = bench_proc.communicate(timeout=60)
    finally:
        if bench_proc.poll() is None:
            bench_proc.kill()
            bench_proc.wait()
    assert bench_proc.returncode == code, err
    deadline = time.monotonic() + 10
    while running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(child)
