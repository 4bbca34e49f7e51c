"""Attention of documents of many lengths and a wide head, against the reference.

The vector builds run a short document's attention in one call (src/attention.h),
across rows of positions of 1 to 4 vectors and across head dims in whole vectors
and a partial last one; longer documents take the general path. Documents of
2, 23 and 36 positions and a head size of 20 reach each of these in every build
(16 floats or 8 doubles a vector with AVX-512: 36 positions are 3 rows of floats
but 5 of doubles, the general path). Sampling feeds one position at a time
against the KV cache, the forward pass's other shape (p0 > 0).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from microgpt_fast.config import GPTConfig, init_params
from microgpt_fast.engine import CompiledGPT
from microgpt_fast.reference import ReferenceGPT

from helpers import KERNELS, assert_matrices_close, precisions

C, H, T = 20, 1, 40   # head size 20: 16 + 4 floats, 8 + 8 + 4 doubles (AVX-512)


@pytest.fixture(scope="module")
def case(unicode_ds):
    """Config, params and three documents of 36, 23 and 2 positions, with the
    reference's loss and gradient (once for every kernel and dtype)."""
    cfg = GPTConfig(vocab_size=unicode_ds.vocab_size, n_embd=C, n_head=H, n_layer=1,
                    block_size=T)
    # float32 numbers held as float64: both engines start from the same weights
    params = np.array(init_params(cfg, random.Random(11), std=0.3), np.float32)
    params = params.astype(np.float64).tolist()
    by_length = {len(unicode_ds.doc_tokens(i)) - 1: i for i in range(len(unicode_ds.docs))}
    doc_ids = [by_length[36], by_length[23], by_length[2]]
    loss, grad = ReferenceGPT(cfg, params).batch_loss_and_grad(
        [unicode_ds.doc_tokens(i) for i in doc_ids])
    return cfg, params, doc_ids, loss, np.array(grad)


@pytest.mark.parametrize("kernel, dtype, tol", precisions(1e-10, 1e-4))
def test_gradient_of_long_short_and_wide_heads(unicode_ds, case, kernel, dtype, tol):
    cfg, params, doc_ids, ref_loss, ref_grad = case
    model = CompiledGPT(cfg, np.array(params, dtype), dtype, batch_size=3, kernel=kernel)
    loss, grad = model.loss_and_grad(unicode_ds, doc_ids)
    assert abs(loss - ref_loss) <= tol * abs(ref_loss)
    assert_matrices_close(cfg, grad, ref_grad, tol)


@pytest.mark.parametrize("kernel", KERNELS)
def test_kv_cache_positions_match_reference(unicode_ds, case, kernel):
    """next_probs one position at a time (the cache holds the earlier ones), and
    window_probs over the whole prefix, give the reference's distribution."""
    cfg, params, doc_ids, _, _ = case
    tokens = unicode_ds.doc_tokens(doc_ids[0])[:T]
    model = CompiledGPT(cfg, params, "float64", kernel=kernel)
    next_probs, window_probs = model.next_probs_fn(1.0), model.window_probs_fn(1.0)
    ref = ReferenceGPT(cfg, params)
    keys, values = [[]], [[]]
    for pos, token in enumerate(tokens):
        logits = [x.data for x in ref.gpt(token, pos, keys, values)]
        top = max(logits)
        expected = np.array([math.exp(x - top) for x in logits])
        expected /= expected.sum()
        np.testing.assert_allclose(next_probs(token, pos), expected, rtol=1e-10, atol=1e-15)
        if pos in (1, 17, len(tokens) - 1):
            np.testing.assert_allclose(window_probs(tokens[:pos + 1]), expected, rtol=1e-10,
                                       atol=1e-15)
