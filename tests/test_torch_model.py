"""The PyTorch model (microgpt_fast.torch_model) against the reference and the engine.

PyTorch is an optional extra: without it this module skips (bench --torch's
error without PyTorch is tested in test_bench.py, which always runs).
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

pytest.importorskip("torch", reason="PyTorch is an optional extra (pip install -e .[torch]); "
                                    "these tests compare the engine with the torch model")

from microgpt_fast import bench  # noqa: E402
from microgpt_fast.config import Adam, GPTConfig, init_params  # noqa: E402
from microgpt_fast.data import load_text  # noqa: E402
from microgpt_fast.engine import CompiledGPT  # noqa: E402
from microgpt_fast.reference import ReferenceGPT  # noqa: E402
from microgpt_fast.torch_model import TorchGPT, pack_batch  # noqa: E402

from helpers import assert_matrices_close, call_main  # noqa: E402

# every architecture option, alone or with others, on small models with
# several layers and heads, blocks shorter and longer than the documents
OPTIONS = [
    {},
    {"norm": "layernorm"},
    {"norm_gain": True, "final_norm": True},
    {"emb_norm": False, "tie_embeddings": True},
    {"activation": "gelu", "mlp_ratio": 3},
    {"activation": "relu2", "mlp_ratio": 1},
    {"activation": "silu", "norm_gain": True},
    {"norm": "layernorm", "norm_gain": True, "final_norm": True, "activation": "gelu",
     "tie_embeddings": True, "init": "gpt2", "emb_norm": False},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in
                                                             o.items()) or "original")
def test_loss_and_gradient_match_the_reference(options, unicode_ds):
    """float64 at the initial weights: the loss of a batch of documents of
    different lengths (some cut at the block size) and every matrix's gradient."""
    cfg = GPTConfig(vocab_size=unicode_ds.vocab_size, n_embd=6, n_head=2, n_layer=2,
                    block_size=7, **options)
    params = init_params(cfg, random.Random(5))
    ids = [0, 3, 8]  # 11, 2 and 22 characters long
    loss, grad = TorchGPT(cfg, params, "float64", 1, 3).loss_and_grad(unicode_ds, ids)
    want_loss, want_grad = ReferenceGPT(cfg, params, 3).loss_and_grad(unicode_ds, ids)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert_matrices_close(cfg, grad, want_grad, 1e-10)


def test_the_padded_batch_holds_each_documents_positions(unicode_ds):
    """Row b: the first n_b tokens of the document as inputs, the next n_b as targets."""
    T = 7
    ids = np.array([0, 1, 3, 8])
    inputs, targets, lengths = pack_batch(unicode_ds, ids, T)
    assert inputs.shape == targets.shape == (4, T)
    for b, i in enumerate(ids):
        tokens = unicode_ds.doc_tokens(int(i))
        n = min(T, len(tokens) - 1)
        assert lengths[b] == n
        assert inputs[b, :n].tolist() == tokens[:n]
        assert targets[b, :n].tolist() == tokens[1:n + 1]


def test_training_steps_match_the_reference(names_ds):
    """float64, three steps with every part of the update (warm-up, cosine,
    clipping, decay): the losses and the weights after them."""
    cfg = GPTConfig(vocab_size=27, n_embd=8, n_head=2, norm_gain=True)
    params = init_params(cfg, random.Random(1))
    adam = Adam(learning_rate=0.02, lr_schedule="cosine", warmup_steps=1, min_lr=0.002,
                weight_decay=0.1, grad_clip=0.5)
    ref = ReferenceGPT(cfg, params, 2)
    ours = TorchGPT(cfg, params, "float64", 1, 2)
    want = ref.train(names_ds, 0, 3, 5, adam)
    np.testing.assert_allclose(ours.train(names_ds, 0, 3, 5, adam), want, rtol=1e-12)
    np.testing.assert_allclose(ours.params, ref.params, rtol=1e-10, atol=1e-13)
    # the clipping and the decay were at work: without them the weights differ
    plain = TorchGPT(cfg, params, "float64", 1, 2)
    plain.train(names_ds, 0, 3, 5, Adam(learning_rate=0.02, lr_schedule="cosine",
                                        warmup_steps=1, min_lr=0.002))
    assert np.abs(plain.params - ref.params).max() > 1e-4


# float32 losses of 20 steps from the same start: the two sum in different
# orders, and the differences (about 1e-6 measured) grow with the steps
F32_LOSS_TOL = 1e-4


def test_twenty_float32_steps_match_the_engine_on_lines(names_ds):
    """Batches of names of different lengths, the nanoGPT recipe's update."""
    cfg = GPTConfig(vocab_size=27, n_embd=16, n_layer=2, norm="layernorm", norm_gain=True,
                    final_norm=True, activation="gelu", tie_embeddings=True, emb_norm=False)
    params = init_params(cfg, random.Random(42))
    adam = Adam(learning_rate=0.01, lr_schedule="cosine", warmup_steps=5, min_lr=0.001,
                weight_decay=0.1, grad_clip=1.0)
    engine = CompiledGPT(cfg, params, "float32", 1, 8)
    model = TorchGPT(cfg, params, "float32", 1, 8)
    want = engine.train(names_ds, 0, 20, 20, adam)
    got = model.train(names_ds, 0, 20, 20, adam)
    assert want[-1] < want[0] - 0.5  # it learned: the steps differ from each other
    np.testing.assert_allclose(got, want, rtol=0, atol=F32_LOSS_TOL)


def test_twenty_float32_steps_match_the_engine_on_text():
    """Windows of the play (the text format), the original's update."""
    text = load_text("shakespeare", 16, 42)
    cfg = GPTConfig(vocab_size=text.vocab_size, n_embd=16, n_head=4)
    params = init_params(cfg, random.Random(42))
    engine = CompiledGPT(cfg, params, "float32", 1, 8)
    model = TorchGPT(cfg, params, "float32", 1, 8)
    want = engine.train(text, 0, 20, 20)
    got = model.train(text, 0, 20, 20)
    assert want[-1] < want[0] - 0.5
    np.testing.assert_allclose(got, want, rtol=0, atol=F32_LOSS_TOL)
    held_out = text.held_out_windows(6)
    np.testing.assert_allclose(model.evaluate(held_out, np.arange(6)),
                               engine.evaluate(held_out, np.arange(6)), rtol=0,
                               atol=F32_LOSS_TOL)


def test_bench_torch_rows(tmp_path, monkeypatch):
    """bench --torch puts a torch row beside the throughput row, whose x/torch is
    its us/doc over ours; JSON and CSV carry it. (The eager row alone: compiling
    takes tens of seconds, too long for the suite.)"""
    monkeypatch.setattr(bench, "TORCH_ENGINES", {"torch": False})
    args = ["--variants", "generic", "--n-embd", "16", "--threads", "1", "--no-exact",
            "--throughput-docs", "64", "--repeats", "1", "--reference-steps", "0",
            "--peak-size", "64", "--torch", "--json", "b.json", "--csv", "b.csv"]
    result = call_main(bench.main, args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "x/torch" in result.stdout and "compile s" in result.stdout
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["engine"] for r in rows] == ["generic", "torch"]
    ours, theirs = rows
    assert theirs["steps"] == ours["steps"] and theirs["batch"] == ours["batch"] == 16
    assert theirs["vs_torch"] == pytest.approx(theirs["us_per_doc"] / ours["us_per_doc"])
    assert "vs_torch" in (tmp_path / "b.csv").read_text().splitlines()[0]
