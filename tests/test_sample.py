"""python -m microgpt_fast.sample: deterministic draws, prompt, top-k, max-len, bad input.

Without --seed the draws continue the checkpoint's random stream, so a checkpoint
saved at the end of training prints that run's samples; with --seed the same
seed gives the same samples.
"""

from __future__ import annotations

import pytest

from helpers import SMALL, assert_cli_error, run_cli, run_sample

NUM = 12


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint saved at the end of a 60-step run (block size 8), and the samples
    that run printed."""
    folder = tmp_path_factory.mktemp("sample")
    result = run_cli(SMALL + ["--steps", "60", "--batch-size", "2", "--threads", "1", "--quiet",
                              "--num-samples", str(NUM), "--save", "run.npz"], cwd=folder)
    assert result.returncode == 0, result.stderr
    samples = [line.split(": ", 1)[1] for line in result.stdout.splitlines()
               if line.startswith("sample ")]
    assert len(samples) == NUM
    return folder / "run.npz", samples


def draw(trained, *args) -> list[str]:
    path, _ = trained
    result = run_sample(["--checkpoint", path, *args], cwd=path.parent)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def test_without_seed_prints_the_runs_own_samples(trained):
    assert draw(trained, "--num-samples", NUM) == trained[1]
    # and the command is repeatable: the checkpoint's stream is not advanced on disk
    assert draw(trained, "--num-samples", NUM) == trained[1]


def test_default_number_of_samples(trained):
    assert len(draw(trained)) == 20


def test_same_seed_same_samples_other_seed_other_samples(trained):
    a = draw(trained, "--seed", "7", "--num-samples", "20")
    b = draw(trained, "--seed", "7", "--num-samples", "20")
    c = draw(trained, "--seed", "8", "--num-samples", "20")
    assert len(a) == 20
    assert a == b
    assert a != c


def test_every_sample_starts_with_prompt(trained):
    for extra in ([], ["--seed", "3"]):
        samples = draw(trained, "--prompt", "ma", "--num-samples", "15", *extra)
        assert len(samples) == 15
        assert all(s.startswith("ma") for s in samples), samples
        assert any(len(s) > 2 for s in samples), samples  # something was drawn


def test_top_k_1_is_greedy(trained):
    a = draw(trained, "--top-k", "1", "--num-samples", "6", "--seed", "1")
    b = draw(trained, "--top-k", "1", "--num-samples", "6", "--seed", "2")
    assert len(a) == 6 and len(set(a)) == 1
    assert a == b  # the draws do not matter when only one token is kept
    c = draw(trained, "--top-k", "1", "--num-samples", "3", "--prompt", "b")
    assert len(set(c)) == 1 and c[0].startswith("b")


@pytest.mark.parametrize("prompt, max_len", [("", 1), ("", 3), ("ka", 2)])
def test_max_len_bounds_drawn_characters(trained, prompt, max_len):
    samples = draw(trained, "--prompt", prompt, "--max-len", max_len, "--num-samples", "30",
                   "--seed", "5")
    assert len(samples) == 30
    assert all(s.startswith(prompt) for s in samples)
    assert all(len(s) <= len(prompt) + max_len for s in samples), samples
    assert max(len(s) for s in samples) == len(prompt) + max_len  # the bound is reached


def test_prompt_one_short_of_block_size_is_fine(trained):
    samples = draw(trained, "--prompt", "a" * 7, "--num-samples", "3")
    assert all(s.startswith("a" * 7) and len(s) <= 8 for s in samples)


BAD = {
    "temperature-0": (["--temperature", "0"], "temperature"),
    "top-k-0": (["--top-k", "0"], "--top-k"),
    "max-len-0": (["--max-len", "0"], "--max-len"),
    "num-samples-negative": (["--num-samples", "-1"], "--num-samples"),
    "prompt-outside-vocabulary": (["--prompt", "Mé"], "vocabulary"),
    "prompt-as-long-as-block": (["--prompt", "a" * 8], "block size"),
}


@pytest.mark.parametrize("args, word", list(BAD.values()), ids=list(BAD))
def test_bad_sample_arguments(trained, args, word):
    path, _ = trained
    result = run_sample(["--checkpoint", path, *args], cwd=path.parent)
    assert_cli_error(result, word)
    assert result.stdout == ""


def test_missing_checkpoint_argument(tmp_path):
    result = run_sample(["--num-samples", "3"], cwd=tmp_path)
    assert_cli_error(result, "--checkpoint")
    assert result.stdout == ""
