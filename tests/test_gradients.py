"""Gradients of the compiled engine against the pure-Python reference.

Every available kernel variant, float64 and float32, on a dozen small model
shapes chosen to hit SIMD remainder loops (odd widths), several heads and
layers, block sizes shorter and longer than the documents, and batches.
Error measure, per parameter matrix: max |g_c - g_r| / max |g_r|.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from microgpt_fast.config import GPTConfig, init_params, param_layout
from microgpt_fast.engine import CompiledGPT
from microgpt_fast.kernels import load_kernel
from microgpt_fast.reference import ReferenceGPT

from helpers import F32_KERNELS, KERNELS, assert_matrices_close

F64_TOL = 1e-10
F32_TOL = 1e-4

# (n_embd, n_head, n_layer, block_size, batch, dataset fixture[, architecture options])
CASES = [
    (16, 4, 1, 16, 1, "names_ds"),    # the default shape
    (16, 4, 2, 8, 2, "names_ds"),
    (4, 1, 1, 2, 1, "names_ds"),      # block_size 2: almost every document truncated
    (5, 1, 1, 9, 2, "unicode_ds"),
    (6, 3, 2, 5, 3, "names_ds"),
    (7, 1, 1, 16, 1, "unicode_ds"),   # long documents cut at block_size 16
    (9, 3, 1, 12, 3, "unicode_ds"),
    (10, 2, 2, 11, 2, "names_ds"),
    (12, 4, 1, 3, 3, "unicode_ds"),
    (15, 3, 1, 7, 1, "names_ds"),
    (8, 4, 2, 16, 2, "unicode_ds"),
    (14, 2, 1, 6, 3, "names_ds"),
    # n_embd 32: every weight matrix spans two blocks of the weight phases, whose
    # gradients one product computes over both (engine.pxi, _product_run)
    (32, 2, 1, 6, 2, "names_ds"),
    # architecture options (GPTConfig fields), alone and combined
    (6, 3, 2, 5, 3, "names_ds", {"mlp_ratio": 1}),
    (9, 3, 1, 12, 2, "unicode_ds", {"mlp_ratio": 3}),
    (8, 2, 2, 8, 2, "names_ds", {"init": "gpt2"}),
    # each activation at the small init and the large one (pre-activations past
    # erf's switch at |x / sqrt 2| = 1, silu's exp of large arguments), hidden
    # widths from 5 to 40 (full vectors and remainders)
    (6, 3, 2, 5, 3, "names_ds", {"activation": "gelu"}),
    (9, 3, 1, 12, 2, "unicode_ds", {"activation": "gelu", "mlp_ratio": 3}),
    (8, 2, 2, 8, 2, "names_ds", {"activation": "silu", "mlp_ratio": 2}),
    (5, 1, 1, 9, 2, "unicode_ds", {"activation": "silu", "mlp_ratio": 1}),
    (10, 2, 2, 11, 2, "names_ds", {"activation": "relu2"}),
    (7, 1, 1, 16, 1, "unicode_ds", {"activation": "relu2", "mlp_ratio": 3}),
    # the norm options, alone and together
    (6, 3, 2, 5, 3, "names_ds", {"norm": "layernorm"}),
    (9, 3, 1, 12, 2, "unicode_ds", {"norm_gain": True}),
    (5, 1, 2, 9, 2, "names_ds", {"final_norm": True}),
    (7, 1, 1, 16, 1, "unicode_ds", {"tie_embeddings": True}),
    (10, 2, 1, 11, 2, "unicode_ds", {"norm": "layernorm", "norm_gain": True}),
    (12, 4, 1, 3, 3, "names_ds", {"norm_gain": True, "final_norm": True,
                                  "tie_embeddings": True}),
    (8, 2, 2, 8, 3, "names_ds", {"norm": "layernorm", "norm_gain": True, "final_norm": True,
                                 "tie_embeddings": True}),
    (9, 3, 2, 7, 2, "unicode_ds", {"norm": "layernorm", "norm_gain": True,
                                   "tie_embeddings": True, "activation": "gelu"}),
    # no norm after the embedding: alone, with every norm option (the layers'
    # gains then come first), and nanoGPT's whole architecture
    (7, 1, 2, 9, 2, "unicode_ds", {"emb_norm": False}),
    (10, 2, 2, 8, 3, "names_ds", {"norm": "layernorm", "norm_gain": True, "final_norm": True,
                                  "tie_embeddings": True, "emb_norm": False}),
    (12, 3, 2, 7, 2, "names_ds", {"norm": "layernorm", "norm_gain": True, "final_norm": True,
                                  "activation": "gelu", "tie_embeddings": True, "init": "gpt2",
                                  "emb_norm": False}),
]


def case_id(case) -> str:
    C, H, L, T, B, data, *arch = case
    options = "".join(f"-{k}={v}" for k, v in (arch[0] if arch else {}).items())
    options = options.replace("=True", "")
    return f"C{C}-H{H}-L{L}-T{T}-B{B}-{data.split('_')[0]}{options}"


def make_case(index: int, ds):
    """Config, initial params and doc ids of case index (deterministic). The
    params are float32 numbers (held as float64), so that the float64 and the
    float32 engine start from the very same weights and share one reference.
    Gains are drawn around 1 (their own stream), not left at init's 1: a gain
    of 1 would hide a gain applied twice, or to the wrong channel."""
    C, H, L, T, B, _, *arch = CASES[index]
    cfg = GPTConfig(vocab_size=ds.vocab_size, n_embd=C, n_head=H, n_layer=L, block_size=T,
                    **(arch[0] if arch else {}))
    rng = random.Random(1000 + index)
    # alternate the original's small init with a larger one (sharper softmaxes);
    # a case that names its init draws it
    std = None if arch and "init" in arch[0] else 0.08 if index % 2 == 0 else 0.4
    params = init_params(cfg, rng, std=std)
    gain_rng, at = random.Random(2000 + index), 0
    for name, rows, cols in param_layout(cfg):
        if name.endswith("gain"):
            params[at:at + cols] = [gain_rng.uniform(0.5, 1.5) for _ in range(cols)]
        at += rows * cols
    params = np.array(params, np.float32).astype(np.float64).tolist()
    doc_ids = [rng.randrange(len(ds.docs)) for _ in range(B)]
    return cfg, params, doc_ids


_reference_cache: dict = {}


def reference_result(index: int, ds):
    """Reference (loss, grad) of a case, computed once for both dtypes."""
    key = index
    if key not in _reference_cache:
        cfg, params, doc_ids = make_case(index, ds)
        loss, grad = ReferenceGPT(cfg, params).batch_loss_and_grad(
            [ds.doc_tokens(i) for i in doc_ids])
        _reference_cache[key] = (loss, np.array(grad, np.float64))
    return _reference_cache[key]


def test_some_kernel_is_available(monkeypatch):
    monkeypatch.delenv("MICROGPT_FAST_KERNEL", raising=False)
    assert KERNELS, "no compiled kernel variant can be loaded"
    assert load_kernel().name == F32_KERNELS[-1]
    for name in KERNELS:
        assert load_kernel(name).name == name


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("index", range(len(CASES)), ids=[case_id(c) for c in CASES])
def test_float64_gradient_matches_reference(request, index, kernel):
    ds = request.getfixturevalue(CASES[index][5])
    cfg, params, doc_ids = make_case(index, ds)
    ref_loss, ref_grad = reference_result(index, ds)
    model = CompiledGPT(cfg, params, "float64", batch_size=len(doc_ids), kernel=kernel)
    loss, grad = model.loss_and_grad(ds, doc_ids)
    assert grad.dtype == np.float64
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
    assert_matrices_close(cfg, grad, ref_grad, F64_TOL)
    # no update: the parameters are untouched
    np.testing.assert_array_equal(model.params, np.array(params))


@pytest.mark.parametrize("kernel", F32_KERNELS)
@pytest.mark.parametrize("index", range(len(CASES)), ids=[case_id(c) for c in CASES])
def test_float32_gradient_matches_reference(request, index, kernel):
    ds = request.getfixturevalue(CASES[index][5])
    cfg, params, doc_ids = make_case(index, ds)
    ref_loss, ref_grad = reference_result(index, ds)
    params32 = np.array(params, np.float32)
    model = CompiledGPT(cfg, params32, "float32", batch_size=len(doc_ids), kernel=kernel)
    loss, grad = model.loss_and_grad(ds, doc_ids)
    assert grad.dtype == np.float32
    assert abs(loss - ref_loss) <= F32_TOL * abs(ref_loss)
    assert_matrices_close(cfg, grad, ref_grad, F32_TOL)


@pytest.mark.parametrize("kernel", KERNELS)
def test_batch_of_twenty_documents(names_ds, kernel):
    """20 documents in two gradient groups of about ten: each group's partial
    weight gradient sums several documents' rows."""
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=4, n_head=2, n_layer=1,
                    block_size=4)
    rng = random.Random(20)
    params = init_params(cfg, rng, std=0.3)
    doc_ids = [rng.randrange(len(names_ds.docs)) for _ in range(20)]
    key = ("batch20", 0)
    if key not in _reference_cache:
        loss, grad = ReferenceGPT(cfg, params).batch_loss_and_grad(
            [names_ds.doc_tokens(i) for i in doc_ids])
        _reference_cache[key] = (loss, np.array(grad))
    ref_loss, ref_grad = _reference_cache[key]
    model = CompiledGPT(cfg, params, "float64", batch_size=20, kernel=kernel)
    loss, grad = model.loss_and_grad(names_ds, doc_ids)
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
    assert_matrices_close(cfg, grad, ref_grad, F64_TOL)


def test_loss_and_grad_repeatable_and_leaves_no_state(names_ds):
    """Two calls give the same bits, and a call does not leak into the next batch."""
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=8, n_head=2, block_size=8)
    params = init_params(cfg, random.Random(5))
    model = CompiledGPT(cfg, params, batch_size=3)
    first = model.loss_and_grad(names_ds, [1, 2, 3])
    model.loss_and_grad(names_ds, [4, 5])
    again = model.loss_and_grad(names_ds, [1, 2, 3])
    assert first[0] == again[0]
    np.testing.assert_array_equal(first[1], again[1])


# ---------------------------------------------------------------------------
# Central differences of the compiled float64 loss

def case_index(**options) -> int:
    """The index in CASES of the case with exactly these architecture options."""
    return next(i for i, case in enumerate(CASES) if case[6:] == (options,))


# indices into CASES: relu, then gelu and silu, then layernorm with gains and all
# four norm options, then nanoGPT's architecture (no norm after the embedding)
FD_CASES = [0, 3, 4, 6, 9, case_index(activation="gelu", mlp_ratio=3),
            case_index(activation="silu", mlp_ratio=2),
            case_index(norm="layernorm", norm_gain=True),
            case_index(norm="layernorm", norm_gain=True, final_norm=True,
                       tie_embeddings=True),
            case_index(norm="layernorm", norm_gain=True, final_norm=True, activation="gelu",
                       tie_embeddings=True, init="gpt2", emb_norm=False)]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("index", FD_CASES, ids=[case_id(CASES[i]) for i in FD_CASES])
def test_gradient_matches_central_differences(request, index, kernel):
    ds = request.getfixturevalue(CASES[index][5])
    cfg, params, doc_ids = make_case(index, ds)
    params = np.array(params)
    model = CompiledGPT(cfg, params, "float64", batch_size=len(doc_ids), kernel=kernel)
    _, grad = model.loss_and_grad(ds, doc_ids)
    gmax = float(np.max(np.abs(grad)))
    assert gmax > 0

    rng = np.random.default_rng(index)
    # half the coordinates where the gradient is sizeable, half anywhere
    big = np.flatnonzero(np.abs(grad) > 0.05 * gmax)
    coords = np.concatenate([rng.choice(big, size=min(10, big.size), replace=False),
                             rng.choice(params.size, size=10, replace=False)])
    h = 1e-5
    failures = []
    for i in coords:
        plus, minus = params.copy(), params.copy()
        plus[i] += h
        minus[i] -= h
        model.set_params(plus)
        l_plus, _ = model.loss_and_grad(ds, doc_ids)
        model.set_params(minus)
        l_minus, _ = model.loss_and_grad(ds, doc_ids)
        fd = (l_plus - l_minus) / (2 * h)
        if not abs(fd - grad[i]) <= 1e-6 * gmax:
            failures.append((int(i), fd, float(grad[i])))
    assert not failures, f"(index, finite difference, analytic), max grad {gmax}: {failures}"


def test_set_params_changes_the_loss(names_ds):
    """set_params must reach the transposed weights the forward pass reads."""
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=8, n_head=2, block_size=8)
    params = np.array(init_params(cfg, random.Random(9)))
    model = CompiledGPT(cfg, params)
    other = np.array(init_params(cfg, random.Random(10)))
    model.set_params(other)
    loss, grad = model.loss_and_grad(names_ds, [0])
    fresh_loss, fresh_grad = CompiledGPT(cfg, other).loss_and_grad(names_ds, [0])
    assert loss == fresh_loss
    np.testing.assert_array_equal(grad, fresh_grad)
