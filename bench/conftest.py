"""Fixtures of the pytest-benchmark suite.

    pytest bench/ --benchmark-only            # time everything
    pytest bench/ --benchmark-disable         # run each benchmark once (a smoke test)

Standard configurations, on the bundled names:
    exact       float64, batch 1,  n_embd 16 (the original)
    thru16      float32, batch 16, n_embd 16
    thru64      float32, batch 16, n_embd 64
"""

from __future__ import annotations

import random

import pytest

from microgpt_fast.config import GPTConfig, init_params
from microgpt_fast.data import load_dataset
from microgpt_fast.engine import CompiledGPT

CONFIGS = {
    "exact": dict(dtype="float64", batch=1, n_embd=16),
    "thru16": dict(dtype="float32", batch=16, n_embd=16),
    "thru64": dict(dtype="float32", batch=16, n_embd=64),
}


@pytest.fixture(scope="session")
def names():
    return load_dataset(None, random.Random(42))


@pytest.fixture(params=list(CONFIGS), scope="module")
def setup(request, names):
    """(model, config name, batch of document ids) for one standard configuration."""
    c = CONFIGS[request.param]
    cfg = GPTConfig(vocab_size=names.vocab_size, n_embd=c["n_embd"])
    model = CompiledGPT(cfg, init_params(cfg, random.Random(0)), c["dtype"], None, c["batch"])
    model.train(names, 0, 20, 10**9)  # warm caches and the thread pool
    return model, request.param, list(range(c["batch"]))
