"""Kernel variants, their profiling builds, and the floating-point mode."""

from __future__ import annotations

import random

import numpy as np
import pytest

from microgpt_fast import kernels
from microgpt_fast.config import GPTConfig, init_params
from microgpt_fast.engine import CompiledGPT
from microgpt_fast.kernels import KernelError, load_kernel

from helpers import F32_KERNELS, KERNELS, needs_profiling


def test_the_portable_variants_are_always_built():
    assert {"novec", "generic"} <= set(KERNELS)


def test_best_variant_is_the_default(monkeypatch):
    """The most vectorized, but never avx512_bf16 (it changes float32's numbers)."""
    monkeypatch.delenv("MICROGPT_FAST_KERNEL", raising=False)
    assert load_kernel().name == F32_KERNELS[-1]
    # where the CPU has AVX512-BF16 too
    monkeypatch.setattr(kernels, "_cpu_flags", lambda: set(kernels._REQUIRED_CPU_FLAGS[
        "avx512_bf16"]))
    assert load_kernel().name == [k for k in kernels.AUTOMATIC if kernels._built(k)][-1]


def test_environment_picks_a_variant(monkeypatch):
    monkeypatch.setenv("MICROGPT_FAST_KERNEL", "novec")
    assert load_kernel().name == "novec"
    assert load_kernel("generic").name == "generic"  # an explicit name wins


def test_a_variant_the_cpu_lacks_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kernels, "_cpu_flags", lambda: set())
    with pytest.raises(KernelError, match="not available on this machine"):
        load_kernel("avx2")


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(KernelError, match="unknown kernel"):
        load_kernel("sse9")


@needs_profiling
@pytest.mark.parametrize("name", KERNELS)
def test_profiling_build_times_and_matches(name, names_ds):
    """The _prof build computes the same bits, and its timers run; the plain one's do not."""
    cfg = GPTConfig(vocab_size=27)
    params = init_params(cfg, random.Random(0))
    plain = CompiledGPT(cfg, params, "float32", 1, 4, name)
    prof = CompiledGPT(cfg, params, "float32", 1, 4, f"{name}_prof")
    assert prof.kernel.module.profiling_enabled() and not plain.kernel.module.profiling_enabled()
    a = plain.train(names_ds, 0, 20, 20)
    b = prof.train(names_ds, 0, 20, 20)
    assert np.array_equal(a, b) and np.array_equal(plain.params, prof.params)
    times = prof.op_times()
    assert min(times["forward"].values()) > 0 and min(times["backward"].values()) > 0
    assert times["adam"] > 0
    # the weight phases hold Adam and the weight-gradient products (counted in backward)
    assert times["adam"] < times["weight_blocks"] < times["adam"] + sum(times["backward"].values())
    assert prof.op_times(reset=True) == times and prof.op_times()["adam"] == 0
    times = plain.op_times()
    assert max(times["forward"].values()) == max(times["backward"].values()) == 0
    assert times["adam"] == 0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_training_leaves_the_callers_float_mode(dtype, names_ds):
    """Training flushes subnormals inside its threads only: Python's own float
    arithmetic afterwards still produces and reads subnormal numbers."""
    cfg = GPTConfig(vocab_size=27)
    model = CompiledGPT(cfg, init_params(cfg, random.Random(0)), dtype, 1, 1)
    model.train(names_ds, 0, 5, 5)
    tiny = 5e-324
    assert tiny * 1.0 == tiny and tiny > 0
    assert np.float32(1e-45) * np.float32(1) > 0


def test_training_flushes_subnormals_to_zero(names_ds):
    """The first moments of rows a step leaves out (rare letters, late positions)
    shrink by beta1 = 0.85 a step: about 100 steps of each such stretch would
    pass through float32's subnormal range, whose arithmetic is up to a hundred
    times slower, were they not flushed to zero. Checked every 100 steps."""
    cfg = GPTConfig(vocab_size=27)
    model = CompiledGPT(cfg, init_params(cfg, random.Random(0)), "float32", 1, 1)
    tiny = np.finfo(np.float32).tiny  # the smallest normal float32
    zeros = 0
    for step0 in range(0, 2000, 100):
        losses = model.train(names_ds, step0, 100, 2000)
        for name in ("params", "m", "v"):
            values = np.abs(getattr(model, name))
            subnormal = np.count_nonzero((values > 0) & (values < tiny))
            assert subnormal == 0, f"{subnormal} subnormal {name} after step {step0 + 100}"
        zeros += np.count_nonzero(model.m == 0)
    assert zeros > 0  # some moments did decay all the way (else this proves nothing)
    assert np.isfinite(losses).all() and losses[-500:].mean() < 2.8


# Variants that share an instruction set's arithmetic (FMA or not) and differ only in
# vector width: vec.h's lanes never mix, so they must agree to the bit.
FAMILIES = [("novec", "generic"), ("avx2", "avx512")]


@pytest.mark.parametrize("arch", [{}, {"norm": "layernorm", "norm_gain": True,
                                       "final_norm": True, "tie_embeddings": True}],
                         ids=["original", "norm-options"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("family", FAMILIES, ids=["-".join(f) for f in FAMILIES])
def test_variants_of_one_family_agree_to_the_bit(names_ds, family, dtype, arch):
    """Widths that leave remainders in every vector loop (9, 12, 20), several rows
    per 8-row group of the norms: a row's sums must not depend on which lane or
    which inlined copy of the code computes them."""
    if not set(family) <= set(KERNELS):
        pytest.skip(f"{family[1]} does not run on this CPU")
    for C, H, T in ((9, 3, 7), (12, 4, 5), (20, 4, 16)):
        cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=C, n_head=H, n_layer=2,
                        block_size=T, **arch)
        params = init_params(cfg, random.Random(C))
        runs = []
        for kernel in family:
            model = CompiledGPT(cfg, params, dtype, 1, 5, kernel)
            losses = model.train(names_ds, 0, 6, 6)
            runs.append((losses, model.params.copy(), model.m.copy(), model.v.copy()))
        for name, a, b in zip(("losses", "params", "m", "v"), *runs):
            assert np.array_equal(a, b), f"C={C}: {name} differ between {family}"
