"""The training command line beyond the default run: bad input, divergence, the loss
plot, and Ctrl-C.

Exit codes: 2 bad input (one `error:` line), 1 the loss diverged, 130 interrupted.
The data-file errors (missing, empty, blank-only, non-UTF-8) are in test_bad_input.py.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest

from microgpt_fast import (GPTConfig, TrainConfig, Trainer, TrainingDiverged, load_checkpoint,
                           read_checkpoint)

from helpers import SMALL, assert_cli_error, env_without, interrupt_training, run_cli

# ---------------------------------------------------------------------------
# Bad input: one error line, exit 2, nothing trained

BAD_RUNS = {
    "val-fraction-1": (["--val-fraction", "1"], "val_fraction"),
    "val-fraction-negative": (["--val-fraction", "-0.1"], "val_fraction"),
    "val-fraction-no-validation-doc": (["--val-fraction", "0.00001"], "validation"),
    "eval-every-without-val-fraction": (["--eval-every", "10"], "--eval-every"),
    "save-every-without-save": (["--save-every", "5"], "--save"),
    "save-into-missing-folder": (["--save", "no/such/folder/run.npz"], "run.npz"),
    "stop-at-beyond-steps": (["--steps", "10", "--stop-at", "11"], "--stop-at"),
}


@pytest.mark.parametrize("args, word", list(BAD_RUNS.values()), ids=list(BAD_RUNS))
def test_bad_run_flags(tmp_path, args, word):
    result = run_cli(SMALL + ["--num-samples", "0"] + args, cwd=tmp_path)
    assert_cli_error(result, word)
    assert not re.search(r"^step .*\| loss", result.stdout, re.M), result.stdout
    assert "inference" not in result.stdout
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no log, nothing


def test_resume_with_data_outside_vocabulary(tmp_path):
    t = Trainer(GPTConfig(n_embd=8, n_head=2, block_size=8), TrainConfig(steps=20))
    t.train(10)
    t.save(tmp_path / "run.npz")
    (tmp_path / "other.txt").write_text("Anna\nBob\nzoe\n", encoding="utf-8")
    result = run_cli(["--resume", "run.npz", "--data", "other.txt", "--quiet",
                      "--num-samples", "0", "--save", "after.npz"], cwd=tmp_path)
    line = assert_cli_error(result, "vocabulary")
    assert "'A'" in line and "'B'" in line
    assert not (tmp_path / "after.npz").exists()
    # data within the vocabulary is fine
    (tmp_path / "lower.txt").write_text("anna\nbob\nzoe\n", encoding="utf-8")
    ok = run_cli(["--resume", "run.npz", "--data", "lower.txt", "--quiet",
                  "--num-samples", "0"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


# ---------------------------------------------------------------------------
# Divergence: exit 1, the step named, the last checkpoint kept

DIVERGING = {
    "float64": ["--learning-rate", "1e200"],
    "float32": ["--learning-rate", "1e30", "--dtype", "float32"],
}


def run_diverging(tmp_path, dtype):
    result = run_cli(["--steps", "100", *DIVERGING[dtype], "--save", "run.npz",
                      "--save-every", "1", "--quiet", "--num-samples", "0"], cwd=tmp_path)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    match = re.search(r"at step (\d+)\b", lines[0])
    assert match and "diverged" in lines[0] and "run.npz" in lines[0], lines[0]
    return int(match.group(1)), read_checkpoint(tmp_path / "run.npz")


@pytest.mark.parametrize("dtype", list(DIVERGING))
def test_diverging_run_stops_and_keeps_last_checkpoint(tmp_path, dtype):
    step, ckpt = run_diverging(tmp_path, dtype)
    assert 1 <= ckpt.step < step
    assert ckpt.losses.shape == (ckpt.step,) and np.isfinite(ckpt.losses).all()
    assert ckpt.dtype == dtype


@pytest.mark.parametrize("dtype", list(DIVERGING))
def test_checkpoint_kept_after_divergence_is_usable(tmp_path, dtype):
    """The kept checkpoint is the last good one: finite weights and moments; resumed
    with the same learning rate it diverges again, and is stopped again."""
    step, ckpt = run_diverging(tmp_path, dtype)
    for name in ("params", "adam_m", "adam_v"):
        bad = int(np.count_nonzero(~np.isfinite(getattr(ckpt, name))))
        assert bad == 0, (f"the checkpoint kept at step {ckpt.step} (divergence reported at "
                          f"step {step}) has {bad} non-finite {name}")
    resumed = load_checkpoint(tmp_path / "run.npz")
    assert resumed.step == ckpt.step and np.isfinite(resumed.model.params).all()
    with pytest.raises(TrainingDiverged):
        resumed.train()


def test_api_raises_training_diverged():
    t = Trainer(GPTConfig(), TrainConfig(steps=50, learning_rate=1e200))
    with pytest.raises(TrainingDiverged) as info:
        t.train()
    exc = info.value
    assert isinstance(exc, ArithmeticError)
    assert isinstance(exc.step, int) and exc.step > t.step >= 0
    # the first bad step: its loss is not finite, or its update broke a weight
    assert not math.isfinite(exc.loss) or "weights became NaN or infinite" in str(exc)
    assert f"at step {exc.step}" in str(exc)
    assert np.isfinite(t.losses).all() and len(t.losses) == t.step
    with pytest.raises(TrainingDiverged):
        t.train(1)
    with pytest.raises(ValueError, match="diverged"):
        t.checkpoint()


# ---------------------------------------------------------------------------
# --plot-loss

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_loss_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    result = run_cli(SMALL + ["--steps", "40", "--val-fraction", "0.1", "--eval-every", "20",
                              "--quiet", "--num-samples", "0", "--plot-loss", "loss.png"],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "loss.png").read_bytes()[:8] == PNG


def test_plot_loss_without_matplotlib_fails_before_training(tmp_path):
    env = env_without(tmp_path, "matplotlib")
    result = subprocess.run([sys.executable, "-m", "microgpt_fast.train", *SMALL, "--steps", "40",
                             "--plot-loss", "loss.png", "--save", "run.npz"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert_cli_error(result, "pip install", "--plot-loss")
    assert result.stdout == ""  # not even the header: nothing was trained
    assert not (tmp_path / "loss.png").exists() and not (tmp_path / "run.npz").exists()


# ---------------------------------------------------------------------------
# Ctrl-C

def test_ctrl_c_saves_and_exits_130_then_resumes(tmp_path):
    code, stdout, stderr = interrupt_training(["--steps", "10000000", "--quiet", "--num-samples",
                                               "0", "--save", "run.npz"], tmp_path, 0.5)
    assert code == 130, (code, stderr)
    assert "Traceback" not in stderr
    match = re.search(r"^interrupted at step (\d+) of 10000000; saved run\.npz$", stderr, re.M)
    assert match, stderr
    step = int(match.group(1))
    assert 0 < step < 10_000_000
    assert "inference" not in stdout

    ckpt = read_checkpoint(tmp_path / "run.npz")
    assert ckpt.step == step and ckpt.losses.shape == (step,)
    assert np.isfinite(ckpt.losses).all()

    resumed = run_cli(["--resume", "run.npz", "--stop-at", str(step + 20), "--save", "more.npz",
                       "--quiet", "--num-samples", "2"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming run.npz at step {step} of 10000000" in resumed.stdout
    more = read_checkpoint(tmp_path / "more.npz")
    assert more.step == step + 20
    np.testing.assert_array_equal(more.losses[:step], ckpt.losses)
