"""The text format: one stream of characters, trained in windows at hashed offsets.

The oracles are written here from the definitions, not taken from the code
under test: splitmix64 on Python integers for the window offsets, string
slices of the text for the windows, the pure-Python reference's doc_loss for
the losses, and a plain loop over the reference's forward pass for sampling.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from microgpt_fast import GPTConfig, SampleConfig, TrainConfig, Trainer, load_checkpoint
from microgpt_fast.config import init_params
from microgpt_fast.data import bundled_path, load_text
from microgpt_fast.engine import CompiledGPT
from microgpt_fast.kernels import cpu_count, load_kernel
from microgpt_fast.reference import ReferenceGPT, softmax

from helpers import (KERNELS, assert_cli_error, rewrite_checkpoint, run_cli, run_sample,
                     run_sweep)

T = 8
CFG = GPTConfig(n_embd=8, n_head=2, block_size=T)
# for the tests that run the pure-Python reference, whose cost grows with the block
SHORT = GPTConfig(n_embd=8, n_head=2, block_size=4)
TEXT_RUN = ["--n-embd", "8", "--n-head", "2", "--block-size", str(T)]


@pytest.fixture(scope="module")
def text_path(tmp_path_factory):
    """The first 3000 characters of the bundled Shakespeare: several lines, newlines
    and punctuation, some 50 distinct characters."""
    with open(bundled_path("shakespeare"), encoding="utf-8") as f:
        text = f.read(3000)
    path = tmp_path_factory.mktemp("text") / "play.txt"
    path.write_text(text, encoding="utf-8")
    return path


def text_trainer(path, engine="compiled", config=CFG, **train):
    tc = TrainConfig(**{"steps": 20, "batch_size": 2, "data_format": "text",
                        "val_fraction": 0.0, **train})
    return Trainer(config, tc, data=path, engine=engine, threads=1)


# ---------------------------------------------------------------------------
# The window offsets: a pure function of (seed, step, index in the batch)

MASK = 2**64 - 1


def splitmix_mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def oracle_offset(seed: int, stream: int, row: int, b: int, count: int) -> int:
    gamma = 0x9E3779B97F4A7C15
    key = splitmix_mix((seed + (stream + 1) * gamma) & MASK)
    row_key = splitmix_mix((key + (row + 1) * gamma) & MASK)
    return splitmix_mix((row_key + (b + 1) * gamma) & MASK) % count


def test_windows_are_hashed_offsets_of_the_text(text_path):
    text = text_path.read_text(encoding="utf-8")
    stream = load_text(text_path, T, seed=7)
    count = len(text) - T
    windows, ids = stream.batches(5, 4, 3)  # steps 5..8, batch 3
    assert windows.vocab_size == len(stream.chars) == len(set(text))
    assert ids.tolist() == list(range(12))
    for k in range(12):
        step, b = 5 + k // 3, k % 3
        offset = oracle_offset(7, 0, step, b, count)
        window = "".join(stream.chars[t] for t in windows.doc_tokens(k))
        assert window == text[offset:offset + T + 1]
    # every window counts T predictions, the last one included
    assert windows.positions(T, 3, 0, 4).tolist() == [T] * 12


def test_windows_do_not_depend_on_the_chunking(text_path):
    stream = load_text(text_path, T, seed=42)
    whole = stream.window_offsets(0, 30, 4)
    parts = np.concatenate([stream.window_offsets(0, 7, 4), stream.window_offsets(7, 1, 4),
                            stream.window_offsets(8, 22, 4)])
    assert np.array_equal(whole, parts)
    assert len(np.unique(whole)) > 100  # 120 draws: not one offset repeated over and over
    assert not np.array_equal(whole, load_text(text_path, T, seed=43).window_offsets(0, 30, 4))


def test_compiled_training_in_chunks_is_bit_identical(text_path):
    stream = load_text(text_path, T, seed=42)
    cfg = GPTConfig(n_embd=8, n_head=2, block_size=T, vocab_size=stream.vocab_size)
    params = init_params(cfg, random.Random(1))
    one = CompiledGPT(cfg, params, "float64", 1, 3)
    losses = one.train(stream, 0, 20, 20)
    chunked = CompiledGPT(cfg, params, "float64", 1, 3)
    pieces = [chunked.train(stream, s0, n, 20) for s0, n in ((0, 1), (1, 6), (7, 13))]
    assert np.array_equal(losses, np.concatenate(pieces))
    assert np.array_equal(one.params, chunked.params)
    assert np.array_equal(one.m, chunked.m) and np.array_equal(one.v, chunked.v)


# ---------------------------------------------------------------------------
# Training against the reference


def test_text_training_matches_the_reference(text_path):
    """8 steps, compiled float64 against the reference trained on windows cut from
    the text by hand: the step loss is the mean over all predicted positions. (8
    steps, not more: each reference step costs; 8 steps of 2 windows are 16 hashed
    offsets, steps of a decaying rate and Adam past its first step.)"""
    text = text_path.read_text(encoding="utf-8")
    steps = 8
    compiled = text_trainer(text_path, config=SHORT, steps=steps)
    assert compiled.config.vocab_size == len(set(text))  # no BOS in a text's vocabulary
    losses = compiled.train()

    index = {c: i for i, c in enumerate(compiled.chars)}
    ref = ReferenceGPT(compiled.config, init_params(compiled.config, random.Random(42)), 2)
    t = SHORT.block_size
    expected = []
    for step in range(steps):
        batch = []
        for b in range(2):
            offset = oracle_offset(42, 0, step, b, len(text) - t)
            batch.append([index[c] for c in text[offset:offset + t + 1]])
        expected.append(ref.train_step(batch, step, steps, compiled.train_config.adam))
        # equal windows: the mean of the windows' means is the mean over positions
    assert np.allclose(losses, expected, rtol=1e-10, atol=0)
    assert np.allclose(compiled.model.params, ref.params, rtol=1e-9, atol=1e-12)

    # the reference engine behind the Trainer trains the same windows
    reference = text_trainer(text_path, engine="reference", config=SHORT, steps=steps)
    assert np.allclose(reference.train(3), losses[:3], rtol=1e-10, atol=0)


def test_save_and_resume_in_text_mode_is_bit_identical(text_path, tmp_path):
    tc = dict(steps=30, batch_size=3, val_fraction=0.2)
    whole = text_trainer(text_path, **tc)
    whole_losses = whole.train()
    first = text_trainer(text_path, **tc)
    first.train(11)
    first.save(tmp_path / "half.npz")
    second = load_checkpoint(tmp_path / "half.npz", threads=1)
    assert second.train_config.data_format == "text"
    second.train()
    assert np.array_equal(second.losses, whole_losses)
    assert np.array_equal(second.model.params, whole.model.params)
    assert np.array_equal(second.model.m, whole.model.m)
    assert second.evaluate() == whole.evaluate()
    assert second.sample(2, max_len=12) == whole.sample(2, max_len=12)


@pytest.mark.skipif(cpu_count() < 2, reason="needs at least 2 CPU cores")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_and_two_threads_give_identical_bits_in_text_mode(text_path, dtype):
    kernel = KERNELS[-1]
    if not load_kernel(kernel).module.openmp_enabled():
        pytest.skip(f"kernel {kernel} built without OpenMP")
    stream = load_text(text_path, T, seed=42)
    cfg = GPTConfig(n_embd=8, n_head=2, block_size=T, vocab_size=stream.vocab_size)
    params = init_params(cfg, random.Random(3))
    models = [CompiledGPT(cfg, params, dtype, threads, 6, kernel) for threads in (1, 2)]
    losses = [m.train(stream, 0, 25, 25) for m in models]
    assert models[1].threads == 2
    assert np.array_equal(losses[0], losses[1])
    assert np.array_equal(models[0].params, models[1].params)
    assert np.array_equal(models[0].v, models[1].v)


# ---------------------------------------------------------------------------
# Validation


def test_validation_loss_is_the_mean_over_every_held_out_position(text_path):
    """The held-out fiftieth of the text, cut here into windows of T predictions
    that start where the previous one ends, through the reference's doc_loss,
    weighted by the positions each window predicts. (A fiftieth, 60 characters:
    8 windows, the last a short one, are what the property needs; each costs a
    reference forward pass.)"""
    text = text_path.read_text(encoding="utf-8")
    trainer = text_trainer(text_path, steps=10, val_fraction=0.02)
    trainer.train()
    n_val = round(len(text) * 0.02)
    held_out = text[len(text) - n_val:]
    assert trainer.val_dataset.num_chars == n_val
    assert trainer.dataset.num_chars == len(text) - n_val

    ref = ReferenceGPT(trainer.config, trainer.flat_params().tolist())
    index = {c: i for i, c in enumerate(trainer.chars)}
    total, positions = 0.0, 0
    for start in range(0, len(held_out) - 1, T):
        window = [index[c] for c in held_out[start:start + T + 1]]
        n = len(window) - 1
        total += ref.doc_loss(window).data * n
        positions += n
    assert positions == n_val - 1  # every held-out character after the first, once
    assert (n_val - 1) % T != 0   # so that the last window is a short one
    assert trainer.evaluate() == pytest.approx(total / positions, rel=1e-10)

    # --eval-docs: that many windows of T predictions at fixed offsets
    losses = []
    for k in range(5):
        offset = oracle_offset(42, 1, k, 0, n_val - T)
        losses.append(ref.doc_loss([index[c] for c in held_out[offset:offset + T + 1]]).data)
    assert trainer.evaluate(5) == pytest.approx(sum(losses) / 5, rel=1e-10)


# ---------------------------------------------------------------------------
# Sampling


def oracle_text_sample(ref: ReferenceGPT, chars, prompt: str, length: int,
                       temperature: float, rng: random.Random) -> str:
    """Each character drawn from a fresh forward pass over the last T characters."""
    index = {c: i for i, c in enumerate(chars)}
    out = [index[c] for c in prompt]
    cfg = ref.config
    for _ in range(length):
        context = out[-cfg.block_size:]
        keys, values = [[] for _ in range(cfg.n_layer)], [[] for _ in range(cfg.n_layer)]
        for pos, token in enumerate(context):
            logits = ref.gpt(token, pos, keys, values)
        probs = [p.data for p in softmax([l / temperature for l in logits])]
        out.append(rng.choices(range(len(probs)), weights=probs)[0])
    return "".join(chars[t] for t in out)


def test_text_samples_continue_the_prompt_and_slide_past_the_block(text_path):
    trainer = text_trainer(text_path, config=SHORT, steps=10)
    trainer.train()
    ref = ReferenceGPT(trainer.config, trainer.flat_params().tolist())
    t = SHORT.block_size
    for prompt in ("Th", "Citizen:"):  # shorter and longer than the block
        samples = trainer.sample(2, 0.8, prompt, max_len=2 * t, rng=random.Random(5))
        rng = random.Random(5)
        expected = [oracle_text_sample(ref, trainer.chars, prompt, 2 * t, 0.8, rng)
                    for _ in range(2)]
        assert samples == expected
        assert all(s.startswith(prompt) and len(s) == len(prompt) + 2 * t for s in samples)
        # the reference engine draws the same, through the same draw_text
        ids = trainer.encode(prompt)
        drawn = ref.sample_text(random.Random(5), 0.8, ids, 2 * t)
        assert "".join(trainer.chars[i] for i in drawn) == samples[0]


def test_text_sampling_defaults(text_path):
    trainer = text_trainer(text_path, steps=2)
    trainer.train()
    samples = trainer.sample(1, rng=random.Random(0))
    assert samples[0].startswith("\n") and len(samples[0]) == 1 + 300
    with pytest.raises(ValueError, match="prompt"):
        trainer.sample(1, prompt="")


# ---------------------------------------------------------------------------
# Commands


def test_shakespeare_is_text_by_default(tmp_path):
    result = run_cli(TEXT_RUN + ["--data", "shakespeare", "--steps", "4", "--batch-size", "8",
                                 "--num-samples", "2", "--max-len", "20", "--threads", "1",
                                 "--json", "run.json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    n = 1115394
    n_val = round(n * 0.1)
    params = GPTConfig(n_embd=8, n_head=2, block_size=T, vocab_size=65).num_params
    assert lines[0] == (f"num chars: {n} ({n - n_val} train, {n_val} validation), "
                        f"vocab size: 65, num params: {params}")
    assert lines[5] == "step    4 /    4 | val loss " + lines[5].rsplit(" ", 1)[1]
    assert "--- inference (new, hallucinated text) ---" in lines
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["data"] == "shakespeare" and record["data_format"] == "text"
    assert record["train_config"]["val_fraction"] == 0.1
    assert record["num_chars"] == n - n_val and record["num_val_chars"] == n_val
    assert [len(s) for s in record["samples"]] == [21, 21]
    text = "\n".join(lines)
    for i, sample in enumerate(record["samples"]):
        assert f"--- sample {i + 1} ---{sample}" in text


def test_names_by_name_is_the_default_run(tmp_path):
    default = run_cli(["--steps", "30", "--num-samples", "5"], cwd=tmp_path)
    named = run_cli(["--steps", "30", "--num-samples", "5", "--data", "names"], cwd=tmp_path)
    assert default.returncode == named.returncode == 0
    assert default.stdout.splitlines()[:-1] == named.stdout.splitlines()[:-1]
    assert default.stdout.splitlines()[0] == "num docs: 32033"
    # a path needs ./ to be a file called names
    missing = run_cli(["--data", "./names"], cwd=tmp_path)
    assert_cli_error(missing, "not found", "names")


def test_text_checkpoint_samples_and_format_on_resume(text_path, tmp_path):
    run = run_cli(TEXT_RUN + ["--data", text_path, "--data-format", "text", "--steps", "6",
                              "--stop-at", "3", "--num-samples", "2", "--prompt", "MEN",
                              "--max-len", "15", "--threads", "1", "--save", "run.npz"],
                  cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith("num chars: 3000 (2700 train, 300 validation)")
    printed = run.stdout.split("--- inference (new, hallucinated text) ---\n")[1]
    sampled = run_sample(["--checkpoint", "run.npz", "--num-samples", "2"], cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    # the run's own samples: the stream continued, its prompt and length kept
    assert printed.startswith(sampled.stdout)
    assert sampled.stdout.startswith("--- sample 1 ---\nMEN")

    conflict = run_cli(["--resume", "run.npz", "--data-format", "lines"], cwd=tmp_path)
    assert_cli_error(conflict, "--data-format lines", "checkpoint: text")
    resumed = run_cli(["--resume", "run.npz", "--num-samples", "0", "--quiet"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run.npz at step 3 of 6" in resumed.stdout


def test_checkpoint_without_a_format_is_lines(tmp_path):
    """Checkpoints written before the text format existed were trained on lines."""
    t = Trainer(CFG, TrainConfig(steps=6, batch_size=2), threads=1,
                sampling=SampleConfig(num_samples=3))
    t.train(3)
    t.save(tmp_path / "new.npz")

    def as_before_text(meta):
        assert meta["train_config"].pop("data_format") == "lines"
        for name in ("prompt", "max_len"):
            del meta["sample_config"][name]
        meta["data"] = None

    rewrite_checkpoint(tmp_path / "new.npz", tmp_path / "old.npz", as_before_text)
    old = load_checkpoint(tmp_path / "old.npz", threads=1)
    assert old.train_config == t.train_config and old.data == "names"
    assert old.sample() == t.sample()
    assert np.array_equal(old.train(3), t.train(3))


TOO_SHORT = "to be or not"


@pytest.mark.parametrize("content, args, words", [
    (TOO_SHORT, ["--data-format", "text"], ["12 characters", "block_size + 1 = 17"]),
    ("", ["--data-format", "text"], ["empty"]),
    ("a\nb\n", ["--data-format", "bogus"], ["--data-format", "bogus"]),
    (TOO_SHORT * 3, ["--data-format", "text", "--block-size", "8", "--val-fraction", "0.1"],
     ["validation part 4 characters", "block_size + 1 = 9"]),
], ids=["shorter-than-a-window", "empty", "bogus-format", "validation-part-too-short"])
def test_bad_text_input_is_one_error_line(tmp_path, content, args, words):
    (tmp_path / "data.txt").write_text(content, encoding="utf-8")
    result = run_cli(["--data", "data.txt", *args], cwd=tmp_path)
    assert_cli_error(result, *words)


def test_sweep_on_shakespeare_runs_text(tmp_path):
    result = run_sweep(TEXT_RUN + ["--data", "shakespeare", "--grid", "learning_rate=0.01,0.02",
                                   "--steps", "5", "--batch-size", "4", "--workers", "2",
                                   "--no-progress",
                                   "--json", "sweep.json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "data shakespeare (text)" in result.stderr
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert record["data"] == "shakespeare" and record["data_format"] == ["text"]
    runs = record["runs"]
    assert [r["status"] for r in runs] == ["ok", "ok"]
    # text mode holds out a tenth by default, so every run has a validation loss;
    # a lines run of the same model would have none
    assert all(r["val_loss"] is not None for r in runs)
    direct = Trainer(GPTConfig(n_embd=8, n_head=2, block_size=T),
                     TrainConfig(steps=5, batch_size=4, learning_rate=0.01), data="shakespeare",
                     threads=1)
    losses = direct.train()
    first = next(r for r in runs if r["setting"] == {"learning_rate": 0.01})
    assert first["tail_loss"] == float(losses[-1:].mean())
    assert first["val_loss"] == direct.evaluate()
