"""--preset: a known recipe's settings, under the flags given explicitly."""

from __future__ import annotations

import json

import pytest

from microgpt_fast.config import PRESETS, GPTConfig, TrainConfig, configs_from, with_preset

from helpers import assert_cli_error, run_cli, run_sweep

NANOGPT = {
    "norm": "layernorm", "norm_gain": True, "emb_norm": False, "final_norm": True,
    "activation": "gelu", "tie_embeddings": True, "init": "gpt2", "learning_rate": 1e-3,
    "beta1": 0.9,
    "beta2": 0.99, "lr_schedule": "cosine", "warmup_steps": 100, "min_lr": 1e-4,
    "weight_decay": 0.1, "grad_clip": 1.0,
}


def test_nanogpt_preset_is_nanogpts_recipe():
    assert PRESETS["nanogpt"] == NANOGPT
    model, train = configs_from(with_preset("nanogpt", {}))
    assert isinstance(model, GPTConfig) and isinstance(train, TrainConfig)
    assert model.norm == "layernorm" and model.tie_embeddings and train.grad_clip == 1.0


def test_given_fields_win_over_the_preset():
    values = with_preset("nanogpt", {"learning_rate": 0.01, "norm": "rmsnorm"})
    assert values["learning_rate"] == 0.01 and values["norm"] == "rmsnorm"
    assert values["activation"] == "gelu"
    assert with_preset(None, {"n_embd": 8}) == {"n_embd": 8}


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset 'gpt5'"):
        with_preset("gpt5", {})


def test_help_lists_what_the_preset_sets(tmp_path):
    result = run_cli(["--help"], tmp_path)
    text = " ".join(result.stdout.split())
    assert ("nanogpt: norm=layernorm, norm_gain=on, emb_norm=off, final_norm=on, "
            "activation=gelu") in text
    assert "weight_decay=0.1, grad_clip=1.0" in text


def test_preset_from_the_command_line(tmp_path):
    result = run_cli(["--preset", "nanogpt", "--steps", "120", "--learning-rate", "0.002",
                      "--num-samples", "1", "--json", "-"], tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    expected = {**NANOGPT, "learning_rate": 0.002}
    settings = {**record["config"], **record["train_config"]}
    assert {k: settings[k] for k in expected} == expected


def test_preset_warmup_longer_than_the_run_is_one_error(tmp_path):
    assert_cli_error(run_cli(["--preset", "nanogpt", "--steps", "50"], tmp_path),
                     "warmup_steps")
    assert_cli_error(run_cli(["--preset", "gpt5"], tmp_path), "--preset", "invalid choice")


def test_resume_with_the_same_preset(tmp_path):
    args = ["--preset", "nanogpt", "--steps", "110", "--num-samples", "0"]
    first = run_cli(args + ["--stop-at", "105", "--save", "a.npz"], tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_cli(args + ["--resume", "a.npz"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert_cli_error(run_cli(["--preset", "nanogpt", "--norm", "rmsnorm", "--steps", "110",
                              "--resume", "a.npz"], tmp_path), "--norm rmsnorm")


def test_sweep_over_a_preset(tmp_path):
    result = run_sweep(["--preset", "nanogpt", "--steps", "101", "--n-embd", "8",
                        "--n-head", "2", "--grid", "activation=gelu,relu", "--workers", "1",
                        "--no-progress", "--json", "s.json"], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "s.json").read_text())
    assert all(r["status"] == "ok" for r in report["runs"])
    assert report["fixed"]["norm"] == "layernorm" and report["fixed"]["weight_decay"] == 0.1
