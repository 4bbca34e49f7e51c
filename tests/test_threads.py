"""Thread count: the same bits for any number of threads, and how it is chosen."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import numpy as np
import pytest

from microgpt_fast import engine as engine_module
from microgpt_fast import kernels
from microgpt_fast.config import Adam, GPTConfig, init_params, param_layout
from microgpt_fast.engine import CompiledGPT
from microgpt_fast.kernels import load_kernel, resolve_threads

from helpers import KERNELS, cli_env, run_cli

needs_two_cores = pytest.mark.skipif(kernels.cpu_count() < 2,
                                     reason="needs at least 2 CPU cores")


def _openmp(kernel: str) -> bool:
    return load_kernel(kernel).module.openmp_enabled()


def _train(ds, kernel, dtype, threads, batch, steps, cfg):
    params = init_params(cfg, random.Random(123))
    # a fixed count: these tests compare thread counts, not the adaptive choice
    model = CompiledGPT(cfg, params, dtype, threads=threads, batch_size=batch, kernel=kernel,
                        adapt_threads=False)
    losses = model.train(ds, 0, steps, steps)
    return model, losses


def assert_same_run(one, losses1, two, losses2) -> None:
    """Two trained models agree to the bit: step losses, weights and Adam's moments."""
    assert np.array_equal(losses1, losses2)
    assert np.array_equal(one.params, two.params)
    assert np.array_equal(one.m, two.m) and np.array_equal(one.v, two.v)


@needs_two_cores
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("batch", [8, 20])  # 20: many documents per thread and group
def test_one_and_two_threads_give_identical_bits(names_ds, kernel, dtype, batch):
    if not _openmp(kernel):
        pytest.skip(f"kernel {kernel} built without OpenMP")
    cfg = GPTConfig(vocab_size=names_ds.vocab_size)
    one, losses1 = _train(names_ds, kernel, dtype, 1, batch, 50, cfg)
    two, losses2 = _train(names_ds, kernel, dtype, 2, batch, 50, cfg)
    assert one.threads == 1 and two.threads == 2
    assert_same_run(one, losses1, two, losses2)


@needs_two_cores
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation", ["gelu", "relu2", "silu"])
def test_each_activation_gives_identical_bits_on_two_threads(names_ds, activation, dtype):
    kernel = KERNELS[-1]
    if not _openmp(kernel):
        pytest.skip(f"kernel {kernel} built without OpenMP")
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=8, n_head=2, n_layer=2,
                    activation=activation, mlp_ratio=3)
    one, losses1 = _train(names_ds, kernel, dtype, 1, 8, 20, cfg)
    two, losses2 = _train(names_ds, kernel, dtype, 2, 8, 20, cfg)
    assert two.threads == 2
    assert_same_run(one, losses1, two, losses2)


# the norm options (GPTConfig), all on, with each norm
NORM_OPTIONS = [{"norm": "layernorm", "norm_gain": True, "final_norm": True,
                 "tie_embeddings": True},
                {"norm_gain": True, "final_norm": True, "tie_embeddings": True},
                {"norm": "layernorm", "norm_gain": True, "final_norm": True,
                 "tie_embeddings": True, "emb_norm": False}]


@needs_two_cores
@pytest.mark.parametrize("arch", NORM_OPTIONS, ids=["layernorm", "rmsnorm", "no-emb-norm"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_norm_options_give_identical_bits_on_two_threads(names_ds, kernel, dtype, arch):
    """The gains' gradients and a tied wte's (the head's product plus the embedding
    rows) are sums over both gradient groups' rows: the same bits for 1 or 2 threads."""
    if not _openmp(kernel):
        pytest.skip(f"kernel {kernel} built without OpenMP")
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=12, n_head=3, n_layer=2,
                    block_size=8, **arch)
    one, losses1 = _train(names_ds, kernel, dtype, 1, 9, 20, cfg)
    two, losses2 = _train(names_ds, kernel, dtype, 2, 9, 20, cfg)
    assert two.threads == 2
    assert_same_run(one, losses1, two, losses2)
    ids = list(range(60, 69))
    loss1, grad1 = one.loss_and_grad(names_ds, ids)
    loss2, grad2 = two.loss_and_grad(names_ds, ids)
    assert loss1 == loss2 and np.array_equal(grad1, grad2)
    # the gains trained away from their initial 1 (else their part proves little)
    n_gains = sum(cols for name, _, cols in param_layout(cfg) if name.endswith("gain"))
    assert n_gains and not np.all(one.params[-n_gains:] == 1)


@pytest.mark.parametrize("threads, batch", [(3, 3), (3, 7), (4, 5), (5, 5), (8, 9)])
def test_more_threads_give_identical_bits(names_ds, monkeypatch, threads, batch):
    """Past two threads the teams are uneven (3 = 1 + 2) and a team may have more
    threads than its gradient group has documents; still the bits of one thread.
    (Threads beyond the cores only take turns: the cap is lifted for this test.)"""
    kernel = KERNELS[-1]
    if not _openmp(kernel):
        pytest.skip(f"kernel {kernel} built without OpenMP")
    monkeypatch.setattr(kernels, "cpu_count", lambda: 16)
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=8, n_head=2, n_layer=2)
    one, losses1 = _train(names_ds, kernel, "float32", 1, batch, 30, cfg)
    many, losses_many = _train(names_ds, kernel, "float32", threads, batch, 30, cfg)
    assert many.threads == threads
    assert np.array_equal(losses1, losses_many)
    assert np.array_equal(one.params, many.params)
    assert np.array_equal(one.m, many.m) and np.array_equal(one.v, many.v)
    ids = list(range(40, 40 + batch))
    loss1, grad1 = one.loss_and_grad(names_ds, ids)
    loss_many, grad_many = many.loss_and_grad(names_ds, ids)
    assert loss1 == loss_many and np.array_equal(grad1, grad_many)


@pytest.mark.parametrize("threads, segment", [(2, 1), (2, 3), (3, 2)])
def test_segments_on_changing_thread_counts_give_identical_bits(names_ds, monkeypatch, threads,
                                                                 segment):
    """The adaptive thread count moves a call's steps between counts from segment
    to segment; forced to take every count from `threads` down to 1 in turn, every
    `segment` steps and across calls, training gives the bits of one thread
    (clipping and weight decay on: their sums too)."""
    kernel = KERNELS[-1]
    if not _openmp(kernel):
        pytest.skip(f"kernel {kernel} built without OpenMP")
    monkeypatch.setattr(kernels, "cpu_count", lambda: 16)
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=8, n_head=2, n_layer=2)
    adam = Adam(weight_decay=0.1, grad_clip=0.5)
    runs = []
    for t in (1, threads):
        model = CompiledGPT(cfg, init_params(cfg, random.Random(5)), "float32", threads=t,
                            batch_size=7, kernel=kernel)
        model.engine.force_segments(segment)
        losses = np.concatenate([model.train(names_ds, 0, 11, 24, adam),
                                 model.train(names_ds, 11, 13, 24, adam)])
        runs.append((model, losses))
    (one, losses1), (moving, losses_moving) = runs
    assert_same_run(one, losses1, moving, losses_moving)
    used = moving.engine.thread_use()
    assert used["adaptive"] and sorted(used["steps"]) == list(range(1, threads + 1))
    assert sum(used["steps"].values()) == 24
    assert one.engine.thread_use() == {"adaptive": False, "steps": {}, "now": 1}


def test_adapt_threads_off_keeps_every_thread(names_ds):
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=8, n_head=2)
    params = init_params(cfg, random.Random(0))
    fixed = CompiledGPT(cfg, params, threads=2, batch_size=4, adapt_threads=False)
    fixed.train(names_ds, 0, 5, 5)
    assert fixed.engine.thread_use() == {"adaptive": False, "steps": {}, "now": fixed.threads}
    adapting = CompiledGPT(cfg, params, threads=2, batch_size=4)
    adapting.train(names_ds, 0, 5, 5)
    use = adapting.engine.thread_use()
    assert use["adaptive"] == (adapting.threads == 2)
    assert sum(use["steps"].values()) == (5 if adapting.threads == 2 else 0)


def _stat(state: str) -> str:
    """A /proc/<pid>/task/<tid>/stat line of a thread in `state`."""
    return f"4242 (python (x) R) {state} 1 4242 4242 0 -1"


def test_cores_left_free_counts_only_other_processes():
    free = kernels.cores_left_free
    assert free(2, "0.10 0.20 0.30 1/80 999", [_stat("R"), _stat("S")]) == 2
    assert free(2, "1.00 0.20 0.30 2/80 999", [_stat("R"), _stat("S")]) == 1  # one other
    # this process's own runnable threads (a spinning OpenMP worker) are not others
    assert free(2, "1.00 0.20 0.30 2/80 999", [_stat("R"), _stat("R")]) == 2
    assert free(16, "5.00 5.00 5.00 7/300 999", [_stat("R")]) == 10
    assert free(2, "9.00 9.00 9.00 9/300 999", [_stat("R")]) == 1  # never below one
    assert free(4, "0.10 0.20 0.30 1/80 999", []) == 4  # the reader is one of them


def test_free_cores_sees_a_busy_program():
    cores = kernels.cpu_count()
    if cores < 2:
        pytest.skip("one core: no core to leave free")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # it runs (or waits for a core) from here on: runnable either way
        assert 1 <= kernels.free_cores() <= cores - 1
    finally:
        busy.kill()
        busy.wait(timeout=10)


def test_training_starts_on_the_free_cores(names_ds, monkeypatch):
    """A fresh model's first call starts on the cores free_cores gives (the count
    then adapts); later calls and measured models are left alone."""
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=8, n_head=2)
    params = init_params(cfg, random.Random(0))
    model = CompiledGPT(cfg, params, "float32", threads=2, batch_size=4)
    if model.threads < 2:
        pytest.skip("needs two threads (two cores and OpenMP)")
    monkeypatch.setattr(engine_module, "free_cores", lambda: 1)
    model.train(names_ds, 0, 5, 5)
    # 5 steps: a first segment of one step, then one more, before any probe
    assert model.engine.thread_use()["steps"] == {1: 5}
    with pytest.raises(ValueError, match="count must be 1..2"):
        model.engine.start_threads(3)
    with pytest.raises(ValueError, match="count must be 1..2"):
        model.engine.start_threads(0)
    monkeypatch.setattr(engine_module, "free_cores", lambda: 2)
    quiet = CompiledGPT(cfg, params, "float32", threads=2, batch_size=4)
    quiet.train(names_ds, 0, 5, 5)
    now = quiet.engine.thread_use()["now"]
    quiet.engine.start_threads(1)  # measured already: no effect
    assert quiet.engine.thread_use()["now"] == now


def test_evaluation_and_samples_on_the_chosen_count(names_ds, monkeypatch):
    """Evaluation and text samples run on the count training chose (here one
    thread, as beside a busy program) with the bits of all threads."""
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=8, n_head=2)
    params = init_params(cfg, random.Random(0))
    monkeypatch.setattr(engine_module, "free_cores", lambda: 1)
    chosen = CompiledGPT(cfg, params, "float32", threads=2, batch_size=4)
    every = CompiledGPT(cfg, params, "float32", threads=2, batch_size=4, adapt_threads=False)
    if chosen.threads < 2:
        pytest.skip("needs two threads (two cores and OpenMP)")
    ids = list(range(30, 34))
    assert np.array_equal(chosen.evaluate(names_ds, ids), every.evaluate(names_ds, ids))
    assert chosen.engine.thread_use()["now"] == 1
    draws = [m.sample_texts(random.Random(3), 0.7, [1, 2], 20, 5) for m in (chosen, every)]
    assert draws[0] == draws[1]


def test_thread_shares_that_cut_a_matrix_give_identical_bits(names_ds, monkeypatch):
    """At n_embd 32 each weight matrix spans two blocks; one thread computes a
    matrix's gradient in one product, while in a team of two threads a share may
    end inside it: the weights still get the same bits."""
    kernel = KERNELS[-1]
    if not _openmp(kernel):
        pytest.skip(f"kernel {kernel} built without OpenMP")
    monkeypatch.setattr(kernels, "cpu_count", lambda: 16)
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_embd=32, n_head=2, block_size=8)
    plan = CompiledGPT(cfg, init_params(cfg, random.Random(0)), threads=3,
                       batch_size=3).engine.plan(names_ds.starts, np.arange(3))
    # some thread's share starts inside a matrix (a block that is not its first
    # rows), else this test proves nothing
    assert any(0 < k < len(plan["blocks"]) and plan["blocks"][k][3] > 0
               for shares in plan["team_shares"] for k in shares)
    for dtype in ("float64", "float32"):
        one, losses1 = _train(names_ds, kernel, dtype, 1, 3, 5, cfg)
        many, losses_many = _train(names_ds, kernel, dtype, 3, 3, 5, cfg)
        assert many.threads == 3
        assert_same_run(one, losses1, many, losses_many)


FEWER_THREADS_SCRIPT = """
import random, sys
import numpy as np
from microgpt_fast.config import GPTConfig, init_params, param_layout
from microgpt_fast.data import load_dataset
from microgpt_fast.engine import CompiledGPT
from microgpt_fast import kernels
kernels.cpu_count = lambda: 16  # ask for more threads than the limit grants
ds = load_dataset(None, random.Random(42))
cfg = GPTConfig(vocab_size=27, n_embd=8, n_head=2)
runs = []
for threads in (1, 3):
    model = CompiledGPT(cfg, init_params(cfg, random.Random(1)), "float32", threads, 7,
                        sys.argv[1])
    losses = model.train(ds, 0, 20, 40)
    runs.append((losses, model.params.copy(), model.loss_and_grad(ds, list(range(7)))[1]))
print(all(np.array_equal(a, b) for a, b in zip(*runs)))
"""


def test_fewer_threads_granted_than_asked():
    """OMP_THREAD_LIMIT=1 grants one thread where three are asked: it then takes
    all three threads' shares of every phase, with the same bits."""
    kernel = KERNELS[-1]
    if not _openmp(kernel):
        pytest.skip(f"kernel {kernel} built without OpenMP")
    proc = subprocess.run([sys.executable, "-c", FEWER_THREADS_SCRIPT, kernel],
                          env=cli_env(OMP_THREAD_LIMIT="1"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


@needs_two_cores
@pytest.mark.parametrize("kernel", KERNELS)
def test_loss_and_grad_thread_independent(names_ds, kernel):
    cfg = GPTConfig(vocab_size=names_ds.vocab_size, n_layer=2)
    params = init_params(cfg, random.Random(4))
    ids = list(range(100, 111))
    results = [CompiledGPT(cfg, params, threads=t, batch_size=11, kernel=kernel)
               .loss_and_grad(names_ds, ids) for t in (1, 2)]
    assert results[0][0] == results[1][0]
    assert np.array_equal(results[0][1], results[1][1])


@needs_two_cores
def test_omp_num_threads_does_not_change_cli_results(tmp_path):
    args = ["--steps", "30", "--batch-size", "8", "--num-samples", "3", "--json", "-"]
    records = [json.loads(run_cli(args + flags, cwd=tmp_path,
                                  env=cli_env(OMP_NUM_THREADS=str(n))).stdout)
               for n, flags in ((1, []), (2, []), (2, ["--adapt-threads", "off"]))]
    assert [r["threads"] for r in records] == [1, 2, 2]
    for r in records[1:]:
        assert records[0]["losses"] == r["losses"]
        assert records[0]["samples"] == r["samples"]


def test_threads_never_exceed_documents_of_a_step():
    cfg = GPTConfig()
    params = init_params(cfg, random.Random(0))
    assert CompiledGPT(cfg, params, threads=2, batch_size=1).threads == 1
    assert CompiledGPT(cfg, params, threads=64, batch_size=64).threads <= kernels.cpu_count()


# ---------------------------------------------------------------------------
# resolve_threads: argument, else $OMP_NUM_THREADS, else every core; capped


@pytest.fixture
def omp_kernel():
    for name in KERNELS:
        if _openmp(name):
            return load_kernel(name)
    pytest.skip("no kernel built with OpenMP")


@pytest.fixture
def eight_cores(monkeypatch):
    monkeypatch.setattr(kernels, "cpu_count", lambda: 8)


def test_argument_wins_over_environment(monkeypatch, omp_kernel, eight_cores):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert resolve_threads(3, omp_kernel) == 3
    assert resolve_threads(1, omp_kernel) == 1


@pytest.mark.parametrize("env, expected", [("2", 2), ("6", 6), (" 3 ", 3), ("4,2", 4),
                                           ("20", 8), ("0", 8), ("abc", 8), ("", 8)],
                         ids=["2", "6", "spaces", "nested-list", "capped", "zero-ignored",
                              "garbage-ignored", "empty"])
def test_environment_used_without_argument(monkeypatch, omp_kernel, eight_cores, env, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    assert resolve_threads(None, omp_kernel) == expected


def test_every_core_by_default(monkeypatch, omp_kernel, eight_cores):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve_threads(None, omp_kernel) == 8


def test_capped_at_cpu_count(monkeypatch, omp_kernel):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = kernels.cpu_count()
    assert resolve_threads(cores + 5, omp_kernel) == cores
    assert resolve_threads(None, omp_kernel) == cores
    monkeypatch.setattr(kernels, "cpu_count", lambda: 2)
    assert resolve_threads(16, omp_kernel) == 2


@pytest.mark.parametrize("bad", [0, -1])
def test_fewer_than_one_thread_rejected(omp_kernel, bad):
    with pytest.raises(ValueError, match="threads"):
        resolve_threads(bad, omp_kernel)
