"""The Python API as the README shows it: types of what Trainer returns, the save /
load round trip, and ValueErrors that name the field."""

from __future__ import annotations

import numpy as np
import pytest

from microgpt_fast import (CheckpointError, GPTConfig, SampleConfig, TrainConfig, Trainer,
                           load_checkpoint, read_checkpoint)

CFG = GPTConfig(n_embd=8, n_head=2, block_size=8)


def test_train_evaluate_sample_types():
    t = Trainer(CFG, TrainConfig(steps=30, batch_size=2, val_fraction=0.1), threads=1)
    losses = t.train(12)
    assert isinstance(losses, np.ndarray) and losses.dtype == np.float64
    assert losses.shape == (12,) and np.isfinite(losses).all()
    assert t.step == 12
    rest = t.train()
    assert rest.dtype == np.float64 and rest.shape == (18,)
    assert t.losses.shape == (30,)
    loss = t.evaluate()
    assert type(loss) is float and np.isfinite(loss)
    samples = t.sample(4)
    assert isinstance(samples, list) and len(samples) == 4
    assert all(isinstance(s, str) for s in samples)
    assert all(s.startswith("ma") for s in t.sample(3, prompt="ma"))
    assert t.sample(0) == []


def test_float32_losses_are_float64():
    t = Trainer(CFG, TrainConfig(steps=5, dtype="float32"), threads=1)
    losses = t.train()
    assert losses.dtype == np.float64 and t.model.params.dtype == np.float32


def test_save_load_round_trip(tmp_path):
    tc = TrainConfig(steps=40, batch_size=2, val_fraction=0.1)
    t = Trainer(CFG, tc, threads=1, sampling=SampleConfig(temperature=0.7, num_samples=5))
    t.train(15)
    t.evaluate()
    t.save(tmp_path / "run.npz")
    u = load_checkpoint(tmp_path / "run.npz")
    assert isinstance(u, Trainer)
    assert u.step == 15 and u.config == t.config and u.train_config == t.train_config
    assert u.sampling == t.sampling == SampleConfig(temperature=0.7, num_samples=5)
    assert u.chars == t.chars
    np.testing.assert_array_equal(u.model.params, t.model.params)
    np.testing.assert_array_equal(u.model.m, t.model.m)
    np.testing.assert_array_equal(u.model.v, t.model.v)
    np.testing.assert_array_equal(u.losses, t.losses)
    assert u.val_steps == t.val_steps == [15] and u.val_losses == t.val_losses
    assert u.evaluate(record=False) == t.evaluate(record=False)
    assert u.sample() == t.sample()
    ckpt = read_checkpoint(tmp_path / "run.npz")
    assert ckpt.step == 15 and ckpt.params.dtype == np.float64
    assert issubclass(CheckpointError, ValueError)


# Invalid values, each naming its field: raised when the config is built.
BAD = {
    "n_embd-0": (lambda: GPTConfig(n_embd=0), "n_embd"),
    "n_embd-not-divisible": (lambda: GPTConfig(n_embd=10, n_head=4), "n_embd"),
    "block_size-0": (lambda: GPTConfig(block_size=0), "block_size"),
    "val_fraction-1.5": (lambda: TrainConfig(val_fraction=1.5), "val_fraction"),
    "val_fraction-1": (lambda: TrainConfig(val_fraction=1), "val_fraction"),
    "val_fraction-negative": (lambda: TrainConfig(val_fraction=-0.1), "val_fraction"),
    "steps-0": (lambda: TrainConfig(steps=0), "steps"),
    "learning_rate-nan": (lambda: TrainConfig(learning_rate=float("nan")), "learning_rate"),
    "dtype": (lambda: TrainConfig(dtype="float16"), "dtype"),
}


@pytest.mark.parametrize("make, field", list(BAD.values()), ids=list(BAD))
def test_invalid_config_names_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_config_changed_after_construction_is_checked_by_trainer():
    tc = TrainConfig(steps=1)
    tc.steps = 0
    with pytest.raises(ValueError, match="steps"):
        Trainer(CFG, tc)


def test_val_fraction_leaving_no_validation_document():
    with pytest.raises(ValueError, match="val_fraction"):
        Trainer(CFG, TrainConfig(steps=1, val_fraction=1e-6))


def test_evaluate_without_validation_set():
    t = Trainer(CFG, TrainConfig(steps=2), threads=1)
    with pytest.raises(ValueError, match="val_fraction"):
        t.evaluate()


def test_train_beyond_schedule():
    t = Trainer(CFG, TrainConfig(steps=3), threads=1)
    with pytest.raises(ValueError, match="num_steps"):
        t.train(4)
    assert t.step == 0
