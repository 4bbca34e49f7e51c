"""Hostile input: special files, memory limits, closed pipes, signals, divergence,
malformed datasets. Every failure is one `error:` line and a non-zero exit,
never a hang, a crash inside compiled code or a lost file.

Subprocess runs carry a timeout, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from microgpt_fast import load_checkpoint, train
from microgpt_fast.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from microgpt_fast.config import GPTConfig, TrainConfig
from microgpt_fast.trainer import Trainer, TrainingDiverged

from helpers import (SMALL, assert_cli_error, call_main, cli_env, interrupt_training,
                     rewrite_checkpoint, run_cli, run_sample)

QUICK = SMALL + ["--steps", "5", "--num-samples", "0", "--quiet"]


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A 5-step checkpoint of the small model."""
    folder = tmp_path_factory.mktemp("ckpt")
    result = run_cli(QUICK + ["--save", "run.npz"], cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "run.npz"


# ---------------------------------------------------------------------------
# 1. Special files as input: refused at once, naming the path

@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "dash", "dev-stdin"])
def test_train_data_must_be_a_regular_file(tmp_path, fifo, kind):
    path = {"fifo": fifo, "dev-zero": "/dev/zero", "dash": "-", "dev-stdin": "/dev/stdin"}[kind]
    result = run_cli(QUICK + ["--data", path], cwd=tmp_path, timeout=20)
    line = assert_cli_error(result, str(path))
    assert "regular file" in line
    assert result.stdout == ""


def test_sample_and_resume_refuse_special_files(tmp_path, fifo):
    assert_cli_error(run_sample(["--checkpoint", fifo], cwd=tmp_path, timeout=20),
                     "not a regular file (a FIFO)", str(fifo))
    assert_cli_error(run_cli(["--resume", "/dev/zero"], cwd=tmp_path, timeout=20),
                     "not a regular file (a character device)", "/dev/zero")
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(fifo)


def test_checkpoint_whose_data_path_is_a_fifo(tmp_path, fifo, saved):
    bad = rewrite_checkpoint(saved, tmp_path / "bad.npz", {"data": str(fifo)})
    result = run_cli(["--resume", bad, "--quiet"], cwd=tmp_path, timeout=20)
    assert_cli_error(result, "not a regular file (a FIFO)", str(fifo))


# ---------------------------------------------------------------------------
# 2. Out of memory names what and how much

def _limit_memory(nbytes):
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))


@pytest.mark.parametrize("args, what", [
    (["--n-embd", "2000", "--n-head", "1"], "parameters"),
    (["--n-embd", "128", "--n-head", "1", "--batch-size", "1024", "--block-size", "256",
      "--dtype", "float32"], "workspace"),
])
def test_out_of_memory_says_what_and_how_much(tmp_path, args, what):
    result = subprocess.run([sys.executable, "-m", "microgpt_fast.train", *args, "--steps", "5",
                             "--quiet", "--num-samples", "0"], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=60,
                            preexec_fn=_limit_memory(1_500_000 * 1024))
    line = assert_cli_error(result, "out of memory", what)
    assert re.search(r"\d[\d,.]* [MG]iB", line), line


# ---------------------------------------------------------------------------
# 3. --save never replaces what is not a regular file

def test_save_refuses_a_fifo_and_a_device(tmp_path, fifo):
    for target, kind in ((fifo, "FIFO"), ("/dev/full", "character device")):
        result = run_cli(QUICK + ["--save", target], cwd=tmp_path, timeout=20)
        assert_cli_error(result, "--save", kind)
        assert result.stdout == ""  # refused before training
    assert os.path.exists("/dev/full") and not os.path.isfile("/dev/full")
    assert not os.path.isfile(fifo) and os.path.exists(fifo)


def test_save_through_a_symlink_keeps_the_link(tmp_path):
    (tmp_path / "target.npz").write_text("old")
    os.symlink("target.npz", tmp_path / "link.npz")
    result = run_cli(QUICK + ["--save", "link.npz"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert os.path.islink(tmp_path / "link.npz")
    assert read_checkpoint(tmp_path / "target.npz").step == 5


# ---------------------------------------------------------------------------
# 4. A reader that leaves early costs no files

def test_closed_pipe_still_trains_and_saves(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "microgpt_fast.train", "--steps", "2000",
                             "--save", "run.npz", "--json", "run.json"], cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(3):
            proc.stdout.readline()
        proc.stdout.close()  # `| head -3`
        stderr = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0 and "Traceback" not in stderr, stderr
    assert read_checkpoint(tmp_path / "run.npz").step == 2000
    assert json.loads((tmp_path / "run.json").read_text())["step"] == 2000


# ---------------------------------------------------------------------------
# 5. Every output path checked before any work

@pytest.mark.parametrize("args, words", [
    (["--save", "newdir/"], ["--save", "directory"]),
    (["--json", "newdir/"], ["--json", "directory"]),
    (["--json", "newdir/run.json"], ["--json", "does not exist"]),
    (["--log-csv", "."], ["--log-csv", "directory"]),
    (["--plot-loss", "loss.xyz"], ["--plot-loss", ".xyz"]),
    (["--plot-loss", "loss"], ["--plot-loss", "suffix"]),
])
def test_output_paths_checked_before_training(tmp_path, args, words):
    result = call_main(train.main, QUICK + args, cwd=tmp_path)
    assert_cli_error(result, *words)
    assert result.stdout == ""
    assert not (tmp_path / "newdir").exists()


# ---------------------------------------------------------------------------
# 6. Divergence: non-finite or above the bound, named by its step, both engines

@pytest.mark.parametrize("engine", ["compiled", "reference"])
def test_divergence_exits_1_naming_the_step(tmp_path, engine):
    result = run_cli(["--steps", "50", "--learning-rate", "1e9", "--engine", engine,
                      "--num-samples", "0"], cwd=tmp_path, timeout=60)
    line = assert_cli_error(result, "training diverged", code=1)
    assert re.search(r"at step \d+\b", line) and " in steps " not in line, line


def test_loss_above_the_bound_is_divergence():
    t = Trainer(GPTConfig(), TrainConfig(steps=50, learning_rate=1e9))
    with pytest.raises(TrainingDiverged) as info:
        t.train()
    assert math.isfinite(info.value.loss) and info.value.loss > t.loss_limit
    assert t.loss_limit == pytest.approx(1e4 * math.log(27))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_chunked_training_names_the_same_step_as_single_steps(dtype):
    """Chunks of many steps find the very step that one-step calls find."""
    def trainer():
        return Trainer(GPTConfig(), TrainConfig(steps=200, learning_rate=1e200, dtype=dtype))

    chunked = trainer()
    with pytest.raises(TrainingDiverged) as whole:
        chunked.train()
    single = trainer()
    with pytest.raises(TrainingDiverged) as one:
        for _ in range(200):
            single.train(1)
    assert whole.value.step == one.value.step
    assert str(whole.value) == str(one.value)


def test_save_every_message_names_the_step(tmp_path):
    result = run_cli(SMALL + ["--steps", "300", "--learning-rate", "1e200", "--save-every", "1",
                              "--save", "run.npz", "--quiet", "--num-samples", "0"],
                     cwd=tmp_path, timeout=60)
    line = assert_cli_error(result, "training diverged", "run.npz", code=1)
    step = int(re.search(r"at step (\d+)\b", line).group(1))
    assert read_checkpoint(tmp_path / "run.npz").step == step - 1


# ---------------------------------------------------------------------------
# 8. The engine API: ValueError, never a crash, for malformed datasets

ENGINE_SCRIPT = textwrap.dedent("""
    import random, sys
    import numpy as np
    from microgpt_fast.config import GPTConfig, init_params
    from microgpt_fast.data import Dataset, load_dataset
    from microgpt_fast.engine import CompiledGPT

    good = load_dataset(None, random.Random(0))
    cfg = GPTConfig(vocab_size=good.vocab_size)
    model = CompiledGPT(cfg, init_params(cfg, random.Random(0)), "float32", 2, 4)
    tokens, starts = good.tokens.copy(), good.starts.copy()
    big = tokens.copy(); big[5] = 99999999
    negative = tokens.copy(); negative[7] = -3
    falling = starts.copy(); falling[3], falling[4] = falling[4], falling[3]
    past_end = starts.copy(); past_end[-1] = len(tokens) + 10
    cases = {
        "token id 99999999": Dataset(good.chars, big, starts),
        "negative token id": Dataset(good.chars, negative, starts),
        "decreasing starts": Dataset(good.chars, tokens, falling),
        "starts past the tokens": Dataset(good.chars, tokens, past_end),
        "one start": Dataset(good.chars, tokens, starts[:1]),
        "int64 tokens": Dataset(good.chars, tokens.astype(np.int64), starts),
        "2-D tokens": Dataset(good.chars, tokens[:-1].reshape(-1, 1), starts[:10]),
        "strided tokens": Dataset(good.chars, np.repeat(tokens, 2)[::2], starts),
    }
    calls = {
        "train": lambda ds: model.train(ds, 0, 3, 10),
        "evaluate": lambda ds: model.evaluate(ds, [0, 1]),
        "loss_and_grad": lambda ds: model.loss_and_grad(ds, [0, 1]),
    }
    for case, ds in cases.items():
        for name, call in calls.items():
            try:
                call(ds)
            except ValueError as exc:
                assert "\\n" not in str(exc)
                print(f"{case} | {name} | ValueError")
            else:
                print(f"{case} | {name} | accepted")
    for name, call in (("sample prompt", lambda: model.sample(random.Random(0), 26, 0.5, [999])),
                       ("probs token", lambda: model.next_probs_fn()(99999, 0)),
                       ("probs position", lambda: model.next_probs_fn()(0, 99))):
        try:
            call()
            print(f"{name} | accepted")
        except ValueError:
            print(f"{name} | ValueError")
    print("survived")
""")


def test_engine_api_refuses_malformed_datasets_without_crashing(tmp_path):
    result = subprocess.run([sys.executable, "-c", ENGINE_SCRIPT], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    lines = result.stdout.splitlines()
    assert lines[-1] == "survived"
    accepted = [line for line in lines[:-1] if not line.endswith("ValueError")]
    assert not accepted, accepted
    assert len(lines) == 8 * 3 + 3 + 1


def test_a_checked_dataset_is_not_checked_again(names_ds):
    """load_dataset's arrays are read-only, so one check per dataset suffices;
    writeable arrays are checked on every call."""
    assert not names_ds.tokens.flags.writeable and not names_ds.starts.flags.writeable
    names_ds.check(names_ds.vocab_size)
    assert names_ds._checked is not None
    with pytest.raises(ValueError, match="token ids"):
        names_ds.check(names_ds.vocab_size - 1)


# ---------------------------------------------------------------------------
# 9. SIGTERM and SIGHUP: stop at the chunk's end, save, exit 128 + signal

@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_saves_and_exits(tmp_path, sig, code):
    exit_code, stdout, stderr = interrupt_training(
        ["--steps", "10000000", "--quiet", "--num-samples", "0", "--save", "run.npz"],
        tmp_path, 0.3, sig)
    assert exit_code == code, (exit_code, stderr)
    match = re.search(r"^interrupted at step (\d+) of 10000000; saved run\.npz$", stderr, re.M)
    assert match and "Traceback" not in stderr, stderr
    assert read_checkpoint(tmp_path / "run.npz").step == int(match.group(1))


def test_stop_honoured_within_about_a_step_on_a_slow_model(tmp_path):
    """A model of about 0.1 s a step stops within a few tenths of a second."""
    args = ["--n-embd", "128", "--n-layer", "2", "--batch-size", "1024", "--dtype", "float32",
            "--steps", "1000", "--log-every", "1", "--num-samples", "0", "--save", "run.npz",
            "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "microgpt_fast.train", *args], cwd=tmp_path,
                            env=cli_env(PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        steps = 0
        while steps < 3:  # a few steps in: the chunks have their size
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            steps += line.startswith("step")
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    step = int(re.search(r"interrupted at step (\d+)", stderr).group(1))
    assert step < 1000 and read_checkpoint(tmp_path / "run.npz").step == step
    assert took < 2.0, f"stopped {took:.2f} s after Ctrl-C"


# ---------------------------------------------------------------------------
# 10. Smaller ones

def test_stale_temp_files_of_dead_saves_are_removed(tmp_path, saved):
    ckpt = read_checkpoint(saved)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".run.npz.{dead}.abc123.tmp"
    live = tmp_path / f".run.npz.{os.getppid()}.def456.tmp"  # a running process's save
    other = tmp_path / f".other.npz.{dead}.ghi789.tmp"      # another target's
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    save_checkpoint(tmp_path / "run.npz", ckpt)
    assert not stale.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == sorted(
        [live.name, other.name])


@pytest.mark.parametrize("name, value, words", [
    ("params", np.nan, ["params", "NaN"]),
    ("adam_m", np.inf, ["adam_m", "infinite"]),
    ("adam_v", -1.0, ["adam_v", "negative"]),
])
def test_checkpoint_with_bad_numbers_is_refused(tmp_path, saved, name, value, words):
    with np.load(saved) as npz:
        array = npz[name].copy()
    array[3] = value
    bad = rewrite_checkpoint(saved, tmp_path / "bad.npz", **{name: array})
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(bad)
    for word in words:
        assert word in str(info.value)
    assert_cli_error(run_sample(["--checkpoint", bad], cwd=tmp_path), *words)


def test_infinite_temperature_is_refused(tmp_path, saved):
    result = run_sample(["--checkpoint", saved, "--temperature", "inf"], cwd=tmp_path)
    assert_cli_error(result, "finite and > 0")
    result = run_cli(QUICK + ["--temperature", "inf"], cwd=tmp_path)
    assert_cli_error(result, "temperature", "finite")
