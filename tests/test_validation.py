"""Validation: the held-out documents, the val loss, and the --log-csv log.

--val-fraction F holds out the last F of the shuffled documents; they are never
trained on. --eval-every K prints a val loss at the multiples of K and at the end;
the loss is Trainer.evaluate(), which matches the pure-Python reference.
"""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest

from microgpt_fast import GPTConfig, TrainConfig, Trainer, load_dataset
from microgpt_fast.reference import ReferenceGPT

from helpers import SMALL, run_cli

CFG = GPTConfig(n_embd=8, n_head=2, block_size=8)
RUN = ["--steps", "50", "--batch-size", "2", "--val-fraction", "0.1", "--eval-every", "20",
       "--num-samples", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """50 steps, validation every 20: the stdout, the --json record and the CSV rows."""
    folder = tmp_path_factory.mktemp("val")
    result = run_cli(SMALL + RUN + ["--log-csv", "run.csv", "--json", "run.json"], cwd=folder)
    assert result.returncode == 0, result.stderr
    record = json.loads((folder / "run.json").read_text())
    with open(folder / "run.csv", newline="") as f:
        rows = list(csv.reader(f))
    return result.stdout, record, rows


def val_lines(stdout: str) -> list[tuple[int, float]]:
    return [(int(line.split()[1]), float(line.rsplit(" ", 1)[1]))
            for line in stdout.splitlines() if "| val loss " in line]


def test_val_loss_at_multiples_of_eval_every_and_at_the_end(cli_run):
    stdout, record, _ = cli_run
    assert record["val_steps"] == [20, 40, 50]
    assert val_lines(stdout) == [(s, round(v, 4)) for s, v in
                                 zip(record["val_steps"], record["val_losses"])]
    assert "num docs: 32033 (28830 train, 3203 validation)" in stdout
    assert record["num_docs"] == 28830 and record["num_val_docs"] == 3203


@pytest.mark.parametrize("steps, every, expected", [(40, 20, [20, 40]), (30, 0, [30])])
def test_val_steps_without_repeat_at_end(tmp_path, steps, every, expected):
    result = run_cli(SMALL + ["--steps", steps, "--val-fraction", "0.1", "--eval-every", every,
                              "--num-samples", "0", "--quiet"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [s for s, _ in val_lines(result.stdout)] == expected


def test_cli_val_loss_equals_trainer_evaluate(cli_run):
    _, record, _ = cli_run
    t = Trainer(CFG, TrainConfig(steps=50, batch_size=2, val_fraction=0.1), threads=1)
    got = []
    for n in (20, 20, 10):
        t.train(n)
        got.append(t.evaluate())
    assert got == record["val_losses"]
    assert t.val_steps == [20, 40, 50] and t.val_losses == got
    assert t.losses.tolist() == record["losses"]


def test_evaluate_matches_reference_engine():
    t = Trainer(CFG, TrainConfig(steps=30, batch_size=2, val_fraction=0.1), threads=1)
    t.train()
    val = t.val_dataset
    ref = ReferenceGPT(t.config, t.flat_params().tolist())
    k = 6
    expected = np.array([ref.doc_loss(val.doc_tokens(i)).data for i in range(k)])
    per_doc = np.concatenate([t.model.evaluate(val, [i]) for i in range(k)])
    np.testing.assert_allclose(per_doc, expected, rtol=1e-9, atol=0)
    loss = t.evaluate(k, record=False)
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected.mean(), rel=1e-9, abs=0)
    assert t.val_steps == []  # record=False records nothing


def test_held_out_documents_are_the_last_fraction(names_ds):
    t = Trainer(CFG, TrainConfig(steps=20, batch_size=5, val_fraction=0.1), threads=1)
    train, val = t.dataset, t.val_dataset
    N = names_ds.num_docs
    assert val.num_docs == round(N * 0.1) and train.num_docs + val.num_docs == N
    everything = names_ds.docs.tolist()  # shuffled with the same seed, 42
    assert train.docs.tolist() == everything[:train.num_docs]
    assert val.docs.tolist() == everything[train.num_docs:]
    # batches index the training part only, wrapping around within it
    for step in (0, 1, train.num_docs // 5 - 1, train.num_docs // 5, 10_000):
        assert all(0 <= i < train.num_docs for i in t.batch_doc_ids(step))


def test_held_out_documents_are_never_trained_on(tmp_path, names_ds):
    """Changing only the held-out documents changes nothing in training, even over
    several passes through the training documents."""
    docs = list(dict.fromkeys(d for d in names_ds.docs[:200] if len(d) > 2 and d != d[::-1]))
    docs = docs[:30]
    seed, fraction = 3, 0.2
    a = tmp_path / "a.txt"
    a.write_text("\n".join(docs) + "\n", encoding="utf-8")
    held_out = load_dataset(a, random.Random(seed)).docs.tolist()[-round(30 * fraction):]
    b = tmp_path / "b.txt"  # the same file with the held-out documents reversed
    b.write_text("\n".join(d[::-1] if d in held_out else d for d in docs) + "\n",
                 encoding="utf-8")

    tc = TrainConfig(steps=40, batch_size=4, val_fraction=fraction, seed=seed)
    ta, tb = Trainer(CFG, tc, data=a), Trainer(CFG, tc, data=b)
    assert ta.chars == tb.chars
    assert ta.dataset.docs == tb.dataset.docs
    assert tb.val_dataset.docs.tolist() == [d[::-1] for d in held_out]
    assert 40 * 4 > 2 * ta.dataset.num_docs  # several passes over the training part
    np.testing.assert_array_equal(ta.train(), tb.train())
    np.testing.assert_array_equal(ta.model.params, tb.model.params)
    assert ta.evaluate() != tb.evaluate()  # the held-out documents did differ


# ---------------------------------------------------------------------------
# --log-csv

def test_log_csv_rows(cli_run):
    _, record, rows = cli_run
    assert rows[0] == ["step", "loss", "val_loss", "elapsed_s"]
    body = rows[1:]
    assert all(len(row) == 4 for row in body)
    train = [row for row in body if row[1] != ""]
    val = [row for row in body if row[2] != ""]
    assert len(train) + len(val) == len(body)
    assert [int(row[0]) for row in train] == list(range(1, 51))
    assert [float(row[1]) for row in train] == record["losses"]  # exactly the --json losses
    assert all(row[2] == "" for row in train) and all(row[1] == "" for row in val)
    assert [int(row[0]) for row in val] == [20, 40, 50]
    assert [float(row[2]) for row in val] == record["val_losses"]
    # each validation row follows the row of its step
    order = [(int(row[0]), row[2] != "") for row in body]
    assert order == sorted(order)
    elapsed = [float(row[3]) for row in body]
    assert all(x >= 0 for x in elapsed)
    assert all(a <= b for a, b in zip(elapsed, elapsed[1:])), elapsed
