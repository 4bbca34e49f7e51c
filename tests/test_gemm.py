"""gemm.h's product on its own (the kernel module's matmul): against numpy, and
the same bits whether or not a column panel of B is first copied to contiguous
rows (it is where B's row stride is a multiple of 4 KB and A has 32 rows or
more: the MLP products of n_embd 256 in float32), and whether A is read as
stored or transposed (packed first, as a weight gradient's A is: 256 rows at a
time where B's panels are copied, else 32)."""

from __future__ import annotations

import numpy as np
import pytest

from microgpt_fast.kernels import load_kernel

from helpers import KERNELS, with_row_stride

# (M, K, N): below and at the 32 rows that start the copy, depths past one block
# of 256 (two sums added in order), column counts with a partial last panel
SHAPES = [(31, 40, 70), (32, 40, 70), (64, 300, 96), (40, 7, 33), (96, 256, 48),
          (300, 64, 40)]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"M{m}-K{k}-N{n}" for m, k, n in SHAPES])
def test_a_4kb_row_stride_gives_the_same_bits(kernel, dtype, shape):
    M, K, N = shape
    rng = np.random.default_rng(M * K + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    matmul = load_kernel(kernel).module.matmul
    aliasing_stride = 4096 * (1 + (N * b.itemsize) // 4096)  # the first multiple past a row
    aliasing = matmul(a, with_row_stride(b, aliasing_stride))
    plain = matmul(a, with_row_stride(b, aliasing_stride + 64))
    np.testing.assert_array_equal(aliasing, plain)
    transposed = np.ascontiguousarray(a.T).T  # the same numbers, columns adjacent
    for stride in (aliasing_stride, aliasing_stride + 64):
        np.testing.assert_array_equal(matmul(transposed, with_row_stride(b, stride)), plain)
    np.testing.assert_allclose(plain, a.astype(np.float64) @ b.astype(np.float64),
                               rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-4 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("bad, message", [
    (lambda: (np.ones((2, 3), np.float32), np.ones((4, 2), np.float32)), "cannot multiply"),
    (lambda: (np.ones((2, 3), np.float32), np.ones((3, 2), np.float64)), "expected two"),
    (lambda: (np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)[:, ::2]),
     "columns be adjacent"),
    (lambda: (np.ones((2, 3), np.float32)[::-1], np.ones((3, 2), np.float32)), "forward"),
    (lambda: (np.ones((2, 0), np.float32), np.ones((0, 2), np.float32)), "cannot multiply"),
])
def test_matmul_refuses_what_it_cannot_multiply(bad, message):
    a, b = bad()
    with pytest.raises((ValueError, TypeError), match=message):
        load_kernel().module.matmul(a, b)
