"""Training steps of the compiled engine against the pure-Python reference.

Losses of each step and the parameters after the last step must match: the
compiled float64 engine computes the original's numbers, Adam and the linear
learning-rate decay included; float32 stays close.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from microgpt_fast.config import Adam, GPTConfig, SampleConfig, TrainConfig, init_params
from microgpt_fast.engine import CompiledGPT
from microgpt_fast.reference import ReferenceGPT
from microgpt_fast.trainer import Trainer

from helpers import F32_KERNELS, KERNELS, rel_close

ADAM = Adam(learning_rate=0.01, beta1=0.85, beta2=0.99, eps=1e-8)

# name: (dataset fixture, n_embd, n_head, n_layer, block_size, batch, steps, total_steps[,
# architecture options])
# The runs on the larger shapes take 3 steps: the reference costs most here, and 3
# steps already hold what more would (Adam's moments and bias correction past the
# first step, a decaying rate, a step on weights the previous steps moved).
RUNS = {
    "small-B1": ("names_ds", 8, 2, 1, 8, 1, 6, 6),
    "default-B1": ("names_ds", 16, 4, 1, 16, 1, 3, 1000),
    "small-B3-wraps": ("tiny_ds", 8, 2, 1, 8, 3, 6, 6),  # 7 docs: the third step wraps
    "2layers-B2-unicode": ("unicode_ds", 6, 3, 2, 12, 2, 3, 3),
    "B5-more-than-docs": ("tiny_ds", 4, 1, 1, 6, 9, 3, 3),  # one batch holds a doc twice
    # Adam on the gains and the tied wte, whose transposed copy each step refreshes
    "norm-options-B3": ("unicode_ds", 6, 3, 2, 10, 3, 3, 3,
                        {"norm": "layernorm", "norm_gain": True, "final_norm": True,
                         "tie_embeddings": True}),
}

_reference_runs: dict = {}


def setup_run(name, ds):
    """Config, initial params, batch and steps of a run. The params are float32
    numbers (held as float64): the float64 and the float32 engine start from the
    very same weights and are held against one reference run."""
    _, C, H, L, T, B, steps, total, *arch = RUNS[name]
    cfg = GPTConfig(vocab_size=ds.vocab_size, n_embd=C, n_head=H, n_layer=L, block_size=T,
                    **(arch[0] if arch else {}))
    params = init_params(cfg, random.Random(len(name)))
    params = np.array(params, np.float32).astype(np.float64).tolist()
    return cfg, params, B, steps, total


def reference_run(name, ds):
    """Losses and final params of the reference, computed once per run."""
    key = name
    if key not in _reference_runs:
        cfg, params, B, steps, total = setup_run(name, ds)
        ref = ReferenceGPT(cfg, params)
        N = len(ds.docs)
        losses = [ref.train_step([ds.doc_tokens((s * B + b) % N) for b in range(B)],
                                 s, total, ADAM)
                  for s in range(steps)]
        _reference_runs[key] = (np.array(losses), np.array(ref.flat_params()))
    return _reference_runs[key]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", list(RUNS))
def test_float64_training_matches_reference(request, name, kernel):
    ds = request.getfixturevalue(RUNS[name][0])
    ref_losses, ref_params = reference_run(name, ds)
    cfg, params, B, steps, total = setup_run(name, ds)
    model = CompiledGPT(cfg, params, "float64", threads=1, batch_size=B, kernel=kernel)
    losses = model.train(ds, 0, steps, total, ADAM)
    assert losses.shape == (steps,) and losses.dtype == np.float64
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12, atol=0)
    ok = rel_close(model.params, ref_params, 1e-10)
    assert ok.all(), (f"{np.count_nonzero(~ok)} params differ, worst at "
                      f"{np.argmax(np.abs(model.params - ref_params))}")
    # the run moved the weights (else the parameter check is vacuous)
    assert np.max(np.abs(ref_params - np.array(params))) > 1e-3


@pytest.mark.parametrize("kernel", F32_KERNELS)
@pytest.mark.parametrize("name", ["small-B1", "small-B3-wraps", "norm-options-B3"])
def test_float32_training_close_to_reference(request, name, kernel):
    ds = request.getfixturevalue(RUNS[name][0])
    ref_losses, ref_params = reference_run(name, ds)
    cfg, params, B, steps, total = setup_run(name, ds)
    model = CompiledGPT(cfg, np.array(params, np.float32), "float32", threads=1,
                        batch_size=B, kernel=kernel)
    losses = model.train(ds, 0, steps, total, ADAM)
    assert model.params.dtype == np.float32
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4, atol=0)
    # Adam steps are about lr in size whatever the gradient, so a loose bound
    np.testing.assert_allclose(model.params, ref_params, rtol=0, atol=2e-3)


@pytest.mark.parametrize("kernel", KERNELS)
def test_training_in_chunks_equals_one_call(names_ds, kernel):
    """step0 continues the schedule: 7 + 13 steps give the bits of 20 steps."""
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=8, n_head=2, block_size=8)
    params = init_params(cfg, random.Random(11))
    whole = CompiledGPT(cfg, params, batch_size=2, kernel=kernel)
    parts = CompiledGPT(cfg, params, batch_size=2, kernel=kernel)
    losses = whole.train(names_ds, 0, 20, 20)
    chunked = np.concatenate([parts.train(names_ds, 0, 7, 20), parts.train(names_ds, 7, 13, 20)])
    np.testing.assert_array_equal(losses, chunked)
    np.testing.assert_array_equal(whole.params, parts.params)


def test_train_rejects_steps_outside_schedule(names_ds):
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=4, n_head=1, block_size=4)
    model = CompiledGPT(cfg, init_params(cfg, random.Random(2)))
    for step0, n, total in [(0, 0, 10), (-1, 2, 10), (9, 2, 10)]:
        with pytest.raises(ValueError):
            model.train(names_ds, step0, n, total)


@pytest.mark.parametrize("arch", [{}, {"norm": "layernorm", "norm_gain": True,
                                        "final_norm": True, "tie_embeddings": True},
                                   {"norm": "layernorm", "norm_gain": True,
                                    "final_norm": True, "tie_embeddings": True,
                                    "activation": "gelu", "emb_norm": False}],
                         ids=["original", "norm-options", "no-emb-norm"])
def test_trainer_engines_agree(tiny_ds, tmp_path, arch):
    """Trainer with either engine: same losses, parameters and samples (drawn
    through the compiled KV cache, whose new rows start at xs[0] itself when
    there is no norm after the embedding)."""
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(tiny_ds.docs) + "\n", encoding="utf-8")
    cfg = GPTConfig(n_embd=8, n_head=2, block_size=8, **arch)
    tc = TrainConfig(steps=6, batch_size=2, seed=5)
    six = SampleConfig(num_samples=6)
    compiled = Trainer(cfg, tc, data=path, engine="compiled", sampling=six)
    reference = Trainer(cfg, tc, data=path, engine="reference", sampling=six)
    assert compiled.dataset.docs == reference.dataset.docs
    lc, lr = compiled.train(), reference.train()
    np.testing.assert_allclose(lc, lr, rtol=1e-12, atol=0)
    assert rel_close(compiled.flat_params(), reference.flat_params(), 1e-10).all()
    assert compiled.sample() == reference.sample()


def test_trainer_partial_train_matches_full(names_ds):
    cfg = GPTConfig(n_embd=8, n_head=2, block_size=8)
    tc = TrainConfig(steps=40, batch_size=3, seed=1)
    full = Trainer(cfg, tc).train()
    t = Trainer(cfg, tc)
    parts = np.concatenate([t.train(5), t.train(30), t.train()])
    np.testing.assert_array_equal(full, parts)
    assert t.train().shape == (0,)
    with pytest.raises(ValueError):
        t.train(1)


def test_trainer_uses_data_vocab(unicode_path, unicode_ds):
    t = Trainer(GPTConfig(vocab_size=27, n_embd=4, n_head=1, block_size=4),
                TrainConfig(steps=2), data=unicode_path)
    assert t.config.vocab_size == unicode_ds.vocab_size
    assert t.model.params.size == t.config.num_params
    assert np.isfinite(t.train()).all()
