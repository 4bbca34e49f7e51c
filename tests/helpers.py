"""Helpers shared by the tests: tolerances, the CLI runner, test data."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from microgpt_fast.config import param_layout
from microgpt_fast.kernels import BY_NAME_ONLY, available_kernels, profiling_built

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).resolve().parent / "data"

# Every kernel variant built here and runnable on this CPU (least vectorized first).
KERNELS = available_kernels()
# avx512_bf16 rounds the float32 inputs of the linear layers' products to bfloat16:
# the tests of float32 against the reference at float32's precision take the
# others, and tests/test_bf16.py checks it at its own.
F32_KERNELS = [k for k in KERNELS if k not in BY_NAME_ONLY]


def precisions(f64_tol: float, f32_tol: float) -> list[tuple[str, str, float]]:
    """(kernel, dtype, tolerance): every kernel in float64, F32_KERNELS in float32."""
    return ([(k, "float64", f64_tol) for k in KERNELS]
            + [(k, "float32", f32_tol) for k in F32_KERNELS])

# Their profiling builds ("<variant>_prof") come only with an install under
# MICROGPT_FAST_PROFILE=1; the tests that use them skip without.
needs_profiling = pytest.mark.skipif(
    not profiling_built(KERNELS),
    reason="the profiling builds (<variant>_prof) are not built: "
           "install with MICROGPT_FAST_PROFILE=1 pip install -e . to run this test")

# Documents with non-ASCII characters, some longer than any block_size used in
# the tests (so that truncation to block_size is exercised), some one character.
UNICODE_DOCS = [
    "héllo wörld",
    "ab",
    "x",
    "naïve café au lait, s'il vous plaît",
    "日本語のテキスト",
    "ßtraße",
    "ok",
    "emoji 🙂 here",
    "zzzzzzzzzzzzzzzzzzzzzz",
    "Ωmega",
    "q",
]


def with_row_stride(b: np.ndarray, stride_bytes: int) -> np.ndarray:
    """b's numbers as a view whose rows lie stride_bytes apart (the first columns
    of a wider array, NaN past them), as a weight matrix's rows in the parameters."""
    K, N = b.shape
    wide = np.full((K, stride_bytes // b.itemsize), np.nan, b.dtype)
    wide[:, :N] = b
    return wide[:, :N]


def per_matrix_error(cfg, actual, expected) -> dict[str, float]:
    """Per parameter matrix: max |actual - expected| / max |expected| (floored at 1e-30)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape == (cfg.num_params,)
    errors, offset = {}, 0
    for name, rows, cols in param_layout(cfg):
        a = actual[offset:offset + rows * cols]
        e = expected[offset:offset + rows * cols]
        offset += rows * cols
        errors[name] = float(np.max(np.abs(a - e)) / max(float(np.max(np.abs(e))), 1e-30))
    return errors


def assert_matrices_close(cfg, actual, expected, tol: float, what: str = "gradient"):
    errors = per_matrix_error(cfg, actual, expected)
    bad = {name: err for name, err in errors.items() if not err <= tol}
    assert not bad, f"{what} error above {tol:g} in {bad} (all: {errors})"


def rel_close(actual, expected, tol: float) -> np.ndarray:
    """Elementwise |a - e| <= tol * max(|e|, 1): relative, absolute near zero."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    return np.abs(actual - expected) <= tol * np.maximum(np.abs(expected), 1.0)


def cli_env(**extra) -> dict:
    """Environment for a CLI subprocess that imports the in-place build."""
    env = dict(os.environ)
    env.pop("MICROGPT_FAST_KERNEL", None)
    env.pop("OMP_NUM_THREADS", None)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


def run_command(command: str, args, cwd, env=None, timeout=120) -> subprocess.CompletedProcess:
    """python -m microgpt_fast.COMMAND ARGS in cwd, with the in-place build; a hang
    past timeout seconds fails the test instead of stalling the suite."""
    return subprocess.run(
        [sys.executable, "-m", f"microgpt_fast.{command}", *map(str, args)],
        cwd=cwd, env=env if env is not None else cli_env(), capture_output=True,
        text=True, timeout=timeout,
    )


def run_main_or_process(command: str, args, cwd, env, timeout) -> subprocess.CompletedProcess:
    """The command's main(ARGS) in this process, which spares the suite a new
    interpreter per run; a real process when the test gives an environment or
    a timeout: what only a process shows (its environment, a hang cut short)."""
    if env is None and timeout is None:
        module = importlib.import_module(f"microgpt_fast.{command}")
        return call_main(module.main, args, cwd)
    return run_command(command, args, cwd, env, timeout or 120)


def run_cli(args, cwd, env=None, timeout=None) -> subprocess.CompletedProcess:
    """python -m microgpt_fast.train ARGS (see run_main_or_process)."""
    return run_main_or_process("train", args, cwd, env, timeout)


def run_sample(args, cwd, env=None, timeout=None) -> subprocess.CompletedProcess:
    """python -m microgpt_fast.sample ARGS (see run_main_or_process)."""
    return run_main_or_process("sample", args, cwd, env, timeout)


def run_sweep(args, cwd, env=None, timeout=120) -> subprocess.CompletedProcess:
    return run_command("sweep", args, cwd, env, timeout)


def run_bench(args, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    return run_command("bench", args, cwd, env, timeout)


def call_main(main, args, cwd) -> subprocess.CompletedProcess:
    """A command's main(ARGS) called in this process, in cwd: its exit code and
    what it printed, as run_cli gives them. For the many bad-input cases, each of
    which fails before any work: a new interpreter per case would cost more than
    the case (the subprocess tests cover the command run for real)."""
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse's own errors
                code = exc.code
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


# A small model for CLI runs that only need a few quick steps.
SMALL = ["--n-embd", "8", "--n-head", "2", "--block-size", "8"]


def assert_cli_error(result, *words, code: int = 2) -> str:
    """The run failed with exit code `code` and exactly one stderr line, an `error:`
    line without a traceback that holds each of words; returns that line."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"stderr: {result.stderr!r}"
    assert "error:" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def env_without(tmp_path, module: str) -> dict:
    """cli_env() with a stand-in for an optional module, first on the path, that
    fails to import (as when the extra providing it is not installed)."""
    hide = Path(tmp_path) / "hide"
    hide.mkdir(exist_ok=True)
    (hide / f"{module}.py").write_text("raise ImportError('hidden for the test')\n")
    env = cli_env()
    env["PYTHONPATH"] = f"{hide}:{env['PYTHONPATH']}"
    return env


def interrupt_training(args, cwd, seconds: float, sig=signal.SIGINT) -> tuple[int, str, str]:
    """Start `python -m microgpt_fast.train ARGS`, wait for its header and then
    `seconds` more, send sig; returns (exit code, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "microgpt_fast.train", *map(str, args)],
                            cwd=cwd, env=cli_env(PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        header = []
        while not any(line.startswith("num params") for line in header):
            line = proc.stdout.readline()
            assert line, f"no header; stderr: {proc.stderr.read()}"
            header.append(line)
        time.sleep(seconds)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(header) + stdout, stderr


def run_on_tty(cmd, cwd, timeout=60) -> tuple[int, bytes, str]:
    """Run cmd with stderr on a pseudo-terminal: (exit code, stderr bytes, stdout)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=cwd, env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        stdout = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, b"".join(chunks), stdout.decode()


def rewrite_checkpoint(source, target, meta_change=None, **arrays):
    """A copy of checkpoint source with its meta changed and arrays replaced:
    meta_change is a dict of top-level fields to set, or a function that edits
    the meta dict in place (an older checkpoint's missing fields, say)."""
    with np.load(source) as npz:
        parts = dict(npz)
    meta = json.loads(str(parts["meta"][()]))
    if callable(meta_change):
        meta_change(meta)
    else:
        meta.update(meta_change or {})
    parts["meta"] = np.array(json.dumps(meta))
    parts.update(arrays)
    with open(target, "wb") as f:
        np.savez(f, **parts)
    return target
