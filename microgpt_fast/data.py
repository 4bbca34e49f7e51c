"""Documents, vocabulary and tokens, as the original prepares them.

    >>> import random
    >>> from microgpt_fast.data import load_dataset
    >>> ds = load_dataset(None, random.Random(42))   # the bundled names.txt
    >>> len(ds.docs), ds.vocab_size
    (32033, 27)

A text file holds one document a line (UTF-8; a leading byte-order mark is
ignored). Lines are stripped, empty ones dropped,
and the list is shuffled once with the caller's random stream. The vocabulary
is the sorted set of characters; token id = index in it, and BOS = len(chars)
marks both the start and the end of a document.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources

import numpy as np


class DataError(ValueError):
    """A data file that cannot be used; the message is one line."""


def default_data_path() -> str:
    return str(resources.files("microgpt_fast") / "data" / "names.txt")


def read_docs(path: str | os.PathLike | None) -> list[str]:
    """The non-empty, stripped lines of a UTF-8 text file (default: names.txt)."""
    path = default_data_path() if path is None else os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"data path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"data file is not UTF-8 text: {path} "
                        f"(invalid byte at offset {exc.start})") from None
    text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the first line
    if not text.strip():
        raise DataError(f"data file has no documents (empty or only blank lines): {path}")
    docs = [line.strip() for line in text.strip().split("\n")]
    return [d for d in docs if d]


@dataclass
class Dataset:
    """Shuffled documents with their tokens packed for the compiled engine.

    tokens: int32 array (N + sum of doc lengths + 1,): BOS d0 BOS d1 BOS ... BOS.
    starts: int64 array (N + 1,): index of the BOS in front of each document,
        so document i's tokens [BOS] + ids + [BOS] are tokens[starts[i]:starts[i+1] + 1].
    """

    docs: list[str]
    chars: list[str]
    tokens: np.ndarray
    starts: np.ndarray

    @property
    def bos(self) -> int:
        return len(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def positions(self, block_size: int, batch_size: int, step0: int,
                  num_steps: int) -> np.ndarray:
        """Positions trained in each document of steps step0 .. step0 + num_steps - 1
        (step s trains documents s*B .. s*B + B - 1, mod N): int64 (num_steps * B,)."""
        lengths = np.minimum(block_size, np.diff(self.starts))
        ids = np.arange(step0 * batch_size, (step0 + num_steps) * batch_size) % len(self.docs)
        return lengths[ids]

    def doc_tokens(self, i: int) -> list[int]:
        """[BOS] + ids + [BOS] of document i (mod the number of documents)."""
        i %= len(self.docs)
        return self.tokens[self.starts[i]:self.starts[i + 1] + 1].tolist()


def tokenize(docs: list[str], chars: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pack docs into one BOS-separated int32 token array and its starts."""
    bos = len(chars)
    # One pass over the code points: '\n' (never inside a stripped line) stands
    # for BOS between documents.
    text = "\n" + "\n".join(docs) + "\n"
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    alphabet = np.array([ord(c) for c in chars] + [ord("\n")], dtype=np.uint32)
    order = np.argsort(alphabet)
    ids = order[np.searchsorted(alphabet, codes, sorter=order)].astype(np.int32)
    ids[ids == len(chars)] = bos
    starts = np.flatnonzero(codes == ord("\n")).astype(np.int64)
    return ids, starts


def load_dataset(path, rng) -> Dataset:
    """Read, shuffle with rng (random.Random), build the vocabulary, tokenize."""
    docs = read_docs(path)
    rng.shuffle(docs)
    chars = sorted(set("".join(docs)))
    tokens, starts = tokenize(docs, chars)
    return Dataset(docs, chars, tokens, starts)
