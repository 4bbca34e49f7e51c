"""pytest-benchmark timings of the compiled engine's pieces and of the reference.

Each benchmark names exactly what it times:
    forward          forward pass and loss of one batch (evaluate), no gradient
    forward_backward forward, backward and every weight gradient (loss_and_grad)
    adam             one Adam update of all parameters from a given gradient
    train_step       one whole training step (documents, gradients, Adam)
    sample           one sampled name (forward with KV cache, softmax, random.choices)
    reference_step   one step of the pure-Python reference, batch 1, n_embd 16
"""

from __future__ import annotations

import itertools
import random

import numpy as np

from microgpt_fast.config import GPTConfig, init_params
from microgpt_fast.reference import ReferenceGPT


def test_forward(benchmark, setup, names):
    model, name, ids = setup
    losses = benchmark(model.evaluate, names, ids)
    assert np.isfinite(losses).all()


def test_forward_backward(benchmark, setup, names):
    model, name, ids = setup
    loss, grad = benchmark(model.loss_and_grad, names, ids)
    assert np.isfinite(loss) and np.abs(grad).max() > 0


def test_adam(benchmark, setup, names):
    model, name, ids = setup
    _, grad = model.loss_and_grad(names, ids)
    steps = itertools.count()
    benchmark(lambda: model.apply_adam(grad, next(steps), 10**9))
    assert np.isfinite(model.params).all()


def test_train_step(benchmark, setup, names):
    model, name, ids = setup
    steps = itertools.count(100)
    losses = benchmark(lambda: model.train(names, next(steps), 1, 10**9))
    assert np.isfinite(losses).all()


def test_sample(benchmark, setup, names):
    model, name, ids = setup
    rng = random.Random(0)
    tokens = benchmark(model.sample, rng, names.bos, 0.5)
    assert all(0 <= t < names.bos for t in tokens)


def test_reference_step(benchmark, names):
    cfg = GPTConfig(vocab_size=names.vocab_size)
    model = ReferenceGPT(cfg, init_params(cfg, random.Random(0)))
    steps = itertools.count()
    loss = benchmark.pedantic(
        lambda: model.train_step([names.doc_tokens(0)], next(steps), 10**9),
        rounds=3, iterations=1)
    assert loss > 0
