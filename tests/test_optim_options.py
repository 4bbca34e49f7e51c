"""The optimizer options of TrainConfig: learning-rate schedules with warm-up,
decoupled weight decay (AdamW) and global-norm gradient clipping, in both engines.

The oracles: the schedules' formulas in plain Python, AdamW with clipping in
plain numpy, and the pure-Python reference. With every option at its default
the original's numbers stay: test_training.py holds both engines to the
original's update, test_cli.py the default run's output, line for line.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from microgpt_fast import kernels, train
from microgpt_fast.checkpoint import read_checkpoint
from microgpt_fast.config import (Adam, GPTConfig, TrainConfig, decays, init_params,
                                  param_layout)
from microgpt_fast.engine import CompiledGPT
from microgpt_fast.kernels import load_kernel
from microgpt_fast.reference import ReferenceGPT
from microgpt_fast.trainer import Trainer, load_checkpoint

from helpers import (KERNELS, SMALL, assert_cli_error, call_main, precisions, rel_close,
                     rewrite_checkpoint)

NEW_FIELDS = ("lr_schedule", "warmup_steps", "min_lr", "weight_decay", "grad_clip")
SMALL_CFG = GPTConfig(vocab_size=27, n_embd=8, n_head=2, block_size=8)
# every option on: rates that rise, then fall to a floor; gradients clipped
ALL_ON = dict(lr_schedule="cosine", warmup_steps=2, min_lr=0.002, weight_decay=0.5,
              grad_clip=0.3)


def plain_rate(step, total, lr, schedule="linear", warmup=0, min_lr=0.0):
    """The rate of step `step`, as config.Adam's docstring states it."""
    if step < warmup:
        return lr * (step + 1) / warmup
    done = (step - warmup) / (total - warmup)
    if schedule == "constant":
        return lr
    if schedule == "linear":
        return min_lr + (lr - min_lr) * (1 - done)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * done))


def adamw(p, m, v, g, step, lr, adam: Adam, decays):
    """One step of AdamW with global-norm clipping (PyTorch's order), float64 numpy:
    returns (p, m, v, the clipping factor)."""
    factor = 1.0
    if adam.grad_clip > 0:
        factor = min(1.0, adam.grad_clip / (np.sqrt(np.sum(g * g)) + 1e-6))
        g = g * factor
    p = p - lr * adam.weight_decay * p * decays
    m = adam.beta1 * m + (1 - adam.beta1) * g
    v = adam.beta2 * v + (1 - adam.beta2) * g * g
    m_hat = m / (1 - adam.beta1 ** (step + 1))
    v_hat = v / (1 - adam.beta2 ** (step + 1))
    return p - lr * m_hat / (np.sqrt(v_hat) + adam.eps), m, v, factor


def decay_mask(cfg) -> np.ndarray:
    """1.0 for each parameter weight decay applies to, by the naming convention
    (a norm gain's name ends in "gain"), written out here on its own."""
    return np.concatenate([np.full(rows * cols, 0.0 if name.endswith("gain") else 1.0)
                           for name, rows, cols in param_layout(cfg)])


# ---------------------------------------------------------------------------
# Schedules

SCHEDULES = {
    "linear-default": dict(),
    "linear-warmup-floor": dict(warmup_steps=7, min_lr=0.001),
    "cosine": dict(lr_schedule="cosine"),
    "cosine-warmup-floor": dict(lr_schedule="cosine", warmup_steps=10, min_lr=0.002),
    "constant-warmup": dict(lr_schedule="constant", warmup_steps=5),
    "all-warmup": dict(lr_schedule="cosine", warmup_steps=40),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_follow_their_formulas(name):
    options, total, lr = SCHEDULES[name], 40, 0.02
    adam = Adam(learning_rate=lr, **options)
    expected = [plain_rate(s, total, lr, options.get("lr_schedule", "linear"),
                           options.get("warmup_steps", 0), options.get("min_lr", 0.0))
                for s in range(total)]
    rates = adam.learning_rates(0, total, total)
    assert rates.dtype == np.float64 and rates.shape == (total,)
    np.testing.assert_allclose(rates, expected, rtol=1e-15, atol=0)
    assert [adam.learning_rate_at(s, total) for s in range(total)] == rates.tolist()


def test_schedule_shapes():
    lr, floor, total, W = 0.02, 0.002, 50, 10
    warm = Adam(learning_rate=lr, warmup_steps=W).learning_rates(0, total, total)
    assert warm[0] == pytest.approx(lr / W) and warm[W - 1] == pytest.approx(lr)
    assert np.allclose(np.diff(warm[:W]), lr / W)           # a straight line up
    assert warm[W] == lr                                     # then the schedule from its start
    cosine = Adam(learning_rate=lr, lr_schedule="cosine", warmup_steps=W,
                  min_lr=floor).learning_rates(0, total, total)
    assert cosine[W] == pytest.approx(lr) and np.all(np.diff(cosine[W:]) < 0)
    assert cosine[W + (total - W) // 2] == pytest.approx((lr + floor) / 2)  # half-way
    assert floor < cosine[-1] < floor + 0.01 * (lr - floor)  # ends near its floor
    linear = Adam(learning_rate=lr, min_lr=floor).learning_rates(0, total, total)
    assert linear[-1] == pytest.approx(floor + (lr - floor) / total)
    constant = Adam(learning_rate=lr, lr_schedule="constant").learning_rates(0, total, total)
    assert np.all(constant == lr)


@pytest.mark.parametrize("lr, total", [(0.01, 1000), (0.003, 7), (0.1, 12345), (1e-3, 1),
                                       (0.0123456789, 999)])
def test_default_schedule_is_the_originals_bit_for_bit(lr, total):
    adam = Adam(learning_rate=lr)
    original = [lr * (1 - s / total) for s in range(total)]
    assert adam.learning_rates(0, total, total).tolist() == original
    assert [adam.learning_rate_at(s, total) for s in range(0, total, 7)] == original[::7]


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_rates_do_not_depend_on_the_chunks(name):
    """The compiled engine gets each chunk's rates, the reference each step's:
    any split gives the same bits (a resumed run starts its chunks anew)."""
    adam, total = Adam(**SCHEDULES[name]), 100
    whole = adam.learning_rates(0, total, total)
    for cuts in ([0, 1, 3, 7, 15, 31, 63, 100], [0, 40, 41, 100], [0, 99, 100]):
        parts = [adam.learning_rates(a, b - a, total) for a, b in zip(cuts, cuts[1:])]
        assert np.array_equal(np.concatenate(parts), whole)
    assert [adam.learning_rate_at(s, total) for s in range(total)] == whole.tolist()


# ---------------------------------------------------------------------------
# Weight decay and clipping against numpy AdamW

APPLY_CASES = {
    "decay": dict(weight_decay=0.5),
    "clip": dict(grad_clip=0.3),
    "decay-clip-schedule": ALL_ON,
    "clip-above-the-norm": dict(grad_clip=1e6),
}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", list(APPLY_CASES))
def test_apply_adam_is_adamw_with_clipping(names_ds, kernel, case):
    cfg, total = SMALL_CFG, 6
    adam = Adam(learning_rate=0.02, **APPLY_CASES[case])
    params = init_params(cfg, random.Random(2))
    model = CompiledGPT(cfg, params, kernel=kernel)
    p, m, v = np.array(params), np.zeros(cfg.num_params), np.zeros(cfg.num_params)
    factors = []
    for step in range(4):
        _, grad = model.loss_and_grad(names_ds, [step])
        model.apply_adam(grad, step, total, adam)
        lr = plain_rate(step, total, 0.02, adam.lr_schedule, adam.warmup_steps, adam.min_lr)
        p, m, v, factor = adamw(p, m, v, grad, step, lr, adam, decay_mask(cfg))
        factors.append(factor)
    for name, got, want in (("params", model.params, p), ("m", model.m, m), ("v", model.v, v)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-18, err_msg=name)
    # what the case names happened (else the checks above prove less)
    if adam.grad_clip == 0.3:
        assert max(factors) < 1
    else:
        assert factors == [1.0] * 4
    if case != "clip-above-the-norm":
        assert np.max(np.abs(model.params - adamw_without_options(names_ds, cfg, params))) > 1e-5


def adamw_without_options(ds, cfg, params) -> np.ndarray:
    """The weights after the same four steps with every option at its default."""
    model = CompiledGPT(cfg, params)
    for step in range(4):
        model.apply_adam(model.loss_and_grad(ds, [step])[1], step, 6, Adam(learning_rate=0.02))
    return model.params


@pytest.mark.parametrize("kernel", KERNELS)
def test_training_steps_are_adamw_with_clipping(names_ds, kernel):
    """CompiledGPT.train (phases A to D, two gradient groups) against its own
    gradients fed to numpy AdamW, step by step."""
    cfg, B, steps = SMALL_CFG, 3, 5
    adam = Adam(learning_rate=0.02, **ALL_ON)
    params = init_params(cfg, random.Random(5))
    model = CompiledGPT(cfg, params, batch_size=B, kernel=kernel)
    losses = model.train(names_ds, 0, steps, steps, adam)
    oracle = CompiledGPT(cfg, params, batch_size=B, kernel=kernel)  # for its gradients
    p, m, v = np.array(params), np.zeros(cfg.num_params), np.zeros(cfg.num_params)
    for step in range(steps):
        loss, grad = oracle.loss_and_grad(names_ds, [step * B + b for b in range(B)])
        assert loss == pytest.approx(losses[step], rel=1e-12)
        lr = plain_rate(step, steps, 0.02, "cosine", 2, 0.002)
        p, m, v, factor = adamw(p, m, v, grad, step, lr, adam, decay_mask(cfg))
        assert factor < 1  # clipped
        oracle.set_params(p)
    for name, got, want in (("params", model.params, p), ("m", model.m, m), ("v", model.v, v)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-18, err_msg=name)


def test_weight_decay_spares_norm_gains_by_name():
    """The convention both engines follow: decay by name, never on a gain."""
    assert decays("layer0.attn_wq") and decays("wte") and decays("lm_head")
    assert not decays("layer3.norm1_gain") and not decays("final_norm.gain")


@pytest.mark.parametrize("arch", [{"n_layer": 1}, {"n_layer": 3},
                                  {"n_layer": 2, "norm_gain": True, "final_norm": True,
                                   "tie_embeddings": True},
                                  {"n_layer": 2, "norm_gain": True, "final_norm": True,
                                   "emb_norm": False}],
                         ids=["1-layer", "3-layers", "gains-tied", "gains-no-emb-norm"])
def test_compiled_blocks_decay_as_their_names_say(names_ds, arch):
    """Each weight block's decay flag (schedule.pxd) agrees, weight by weight,
    with the naming convention over config.param_layout; the blocks cover every
    weight once (the gains and a tied wte too)."""
    cfg = GPTConfig(vocab_size=27, n_embd=16, n_head=4, **arch)
    engine = load_kernel().module.Engine(cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.block_size,
                                         cfg.vocab_size, 2, 2, "float64", cfg.mlp_ratio,
                                         cfg.norm, cfg.norm_gain, cfg.final_norm,
                                         cfg.activation, cfg.tie_embeddings, cfg.emb_norm)
    plan = engine.plan(names_ds.starts, np.array([0, 1], np.int64))
    by_block = np.full(cfg.num_params, -1.0)
    for (matrix, nout, nin, o0, o1), decay in zip(plan["blocks"], plan["block_decay"]):
        assert np.all(by_block[matrix + o0 * nin:matrix + o1 * nin] == -1)  # no overlap
        by_block[matrix + o0 * nin:matrix + o1 * nin] = float(decay)
    np.testing.assert_array_equal(by_block, decay_mask(cfg))


# ---------------------------------------------------------------------------
# The compiled engine against the reference, every option on

_reference = {}


def reference_run(ds, schedule):
    if schedule not in _reference:
        ref = ReferenceGPT(SMALL_CFG, init_params(SMALL_CFG, random.Random(9)), batch_size=2)
        losses = ref.train(ds, 0, 6, 6, Adam(**{**ALL_ON, "lr_schedule": schedule}))
        _reference[schedule] = (losses, ref.params)
    return _reference[schedule]


@pytest.mark.parametrize("kernel, dtype, tol", precisions(1e-10, 1e-4))
@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_compiled_matches_reference_with_every_option(names_ds, schedule, kernel, dtype, tol):
    ref_losses, ref_params = reference_run(names_ds, schedule)
    params = init_params(SMALL_CFG, random.Random(9))
    model = CompiledGPT(SMALL_CFG, params, dtype, threads=1, batch_size=2, kernel=kernel)
    losses = model.train(names_ds, 0, 6, 6, Adam(**{**ALL_ON, "lr_schedule": schedule}))
    assert rel_close(losses, ref_losses, tol).all(), (losses, ref_losses)
    ok = rel_close(model.params, ref_params, tol)
    assert ok.all(), f"{np.count_nonzero(~ok)} params differ"
    assert np.max(np.abs(ref_params - np.array(params))) > 1e-3  # the run moved them


GAINS_TIED = GPTConfig(vocab_size=27, n_embd=8, n_head=2, block_size=8, norm="layernorm",
                       norm_gain=True, final_norm=True, tie_embeddings=True)


@pytest.mark.parametrize("kernel, dtype, tol", precisions(1e-10, 1e-4))
def test_gains_and_a_tied_head_with_every_option(names_ds, kernel, dtype, tol):
    """Weight decay spares the gains (and decays the tied wte once), clipping
    counts their gradients: the compiled engine against the reference."""
    adam = Adam(**ALL_ON)
    params = init_params(GAINS_TIED, random.Random(9))
    if "gains" not in _reference:
        ref = ReferenceGPT(GAINS_TIED, params, batch_size=2)
        _reference["gains"] = (ref.train(names_ds, 0, 6, 6, adam), ref.params)
    ref_losses, ref_params = _reference["gains"]
    model = CompiledGPT(GAINS_TIED, params, dtype, threads=1, batch_size=2, kernel=kernel)
    losses = model.train(names_ds, 0, 6, 6, adam)
    assert rel_close(losses, ref_losses, tol).all(), (losses, ref_losses)
    ok = rel_close(model.params, ref_params, tol)
    assert ok.all(), f"{np.count_nonzero(~ok)} params differ"
    gains = decay_mask(GAINS_TIED) == 0
    assert gains.any() and np.max(np.abs(ref_params[gains] - 1)) > 1e-3  # the gains moved


# ---------------------------------------------------------------------------
# Thread count and resume, every option on

needs_two_cores = pytest.mark.skipif(kernels.cpu_count() < 2, reason="needs 2 CPU cores")


@needs_two_cores
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("threads, batch", [(2, 8), (3, 7)])
def test_thread_count_changes_no_bit(names_ds, monkeypatch, dtype, threads, batch):
    kernel = KERNELS[-1]
    if not load_kernel(kernel).module.openmp_enabled():
        pytest.skip(f"kernel {kernel} built without OpenMP")
    monkeypatch.setattr(kernels, "cpu_count", lambda: 16)  # 3 threads: uneven teams
    cfg, adam = GPTConfig(vocab_size=27, n_embd=8, n_head=2, n_layer=2), Adam(**ALL_ON)
    params = init_params(cfg, random.Random(11))
    runs = []
    for t in (1, threads):
        model = CompiledGPT(cfg, params, dtype, threads=t, batch_size=batch, kernel=kernel)
        assert model.threads == t
        losses = model.train(names_ds, 0, 20, 20, adam)
        _, grad = model.loss_and_grad(names_ds, list(range(batch)))
        model.apply_adam(grad, 19, 20, adam)  # _adam_all: clipping over the threads too
        runs.append((losses, model.params.copy(), model.m.copy(), model.v.copy()))
    for one, many in zip(*runs):
        assert np.array_equal(one, many)
    plain = CompiledGPT(cfg, params, dtype, threads=1, batch_size=batch, kernel=kernel)
    assert not np.array_equal(plain.train(names_ds, 0, 20, 20), runs[0][0])  # options matter


@pytest.mark.parametrize("dtype, threads", [("float64", 1), ("float32", 2)])
def test_resume_with_every_option_is_bit_identical(tmp_path, dtype, threads):
    tc = TrainConfig(steps=40, batch_size=4, dtype=dtype, **ALL_ON)
    whole = Trainer(SMALL_CFG, tc, threads=threads)
    whole.train()
    first = Trainer(SMALL_CFG, tc, threads=threads)
    first.train(17)
    first.save(tmp_path / "half.npz")
    resumed = load_checkpoint(tmp_path / "half.npz", threads=3 - threads)
    assert resumed.train_config.adam == tc.adam
    resumed.train()
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    for name in ("params", "m", "v"):
        assert np.array_equal(getattr(resumed.model, name), getattr(whole.model, name)), name


def test_old_checkpoint_loads_with_the_defaults(tmp_path):
    """A checkpoint written before these options existed has none of their
    fields: it loads with the defaults, the original's optimizer, and goes on
    with the bits of an uninterrupted run."""
    tc = TrainConfig(steps=20, batch_size=2)
    whole = Trainer(SMALL_CFG, tc, threads=1)
    whole.train()
    first = Trainer(SMALL_CFG, tc, threads=1)
    first.train(8)
    first.save(tmp_path / "new.npz")

    def drop_new_fields(meta):
        for name in NEW_FIELDS:
            del meta["train_config"][name]

    rewrite_checkpoint(tmp_path / "new.npz", tmp_path / "old.npz", drop_new_fields)

    ckpt = read_checkpoint(tmp_path / "old.npz")
    assert all(getattr(ckpt.train_config, name) == getattr(TrainConfig(), name)
               for name in NEW_FIELDS)
    assert ckpt.train_config.adam == Adam()
    resumed = load_checkpoint(tmp_path / "old.npz")
    resumed.train()
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    assert np.array_equal(resumed.model.params, whole.model.params)
    # flags that contradict the old checkpoint's (default) options are refused
    result = call_main(train.main, ["--resume", "old.npz", "--grad-clip", "1"], cwd=tmp_path)
    assert_cli_error(result, "--grad-clip 1.0 (checkpoint: 0.0)")


# ---------------------------------------------------------------------------
# Bad input

BAD_ARGS = {
    "schedule-unknown": (["--lr-schedule", "step"], "--lr-schedule"),
    "warmup-negative": (["--warmup-steps", "-1"], "warmup_steps"),
    "warmup-past-steps": (["--steps", "10", "--warmup-steps", "11"], "warmup_steps"),
    "warmup-not-int": (["--warmup-steps", "1.5"], "--warmup-steps"),
    "min-lr-negative": (["--min-lr", "-0.001"], "min_lr"),
    "min-lr-above-lr": (["--learning-rate", "0.01", "--min-lr", "0.02"], "min_lr"),
    "min-lr-nan": (["--min-lr", "nan"], "min_lr"),
    "weight-decay-negative": (["--weight-decay", "-0.1"], "weight_decay"),
    "weight-decay-inf": (["--weight-decay", "inf"], "weight_decay"),
    "grad-clip-negative": (["--grad-clip", "-1"], "grad_clip"),
    "grad-clip-nan": (["--grad-clip", "nan"], "grad_clip"),
}


@pytest.mark.parametrize("args, word", list(BAD_ARGS.values()), ids=list(BAD_ARGS))
def test_cli_refuses_bad_options(tmp_path, args, word):
    result = call_main(train.main, args, cwd=tmp_path)
    assert_cli_error(result, word)
    assert result.stdout == ""


BAD_TRAIN = {
    "schedule-unknown": dict(lr_schedule="exponential"),
    "schedule-none": dict(lr_schedule=None),
    "warmup-negative": dict(warmup_steps=-1),
    "warmup-past-steps": dict(steps=10, warmup_steps=11),
    "warmup-float": dict(warmup_steps=2.0),
    "warmup-bool": dict(warmup_steps=True),
    "min-lr-negative": dict(min_lr=-1e-3),
    "min-lr-above-lr": dict(learning_rate=0.01, min_lr=0.0100001),
    "weight-decay-negative": dict(weight_decay=-0.5),
    "weight-decay-nan": dict(weight_decay=float("nan")),
    "grad-clip-negative": dict(grad_clip=-0.1),
    "grad-clip-string": dict(grad_clip="1"),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN))
def test_train_config_refuses_bad_options(case):
    kwargs = BAD_TRAIN[case]
    field = [name for name in kwargs if name in NEW_FIELDS][0]
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(warmup_steps=10, steps=10), dict(min_lr=0.01),
                                    dict(weight_decay=0, grad_clip=0)])
def test_edge_values_are_accepted(kwargs):
    TrainConfig(**kwargs)


def test_cli_run_with_every_option(tmp_path):
    """The flags reach the run: its losses are the API's with the same settings."""
    args = SMALL + ["--steps", "12", "--batch-size", "2", "--lr-schedule", "cosine",
                    "--warmup-steps", "3", "--min-lr", "0.001", "--weight-decay", "0.1",
                    "--grad-clip", "0.5", "--num-samples", "0", "--threads", "1",
                    "--json", "run.json"]
    result = call_main(train.main, args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "run.json").read_text())
    tc = TrainConfig(steps=12, batch_size=2, lr_schedule="cosine", warmup_steps=3, min_lr=0.001,
                     weight_decay=0.1, grad_clip=0.5)
    trainer = Trainer(SMALL_CFG, tc, threads=1)
    assert record["losses"] == trainer.train().tolist()
    plain = Trainer(SMALL_CFG, TrainConfig(steps=12, batch_size=2), threads=1)
    assert record["losses"] != plain.train().tolist()
