"""CompiledGPT.evaluate and apply_adam against the reference."""

from __future__ import annotations

import random

import numpy as np
import pytest

from microgpt_fast.config import GPTConfig, init_params, param_layout
from microgpt_fast.engine import CompiledGPT
from microgpt_fast.reference import ReferenceGPT

from helpers import KERNELS


@pytest.mark.parametrize("kernel", KERNELS)
def test_evaluate_is_the_training_loss_without_update(kernel, names_ds):
    cfg = GPTConfig(vocab_size=27, n_embd=8, n_head=2, n_layer=2)
    params = init_params(cfg, random.Random(1))
    model = CompiledGPT(cfg, params, batch_size=3, kernel=kernel)
    ids = [5, 17, 400]
    per_doc = model.evaluate(names_ds, ids)
    ref = ReferenceGPT(cfg, params)
    expected = [ref.doc_loss(names_ds.doc_tokens(i)).data for i in ids]
    np.testing.assert_allclose(per_doc, expected, rtol=1e-12)
    loss, _ = model.loss_and_grad(names_ds, ids)
    assert loss == pytest.approx(np.mean(per_doc), rel=1e-12)
    assert np.array_equal(model.params, np.array(params))  # no update


@pytest.mark.parametrize("kernel", KERNELS)
def test_apply_adam_matches_a_reference_step(kernel, names_ds):
    cfg = GPTConfig(vocab_size=27, n_embd=8, n_head=2)
    params = init_params(cfg, random.Random(2))
    model = CompiledGPT(cfg, params, kernel=kernel)
    ref = ReferenceGPT(cfg, params)
    for step in range(3):
        _, grad = model.loss_and_grad(names_ds, [step])
        model.apply_adam(grad, step, 10)
        ref.train_step([names_ds.doc_tokens(step)], step, 10)
    np.testing.assert_allclose(model.params, ref.flat_params(), rtol=1e-10, atol=1e-12)
    # the transposed copy followed: the forward pass sees the new weights
    loss, _ = model.loss_and_grad(names_ds, [7])
    assert loss == pytest.approx(ref.doc_loss(names_ds.doc_tokens(7)).data, rel=1e-12)


def test_apply_adam_rejects_a_wrong_shape():
    cfg = GPTConfig(vocab_size=27)
    model = CompiledGPT(cfg, init_params(cfg, random.Random(0)))
    with pytest.raises(ValueError, match="grad must have shape"):
        model.apply_adam(np.zeros(3), 0, 10)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_transposed_copy_is_every_matrix_transposed(kernel, dtype):
    """The forward pass reads each weight matrix transposed; shapes whose sides are
    not whole tiles (27 x 12, 36 x 12 ...) exercise the tiled copy's edges."""
    cfg = GPTConfig(vocab_size=27, n_embd=12, n_head=3, n_layer=2, block_size=9)
    model = CompiledGPT(cfg, init_params(cfg, random.Random(3)), dtype=dtype, kernel=kernel)
    wt = model.engine.wt  # written by set_params when the model was made
    expected, offset = wt.copy(), 0   # wte and wpe are read as stored: not copied
    for name, rows, cols in param_layout(cfg):
        if name.endswith(("attn_wk", "attn_wv")):  # q, k and v are one (3C, C) matrix
            continue
        if name.endswith("attn_wq"):
            rows *= 3
        if name not in ("wte", "wpe"):
            block = model.params[offset:offset + rows * cols].reshape(rows, cols)
            expected[offset:offset + rows * cols] = block.T.ravel()
        offset += rows * cols
    assert offset == len(expected)
    np.testing.assert_array_equal(wt, expected)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_buffers_start_on_cache_lines(dtype):
    cfg = GPTConfig(vocab_size=27, n_embd=12, n_head=3)
    model = CompiledGPT(cfg, init_params(cfg, random.Random(5)), dtype=dtype)
    for buf in (model.params, model.m, model.v, model.engine.wt):
        assert buf.ctypes.data % 64 == 0
        assert buf.dtype == np.dtype(dtype) and buf.shape == (cfg.num_params,)
    np.testing.assert_array_equal(model.params,
                                  np.array(init_params(cfg, random.Random(5)), dtype=dtype))
