"""Bad input: one clear error line and exit code 2 from the CLI, ValueError from the API."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from microgpt_fast import train
from microgpt_fast.config import GPTConfig, SampleConfig, TrainConfig, init_params
from microgpt_fast.data import DataError
from microgpt_fast.engine import CompiledGPT
from microgpt_fast.kernels import KernelError, load_kernel
from microgpt_fast.reference import ReferenceGPT
from microgpt_fast.trainer import Trainer

from helpers import assert_cli_error, call_main, cli_env, run_cli


# ---------------------------------------------------------------------------
# Bad data files

BAD_FILES = {
    "missing": None,
    "empty": b"",
    "blank-lines": b"   \n\n \t \n\n   \n",
    "binary-not-utf8": bytes([0xFF, 0xFE, 0x00, 0x80, 0x81, 0xC3, 0x28, 0x00, 0x0A, 0xFF]),
    "utf8-then-bad-byte": "ok\nfine\n".encode() + b"\xc3\x28\n",
}


def _bad_file(tmp_path, kind):
    path = tmp_path / f"{kind}.txt"
    if BAD_FILES[kind] is not None:
        path.write_bytes(BAD_FILES[kind])
    return path


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_cli_bad_data_file(tmp_path, kind):
    path = _bad_file(tmp_path, kind)
    result = run_cli(["--data", path, "--steps", "1"], cwd=tmp_path)
    line = assert_cli_error(result, str(path))
    assert line.startswith("error: ")
    assert result.stdout == ""


def test_cli_data_is_a_directory(tmp_path):
    result = run_cli(["--data", tmp_path, "--steps", "1"], cwd=tmp_path)
    assert_cli_error(result, "directory")


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_api_bad_data_file(tmp_path, kind):
    path = _bad_file(tmp_path, kind)
    with pytest.raises(DataError) as info:
        Trainer(GPTConfig(), TrainConfig(steps=1), data=path)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# Bad sizes and hyperparameters, through the CLI

BAD_ARGS = {
    "n-embd-not-divisible": (["--n-embd", "10", "--n-head", "4"], "n_embd"),
    "n-embd-0": (["--n-embd", "0"], "n_embd"),
    "n-head-0": (["--n-head", "0"], "n_head"),
    "steps-0": (["--steps", "0"], "steps"),
    "steps-negative": (["--steps", "-1"], "steps"),
    "steps-not-int": (["--steps", "abc"], "--steps"),
    "batch-size-0": (["--batch-size", "0"], "batch_size"),
    "block-size-0": (["--block-size", "0"], "block_size"),
    "threads-0": (["--threads", "0"], "threads"),
    "threads-negative": (["--threads", "-2"], "threads"),
    "learning-rate-0": (["--learning-rate", "0"], "learning_rate"),
    "learning-rate-negative": (["--learning-rate", "-0.1"], "learning_rate"),
    "learning-rate-nan": (["--learning-rate", "nan"], "learning_rate"),
    "learning-rate-inf": (["--learning-rate", "inf"], "learning_rate"),
    "beta1-1": (["--beta1", "1"], "beta1"),
    "beta2-negative": (["--beta2", "-0.5"], "beta2"),
    "eps-0": (["--eps", "0"], "eps"),
    "temperature-0": (["--temperature", "0"], "temperature"),
    "temperature-negative": (["--temperature", "-1"], "temperature"),
    "dtype-float16": (["--dtype", "float16"], "--dtype"),
    "engine-unknown": (["--engine", "jax"], "--engine"),
    "kernel-unknown": (["--kernel", "sse9"], "--kernel"),
    "n-layer-0": (["--n-layer", "0"], "n_layer"),
    "num-samples-negative": (["--num-samples", "-1"], "num_samples"),
    "log-every-0": (["--log-every", "0"], "log-every"),
    "unknown-flag": (["--bogus"], "--bogus"),
}


@pytest.mark.parametrize("args, word", list(BAD_ARGS.values()), ids=list(BAD_ARGS))
def test_cli_bad_arguments(tmp_path, args, word):
    result = call_main(train.main, args, cwd=tmp_path)
    assert_cli_error(result, word)
    assert result.stdout == ""


def test_cli_bad_kernel_in_environment(tmp_path):
    result = run_cli(["--steps", "1"], cwd=tmp_path, env=cli_env(MICROGPT_FAST_KERNEL="sse9"))
    assert_cli_error(result, "sse9")


def test_cli_unwritable_json_path(tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "run.json"
    result = run_cli(["--steps", "1", "--num-samples", "0", "--json", target], cwd=tmp_path)
    assert_cli_error(result)


# ---------------------------------------------------------------------------
# The same validation through the API

BAD_MODEL = {
    "n_embd-not-divisible": (dict(n_embd=10, n_head=4), "n_embd"),
    "n_embd-0": (dict(n_embd=0), "n_embd"),
    "n_head-0": (dict(n_head=0), "n_head"),
    "n_layer-0": (dict(n_layer=0), "n_layer"),
    "block_size-0": (dict(block_size=0), "block_size"),
    "vocab_size-1": (dict(vocab_size=1), "vocab_size"),
    "n_embd-float": (dict(n_embd=16.0), "n_embd"),
    "n_layer-bool": (dict(n_layer=True), "n_layer"),
}


@pytest.mark.parametrize("kwargs, field", list(BAD_MODEL.values()), ids=list(BAD_MODEL))
def test_gpt_config_validate(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**kwargs).validate()
    with pytest.raises(ValueError, match=field):
        Trainer(GPTConfig(**kwargs), TrainConfig(steps=1))


BAD_TRAIN = {
    "steps-0": (dict(steps=0), "steps"),
    "steps-negative": (dict(steps=-1), "steps"),
    "steps-float": (dict(steps=2.5), "steps"),
    "batch_size-0": (dict(batch_size=0), "batch_size"),
    "learning_rate-0": (dict(learning_rate=0), "learning_rate"),
    "learning_rate-negative": (dict(learning_rate=-0.1), "learning_rate"),
    "learning_rate-nan": (dict(learning_rate=float("nan")), "learning_rate"),
    "beta1-1": (dict(beta1=1.0), "beta1"),
    "beta2-negative": (dict(beta2=-0.1), "beta2"),
    "eps-0": (dict(eps=0.0), "eps"),
    "dtype-float16": (dict(dtype="float16"), "dtype"),
    "seed-string": (dict(seed="42"), "seed"),
}

BAD_SAMPLING = {
    "temperature-0": (dict(temperature=0), "temperature"),
    "temperature-negative": (dict(temperature=-1.0), "temperature"),
    "temperature-inf": (dict(temperature=float("inf")), "temperature"),
    "num_samples-negative": (dict(num_samples=-1), "num_samples"),
}


@pytest.mark.parametrize("kwargs, field", list(BAD_TRAIN.values()), ids=list(BAD_TRAIN))
def test_train_config_validate(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kwargs).validate()
    with pytest.raises(ValueError, match=field):
        Trainer(GPTConfig(), TrainConfig(**kwargs))


@pytest.mark.parametrize("kwargs, field", list(BAD_SAMPLING.values()), ids=list(BAD_SAMPLING))
def test_sample_config_validate(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SampleConfig(**kwargs)
    with pytest.raises(ValueError, match=field):
        Trainer(GPTConfig(), TrainConfig(steps=1), sampling=SampleConfig(**kwargs))


@pytest.mark.parametrize("threads", [0, -2, 1.5])
def test_trainer_threads_must_be_positive(threads):
    with pytest.raises(ValueError, match="threads"):
        Trainer(GPTConfig(), TrainConfig(steps=1), threads=threads)


def test_valid_configs_pass():
    assert GPTConfig().validate().num_params == 4192
    assert TrainConfig().validate().steps == 1000
    TrainConfig(beta1=0.0).validate()
    SampleConfig(num_samples=0).validate()


def test_trainer_unknown_engine():
    with pytest.raises(ValueError, match="engine"):
        Trainer(GPTConfig(), TrainConfig(steps=1), engine="jax")


def test_trainer_unknown_kernel():
    with pytest.raises(KernelError):
        Trainer(GPTConfig(), TrainConfig(steps=1), kernel="sse9")
    with pytest.raises(ValueError):  # KernelError is a ValueError
        load_kernel("sse9")


def test_trainer_sample_bad_temperature():
    t = Trainer(GPTConfig(n_embd=4, n_head=1, block_size=4), TrainConfig(steps=1))
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            t.sample(1, temperature=bad)


def test_engines_reject_bad_arguments(names_ds, unicode_ds):
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=4, n_head=1, block_size=4)
    params = init_params(cfg, random.Random(0))
    with pytest.raises(ValueError, match="dtype"):
        CompiledGPT(cfg, params, dtype="float16")
    with pytest.raises(ValueError, match="batch_size"):
        CompiledGPT(cfg, params, batch_size=0)
    with pytest.raises(ValueError, match="parameters"):
        CompiledGPT(cfg, params[:-1])
    with pytest.raises(ValueError, match="parameters"):
        ReferenceGPT(cfg, params + [0.0])
    model = CompiledGPT(cfg, params, batch_size=2)
    with pytest.raises(ValueError, match="vocab"):
        model.loss_and_grad(unicode_ds, [0])
    with pytest.raises(ValueError):
        model.loss_and_grad(names_ds, [0, 1, 2])  # more docs than batch_size
    with pytest.raises(ValueError):
        model.loss_and_grad(names_ds, [len(names_ds.docs)])  # out of range
    with pytest.raises(ValueError):
        model.loss_and_grad(names_ds, [-1])
    with pytest.raises(ValueError):
        model.set_params(np.zeros(3))
    with pytest.raises(ValueError, match="temperature"):
        model.sample(random.Random(0), names_ds.bos, 0.0)


def test_boolean_seed_is_rejected():
    with pytest.raises(ValueError, match="seed"):
        TrainConfig(seed=True).validate()


def test_output_into_a_closed_pipe_exits_quietly(tmp_path):
    """`... | head -1`: the reader goes away; no traceback, no error line."""
    proc = subprocess.Popen([sys.executable, "-m", "microgpt_fast.train", "--steps", "200"],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, stderr
    assert stderr == ""
