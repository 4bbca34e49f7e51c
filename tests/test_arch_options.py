"""The architecture options of GPTConfig: their parameters, their init, their flags.

Their gradients against the reference are in test_gradients.py.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from microgpt_fast import TrainConfig, Trainer, load_checkpoint, sweep
from microgpt_fast.config import GPTConfig, configs_from, init_params, on_off, param_layout

from helpers import assert_cli_error, run_cli


def matrices(cfg, params) -> dict:
    """name -> (rows, cols) array of a flat parameter list."""
    out, at = {}, 0
    for name, rows, cols in param_layout(cfg):
        out[name] = np.array(params[at:at + rows * cols]).reshape(rows, cols)
        at += rows * cols
    return out


@pytest.mark.parametrize("ratio", [1, 2, 4, 7])
def test_mlp_ratio_sets_the_hidden_width(ratio):
    cfg = GPTConfig(n_embd=8, n_head=2, n_layer=2, mlp_ratio=ratio)
    shapes = {name: (rows, cols) for name, rows, cols in param_layout(cfg)}
    assert shapes["layer1.mlp_fc1"] == (ratio * 8, 8)
    assert shapes["layer1.mlp_fc2"] == (8, ratio * 8)
    assert cfg.num_params == 27 * 8 * 2 + 16 * 8 + 2 * (4 * 64 + 2 * ratio * 64)


def test_microgpt_init_is_the_original_stream():
    """Every weight N(0, 0.08), drawn in flat order: the original's numbers."""
    cfg = GPTConfig()
    rng = random.Random(42)
    expected = [rng.gauss(0, 0.08) for _ in range(cfg.num_params)]
    assert init_params(cfg, random.Random(42)) == expected


def test_gpt2_init_scales_the_residual_projections():
    cfg = GPTConfig(n_embd=64, n_head=4, n_layer=3, init="gpt2")
    mats = matrices(cfg, init_params(cfg, random.Random(0)))
    for name, mat in mats.items():
        want = 0.02 / math.sqrt(6) if name.endswith(("attn_wo", "mlp_fc2")) else 0.02
        assert abs(mat.std() / want - 1) < 0.1, (name, mat.std(), want)
        assert abs(mat.mean()) < 0.1 * want


def test_an_explicit_std_overrides_the_init():
    cfg = GPTConfig(init="gpt2")
    rng = random.Random(1)
    assert init_params(cfg, random.Random(1), std=0.3) == [rng.gauss(0, 0.3)
                                                           for _ in range(cfg.num_params)]


NORM_OPTIONS = {"norm_gain": True, "final_norm": True, "tie_embeddings": True}


@pytest.mark.parametrize("options", [{"norm_gain": True}, {"tie_embeddings": True},
                                     NORM_OPTIONS, {**NORM_OPTIONS, "init": "gpt2"},
                                     {**NORM_OPTIONS, "emb_norm": False}],
                         ids=["gain", "tie", "gain-final-tie", "gain-final-tie-gpt2",
                              "gain-final-tie-no-emb-norm"])
def test_gains_start_at_one_and_the_matrices_keep_their_draws(options):
    """Gains are 1 and take no draws; a tied model draws lm_head's numbers all the
    same: every other matrix, and the stream after init, are the untied model's."""
    plain = GPTConfig(n_embd=8, n_head=2, n_layer=2, init=options.get("init", "microgpt"))
    cfg = GPTConfig(n_embd=8, n_head=2, n_layer=2, **options)
    plain_rng, rng = random.Random(3), random.Random(3)
    want, got = matrices(plain, init_params(plain, plain_rng)), matrices(cfg, init_params(cfg, rng))
    assert rng.getstate() == plain_rng.getstate()
    gains = ["emb_norm_gain"] if cfg.emb_norm else []  # no norm, no gain
    gains += ["layer0.attn_norm_gain", "layer0.mlp_norm_gain",
              "layer1.attn_norm_gain", "layer1.mlp_norm_gain"]
    gains += ["final_norm_gain"] if cfg.final_norm else []
    expected = [name for name in want if not (cfg.tie_embeddings and name == "lm_head")]
    expected += gains if cfg.norm_gain else []
    assert list(got) == expected  # the original's matrices first, in their order
    for name, mat in got.items():
        if name.endswith("gain"):
            assert mat.shape == (1, 8) and (mat == 1).all(), name
        else:
            np.testing.assert_array_equal(mat, want[name], err_msg=name)
    assert cfg.num_params == sum(m.size for m in got.values())


@pytest.mark.parametrize("text, value", [("on", True), ("OFF", False), ("true", True),
                                         ("0", False), ("yes", True), (False, False)])
def test_on_off_reads_a_switch(text, value):
    assert on_off(text) is value


@pytest.mark.parametrize("bad", ["maybe", "", "2"])
def test_on_off_refuses_anything_else(bad):
    with pytest.raises(ValueError, match="on or off"):
        on_off(bad)


@pytest.mark.parametrize("field, bad", [("mlp_ratio", 0), ("mlp_ratio", 2.5),
                                        ("norm", "batchnorm"), ("activation", "tanh"),
                                        ("init", "xavier"), ("norm_gain", "on"),
                                        ("tie_embeddings", 1), ("emb_norm", None)])
def test_config_refuses_bad_options(field, bad):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**{field: bad})


@pytest.mark.parametrize("args, words", [
    (["--mlp-ratio", "0"], ["mlp_ratio", ">= 1"]),
    (["--mlp-ratio", "1.5"], ["--mlp-ratio"]),
    (["--init", "xavier"], ["--init", "invalid choice"]),
    (["--activation", "tanh"], ["--activation", "invalid choice"]),
    (["--norm", "batchnorm"], ["--norm", "invalid choice"]),
    (["--tie-embeddings", "maybe"], ["--tie-embeddings", "expected on or off"]),
    (["--final-norm", "2"], ["--final-norm"]),
    (["--emb-norm", "maybe"], ["--emb-norm"]),
])
def test_bad_option_flags_fail_in_one_line(tmp_path, args, words):
    assert_cli_error(run_cli(["--steps", "1"] + args, tmp_path), *words)


def test_norm_options_train_from_the_command_line(tmp_path):
    result = run_cli(["--steps", "3", "--norm", "layernorm", "--norm-gain", "on",
                      "--final-norm", "on", "--tie-embeddings", "on", "--num-samples", "1"],
                     tmp_path)
    assert result.returncode == 0, result.stderr
    assert "num params: 3824" in result.stdout  # 4192 - 27*16 (lm_head) + 4 gains of 16


def test_emb_norm_off_trains_from_the_command_line(tmp_path):
    """Without the embedding's norm the first loss already differs (the same
    weights see another input), and with gains there is one gain fewer."""
    base = ["--steps", "2", "--num-samples", "0"]
    on, off = run_cli(base, tmp_path), run_cli(base + ["--emb-norm", "off"], tmp_path)
    assert off.returncode == 0, off.stderr
    assert "num params: 4192" in off.stdout
    assert loss_lines(off.stdout)[0] != loss_lines(on.stdout)[0]
    gains = run_cli(base + ["--emb-norm", "off", "--norm-gain", "on"], tmp_path)
    assert gains.returncode == 0, gains.stderr
    assert "num params: 4224" in gains.stdout  # 4192 + the layer's 2 gains of 16, no emb_norm_gain


def test_emb_norm_is_a_sweep_axis():
    grid = sweep.parse_grid(["emb_norm=on,off"])
    assert grid == {"emb_norm": [True, False]}
    models = [configs_from({"emb_norm": value})[0] for value in grid["emb_norm"]]
    assert [model.emb_norm for model in models] == [True, False]


def test_options_train_from_the_command_line(tmp_path):
    result = run_cli(["--steps", "3", "--mlp-ratio", "2", "--init", "gpt2",
                      "--num-samples", "1"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "num params: 3168" in result.stdout  # 27*16*2 + 16*16 + 4*256 + 2*512


def loss_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("step ")]


def test_activation_trains_from_the_command_line(tmp_path):
    base = ["--steps", "3", "--n-embd", "8", "--n-head", "2", "--num-samples", "1"]
    relu = run_cli(base, tmp_path)
    for activation in ("gelu", "relu2", "silu"):
        result = run_cli(base + ["--activation", activation], tmp_path)
        assert result.returncode == 0, result.stderr
        steps = loss_lines(result.stdout)
        assert len(steps) == 3
        # the same weights through another activation: other losses from the first step
        assert steps[0] != loss_lines(relu.stdout)[0]


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_a_checkpoint_keeps_its_activation(tmp_path, activation):
    """Resumed from a checkpoint, a run goes on with the activation it was saved
    with: the bits of a run that never stopped."""
    cfg = GPTConfig(n_embd=8, n_head=2, block_size=8, activation=activation)
    tc = TrainConfig(steps=20, batch_size=2)
    whole = Trainer(cfg, tc, threads=1)
    whole.train()
    first = Trainer(cfg, tc, threads=1)
    first.train(10)
    first.save(tmp_path / "half.npz")
    resumed = load_checkpoint(tmp_path / "half.npz")
    assert resumed.config.activation == activation
    resumed.train()
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    np.testing.assert_array_equal(resumed.model.params, whole.model.params)
