"""Sizes whose buffer offsets do not fit in 32 bits.

GPTConfig.validate accepts any block_size >= 1, and its docstring promises that
"the compiled kernels never see a size they cannot handle". A block size T with
n_head * T * T >= 2**31 must therefore either train correctly or be refused
with a clear error; it must never crash or silently compute something else.

Each case runs in a subprocess (a crash must not take pytest down) under a 4 GiB
address-space limit (a correct implementation may legitimately need far more
memory and then has to fail cleanly).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

import pytest

from helpers import KERNELS, cli_env, run_cli

MEMORY_LIMIT = 4 << 30

def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


# Loss and gradient of one document with block_size T must equal those with
# block_size 16 when both share the weights that document uses (positions >= 16
# are never reached by a name). Exit 0: equal, or refused cleanly; 1: different.
SCRIPT = textwrap.dedent("""
    import random, sys
    import numpy as np
    from microgpt_fast.config import GPTConfig, init_params
    from microgpt_fast.data import load_dataset
    from microgpt_fast.engine import CompiledGPT

    T, kernel = int(sys.argv[1]), sys.argv[2]
    ds = load_dataset(None, random.Random(42))
    small = GPTConfig(vocab_size=27, block_size=16)
    big = GPTConfig(vocab_size=27, block_size=T)
    p = np.array(init_params(small, random.Random(0)))
    V, C = 27, 16
    split = V * C + 16 * C  # wte and the 16 rows of wpe
    p_big = np.concatenate([p[:split], np.zeros((T - 16) * C), p[split:]])
    loss, grad = CompiledGPT(small, p, kernel=kernel).loss_and_grad(ds, [0])
    try:
        model = CompiledGPT(big, p_big, kernel=kernel)
    except (ValueError, MemoryError) as exc:
        print("refused:", type(exc).__name__, exc)
        sys.exit(0)
    loss_big, grad_big = model.loss_and_grad(ds, [0])
    grad_big = np.concatenate([grad_big[:split], grad_big[split + (T - 16) * C:]])
    print("loss", loss, loss_big)
    same = abs(loss - loss_big) <= 1e-12 * loss and np.allclose(grad, grad_big, rtol=1e-10,
                                                                atol=1e-14)
    sys.exit(0 if same else 1)
""")


@pytest.mark.parametrize("kernel", KERNELS)
def test_block_size_65536_is_correct_or_refused(kernel):
    result = subprocess.run([sys.executable, "-c", SCRIPT, "65536", kernel], env=cli_env(),
                            capture_output=True, text=True, timeout=120,
                            preexec_fn=_limit_memory)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr[-2000:])


def test_cli_block_size_46341_does_not_crash(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "microgpt_fast.train", "--block-size", "46341", "--steps", "1",
         "--num-samples", "1"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120,
        preexec_fn=_limit_memory)
    assert result.returncode in (0, 2), (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    if result.returncode == 2:
        assert len(result.stderr.splitlines()) == 1


def test_cli_out_of_memory_is_one_line_error(tmp_path):
    """A block size whose attention buffers exceed the memory limit: one clean line."""
    result = subprocess.run(
        [sys.executable, "-m", "microgpt_fast.train", "--block-size", "20000", "--steps", "1",
         "--num-samples", "0"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120,
        preexec_fn=_limit_memory)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_moderately_large_block_size_works(tmp_path):
    """block_size 1000 is far below the overflow and trains normally."""
    result = run_cli(["--block-size", "1000", "--steps", "2", "--num-samples", "1"],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "num params: " + str(27 * 16 * 2 + 1000 * 16 + 12 * 16 * 16) in result.stdout
