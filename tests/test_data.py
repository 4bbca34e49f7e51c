"""Documents, vocabulary and tokens."""

from __future__ import annotations

import random

import numpy as np
import pytest

from microgpt_fast.data import DataError, Documents, load_dataset, shuffled_indices

from helpers import UNICODE_DOCS
from oracles import pack, read_docs


def test_lines_are_stripped_and_blank_ones_dropped(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("  alice \n\n\tbob\t\n   \ncarol\r\n\n  dave  x \n\n", encoding="utf-8")
    docs = load_dataset(path, random.Random(0)).docs
    assert sorted(docs) == ["alice", "bob", "carol", "dave  x"]


def test_last_line_without_a_newline(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("one\ntwo", encoding="utf-8")
    assert sorted(load_dataset(path, random.Random(0)).docs) == ["one", "two"]


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


def test_chars_sorting_below_newline(tmp_path):
    """Characters whose code points sort below '\\n' keep their ids."""
    path = tmp_path / "low.txt"
    path.write_text("a\tb\n\x01z\nb\n", encoding="utf-8")
    ds = load_dataset(path, random.Random(0))
    assert ds.chars == ["\x01", "\t", "a", "b", "z"]
    tokens, starts = pack(list(ds.docs), ds.chars)
    assert ds.tokens.tolist() == tokens and ds.starts.tolist() == starts


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
    assert sorted(load_dataset(path, random.Random(0)).docs) == ["anna", "bob"]


def test_positions_per_step_wrap_and_truncate(tiny_ds):
    """Step s trains documents s*B .. s*B+B-1 mod N, each min(block_size, len + 1) positions."""
    ds = tiny_ds
    n = len(ds.docs)
    got = ds.positions(block_size=4, batch_size=3, step0=2, num_steps=2)
    expected = [min(4, len(ds.docs[i % n]) + 1) for i in range(6, 12)]
    assert got.tolist() == expected


# ---------------------------------------------------------------------------
# The compiled loader against the plain-Python steps it reproduces


def reference_load(path, rng, chars=None):
    """read_docs, rng.shuffle, sorted set of characters, pack: the original's steps."""
    docs = read_docs(path)
    rng.shuffle(docs)
    if chars is None:
        chars = sorted(set("".join(docs)))
    tokens, starts = pack(docs, chars)
    return docs, chars, tokens, starts


def assert_same_as_reference(path, seed, chars=None):
    rng, ref_rng = random.Random(seed), random.Random(seed)
    ds = load_dataset(path, rng, chars=chars)
    docs, chars, tokens, starts = reference_load(path, ref_rng, chars)
    assert ds.chars == chars
    assert ds.num_docs == len(ds.docs) == len(docs)
    assert np.array_equal(ds.tokens, tokens) and ds.tokens.dtype == np.int32
    assert np.array_equal(ds.starts, starts) and ds.starts.dtype == np.int64
    assert ds.docs == docs
    # the stream goes on exactly as after rng.shuffle: weights and samples come next
    assert rng.getstate() == ref_rng.getstate()
    assert [rng.gauss(0, 0.08) for _ in range(5)] == [ref_rng.gauss(0, 0.08) for _ in range(5)]
    return ds


@pytest.mark.parametrize("n", [0, 1, 2, 3, 1000, 100003])
@pytest.mark.parametrize("seed", [0, 1, 42, 2**40 + 3])
def test_compiled_shuffle_is_random_shuffle(seed, n):
    rng, ref_rng = random.Random(seed), random.Random(seed)
    perm = shuffled_indices(n, rng)
    expected = list(range(n))
    ref_rng.shuffle(expected)
    assert perm.dtype == np.int64 and perm.tolist() == expected
    assert rng.getstate() == ref_rng.getstate()
    assert ([rng.random(), rng.getrandbits(70), rng.gauss(0, 1), rng.randrange(10**6)]
            == [ref_rng.random(), ref_rng.getrandbits(70), ref_rng.gauss(0, 1),
                ref_rng.randrange(10**6)])


def test_compiled_shuffle_mid_stream():
    """A generator part-way through its 624-word block, with a gauss value kept
    back (gauss_next), shuffles and goes on as rng.shuffle does."""
    for draws in [0, 1, 311, 623, 624, 625]:
        rng = random.Random(5)
        for _ in range(draws):
            rng.getrandbits(32)
        rng.gauss(0, 1)  # leaves gauss_next set
        ref_rng = random.Random()
        ref_rng.setstate(rng.getstate())
        perm = shuffled_indices(5000, rng)
        expected = list(range(5000))
        ref_rng.shuffle(expected)
        assert perm.tolist() == expected
        assert rng.getstate() == ref_rng.getstate()
        assert rng.gauss(0, 1) == ref_rng.gauss(0, 1)


def test_shuffle_with_a_random_subclass_uses_its_shuffle():
    class Counting(random.Random):
        calls = 0

        def shuffle(self, x):
            Counting.calls += 1
            super().shuffle(x)

    perm = shuffled_indices(100, Counting(3))
    expected = list(range(100))
    random.Random(3).shuffle(expected)
    assert Counting.calls == 1 and perm.tolist() == expected


def test_bundled_names_as_the_original(names_ds):
    ds = assert_same_as_reference(None, 42)
    assert np.array_equal(ds.tokens, names_ds.tokens)


def test_unicode_file_as_the_original(unicode_path):
    for seed in [1, 2, 7]:
        assert_same_as_reference(unicode_path, seed)


def test_unicode_whitespace_is_stripped_as_str_strip(tmp_path):
    """Every character str.strip() strips is stripped at both ends of a line and
    kept inside it; look-alikes that are not whitespace are kept everywhere."""
    spaces = [chr(c) for c in range(0x3100) if chr(c).isspace() and c != 10]
    assert {"\r", "\t", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u2000",
            "\u2028", "\u3000"} <= set(spaces)
    not_spaces = ["\u200b", "\ufeff", "\x00", "\u180e", "\U0001f642", "\U0010ffff"]
    assert not any(c.isspace() for c in not_spaces)
    lines = [f"{c}{c}a{c}b{c}" for c in spaces] + [f"{c}x{c}" for c in not_spaces]
    lines += ["".join(spaces), "", "plain"]
    path = tmp_path / "spaces.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    ds = assert_same_as_reference(path, 11)
    assert sorted(ds.docs) == sorted([f"a{c}b" for c in spaces]
                                     + [f"{c}x{c}" for c in not_spaces] + ["plain"])
    # the same in an ASCII file (read as bytes rather than code points)
    ascii_lines = [f"{c}{c}a{c}b{c}" for c in spaces if c.isascii()] + ["\x00x\x00", "  "]
    path.write_text("\r\n".join(ascii_lines) + "\r\n", encoding="utf-8")
    assert path.read_bytes().isascii()
    assert_same_as_reference(path, 12)


def test_byte_order_mark_and_crlf(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeff \u00e9t\u00e9 \r\n\r\n\ufeffin\r\n".encode("utf-8"))
    ds = assert_same_as_reference(path, 4)
    assert sorted(ds.docs) == ["\u00e9t\u00e9", "\ufeffin"]  # only the leading one is dropped


@pytest.mark.parametrize("content, words", [
    (None, ["not found"]),
    (b"", ["no documents"]),
    (b"  \n\t\n\r\n\xc2\xa0\n", ["no documents"]),
    (b"ok\nfine\n\xc3\x28\n", ["not UTF-8", "offset 8"]),
    (b"\xff", ["not UTF-8", "offset 0"]),
])
def test_bad_files_are_data_errors(tmp_path, content, words):
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    rng = random.Random(1)
    state = rng.getstate()
    with pytest.raises(DataError) as info:
        load_dataset(path, rng)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert all(w in message for w in words), message
    assert rng.getstate() == state


def test_a_directory_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="directory"):
        load_dataset(tmp_path, random.Random(1))


# ---------------------------------------------------------------------------
# A given vocabulary (chars=)


def test_given_chars_are_the_vocabulary(unicode_path):
    chars = sorted(set("".join(UNICODE_DOCS)) | set("ABC\u00ff\U0010ffff"))
    ds = assert_same_as_reference(unicode_path, 7, chars=chars)
    assert ds.chars == chars and ds.bos == len(chars)
    own = load_dataset(unicode_path, random.Random(7))
    assert ds.docs == own.docs  # the same shuffle
    for i, doc in enumerate(ds.docs):
        assert ds.doc_tokens(i) == [ds.bos] + [chars.index(c) for c in doc] + [ds.bos]


def test_given_chars_on_an_ascii_file(names_ds):
    chars = [" ", "!"] + list("abcdefghijklmnopqrstuvwxyz") + ["\u00e9"]
    ds = assert_same_as_reference(None, 42, chars=chars)
    assert ds.vocab_size == 30
    assert ds.docs == names_ds.docs


def test_data_outside_given_chars_is_rejected(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("abQ\nb!a\n\u00e9a\n", encoding="utf-8")
    rng = random.Random(1)
    state = rng.getstate()
    with pytest.raises(DataError) as info:
        load_dataset(path, rng, chars=["a", "b"])
    assert str(info.value) == (f"data file {path} has characters outside the model's "
                               "vocabulary: '!', 'Q', '\u00e9'")
    assert rng.getstate() == state
    # at most ten are named
    path.write_text("".join(chr(c) for c in range(ord("A"), ord("Z") + 1)) + "\n")
    with pytest.raises(DataError) as info:
        load_dataset(path, rng, chars=["a"])
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith("'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J' (and 16 more)")


@pytest.mark.parametrize("chars", [["b", "a"], ["a", "a"], ["ab"], [""], ["a", 1]])
def test_bad_given_chars(unicode_path, chars):
    with pytest.raises(ValueError, match="chars"):
        load_dataset(unicode_path, random.Random(1), chars=chars)


# ---------------------------------------------------------------------------
# Documents and the train / validation split


def test_documents_sequence(unicode_ds):
    ds = unicode_ds
    docs = Documents(ds.chars, ds.tokens, ds.starts)  # fresh: nothing decoded yet
    expected = list(ds.docs)
    assert len(docs) == ds.num_docs == len(expected)
    assert [docs[i] for i in range(len(docs))] == expected
    assert docs[-1] == expected[-1] and docs[-len(docs)] == expected[0]
    for i in [len(docs), -len(docs) - 1]:
        with pytest.raises(IndexError):
            docs[i]
    assert docs[2:5] == expected[2:5]
    assert docs == expected and docs == tuple(expected) and docs != expected[:-1]
    assert expected == docs and list(docs) == expected
    assert docs.index(expected[3]) == 3 and expected[4] in docs


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.9, 0.999])
def test_split_holds_out_the_last_documents(names_ds, fraction):
    ds = names_ds
    train, val = ds.split(fraction)
    n_val = round(ds.num_docs * fraction)
    n_train = ds.num_docs - n_val
    assert (train.num_docs, val.num_docs) == (n_train, n_val)
    assert train.chars is ds.chars and val.chars is ds.chars
    for part in (train, val):
        assert part.tokens.dtype == np.int32 and part.starts.dtype == np.int64
        assert part.starts[0] == 0 and part.starts[-1] == len(part.tokens) - 1
        assert part.starts.shape == (part.num_docs + 1,)
    assert np.array_equal(np.concatenate([train.tokens, val.tokens[1:]]), ds.tokens)
    assert list(train.docs) + list(val.docs) == list(ds.docs)
    for i in [0, 1, n_train - 1]:
        assert train.doc_tokens(i) == ds.doc_tokens(i)
    for i in [0, n_val - 1]:
        assert val.doc_tokens(i) == ds.doc_tokens(n_train + i)
        assert val.docs[i] == ds.docs[n_train + i]
    assert val.doc_tokens(n_val) == val.doc_tokens(0)  # wraps within the part


def test_split_of_a_small_dataset(tiny_ds):
    ds = tiny_ds  # 7 documents
    assert ds.split(0) == (ds, None)
    train, val = ds.split(0.3)  # round(2.1) = 2
    assert list(val.docs) == list(ds.docs)[5:] and list(train.docs) == list(ds.docs)[:5]
    assert val.positions(block_size=4, batch_size=3, step0=0, num_steps=1).tolist() == \
        [min(4, len(ds.docs[i]) + 1) for i in [5, 6, 5]]
    for i in range(2):
        toks = val.doc_tokens(i)
        assert "".join(ds.chars[t] for t in toks[1:-1]) == ds.docs[5 + i]
        assert toks[0] == toks[-1] == ds.bos
    with pytest.raises(ValueError, match="val_fraction.*validation set empty"):
        ds.split(0.05)  # round(0.35) = 0
    with pytest.raises(ValueError, match="val_fraction.*training set empty"):
        ds.split(0.95)  # round(6.65) = 7


@pytest.mark.parametrize("fraction", [-0.1, 1, 1.0, 1.5, float("nan"), float("inf"),
                                      "0.1", None, True])
def test_split_rejects_bad_fractions(names_ds, fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        names_ds.split(fraction)
