"""Text samples drawn many at once give the bits of drawing them one at a time.

The oracle is the plain sequential loop: each sample after the previous one,
each token from next_probs (while the text fits in the block) or window_probs
(past it) of that sample alone, and random.choices on the stream. choose is
held to random.choices itself.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from microgpt_fast import kernels
from microgpt_fast.config import GPTConfig, init_params
from microgpt_fast.engine import CompiledGPT
from microgpt_fast.reference import ReferenceGPT
from microgpt_fast.sampling import choose

from helpers import KERNELS

T = 8
CFG = GPTConfig(vocab_size=13, n_embd=8, n_head=2, block_size=T)


def peaked_params(cfg: GPTConfig, seed: int = 3) -> list[float]:
    """Weights large enough that the next-token distributions differ from uniform
    (random initial weights give logits near 0), so top-k and the draws matter."""
    return [4 * p for p in init_params(cfg, random.Random(seed))]


def oracle_top_k(probs: list[float], k: int) -> list[float]:
    """probs with all but the k largest set to 0, ties to the lower token id."""
    keep = set(sorted(range(len(probs)), key=lambda v: (-probs[v], v))[:k])
    return [p if v in keep else 0.0 for v, p in enumerate(probs)]


def sequential_samples(model, rng, temperature, prompt, length, num_samples, top_k):
    """One sample after another, one token at a time, as the original draws."""
    T = model.config.block_size
    samples = []
    for _ in range(num_samples):
        next_probs = model.next_probs_fn(temperature)
        window_probs = model.window_probs_fn(temperature)
        text, fed = list(prompt), 0
        for _ in range(length):
            if len(text) <= T:
                while fed < len(text):
                    probs = list(next_probs(text[fed], fed))
                    fed += 1
            else:
                probs = list(window_probs(text[-T:]))
            if top_k is not None:
                probs = oracle_top_k(probs, top_k)
            text.append(rng.choices(range(len(probs)), weights=probs)[0])
        samples.append(text)
    return samples


# ---------------------------------------------------------------------------
# choose: random.choices' arithmetic on a given uniform


class Fixed(random.Random):
    """A stream whose random() returns the given values in turn."""

    def __init__(self, values):
        super().__init__(0)
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def test_choose_is_random_choices_on_the_same_uniform():
    gen = np.random.default_rng(11)
    rng = random.Random(5)
    for V in (1, 2, 3, 13, 65, 200):
        rows, uniforms, expected = [], [], []
        for _ in range(150):
            w = gen.random(V) ** gen.integers(1, 8)  # from flat to very peaked
            if V > 2 and gen.random() < 0.5:  # top-k's zeros
                w[gen.permutation(V)[:gen.integers(1, V)]] = 0.0
            if gen.random() < 0.2:  # ties and exact binary fractions
                w = np.round(w * 4) / 4
            if not w.sum() > 0:
                w[gen.integers(V)] = 1.0
            state = rng.getstate()
            u = rng.random()
            rng.setstate(state)
            expected.append(rng.choices(range(V), weights=w.tolist())[0])
            rows.append(w)
            uniforms.append(u)
        got = choose(np.array(rows), np.array(uniforms))
        assert got.tolist() == expected
        assert V == 1 or len(set(expected)) > 1  # else this proves little
    # points that fall exactly on a running sum, and the ends of [0, 1)
    for weights, u in (([1.0, 1.0, 1.0, 1.0], 0.5), ([0.25, 0.25, 0.5], 0.25),
                       ([0.0, 1.0, 0.0], 0.0), ([0.5, 0.0, 0.5, 0.0], 0.5),
                       ([1.0, 2.0, 0.0, 0.0], 1 - 2**-53), ([3.0, 0.0], 0.0)):
        expected = Fixed([u]).choices(range(len(weights)), weights=weights)[0]
        assert choose(np.array([weights]), np.array([u])).tolist() == [expected]


def test_choose_refuses_what_choices_refuses():
    for weights in ([0.0, 0.0], [1.0, np.inf]):
        with pytest.raises(ValueError):
            random.Random(0).choices(range(2), weights=weights)
        with pytest.raises(ValueError):
            choose(np.array([weights]), np.array([0.5]))


# ---------------------------------------------------------------------------
# The engines' calls over several samples, row by row


ARCHS = {"original": {},
         "options": dict(norm="layernorm", norm_gain=True, final_norm=True, activation="gelu",
                         tie_embeddings=True, mlp_ratio=3),
         "no emb_norm": dict(emb_norm=False, activation="silu", n_layer=2)}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("arch", ARCHS)
def test_many_windows_and_slots_give_each_ones_bits(kernel, dtype, arch):
    """windows_probs (only the last rows past the last layer's keys and values) and
    feed_probs (a KV cache per document) against window_probs (every row of
    one window) and next_probs (document 0's cache), bit for bit."""
    cfg = GPTConfig(**{**CFG.to_dict(), **ARCHS[arch]})
    threads = 2 if kernels.cpu_count() >= 2 else 1
    model = CompiledGPT(cfg, peaked_params(cfg), dtype, threads=threads, batch_size=5,
                        kernel=kernel)
    gen = np.random.default_rng(1)
    for m in (T, 5, 1):
        windows = gen.integers(0, CFG.vocab_size, (5, m))
        for n in (5, 3, 1):
            many = model.windows_probs_fn(0.7)(windows[:n]).copy()
            window_probs = model.window_probs_fn(0.7)
            for j in range(n):
                assert np.array_equal(many[j], window_probs(windows[j])), (m, n, j)
    # each slot's KV cache: position by position, as next_probs alone
    texts = gen.integers(0, CFG.vocab_size, (4, T))
    fed = []
    feed_probs = model.feed_probs_fn(0.7)
    for pos in range(T):
        fed.append(feed_probs(texts[:, pos], pos).copy())
    for j in range(4):
        next_probs = model.next_probs_fn(0.7)
        for pos in range(T):
            assert np.array_equal(fed[pos][j], next_probs(texts[j, pos], pos)), (j, pos)
    assert not np.array_equal(fed[T - 1][0], fed[T - 1][1])  # else this proves nothing


# ---------------------------------------------------------------------------
# Whole samples and the stream


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("top_k", [None, 3])
def test_samples_at_once_are_the_samples_one_at_a_time(kernel, dtype, threads, top_k):
    if threads > kernels.cpu_count():
        pytest.skip("needs at least 2 CPU cores")
    model = CompiledGPT(CFG, peaked_params(CFG), dtype, threads=threads, batch_size=3,
                        kernel=kernel)
    for prompt, length in (([4, 1, 7], 2 * T), ([2] * (T + 3), 5), ([9], 1), ([5, 5], 0)):
        # 7 samples: groups of 3, 3 and 1
        rng, oracle_rng = random.Random(17), random.Random(17)
        rng.random()
        oracle_rng.random()  # a stream already in use, as after training
        got = model.sample_texts(rng, 0.6, prompt, length, 7, top_k)
        expected = sequential_samples(model, oracle_rng, 0.6, prompt, length, 7, top_k)
        assert got == expected, (prompt, length)
        assert rng.getstate() == oracle_rng.getstate()
        if length >= T:  # else this proves nothing
            assert len({tuple(s) for s in got}) > 1
        # one sample at a time through the same interface
        one_rng = random.Random(17)
        one_rng.random()
        assert [model.sample_text(one_rng, 0.6, prompt, length, top_k)
                for _ in range(7)] == expected


def test_reference_samples_at_once_are_its_samples_one_at_a_time():
    cfg = GPTConfig(vocab_size=7, n_embd=4, n_head=2, block_size=4)
    ref = ReferenceGPT(cfg, peaked_params(cfg), batch_size=2)
    for prompt, top_k in (([1, 2], None), ([3, 0, 1, 2, 6], 2)):
        rng, oracle_rng = random.Random(4), random.Random(4)
        got = ref.sample_texts(rng, 0.8, prompt, 7, 3, top_k)
        assert got == sequential_samples(ref, oracle_rng, 0.8, prompt, 7, 3, top_k)
        assert rng.getstate() == oracle_rng.getstate()


# ---------------------------------------------------------------------------
# Bad input stops at the boundary


def test_bad_group_calls_are_refused():
    model = CompiledGPT(CFG, init_params(CFG, random.Random(0)), "float64", batch_size=2)
    feed_probs, windows_probs = model.feed_probs_fn(), model.windows_probs_fn()
    for call in (lambda: feed_probs([1, 2, 3], 0),          # more samples than documents
                 lambda: feed_probs([], 0),
                 lambda: feed_probs([1, CFG.vocab_size], 0),
                 lambda: feed_probs([1, -1], 0),
                 lambda: feed_probs([1, 2], T),
                 lambda: feed_probs([1, 2], -1),
                 lambda: windows_probs([[1] * T] * 3),
                 lambda: windows_probs(np.zeros((1, T + 1), int)),
                 lambda: windows_probs(np.zeros((1, 0), int)),
                 lambda: windows_probs([[1, 2], [3, CFG.vocab_size]]),
                 lambda: windows_probs([1, 2, 3])):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError, match="temperature"):
        model.feed_probs_fn(0.0)
    with pytest.raises(ValueError, match="prompt"):
        model.sample_texts(random.Random(0), 0.5, [], 3, 2)
