"""The benchmark command runs, prints its table, and writes JSON and CSV."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from microgpt_fast import bench
from microgpt_fast.kernels import VARIANTS, KernelError, available_kernels, load_kernel

from helpers import assert_cli_error, call_main, env_without, needs_profiling, run_bench

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


def test_bench_unknown_variant_is_one_line_error(tmp_path):
    result = run_bench(["--variants", "nope"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown kernel" in result.stderr


def test_bench_plot(tmp_path):
    pytest.importorskip("matplotlib")
    result = run_bench(QUICK + ["--no-exact", "--plot", "b.png"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
    window of 16 predictions (the default block); lines of the play average fewer."""
    result = run_bench(QUICK + ["--data", "shakespeare", "--no-exact", "--json", "b.json"],
                       tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["engine"] for r in rows] == ["reference", "generic"]
    for r in rows:  # positions per document = tokens/s x s/doc
        assert r["tokens_per_s"] * r["us_per_doc"] / 1e6 == pytest.approx(16)
