"""The plan of a step (src/schedule.pxd), as Engine.plan shows it: every document,
row and weight block goes to exactly one thread, teams own whole gradient
groups, and the shares are balanced. No threads run here: a plan for 8 threads
is checked on any machine."""

from __future__ import annotations

import random

import numpy as np
import pytest

from microgpt_fast.config import GPTConfig, param_layout
from microgpt_fast.kernels import load_kernel

T = 8


def make_plan(ds, threads, doc_ids, n_embd=16, n_layer=2):
    cfg = GPTConfig(vocab_size=ds.vocab_size, n_embd=n_embd, n_head=4, n_layer=n_layer,
                    block_size=T)
    engine = load_kernel().module.Engine(cfg.n_embd, cfg.n_head, cfg.n_layer, T,
                                         cfg.vocab_size, len(doc_ids), threads, "float32")
    plan = engine.plan(ds.starts, np.array(doc_ids, np.int64))
    return cfg, plan


def shares(first):
    return [(first[i], first[i + 1]) for i in range(len(first) - 1)]


BATCHES = {
    "one-doc": [5],
    "two-docs": [0, 1],
    "sixteen": list(range(100, 116)),
    "uneven": [3, 900, 4, 17, 250, 31, 8],
}


@pytest.mark.parametrize("threads", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("batch", list(BATCHES))
def test_every_document_goes_to_one_thread_of_its_groups_team(names_ds, threads, batch):
    doc_ids = BATCHES[batch]
    B = len(doc_ids)
    _, plan = make_plan(names_ds, threads, doc_ids)
    n_threads, n_groups = min(threads, B), min(2, B)
    lengths = np.minimum(T, np.diff(names_ds.starts)[doc_ids])
    assert plan["doc_rows"] == [0] + np.cumsum(lengths).tolist()
    groups = plan["groups"]
    assert len(groups) == n_groups + 1 and groups[0] == 0 and groups[-1] == B
    assert all(a < b for a, b in zip(groups, groups[1:]))  # no empty group
    teams = plan["teams"]
    # one team of every thread, or one team per group with the threads shared out
    expected_teams = 1 if n_threads == 1 or n_groups == 1 else n_groups
    assert len(teams) == expected_teams
    assert sum(size for _, size, _, _ in teams) == n_threads
    assert [first for first, _, _, _ in teams] == np.cumsum(
        [0] + [size for _, size, _, _ in teams[:-1]]).tolist()
    bounds = plan["bounds"]
    assert len(bounds) == n_threads + 1
    owner = {}
    for first, size, g0, g1 in teams:
        docs = range(groups[g0], groups[g1])
        runs = shares(bounds[first:first + size + 1])
        assert runs[0][0] == docs.start and runs[-1][1] == docs.stop
        for th, (b0, b1) in enumerate(runs, start=first):
            assert b0 <= b1
            for b in range(b0, b1):
                assert b not in owner
                owner[b] = th
    assert sorted(owner) == list(range(B))


def test_document_runs_balance_rows(names_ds):
    """Each thread's rows stay within one document of an even share."""
    doc_ids = list(range(0, 64))
    _, plan = make_plan(names_ds, 4, doc_ids)
    rows, bounds = plan["doc_rows"], plan["bounds"]
    for first, size, g0, g1 in plan["teams"]:
        g_rows = rows[plan["groups"][g1]] - rows[plan["groups"][g0]]
        for b0, b1 in shares(bounds[first:first + size + 1]):
            assert abs((rows[b1] - rows[b0]) - g_rows / size) <= T


@pytest.mark.parametrize("threads", [1, 2, 4, 8])
def test_weight_blocks_cover_every_matrix_once_and_are_shared_out(names_ds, threads):
    cfg, plan = make_plan(names_ds, threads, list(range(16)))
    blocks = plan["blocks"]
    # the blocks run through the matrices in flat order, each matrix's rows once
    offset, k = 0, 0
    covered = []
    for name, rows, cols in param_layout(cfg):
        if name.endswith(("attn_wk", "attn_wv")):  # q, k and v are one (3C, C) block run
            continue
        if name.endswith("attn_wq"):
            rows *= 3
        o = 0
        while o < rows:
            matrix, nout, nin, o0, o1 = blocks[k]
            assert (matrix, nout, nin, o0) == (offset, rows, cols, o)
            assert o0 < o1 <= rows
            o, k = o1, k + 1
        covered.append(name)
        offset += rows * cols
    assert k == len(blocks) and offset == cfg.num_params
    # Adam's shares and each team's shares: consecutive runs covering every block
    adam = plan["adam_first"]
    assert adam[0] == 0 and adam[-1] == len(blocks) and adam == sorted(adam)
    for share in plan["team_shares"]:
        assert share[0] == 0 and share[-1] == len(blocks) and share == sorted(share)
    # Adam's shares balance weights: no thread more than one block above an even share
    sizes = [(o1 - o0) * nin for _, _, nin, o0, o1 in blocks]
    biggest, even = max(sizes), sum(sizes) / min(threads, 16)
    for b0, b1 in shares(adam):
        assert sum(sizes[b0:b1]) <= even + biggest


def test_plan_depends_on_documents_not_on_the_run(names_ds):
    """The same documents give the same plan, whatever came before."""
    docs = random.Random(1).sample(range(names_ds.num_docs), 12)
    _, a = make_plan(names_ds, 2, docs)
    make_plan(names_ds, 2, list(range(12)))
    _, b = make_plan(names_ds, 2, docs)
    assert a == b
