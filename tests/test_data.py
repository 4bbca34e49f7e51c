"""Documents, vocabulary and tokens."""

from __future__ import annotations

import random

import numpy as np

from microgpt_fast.data import load_dataset, read_docs, tokenize

from helpers import UNICODE_DOCS


def test_read_docs_strips_and_drops_blank_lines(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("  alice \n\n\tbob\t\n   \ncarol\r\n\n  dave  x \n\n", encoding="utf-8")
    assert read_docs(path) == ["alice", "bob", "carol", "dave  x"]


def test_read_docs_without_trailing_newline(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("one\ntwo", encoding="utf-8")
    assert read_docs(path) == ["one", "two"]


def test_bundled_names():
    ds = load_dataset(None, random.Random(42))
    assert len(ds.docs) == 32033
    assert ds.vocab_size == 27
    assert ds.chars == list("abcdefghijklmnopqrstuvwxyz")
    assert ds.bos == 26
    assert sorted(ds.docs) == sorted(read_docs(None))


def test_packed_layout(names_ds):
    ds = names_ds
    N = len(ds.docs)
    assert ds.tokens.dtype == np.int32 and ds.starts.dtype == np.int64
    assert ds.starts.shape == (N + 1,)
    assert ds.tokens.shape == (N + sum(len(d) for d in ds.docs) + 1,)
    assert np.all(ds.tokens[ds.starts] == ds.bos)
    assert np.count_nonzero(ds.tokens == ds.bos) == N + 1
    assert ds.starts[0] == 0 and ds.starts[-1] == len(ds.tokens) - 1


def test_unicode_tokens_round_trip(unicode_ds):
    ds = unicode_ds
    assert sorted(ds.docs) == sorted(UNICODE_DOCS)
    assert ds.chars == sorted(set("".join(UNICODE_DOCS)))
    assert ds.vocab_size == len(ds.chars) + 1
    for i, doc in enumerate(ds.docs):
        toks = ds.doc_tokens(i)
        assert toks[0] == toks[-1] == ds.bos
        assert ds.bos not in toks[1:-1]
        assert "".join(ds.chars[t] for t in toks[1:-1]) == doc
    # indices wrap around, as batches do
    assert ds.doc_tokens(len(ds.docs) + 2) == ds.doc_tokens(2)


def test_tokenize_chars_sorting_below_newline():
    """Characters whose code points sort below '\\n' (the packing separator) keep their ids."""
    docs = ["a\tb", "\x01z", "b"]
    chars = sorted(set("".join(docs)))
    tokens, starts = tokenize(docs, chars)
    bos = len(chars)
    expected = [bos]
    for d in docs:
        expected += [chars.index(c) for c in d] + [bos]
    assert tokens.tolist() == expected
    assert starts.tolist() == [0, 4, 7, 9]


def test_shuffle_uses_the_rng(unicode_path):
    a = load_dataset(unicode_path, random.Random(1))
    b = load_dataset(unicode_path, random.Random(1))
    c = load_dataset(unicode_path, random.Random(2))
    assert a.docs == b.docs
    assert np.array_equal(a.tokens, b.tokens)
    assert a.docs != c.docs
    assert sorted(a.docs) == sorted(c.docs)
    # exactly one rng.shuffle of the file's order
    expected = read_docs(unicode_path)
    random.Random(1).shuffle(expected)
    assert a.docs == expected



def test_a_byte_order_mark_is_not_a_character(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffanna\nbob\n".encode("utf-8"))
    assert read_docs(path) == ["anna", "bob"]


def test_positions_per_step_wrap_and_truncate(tiny_ds):
    """Step s trains documents s*B .. s*B+B-1 mod N, each min(block_size, len + 1) positions."""
    ds = tiny_ds
    n = len(ds.docs)
    got = ds.positions(block_size=4, batch_size=3, step0=2, num_steps=2)
    expected = [min(4, len(ds.docs[i % n]) + 1) for i in range(6, 12)]
    assert got.tolist() == expected
