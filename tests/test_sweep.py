"""Hyperparameter sweeps: python -m microgpt_fast.sweep and sweep.run().

Every run of a sweep must give the very numbers that training the same setting
directly gives, whichever executor ran it (the local worker processes, a
thread pool, a Dask cluster); failing runs are reported, not fatal, and so is a
worker process that dies; bad flags are a one-line error before any run;
Ctrl-C, SIGTERM and SIGHUP keep the finished runs and leave no workers behind.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import glob
import importlib.util
import json
import logging
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time

import pytest

from microgpt_fast import sweep
from microgpt_fast.config import GPTConfig, TrainConfig
from microgpt_fast.sweep.task import blank_result
from microgpt_fast.trainer import Trainer

from helpers import (SMALL, assert_cli_error, call_main, cli_env, env_without, run_on_tty,
                     run_sweep)

# A small sweep shared by the API tests: 2 x 2 settings x 2 seeds = 8 runs.
GRID = {"learning_rate": [0.01, 0.03], "n_embd": [8, 16]}
FIXED = {"steps": 60, "seed": 7, "val_fraction": 0.1}
REPEAT = 2
SUMMARY = re.compile(r"^(\d+) of (\d+) runs in \d+\.\d s \((\d+) ok, (\d+) failed\)"
                     r"(; interrupted)?$")
RUN_KEYS = {"id", "seed", "setting", "status", "tail_loss", "val_loss", "seconds", "error"}
PNG = b"\x89PNG\r\n\x1a\n"


def ok(result):
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def assert_one_line_error(result, *words):
    """A bad sweep: one error line, exit 2, and nothing run (no table)."""
    line = assert_cli_error(result, *words)
    assert result.stdout == ""
    return line


def by_id(results):
    return sorted(results, key=lambda r: r["id"])


def without_seconds(results):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in by_id(results)]


def table(stdout: str):
    """(header cells, rows of cells, summary line) of the printed table."""
    lines = stdout.splitlines()
    assert set(lines[1]) == {"-"}, lines[:2]
    split = lambda line: re.split(r" {2,}", line.strip())  # noqa: E731 (cells: 2+ spaces apart)
    return split(lines[0]), [split(line) for line in lines[2:-1]], lines[-1]


def direct_run(setting: dict, seed: int, fixed: dict) -> tuple[float, float | None]:
    """tail_loss (mean of the last tenth of the steps) and val_loss of training
    the setting in this process."""
    values = {**fixed, **setting, "seed": seed}
    model = {k: v for k, v in values.items() if k in sweep.MODEL_FIELDS}
    train = {k: v for k, v in values.items() if k in sweep.TRAIN_FIELDS}
    trainer = Trainer(GPTConfig(**model), TrainConfig(**train), threads=1)
    losses = trainer.train()
    final = float(losses[-max(1, len(losses) // 10):].mean())
    val = trainer.evaluate() if train.get("val_fraction", 0) > 0 else None
    return final, val


# ---------------------------------------------------------------------------
# The API: one result per run, the same numbers as training directly

@pytest.fixture(scope="module")
def local_sweep():
    """sweep.run on the default local process pool, with every on_result call."""
    calls = []
    results = sweep.run(GRID, repeat=REPEAT, fixed=FIXED, workers=2,
                        on_result=lambda r, done, total: calls.append((r, done, total)))
    return results, calls


def test_local_pool_matches_direct_training(local_sweep):
    results, _ = local_sweep
    assert all(r["status"] == "ok" and r["error"] is None for r in results), results
    for r in results:
        final, val = direct_run(r["setting"], r["seed"], FIXED)
        assert r["tail_loss"] == final, (r, final)
        assert r["val_loss"] == val, (r, val)
        assert r["steps"] == FIXED["steps"]


def test_every_setting_and_seed_is_run_once(local_sweep):
    results, _ = local_sweep
    seeds = [FIXED["seed"] + k for k in range(REPEAT)]
    expected = sorted((lr, n, s) for lr in GRID["learning_rate"] for n in GRID["n_embd"]
                      for s in seeds)
    got = sorted((r["setting"]["learning_rate"], r["setting"]["n_embd"], r["seed"])
                 for r in results)
    assert got == expected
    assert sorted(r["id"] for r in results) == list(range(len(expected)))
    assert all(set(r["setting"]) == set(GRID) for r in results)
    assert all(RUN_KEYS <= set(r) for r in results)


def test_run_returns_dicts_and_calls_on_result_once_per_run(local_sweep):
    results, calls = local_sweep
    assert isinstance(results, list) and all(isinstance(r, dict) for r in results)
    assert not results.interrupted
    total = len(GRID["learning_rate"]) * len(GRID["n_embd"]) * REPEAT
    assert len(results) == total
    assert [done for _, done, _ in calls] == list(range(1, total + 1))
    assert {t for _, _, t in calls} == {total}
    # called as each run finished, in the order of the returned list
    assert [r for r, _, _ in calls] == list(results)


def test_thread_pool_executor_gives_same_results(local_sweep):
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        threaded = sweep.run(GRID, repeat=REPEAT, fixed=FIXED, executor=pool)
    assert without_seconds(threaded) == without_seconds(local_sweep[0])


class FakeFuture(cf.Future):
    def __init__(self, result):
        super().__init__()
        self.set_result(result)


class ReturnsNoLoss:
    """An executor whose runs say "ok" without a loss (as a stale worker's might)."""

    def submit(self, fn, task):
        return FakeFuture({**blank_result(task), "seconds": 0.0})


def test_an_ok_run_always_has_a_float_loss():
    results = sweep.run({"learning_rate": [0.01, 0.03]}, fixed={"steps": 2},
                        executor=ReturnsNoLoss())
    assert len(results) == 2
    for r in results:
        assert r["status"] == "error" and r["tail_loss"] is None, r
        assert r["error"] == "the run reported no tail loss"
    assert all(row["tail_loss"] is None for row in sweep.summarize(results))


class FakeDaskClient:
    """What run() uses of a dask.distributed Client: get_executor(). Its runs note
    whether the distributed library would print an error (a traceback when the
    scheduler dies) while the sweep goes."""

    def __init__(self):
        self.pool = cf.ThreadPoolExecutor(max_workers=1)
        self.would_log = []

    def get_executor(self):
        client = self

        class Executor:
            def submit(self, fn, task):
                client.would_log.append([logging.getLogger(name).isEnabledFor(logging.ERROR)
                                         for name in ("distributed", "distributed.client")])
                return client.pool.submit(fn, task)

        return Executor()


def test_dask_library_logs_silenced_during_the_sweep_only():
    """A failed run is one line of the table, not also distributed's own traceback."""
    loggers = [logging.getLogger(name) for name in ("distributed", "distributed.client")]
    saved = [logger.level for logger in loggers]
    loggers[1].setLevel(logging.WARNING)  # as distributed's config sets it
    client = FakeDaskClient()
    try:
        results = sweep.run({"learning_rate": [0.01, 0.03]}, fixed={"steps": 2},
                            executor=client)
        after = [logger.level for logger in loggers]
    finally:
        client.pool.shutdown()
        for logger, level in zip(loggers, saved):
            logger.setLevel(level)
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert client.would_log == [[False, False]] * 2
    assert after == [saved[0], logging.WARNING]


@pytest.fixture(scope="module")
def dask_cluster():
    """One LocalCluster (2 worker processes) for both Dask tests: starting one costs
    about a second, and neither test depends on the workers being fresh (every run
    starts its model from the seed)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        yield distributed, cluster


def test_dask_local_cluster_gives_same_results(local_sweep, dask_cluster):
    distributed, cluster = dask_cluster
    with distributed.Client(cluster) as client:
        on_dask = sweep.run(GRID, repeat=REPEAT, fixed=FIXED, executor=client)
    assert without_seconds(on_dask) == without_seconds(local_sweep[0])


def test_cli_dask_scheduler_gives_same_results_as_local_pool(tmp_path, local_sweep,
                                                             dask_cluster):
    """--dask ADDRESS sends the runs to a running scheduler (here a LocalCluster's)."""
    _, cluster = dask_cluster
    grid = [f"--grid={k}={','.join(map(str, v))}" for k, v in GRID.items()]
    flags = grid + ["--repeat", REPEAT, "--steps", FIXED["steps"], "--seed", FIXED["seed"],
                    "--val-fraction", FIXED["val_fraction"]]
    result = ok(run_sweep(flags + ["--dask", cluster.scheduler_address,
                                   "--json", "dask.json"], cwd=tmp_path))
    assert f"on Dask scheduler {cluster.scheduler_address}" in result.stderr
    runs = json.loads((tmp_path / "dask.json").read_text())["runs"]
    assert without_seconds(runs) == without_seconds(local_sweep[0])


def test_cli_dask_without_distributed_is_one_line_error(tmp_path):
    env = env_without(tmp_path, "distributed")
    result = run_sweep(["--grid", "learning_rate=0.01", "--steps", "5", "--dask",
                            "tcp://127.0.0.1:8786"], cwd=tmp_path, env=env)
    assert_one_line_error(result, "pip install", "dask")


# ---------------------------------------------------------------------------
# The command line: failures reported, table, JSON, CSV

# Sorted by tail loss these four come out 0.01, 0.03, 0.1, 0.003 (not grid order);
# 1e300 diverges in float64 and n_head=3 does not divide n_embd=16.
FAIL_ARGS = ["--grid", "learning_rate=0.003,0.01,0.03,0.1,1e300", "--grid", "n_head=4,3",
             "--repeat", "2", "--steps", "40", "--workers", "2"]


@pytest.fixture(scope="module")
def failing_cli(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    result = run_sweep(FAIL_ARGS + ["--json", "a.json", "--csv", "a.csv"], cwd=tmp)
    return result, json.loads((tmp / "a.json").read_text()), tmp / "a.csv"


def test_failing_runs_are_reported_not_fatal(failing_cli):
    result, record, _ = failing_cli
    ok(result)
    runs = record["runs"]
    assert len(runs) == 20
    for r in runs:
        lr, heads = r["setting"]["learning_rate"], r["setting"]["n_head"]
        if heads == 3:
            assert r["status"] == "error", r
            assert "divisible" in r["error"] and "\n" not in r["error"], r
        elif lr == 1e300:
            assert r["status"] == "diverged", r
            assert r["error"] and "step" in r["error"], r
        else:
            assert r["status"] == "ok" and r["error"] is None, r
            assert math.isfinite(r["tail_loss"])
        if r["status"] != "ok":
            assert r["tail_loss"] is None and r["val_loss"] is None
    # the table lists each failure in its note column, failed settings last
    header, rows, summary = table(result.stdout)
    assert header[-1] == "note"
    assert [row[header.index("runs")] for row in rows[:4]] == ["2/2"] * 4
    notes = [row[-1] for row in rows[4:]]
    assert len(notes) == 6
    assert all(row[header.index("runs")] == "0/2" for row in rows[4:])
    assert sum(n.startswith("diverged: ") for n in notes) == 1
    assert sum(n.startswith("error: ") and "divisible" in n for n in notes) == 5
    assert all(len(row) == len(header) - 1 for row in rows[:4])  # ok rows: no note
    match = SUMMARY.match(summary)
    assert match and match.groups() == ("20", "20", "8", "12", None), summary


def test_table_sorted_by_tail_loss_without_validation(failing_cli):
    result, record, _ = failing_cli
    _, rows, _ = table(result.stdout)
    lrs = [float(row[1]) for row in rows[:4]]
    assert lrs == [0.01, 0.03, 0.1, 0.003]
    finals = [s["tail_loss"] for s in record["settings"][:4]]
    assert finals == sorted(finals)
    assert all(s["tail_loss"] is None for s in record["settings"][4:])


def check_summary_matches_runs(result, record, loss_keys):
    """Table rows = JSON settings, in order; mean and sample sd over the ok runs."""
    header, rows, _ = table(result.stdout)
    assert len(rows) == len(record["settings"])
    for row, summary in zip(rows, record["settings"]):
        for i, name in enumerate(record["swept"]):
            value = summary["setting"][name]
            assert row[1 + i] == (f"{value:.4g}" if isinstance(value, float) else str(value))
        runs = [r for r in record["runs"] if r["setting"] == summary["setting"]]
        good = [r for r in runs if r["status"] == "ok"]
        assert summary["runs"] == len(runs) and summary["ok"] == len(good)
        assert row[header.index("runs")] == f"{len(good)}/{len(runs)}"
        for key, column in loss_keys:
            values = [r[key] for r in good]
            if not values:
                assert summary[key] is None and row[header.index(column)] == "-"
                continue
            mean = statistics.fmean(values)
            assert summary[key] == pytest.approx(mean, rel=1e-12, abs=1e-15)
            if len(values) < 2:  # one seed has no spread to show
                assert summary[key + "_sd"] is None
                assert row[header.index(column)] == f"{mean:.4f}"
                continue
            sd = statistics.stdev(values)
            assert summary[key + "_sd"] == pytest.approx(sd, rel=1e-9, abs=1e-15)
            assert row[header.index(column)] == f"{mean:.4f} ± {sd:.4f}"


def test_one_seed_shows_no_spread():
    """A spread needs two seeds: one seed's row shows its loss alone, not ± 0."""
    def run(i, seed, loss):
        return {"id": i, "setting": {"n_embd": 8 * (1 + (i > 0))}, "seed": seed,
                "status": "ok", "tail_loss": loss, "val_loss": None, "seconds": 0.1,
                "error": None}
    rows = sweep.summarize([run(0, 42, 2.5), run(1, 42, 2.25), run(2, 43, 2.75)])
    one, two = (next(r for r in rows if r["setting"]["n_embd"] == n) for n in (8, 16))
    assert one["tail_loss"] == 2.5 and one["tail_loss_sd"] is None
    assert two["tail_loss"] == 2.5 and two["tail_loss_sd"] == pytest.approx(0.25 * 2 ** 0.5)
    lines = {ln.split()[1]: ln for ln in sweep.format_table(rows, ["n_embd"]).splitlines()[2:]}
    assert "2.5000" in lines["8"] and "±" not in lines["8"]
    assert "2.5000 ± 0.3536" in lines["16"]


def test_mean_and_spread_match_runs(failing_cli):
    result, record, _ = failing_cli
    check_summary_matches_runs(result, record, [("tail_loss", "tail loss")])


def test_json_holds_every_run(failing_cli):
    _, record, _ = failing_cli
    assert record["swept"] == ["learning_rate", "n_head"]
    assert record["fixed"] == {"steps": 40}
    assert record["interrupted"] is False
    runs = record["runs"]
    assert [r["id"] for r in runs] == list(range(20))
    for r in runs:
        assert RUN_KEYS <= set(r), r
        assert r["seed"] in (42, 43)
        assert r["seconds"] is not None and r["seconds"] >= 0
    points = {(r["setting"]["learning_rate"], r["setting"]["n_head"], r["seed"]) for r in runs}
    assert len(points) == 20
    assert len(record["settings"]) == 10
    for s in record["settings"]:
        assert {"setting", "runs", "ok", "tail_loss", "tail_loss_sd", "val_loss",
                "val_loss_sd", "seconds_per_run", "failure"} <= set(s)


def test_csv_one_row_per_run(failing_cli):
    _, record, csv_path = failing_cli
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "seed", "learning_rate", "n_head", "status", "tail_loss",
                       "val_loss", "seconds", "error"]
    assert len(rows) == 1 + len(record["runs"])
    for row, run in zip(rows[1:], record["runs"]):
        assert int(row[0]) == run["id"] and int(row[1]) == run["seed"]
        assert float(row[2]) == run["setting"]["learning_rate"]
        assert int(row[3]) == run["setting"]["n_head"]
        assert row[4] == run["status"]
        assert row[5] == ("" if run["tail_loss"] is None else repr(run["tail_loss"]))
        assert row[6] == ""
        assert row[8] == (run["error"] or "")


def test_table_sorted_by_validation_loss(tmp_path):
    """With a validation split the rank follows val loss, which here orders the
    settings differently from tail loss."""
    result = ok(run_sweep(["--grid", "learning_rate=0.003,0.01,0.03,0.1", "--repeat", "2",
                               "--steps", "40", "--val-fraction", "0.2", "--workers", "2",
                               "--json", "b.json"], cwd=tmp_path))
    record = json.loads((tmp_path / "b.json").read_text())
    settings = record["settings"]
    vals = [s["val_loss"] for s in settings]
    assert vals == sorted(vals)
    finals = [s["tail_loss"] for s in settings]
    assert finals != sorted(finals)  # else this test could not tell the two orders apart
    _, rows, summary = table(result.stdout)
    assert [float(row[1]) for row in rows] == [s["setting"]["learning_rate"] for s in settings]
    assert all(r["status"] == "ok" and r["val_loss"] is not None for r in record["runs"])
    check_summary_matches_runs(result, record, [("tail_loss", "tail loss"),
                                                ("val_loss", "val loss")])
    assert SUMMARY.match(summary).groups() == ("8", "8", "8", "0", None)
    # stderr on a pipe: no live progress line (its tty counterpart is below)
    assert "\r" not in result.stderr and "[1/8]" not in result.stderr, result.stderr


def test_script_without_main_guard(tmp_path):
    """The README's example, saved as a script without `if __name__ == "__main__"`:
    the workers are fresh interpreters that never import the caller's __main__."""
    script = tmp_path / "my_sweep.py"
    script.write_text(
        "from microgpt_fast import sweep\n"
        "results = sweep.run({'learning_rate': [0.003, 0.01, 0.03]}, repeat=3,"
        " fixed={'steps': 50})\n"
        "for row in sweep.summarize(results):\n"
        "    print(row['setting'], row['tail_loss'], row['tail_loss_sd'])\n")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=60)
    ok(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and "None" not in result.stdout, result.stdout
    for line in lines:
        setting, final, sd = line.rsplit(" ", 2)
        assert math.isfinite(float(final)) and float(sd) > 0, line


def test_files_written_when_stdout_reader_is_gone(tmp_path):
    """`sweep ... | head -1`: the table meets a closed pipe; the files are still written."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away before the table was printed
    try:
        result = subprocess.run(
            [sys.executable, "-m", "microgpt_fast.sweep", "--grid", "learning_rate=0.01,0.03",
             "--steps", "20", "--workers", "2", "--json", "p.json", "--csv", "p.csv"],
            cwd=tmp_path, env=cli_env(), stdout=write_end, stderr=subprocess.PIPE, text=True,
            timeout=60)
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    runs = json.loads((tmp_path / "p.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["ok", "ok"]
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 3


def test_plot_without_matplotlib_is_one_line_error(tmp_path):
    env = env_without(tmp_path, "matplotlib")
    result = run_sweep(["--grid", "learning_rate=0.01", "--steps", "5", "--plot", "s.png"],
                           cwd=tmp_path, env=env)
    assert_one_line_error(result, "pip install", "--plot")
    assert not (tmp_path / "s.png").exists()


# ---------------------------------------------------------------------------
# Bad input: one line, exit 2 (CLI); SweepError, a ValueError (API)

BAD_ARGS = {
    "grid-no-equals": (["--grid", "learning_rate"], ["learning_rate"]),
    "grid-no-values": (["--grid", "learning_rate="], ["learning_rate"]),
    "grid-empty-value": (["--grid", "learning_rate=0.1,,0.2"], ["learning_rate"]),
    "grid-unknown-field": (["--grid", "nope=1,2"], ["nope"]),
    "grid-not-int": (["--grid", "n_embd=1.5"], ["n_embd", "1.5"]),
    "range-low-above-high": (["--range", "learning_rate=1:0.1", "--random", "2"],
                             ["learning_rate"]),
    "range-log-from-zero": (["--range", "learning_rate=0:1:log", "--random", "2"],
                            ["learning_rate"]),
    "range-bad-scale": (["--range", "learning_rate=0.1:1:cubic", "--random", "2"],
                        ["learning_rate"]),
    "range-without-random": (["--range", "learning_rate=0.1:1"], ["--random"]),
    "random-without-range": (["--random", "5"], ["--range"]),
    "nothing-to-sweep": ([], ["--grid"]),
    "workers-0": (["--grid", "learning_rate=0.01", "--workers", "0"], ["--workers"]),
    "repeat-0": (["--grid", "learning_rate=0.01", "--repeat", "0"], ["repeat"]),
    "missing-data": (["--grid", "learning_rate=0.01", "--data", "missing.txt"],
                     ["missing.txt"]),
    # an int field takes what int() parses, not 1e30 as some 31-digit seed
    "grid-int-exponent": (["--grid", "seed=1,1e30"], ["seed", "1e30"]),
    "grid-int-fraction": (["--grid", "n_embd=16,32.5"], ["n_embd", "32.5"]),
    "grid-int-1e3": (["--grid", "n_embd=1e3"], ["n_embd", "1e3"]),
    # output paths are checked before the runs, not when writing after them
    "json-names-folder": (["--grid", "learning_rate=0.01", "--json", "newdir/"],
                          ["--json", "newdir/"]),
    "json-folder-missing": (["--grid", "learning_rate=0.01", "--json", "newdir/s.json"],
                            ["--json", "newdir"]),
    "csv-folder-missing": (["--grid", "learning_rate=0.01", "--csv", "newdir/s.csv"],
                           ["--csv", "newdir"]),
    "plot-unknown-format": (["--grid", "learning_rate=0.01", "--plot", "out.xyz"],
                            ["--plot", ".xyz"]),
    "plot-no-suffix": (["--grid", "learning_rate=0.01", "--plot", "out"], ["--plot", "out.png"]),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_cli_bad_input_is_one_line_error(tmp_path, case):
    args, words = BAD_ARGS[case]
    assert_one_line_error(call_main(sweep.main, args + ["--steps", "5"], cwd=tmp_path), *words)
    assert os.listdir(tmp_path) == []  # no output file, nor a folder for one


def test_cli_unknown_kernel_from_environment_is_one_line_error(tmp_path):
    """Once, before the runs, not as a failure of every run."""
    result = run_sweep(["--grid", "learning_rate=0.01,0.03", "--steps", "5"], cwd=tmp_path,
                           env=cli_env(MICROGPT_FAST_KERNEL="bogus"))
    assert_one_line_error(result, "kernel", "bogus")


def test_api_unknown_kernel_from_environment_raises(monkeypatch):
    monkeypatch.setenv("MICROGPT_FAST_KERNEL", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        sweep.run({"steps": [2]}, workers=1)


def test_cli_every_run_failing_exits_1(tmp_path):
    """n_embd 16 is divisible by neither 3 nor 5: the table, and exit code 1."""
    result = run_sweep(["--grid", "n_head=3,5", "--n-embd", "16", "--steps", "5",
                            "--workers", "2", "--json", "f.json"], cwd=tmp_path, timeout=60)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == "error: all 2 runs failed", result.stderr
    _, rows, summary = table(result.stdout)
    assert [row[2] for row in rows] == ["0/1", "0/1"]
    assert SUMMARY.match(summary).groups() == ("2", "2", "0", "2", None)
    runs = json.loads((tmp_path / "f.json").read_text())["runs"]
    assert all(r["status"] == "error" and "divisible" in r["error"] for r in runs)


def test_cli_invalid_value_of_a_run_is_a_failed_run(tmp_path):
    """dtype=float16 passes the grid's syntax; the run itself rejects it."""
    result = run_sweep(["--grid", "dtype=float16,float64", "--steps", "5", "--workers", "2",
                            "--json", "d.json"], cwd=tmp_path)
    ok(result)
    record = json.loads((tmp_path / "d.json").read_text())
    runs = {r["setting"]["dtype"]: r for r in record["runs"]}
    assert runs["float16"]["status"] == "error"
    assert "dtype" in runs["float16"]["error"] and "float16" in runs["float16"]["error"]
    assert runs["float64"]["status"] == "ok"
    _, rows, _ = table(result.stdout)
    assert rows[-1][1] == "float16" and rows[-1][-1].startswith("error: ")


@pytest.mark.parametrize("call", [
    lambda: sweep.parse_grid(["learning_rate"]),
    lambda: sweep.parse_grid(["learning_rate="]),
    lambda: sweep.parse_grid(["learning_rate=0.1,,0.2"]),
    lambda: sweep.parse_grid(["nope=1,2"]),
    lambda: sweep.parse_grid(["n_embd=1.5"]),
    lambda: sweep.parse_grid(["seed=1e30"]),
    lambda: sweep.parse_grid(["steps=5", "steps=6"]),
    lambda: sweep.parse_ranges(["learning_rate=1:0.1"]),
    lambda: sweep.parse_ranges(["learning_rate=0:1:log"]),
    lambda: sweep.parse_ranges(["learning_rate=0.1:1:cubic"]),
    lambda: sweep.parse_ranges(["dtype=a:b"]),
    lambda: sweep.make_settings(ranges={"learning_rate": (0.1, 1.0, "lin")}),
    lambda: sweep.make_settings({"steps": [5]}, n_random=5),
    lambda: sweep.make_settings({"steps": [5]}, {"steps": (1, 5, "lin")}, n_random=2),
    lambda: sweep.run({"nope": [1]}),
    lambda: sweep.run({"steps": [5]}, fixed={"threads": 2}),
    lambda: sweep.run({"steps": [5]}, repeat=0),
], ids=["grid-no-equals", "grid-no-values", "grid-empty-value", "grid-unknown-field",
        "grid-not-int", "grid-int-exponent", "grid-field-twice", "range-low-above-high",
        "range-log-from-zero", "range-bad-scale", "range-not-numeric", "range-without-random",
        "random-without-range", "grid-and-range", "run-unknown-field", "run-unknown-fixed",
        "run-repeat-0"])
def test_api_bad_input_raises_sweep_error(call):
    with pytest.raises(sweep.SweepError) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("ranges", [
    {"learning_rate": (1.0, 0.1, "lin")},
    {"learning_rate": (0.0, 1.0, "log")},
    {"learning_rate": (0.1, 1.0, "cubic")},
], ids=["low-above-high", "log-from-zero", "bad-scale"])
def test_api_run_rejects_invalid_ranges(ranges):
    """run() takes ranges as a dict; the checks that --range gets must hold there too."""
    with cf.ThreadPoolExecutor(max_workers=1) as pool:  # cheap if the sweep does start
        with pytest.raises(sweep.SweepError):
            sweep.run(ranges=ranges, n_random=2, fixed={"steps": 2}, executor=pool)


# ---------------------------------------------------------------------------
# Random search

def test_random_draws_inside_ranges_deterministic_per_search_seed():
    ranges = sweep.parse_ranges(["learning_rate=1e-4:1e-1:log", "n_layer=1:4",
                                 "beta2=0.9:0.999", "n_embd=8:64:log"])
    assert ranges["n_layer"] == (1, 4, "lin") and ranges["learning_rate"][2] == "log"
    draws = sweep.make_settings(ranges=ranges, n_random=200, search_seed=3)
    assert len(draws) == 200
    for d in draws:
        assert 1e-4 <= d["learning_rate"] <= 1e-1 and d["learning_rate"] > 0
        assert 0.9 <= d["beta2"] <= 0.999
        assert type(d["n_layer"]) is int and 1 <= d["n_layer"] <= 4
        assert type(d["n_embd"]) is int and 8 <= d["n_embd"] <= 64
    assert {d["n_layer"] for d in draws} == {1, 2, 3, 4}
    # log-uniform: about half of the draws below the geometric midpoint 1e-2.5
    below = sum(d["learning_rate"] < 10 ** -2.5 for d in draws)
    assert 60 <= below <= 140, below
    assert sweep.make_settings(ranges=ranges, n_random=200, search_seed=3) == draws
    assert sweep.make_settings(ranges=ranges, n_random=200, search_seed=4) != draws


def test_cli_random_search_crossed_with_grid(tmp_path):
    """Also --plot (where matplotlib is installed): one of these sweeps draws its
    figure, which spares a sweep of its own."""
    args = ["--random", "3", "--range", "learning_rate=1e-3:1e-1:log", "--range", "n_layer=1:2",
            "--grid", "n_head=2,4", "--steps", "20", "--workers", "2"]
    plot = ["--plot", "s.png"] if importlib.util.find_spec("matplotlib") else []
    ok(run_sweep(args + ["--search-seed", "5", "--json", "r5.json"], cwd=tmp_path))
    ok(run_sweep(args + ["--search-seed", "6", "--json", "r6.json"] + plot, cwd=tmp_path))
    if plot:
        assert (tmp_path / "s.png").read_bytes()[:8] == PNG
    runs5 = json.loads((tmp_path / "r5.json").read_text())["runs"]
    runs6 = json.loads((tmp_path / "r6.json").read_text())["runs"]
    assert len(runs5) == len(runs6) == 2 * 3
    ranges = {"learning_rate": (1e-3, 1e-1, "log"), "n_layer": (1, 2, "lin")}
    expected = sweep.make_settings({"n_head": [2, 4]}, ranges, n_random=3, search_seed=5)
    assert [r["setting"] for r in runs5] == expected
    assert all(r["status"] == "ok" for r in runs5 + runs6)
    assert [r["setting"] for r in runs6] != expected
    # the same three draws under each grid point
    draws = [{k: v for k, v in r["setting"].items() if k != "n_head"} for r in runs5]
    assert draws[:3] == draws[3:] and len({json.dumps(d) for d in draws}) == 3


# ---------------------------------------------------------------------------
# The local worker processes: a dead one, Ctrl-C, SIGTERM, SIGHUP

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/task"),
                                reason="finds the worker processes in Linux's /proc")


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_pids(pid: int) -> list[int]:
    """The sweep worker processes among pid's children."""
    children = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                children += [int(child) for child in f.read().split()]
        except OSError:
            pass  # the thread ended
    return [child for child in children if "microgpt_fast.sweep.worker" in cmdline(child)]


def running_worker(pid: int) -> bool:
    """pid is a sweep worker still running (a zombie has no command line)."""
    return "microgpt_fast.sweep.worker" in cmdline(pid)


def wait_for_workers(proc, count: int, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before its workers were seen"
        pids = worker_pids(proc.pid)
        if len(pids) >= count:
            return pids
        time.sleep(0.02)
    raise AssertionError(f"no {count} worker processes after {timeout} s")


def start_sweep(args, cwd) -> subprocess.Popen:
    """The sweep CLI in its own process group, with the default action of the
    signals the test sends (a shell that runs pytest in the background ignores
    SIGINT; nohup ignores SIGHUP)."""

    def default_signals():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)

    return subprocess.Popen([sys.executable, "-m", "microgpt_fast.sweep", *map(str, args)],
                            cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_signals)


def end_sweep(proc) -> tuple[str, str]:
    """Leave nothing of this sweep to the rest of the suite; (stdout, stderr)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.communicate(timeout=30)


@needs_proc
def test_a_killed_worker_fails_only_its_run(tmp_path):
    """kill -9 of one worker: the run it held is a failed run naming it, a new
    worker takes its place and every other run finishes; exit code 0."""
    rates = ",".join(f"0.00{i}" for i in range(1, 9))
    proc = start_sweep(["--grid", f"learning_rate={rates}", "--repeat", "2", "--steps", "20000",
                        *SMALL, "--workers", "2", "--json", "k.json"], tmp_path)
    try:
        first = wait_for_workers(proc, 2)
        time.sleep(0.3)  # into its first run (some 0.15 s each, 16 runs)
        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        replacements = []
        while proc.poll() is None and not replacements:
            replacements = [pid for pid in worker_pids(proc.pid) if pid not in first]
            time.sleep(0.01)
        proc.wait(timeout=60)
    finally:
        out, err = end_sweep(proc)
    assert proc.returncode == 0, (proc.returncode, err)
    assert "Traceback" not in err, err
    assert replacements, "no new worker after the kill"
    runs = json.loads((tmp_path / "k.json").read_text())["runs"]
    assert len(runs) == 16
    failed = [r for r in runs if r["status"] != "ok"]
    assert len(failed) == 1, failed
    assert failed[0]["status"] == "error"
    assert failed[0]["error"] == f"worker process {victim} died (killed by signal 9)"
    assert failed[0]["tail_loss"] is None
    assert all(isinstance(r["tail_loss"], float) for r in runs if r["status"] == "ok")
    assert SUMMARY.match(out.splitlines()[-1]).groups() == ("16", "16", "15", "1", None), out


@needs_proc
@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_signal_stops_at_once_keeps_finished_runs_and_no_workers(tmp_path, signame, code):
    """Within a second: the workers killed, the finished runs printed and written."""
    total = 300
    proc = start_sweep(["--grid", "learning_rate=0.01", "--repeat", total, "--steps", "3000",
                        "--workers", "2", "--json", "i.json"], tmp_path)
    try:
        workers = wait_for_workers(proc, 2)
        time.sleep(0.5)  # some runs finish (about 0.07 s each)
        assert proc.poll() is None, "the sweep ended before the signal; make it longer"
        sent = time.monotonic()
        if signame == "SIGINT":  # a terminal's Ctrl-C signals the whole foreground group
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(getattr(signal, signame))
        proc.wait(timeout=30)  # not communicate(): orphaned workers could hold pipes open
        took = time.monotonic() - sent
    finally:
        out, err = end_sweep(proc)
    assert proc.returncode == code, (proc.returncode, err)
    assert took < 1.0, f"{took:.2f} s from {signame} to the end of the sweep"
    assert "Traceback" not in err, err
    left = [pid for pid in workers if running_worker(pid)]
    assert not left, f"workers left running after the sweep exited: {left}"
    match = SUMMARY.match(out.splitlines()[-1])
    assert match, out
    done = int(match.group(1))
    assert 1 <= done < total and int(match.group(2)) == total and match.group(5), out
    record = json.loads((tmp_path / "i.json").read_text())
    assert record["interrupted"] is True
    assert len(record["runs"]) == done
    assert all(r["status"] == "ok" and r["tail_loss"] is not None for r in record["runs"])
    assert len({r["id"] for r in record["runs"]}) == done


# ---------------------------------------------------------------------------
# The live progress line: on a terminal only

SWEEP = [sys.executable, "-m", "microgpt_fast.sweep", "--grid", "learning_rate=0.003,0.01,0.03",
         "--repeat", "2", "--steps", "50", "--workers", "2"]


def test_progress_line_on_a_terminal(tmp_path):
    code, err, out = run_on_tty(SWEEP, tmp_path)
    assert code == 0, err
    lines = re.findall(rb"\r\x1b\[K\[(\d+)/6\] \d+\.\d s \| best \d\.\d{4} learning_rate=", err)
    assert [int(n) for n in lines] == list(range(1, 7)), err
    assert "6 of 6 runs" in out


def test_no_progress_line_with_flag(tmp_path):
    """--no-progress on a terminal; stderr on a pipe (no flag) is checked on the
    sweep of test_table_sorted_by_validation_loss."""
    code, err, out = run_on_tty(SWEEP + ["--no-progress"], tmp_path)
    assert code == 0 and b"\x1b[K" not in err and b"[1/6]" not in err, err
