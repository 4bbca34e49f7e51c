"""Checkpoints: exact resume, atomic saves, damaged and foreign files, flags on --resume.

A run split in two at a checkpoint must give the bits of one run: weights, Adam
moments, losses and the samples drawn afterwards, in either dtype and for any
thread count. A save killed at any moment leaves the previous file whole. A file
that is not one of our checkpoints is one `error:` line (exit 2) on both command
lines and a CheckpointError from the API.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import struct
import subprocess
import sys
import zipfile
from dataclasses import replace

import numpy as np
import pytest

from microgpt_fast import (CheckpointError, GPTConfig, SampleConfig, TrainConfig, Trainer,
                           load_checkpoint, read_checkpoint, sample, train)
from microgpt_fast.kernels import cpu_count

from helpers import (SMALL, assert_cli_error, call_main, cli_env, rewrite_checkpoint, run_cli,
                     run_sample)

CFG = GPTConfig(n_embd=8, n_head=2, block_size=8)
ARRAYS = ("params", "adam_m", "adam_v", "losses", "val_steps", "val_losses")


def saved(trainer: Trainer, path):
    trainer.save(path)
    return read_checkpoint(path)


def assert_same_state(a, b):
    """Two Checkpoints hold the same bits in every array and the same random stream."""
    assert a.step == b.step
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert np.array_equal(x, y), f"{name} differs"
    assert a.rng_state == b.rng_state


# ---------------------------------------------------------------------------
# Resume exactness through the API

@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_resume_is_bit_identical(tmp_path, dtype, threads):
    tc = TrainConfig(steps=80, batch_size=4, dtype=dtype)
    run = dict(threads=threads, sampling=SampleConfig(num_samples=8))
    whole = Trainer(CFG, tc, **run)
    whole_losses = whole.train()

    first = Trainer(CFG, tc, **run)
    first_losses = first.train(40)
    half = saved(first, tmp_path / "half.npz")
    resumed = load_checkpoint(tmp_path / "half.npz")
    assert resumed.step == 40 and resumed.dtype == dtype
    np.testing.assert_array_equal(resumed.losses, first_losses)
    rest = resumed.train()
    assert rest.shape == (40,)

    np.testing.assert_array_equal(np.concatenate([first_losses, rest]), whole_losses)
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    end_whole = saved(whole, tmp_path / "whole.npz")
    end_resumed = saved(resumed, tmp_path / "resumed.npz")
    assert_same_state(end_resumed, end_whole)
    assert end_whole.params.dtype == np.dtype(dtype)
    # the second half moved the weights and moments (else the check above is vacuous)
    assert not np.array_equal(half.params, end_whole.params)
    assert not np.array_equal(half.adam_v, end_whole.adam_v)
    assert resumed.sample() == whole.sample()
    assert resumed.sample(3, prompt="ma") == whole.sample(3, prompt="ma")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("save_threads, load_threads", [(1, 2), (2, 1)])
def test_resume_with_another_thread_count(tmp_path, dtype, save_threads, load_threads):
    tc = TrainConfig(steps=60, batch_size=4, dtype=dtype)
    five = SampleConfig(num_samples=5)
    whole = Trainer(CFG, tc, threads=1, sampling=five)
    whole.train()

    first = Trainer(CFG, tc, threads=save_threads, sampling=five)
    first.train(25)
    first.save(tmp_path / "half.npz")
    resumed = load_checkpoint(tmp_path / "half.npz", threads=load_threads)
    assert resumed.threads == min(load_threads, cpu_count())
    resumed.train()
    assert_same_state(saved(resumed, tmp_path / "r.npz"), saved(whole, tmp_path / "w.npz"))
    assert resumed.sample() == whole.sample()


NORM_OPTIONS = GPTConfig(n_embd=8, n_head=2, n_layer=2, block_size=8, norm="layernorm",
                         norm_gain=True, final_norm=True, tie_embeddings=True)
# the same without the norm after the embedding (nanoGPT's residual stream)
NO_EMB_NORM = replace(NORM_OPTIONS, emb_norm=False)


@pytest.mark.parametrize("cfg", [NORM_OPTIONS, NO_EMB_NORM], ids=["norms", "no-emb-norm"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_resume_with_norm_options_is_bit_identical(tmp_path, dtype, cfg):
    """The gains, the tied wte and their moments are saved and restored like the
    other weights (the tied wte's transposed copy rebuilt from it); a model
    without the embedding's norm comes back without it."""
    tc = TrainConfig(steps=30, batch_size=4, dtype=dtype)
    run = dict(threads=2, sampling=SampleConfig(num_samples=5))
    whole = Trainer(cfg, tc, **run)
    whole.train()
    first = Trainer(cfg, tc, **run)
    first.train(15)
    half = saved(first, tmp_path / "half.npz")
    assert half.config == cfg
    resumed = load_checkpoint(tmp_path / "half.npz", threads=1)
    resumed.train()
    end = saved(whole, tmp_path / "whole.npz")
    assert_same_state(saved(resumed, tmp_path / "resumed.npz"), end)
    assert not np.array_equal(half.params, end.params)
    assert resumed.sample() == whole.sample()


def test_checkpoint_without_the_architecture_fields_loads_with_the_defaults(tmp_path):
    """A checkpoint written before GPTConfig had the architecture options is the
    original architecture: it loads with every option at its default."""
    t = Trainer(CFG, TrainConfig(steps=20, batch_size=2), threads=1,
                sampling=SampleConfig(num_samples=3))
    t.train(10)
    t.save(tmp_path / "new.npz")

    def drop_architecture(meta):
        for name in ("norm", "norm_gain", "emb_norm", "final_norm", "activation",
                     "tie_embeddings", "mlp_ratio", "init"):
            del meta["config"][name]

    rewrite_checkpoint(tmp_path / "new.npz", tmp_path / "old.npz", drop_architecture)
    old = load_checkpoint(tmp_path / "old.npz")
    assert old.config == GPTConfig(vocab_size=CFG.vocab_size, n_embd=8, n_head=2,
                                   block_size=8)
    np.testing.assert_array_equal(old.model.params, t.model.params)
    np.testing.assert_array_equal(old.train(), t.train())
    np.testing.assert_array_equal(old.model.params, t.model.params)


# ---------------------------------------------------------------------------
# Resume exactness through the CLI

def sample_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("sample ")]


def test_cli_stop_at_then_resume_is_bit_identical(tmp_path):
    base = SMALL + ["--batch-size", "4", "--steps", "60", "--num-samples", "6", "--quiet",
                    "--threads", "1"]
    whole = run_cli(base + ["--save", "whole.npz"], cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    half = run_cli(base + ["--stop-at", "30", "--save", "half.npz"], cwd=tmp_path)
    assert half.returncode == 0, half.stderr
    assert read_checkpoint(tmp_path / "half.npz").step == 30
    resumed = run_cli(["--resume", "half.npz", "--save", "resumed.npz", "--num-samples", "6",
                       "--quiet", "--threads", "2"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming half.npz at step 30 of 60" in resumed.stdout

    with np.load(tmp_path / "whole.npz") as a, np.load(tmp_path / "resumed.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in ARRAYS:
            assert np.array_equal(a[name], b[name]), name
            assert a[name].dtype == b[name].dtype, name
        meta_a, meta_b = json.loads(str(a["meta"][()])), json.loads(str(b["meta"][()]))
    assert meta_a["step"] == meta_b["step"] == 60
    assert meta_a["rng_state"] == meta_b["rng_state"]
    assert meta_a["config"] == meta_b["config"]
    # the thread counts differed: how a run ran is no part of its settings
    assert meta_a["train_config"] == meta_b["train_config"]
    assert "threads" not in meta_a["train_config"]
    assert len(sample_lines(whole.stdout)) == 6
    assert sample_lines(resumed.stdout) == sample_lines(whole.stdout)


# ---------------------------------------------------------------------------
# Atomic saves: a writer killed mid-save leaves the previous checkpoint whole

BLOCKED_SAVER = r"""
import hashlib, os, sys, time
import numpy.lib.format as npy_format
from microgpt_fast import GPTConfig, TrainConfig, Trainer

path, where = sys.argv[1], sys.argv[2]
cfg = GPTConfig(n_embd=8, n_head=2, block_size=8)
first = Trainer(cfg, TrainConfig(steps=20))
first.train(5)
first.save(path)
with open(path, "rb") as f:
    print("SAVED", hashlib.sha256(f.read()).hexdigest(), flush=True)
second = Trainer(cfg, TrainConfig(steps=20, seed=1))
second.train(12)


def block(*args, **kwargs):
    print("BLOCKED", flush=True)
    time.sleep(120)


if where == "replace":
    os.replace = block
elif where == "fsync":
    os.fsync = block
else:  # in the middle of writing the archive: after the params array
    real_write_array, calls = npy_format.write_array, []

    def write_array(*args, **kwargs):
        real_write_array(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # meta, then params
            block()

    npy_format.write_array = write_array
second.save(path)
print("NOT BLOCKED", flush=True)
"""


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_killed_save_keeps_previous_checkpoint(tmp_path, where):
    script = tmp_path / "saver.py"
    script.write_text(BLOCKED_SAVER)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    path = folder / "run.npz"
    proc = subprocess.Popen([sys.executable, str(script), str(path), where], cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        first = proc.stdout.readline().split()
        marker = proc.stdout.readline().strip()
    finally:
        proc.kill()  # SIGKILL
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, stderr
    assert first[:1] == ["SAVED"] and marker == "BLOCKED", (first, marker, stderr)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == first[1]
    ckpt = read_checkpoint(path)
    assert ckpt.step == 5 and len(ckpt.losses) == 5
    # leftovers may stay, under other names
    others = [p for p in folder.iterdir() if p != path]
    assert all(p.name != path.name for p in others)


LOOPING_SAVER = r"""
import itertools, random, sys
import numpy as np
from microgpt_fast import GPTConfig, TrainConfig
from microgpt_fast.checkpoint import Checkpoint, save_checkpoint

cfg = GPTConfig(vocab_size=27, n_embd=256, n_head=4, n_layer=3, block_size=16)
tc = TrainConfig(steps=100000, dtype="float32")
params = np.empty(cfg.num_params, np.float32)
state = random.Random(0).getstate()
for i in itertools.count(1):
    params.fill(i)
    save_checkpoint(sys.argv[1], Checkpoint(cfg, tc, list("abcdefghijklmnopqrstuvwxyz"), i,
                                            params, params, params, state,
                                            np.full(i, float(i))))
    if i == 1:
        print(i, flush=True)
"""


@pytest.mark.parametrize("attempt", range(3))
def test_large_checkpoint_survives_sigkill_in_save_loop(tmp_path, attempt):
    """A 2.4M-parameter checkpoint rewritten in a loop, killed at a random moment."""
    script = tmp_path / "loop.py"
    script.write_text(LOOPING_SAVER)
    path = tmp_path / "big.npz"
    delay = random.Random(attempt).uniform(0.0, 0.4)  # a kill moment per attempt
    proc = subprocess.Popen([sys.executable, str(script), str(path)], cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first == "1", proc.stderr.read() if proc.poll() is not None else first
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            pass
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the saver ended by itself ({proc.returncode})"
    ckpt = read_checkpoint(path)  # whole, whichever save it is
    k = ckpt.step
    assert k >= 1 and ckpt.config.num_params > 2_000_000, (k, delay)
    for name in ("params", "adam_m", "adam_v"):
        assert np.all(getattr(ckpt, name) == k), (name, k, delay)
    assert np.array_equal(ckpt.losses, np.full(k, float(k)))
    assert all(p.name.startswith(".big.npz.") for p in tmp_path.iterdir()
               if p.name not in ("big.npz", "loop.py"))


# ---------------------------------------------------------------------------
# Damaged and foreign checkpoints

@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.npz"
    t = Trainer(CFG, TrainConfig(steps=30, batch_size=2), threads=1)
    t.train(10)
    t.save(path)
    return path


def _arrays(path) -> dict:
    with np.load(path) as npz:
        return {name: npz[name] for name in npz.files}


def _with_meta(path, out, **changes):
    arrays = _arrays(path)
    meta = json.loads(str(arrays["meta"][()]))
    meta.update(changes)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(out, **arrays)


def _entry_data_offset(raw: bytes, path, name: str) -> int:
    """Offset in the file of the first byte of zip member `name` (its .npy data)."""
    info = zipfile.ZipFile(path).getinfo(name)
    o = info.header_offset
    name_len, extra_len = struct.unpack("<HH", raw[o + 26:o + 30])
    return o + 30 + name_len + extra_len


def _central_entry(raw: bytes, name: bytes) -> int:
    """Offset of the central-directory record of zip member `name`."""
    i = raw.find(b"PK\x01\x02")
    while i >= 0:
        (name_len,) = struct.unpack("<H", raw[i + 28:i + 30])
        if raw[i + 46:i + 46 + name_len] == name:
            return i
        i = raw.find(b"PK\x01\x02", i + 1)
    raise AssertionError(f"no central-directory record for {name!r}")


def _flip(raw: bytes, start: int, count: int) -> bytes:
    out = bytearray(raw)
    for k in range(start, start + count):
        out[k] ^= 0xFF
    return bytes(out)


def make_broken(kind: str, folder, good) -> str:
    """A path that is not a usable checkpoint, built from the good one."""
    path = folder / f"{kind}.npz"
    raw = good.read_bytes()
    if kind == "missing":
        pass
    elif kind == "directory":
        path.mkdir()
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "truncated":
        path.write_bytes(raw[:len(raw) // 2])
    elif kind == "flipped-middle":
        path.write_bytes(_flip(raw, len(raw) // 2, 16))
    elif kind == "flipped-params-data":
        start = _entry_data_offset(raw, good, "params.npy") + 128  # past the .npy header
        path.write_bytes(_flip(raw, start + 100, 16))
    elif kind == "flipped-npy-header":
        # the '{' that opens the params array's .npy header dictionary
        start = _entry_data_offset(raw, good, "params.npy") + 10
        assert raw[start:start + 1] == b"{"
        path.write_bytes(_flip(raw, start, 1))
    elif kind == "flipped-central-directory":
        # the compression method of params.npy in the zip's central directory
        path.write_bytes(_flip(raw, _central_entry(raw, b"params.npy") + 10, 1))
    elif kind == "foreign-npz":
        np.savez(path, weights=np.arange(10.0), bias=np.zeros(3))
    elif kind == "other-format":
        _with_meta(good, path, format="somebody.else.checkpoint")
    elif kind == "other-version":
        _with_meta(good, path, version=2)
    elif kind == "rng-state-negative-word":
        state = json.loads(str(_arrays(good)["meta"][()]))["rng_state"]
        state[1][0] = -1
        _with_meta(good, path, rng_state=state)
    elif kind == "rng-state-bad-index":
        state = json.loads(str(_arrays(good)["meta"][()]))["rng_state"]
        state[1][624] = 5000  # the Mersenne Twister's position, at most 624
        _with_meta(good, path, rng_state=state)
    elif kind == "params-wrong-length":
        arrays = _arrays(good)
        arrays["params"] = arrays["params"][:-1]
        np.savez(path, **arrays)
    else:
        raise AssertionError(kind)
    return path


BROKEN = ["missing", "directory", "text", "truncated", "flipped-middle", "flipped-params-data",
          "flipped-npy-header", "flipped-central-directory", "foreign-npz", "other-format",
          "other-version", "rng-state-negative-word", "rng-state-bad-index",
          "params-wrong-length"]


@pytest.mark.parametrize("kind", BROKEN)
def test_api_rejects_broken_checkpoint(tmp_path, good_checkpoint, kind):
    path = make_broken(kind, tmp_path, good_checkpoint)
    for load in (read_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError) as info:
            load(path)
        assert isinstance(info.value, ValueError)
        assert str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("kind", BROKEN)
def test_train_cli_resume_broken_checkpoint(tmp_path, good_checkpoint, kind):
    path = make_broken(kind, tmp_path, good_checkpoint)
    result = call_main(train.main, ["--resume", path, "--quiet", "--num-samples", "0"],
                       cwd=tmp_path)
    assert_cli_error(result)
    assert result.stdout == ""


@pytest.mark.parametrize("kind", BROKEN)
def test_sample_cli_broken_checkpoint(tmp_path, good_checkpoint, kind):
    path = make_broken(kind, tmp_path, good_checkpoint)
    result = call_main(sample.main, ["--checkpoint", path], cwd=tmp_path)
    assert_cli_error(result)
    assert result.stdout == ""


def test_good_checkpoint_loads_in_both_clis(tmp_path, good_checkpoint):
    """The control: the file the broken ones are made from is fine."""
    assert run_sample(["--checkpoint", good_checkpoint, "--num-samples", "2"],
                      cwd=tmp_path).returncode == 0
    result = run_cli(["--resume", good_checkpoint, "--stop-at", "12", "--quiet",
                      "--num-samples", "0"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------
# Flags on --resume: those that shape the run must agree with the checkpoint

@pytest.fixture(scope="module")
def resumable(tmp_path_factory, names_ds):
    """n_embd 8, float64, batch 2, lr 0.01, seed 42, val_fraction 0.1, 1 thread: 50 of 60
    steps on 300 names (30 held out)."""
    folder = tmp_path_factory.mktemp("resume")
    data = folder / "names300.txt"
    data.write_text("\n".join(names_ds.docs[:300]) + "\n", encoding="utf-8")
    path = folder / "half.npz"
    t = Trainer(CFG, TrainConfig(steps=60, batch_size=2, val_fraction=0.1), threads=1,
                data=data)
    t.train(50)
    t.save(path)
    return path


CONFLICTS = {
    "n-embd": ["--n-embd", "16"],
    "dtype": ["--dtype", "float32"],
    "batch-size": ["--batch-size", "3"],
    "learning-rate": ["--learning-rate", "0.02"],
    "seed": ["--seed", "7"],
    "val-fraction": ["--val-fraction", "0.2"],
    "steps": ["--steps", "100"],
    "activation": ["--activation", "gelu"],
    "norm": ["--norm", "layernorm"],
    "tie-embeddings": ["--tie-embeddings", "on"],
}


@pytest.mark.parametrize("flag", list(CONFLICTS))
def test_resume_rejects_conflicting_flag(tmp_path, resumable, flag):
    result = run_cli(["--resume", resumable, *CONFLICTS[flag], "--quiet"], cwd=tmp_path)
    assert_cli_error(result, "--" + flag)
    assert result.stdout == ""


ALLOWED = {
    "threads": ["--threads", "2"],
    "num-samples": ["--num-samples", "3"],
    "temperature": ["--temperature", "0.8", "--num-samples", "4"],
    "quiet": ["--quiet"],
    "same-values": ["--n-embd", "8", "--dtype", "float64", "--batch-size", "2",
                    "--learning-rate", "0.01", "--seed", "42", "--val-fraction", "0.1",
                    "--steps", "60"],
}


@pytest.mark.parametrize("flag", list(ALLOWED))
def test_resume_accepts_free_flag(tmp_path, resumable, flag):
    result = run_cli(["--resume", resumable, *ALLOWED[flag]], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout and result.stderr == ""
    steps = [line for line in result.stdout.splitlines()
             if line.startswith("step ") and "val loss" not in line]
    if flag == "quiet":
        assert steps == []
    else:
        assert any(line.startswith("step   51 /   60") for line in steps), steps
    samples = sample_lines(result.stdout)
    if flag == "num-samples":
        assert len(samples) == 3
    if flag == "temperature":  # the flag is used, not just accepted
        t = load_checkpoint(resumable)
        t.train()
        assert [s.split(": ", 1)[1] for s in samples] == t.sample(4, temperature=0.8)


def test_checkpoint_of_the_earlier_layout_loads(tmp_path):
    """Checkpoints written when temperature, num_samples and threads sat in the
    training config still load, their sampling settings kept."""
    t = Trainer(CFG, TrainConfig(steps=20, batch_size=2), threads=1,
                sampling=SampleConfig(temperature=0.7, num_samples=3))
    t.train(10)
    t.save(tmp_path / "new.npz")
    rewrite_checkpoint(tmp_path / "new.npz", tmp_path / "old.npz",
                       lambda meta: meta["train_config"].update(meta.pop("sample_config"),
                                                                threads=2))
    old = load_checkpoint(tmp_path / "old.npz")
    assert old.train_config == t.train_config
    assert old.sampling == SampleConfig(temperature=0.7, num_samples=3)
    np.testing.assert_array_equal(old.model.params, t.model.params)
    assert old.sample() == t.sample()
