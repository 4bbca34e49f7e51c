"""Documents, vocabulary and tokens, as the original prepares them.

    >>> import random
    >>> from microgpt_fast.data import load_dataset
    >>> ds = load_dataset(None, random.Random(42))   # the bundled names.txt
    >>> ds.num_docs, ds.vocab_size
    (32033, 27)
    >>> train, val = ds.split(0.1)                  # the last 10% held out
    >>> train.num_docs, val.num_docs
    (28830, 3203)

A text file holds one document a line (UTF-8; a leading byte-order mark is
ignored). Lines are stripped, empty ones dropped,
and the list is shuffled once with the caller's random stream. The vocabulary
is the sorted set of characters; token id = index in it, and BOS = len(chars)
marks both the start and the end of a document.

load_dataset does this in compiled code (microgpt_fast._data, src/data.pyx):
one pass over the file's code points finds the stripped lines and the
characters used, Python's shuffle runs on an index array (the same Mersenne
Twister draws, the rng left in the same state), and one pass packs the tokens
in shuffled order. The tests hold it against the plain-Python steps it
reproduces (tests/oracles.py and rng.shuffle).
"""

from __future__ import annotations

import numbers
import operator
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from . import _data
from .paths import read_regular


class DataError(ValueError):
    """A data file that cannot be used; the message is one line."""


def default_data_path() -> str:
    return str(resources.files("microgpt_fast") / "data" / "names.txt")


def _read_bytes(path: str) -> bytes:
    """The bytes of a regular file; a FIFO, a device or standard input is a DataError."""
    return read_regular(path, "data file", DataError)


def _decode(raw: bytes, path: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"data file is not UTF-8 text: {path} "
                        f"(invalid byte at offset {exc.start})") from None
    return text.removeprefix("\ufeff")  # a byte-order mark is not part of the first line


def _no_documents(path: str) -> DataError:
    return DataError(f"data file has no documents (empty or only blank lines): {path}")


def shuffled_indices(n: int, rng: random.Random) -> np.ndarray:
    """int64 (n,): the order in which rng.shuffle(x) leaves a list x of n items
    (shuffled x[i] = x[perm[i]]), leaving rng in the state that call leaves it."""
    if type(rng) is random.Random and n < 2**32:  # getrandbits(k) for k <= 32
        version, state, gauss_next = rng.getstate()
        if version == 3:
            mt = np.array(state, dtype=np.uint32)  # 624 words + the next word's index
            perm = np.empty(n, dtype=np.int64)
            _data.shuffle_permutation(mt, perm)
            rng.setstate((version, tuple(mt.tolist()), gauss_next))
            return perm
    order = list(range(n))  # a subclass may draw differently: let it shuffle
    rng.shuffle(order)
    return np.array(order, dtype=np.int64)


class Documents(Sequence):
    """The documents of a Dataset as strings, decoded from its tokens on access.

    len() is free; indexing one document decodes it; iteration, slices and ==
    decode all of them once into a list, kept for later use."""

    def __init__(self, chars: list[str], tokens: np.ndarray, starts: np.ndarray):
        # code point of each token id; BOS becomes '\n', which no document holds
        self._code_points = np.array([ord(c) for c in chars] + [10], dtype=np.uint32)
        self._tokens, self._starts = tokens, starts
        self._list: list[str] | None = None

    def _decode(self, tokens: np.ndarray) -> str:
        return self._code_points[tokens].tobytes().decode("utf-32-le")

    def __len__(self) -> int:
        return len(self._starts) - 1

    def __getitem__(self, i):
        if isinstance(i, slice) or self._list is not None:
            return self.tolist()[i]
        n, i = len(self), operator.index(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("document index out of range")
        return self._decode(self._tokens[self._starts[i] + 1:self._starts[i + 1]])

    def tolist(self) -> list[str]:
        if self._list is None:
            # "\n d0 \n d1 \n ... \n" split on '\n', less the empty ends
            first, last = self._starts[0], self._starts[-1]
            self._list = self._decode(self._tokens[first:last + 1]).split("\n")[1:-1]
        return self._list

    def __iter__(self):
        return iter(self.tolist())

    def __eq__(self, other):
        if isinstance(other, (Documents, list, tuple)):
            return self.tolist() == list(other)
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"<{len(self)} documents>"


@dataclass(eq=False)
class Dataset:
    """Shuffled documents with their tokens packed for the compiled engine.

    chars: the vocabulary, sorted single characters; token id = index, BOS = len(chars).
    tokens: int32 array (N + sum of doc lengths + 1,): BOS d0 BOS d1 BOS ... BOS.
    starts: int64 array (N + 1,): index of the BOS in front of each document,
        so document i's tokens [BOS] + ids + [BOS] are tokens[starts[i]:starts[i+1] + 1].
    docs: the N documents as strings (a Documents sequence, decoded on access).
    """

    chars: list[str]
    tokens: np.ndarray
    starts: np.ndarray
    _docs: Documents | None = field(default=None, init=False, repr=False)
    # (tokens, starts, vocab_size) of the last check() that passed on read-only arrays
    _checked: tuple | None = field(default=None, init=False, repr=False)

    @property
    def num_docs(self) -> int:
        return len(self.starts) - 1

    @property
    def docs(self) -> Documents:
        if self._docs is None:
            self._docs = Documents(self.chars, self.tokens, self.starts)
        return self._docs

    @property
    def bos(self) -> int:
        return len(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def check(self, vocab_size: int) -> None:
        """ValueError unless the compiled engine may read these arrays for a model
        of vocab_size tokens: tokens int32 and starts int64, 1-D and contiguous,
        at least one document, starts strictly increasing inside tokens, and every
        token id in 0..vocab_size - 1. O(tokens); a pass on read-only arrays (as
        load_dataset makes them) is remembered, so a dataset is checked once."""
        tokens, starts = self.tokens, self.starts
        checked = self._checked
        if (checked is not None and checked[0] is tokens and checked[1] is starts
                and checked[2] == vocab_size and not tokens.flags.writeable
                and not starts.flags.writeable):
            return
        for name, array, dtype in (("tokens", tokens, np.int32), ("starts", starts, np.int64)):
            if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != 1:
                raise ValueError(f"dataset {name} must be a 1-D {np.dtype(dtype)} array, got "
                                 f"{getattr(array, 'dtype', type(array).__name__)} "
                                 f"{getattr(array, 'shape', '')}")
            if not array.flags.c_contiguous:
                raise ValueError(f"dataset {name} must be contiguous")
        if len(starts) < 2:
            raise ValueError("the dataset has no documents (starts needs 2 or more entries)")
        if starts[0] < 0 or starts[-1] >= len(tokens):
            raise ValueError(f"dataset starts run outside its {len(tokens)} tokens "
                             f"({starts[0]}..{starts[-1]})")
        if not (starts[1:] > starts[:-1]).all():
            raise ValueError("dataset starts must be strictly increasing")
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= vocab_size):
            raise ValueError(f"dataset token ids must be in 0..{vocab_size - 1}, found "
                             f"{tokens.min()}..{tokens.max()}")
        if not tokens.flags.writeable and not starts.flags.writeable:
            self._checked = (tokens, starts, vocab_size)

    def positions(self, block_size: int, batch_size: int, step0: int,
                  num_steps: int) -> np.ndarray:
        """Positions trained in each document of steps step0 .. step0 + num_steps - 1
        (step s trains documents s*B .. s*B + B - 1, mod N): int64 (num_steps * B,)."""
        lengths = np.minimum(block_size, np.diff(self.starts))
        ids = np.arange(step0 * batch_size, (step0 + num_steps) * batch_size) % self.num_docs
        return lengths[ids]

    def batches(self, step0: int, num_steps: int, batch_size: int) -> tuple[Dataset, np.ndarray]:
        """What steps step0 .. step0 + num_steps - 1 train: (a dataset, the ids of its
        documents, int64 (num_steps * batch_size,)); step s takes documents
        s*B .. s*B + B - 1 of this one, mod the number of documents."""
        first = step0 * batch_size
        ids = np.arange(first, first + num_steps * batch_size, dtype=np.int64)
        return self, ids % self.num_docs

    def doc_tokens(self, i: int) -> list[int]:
        """[BOS] + ids + [BOS] of document i (mod the number of documents)."""
        i %= self.num_docs
        return self.tokens[self.starts[i]:self.starts[i + 1] + 1].tolist()

    def split(self, val_fraction: float) -> tuple[Dataset, Dataset | None]:
        """(train, validation): the last round(N * val_fraction) documents held out.

        val_fraction 0 gives (self, None). Both parts share chars; their tokens
        and starts are slices of this dataset's (starts rebased to 0)."""
        if (isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real)
                or not 0 <= val_fraction < 1):
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        if val_fraction == 0:
            return self, None
        N = self.num_docs
        n_val = round(N * val_fraction)
        n_train = N - n_val
        if n_val == 0 or n_train == 0:
            empty = "validation" if n_val == 0 else "training"
            raise ValueError(f"val_fraction {val_fraction!r} of {N} documents leaves "
                             f"the {empty} set empty")
        cut = int(self.starts[n_train])  # the BOS between the two parts, in both
        train = Dataset(self.chars, self.tokens[:cut + 1], self.starts[:n_train + 1])
        val = Dataset(self.chars, self.tokens[cut:], _read_only(self.starts[n_train:] - cut))
        return train, val


def _check_chars(chars) -> list[str]:
    chars = list(chars)
    if not all(isinstance(c, str) and len(c) == 1 for c in chars):
        raise ValueError("chars must be single-character strings")
    if any(a >= b for a, b in zip(chars, chars[1:])):
        raise ValueError("chars must be sorted and distinct")
    return chars


def load_dataset(path: str | os.PathLike | None, rng: random.Random,
                 chars: list[str] | None = None) -> Dataset:
    """Read, shuffle with rng (random.Random), build the vocabulary, tokenize.

    The same documents, order, tokens and rng state as read_docs, rng.shuffle,
    sorted(set(...)) and tokenize. chars: the vocabulary to use instead of the
    data's own (sorted single characters); DataError if the data holds others.
    """
    if chars is not None:
        chars = _check_chars(chars)
    path = default_data_path() if path is None else os.fspath(path)
    raw = _read_bytes(path)
    if raw.isascii():  # valid UTF-8 whose bytes are the code points
        codes = np.frombuffer(raw, dtype=np.uint8)
    else:
        codes = np.frombuffer(_decode(raw, path).encode("utf-32-le"), dtype=np.uint32)
    del raw
    alphabet = 256 if codes.dtype == np.uint8 else 0x110000
    lines = int(np.count_nonzero(codes == 10)) + 1
    bounds = np.empty((lines, 2), dtype=np.int64)  # document d is codes[bounds[d, 0]:bounds[d, 1]]
    seen = np.zeros(alphabet, dtype=np.uint8)  # code points used by the documents
    N = _data.doc_bounds(codes, bounds, seen)
    if N == 0:
        raise _no_documents(path)
    bounds = bounds[:N]
    present = np.flatnonzero(seen)

    # vocabulary before the shuffle, so that a rejected file leaves rng untouched
    if chars is None:
        chars = [chr(c) for c in present]
    lut = np.full(alphabet, -1, dtype=np.int32)  # token id of each code point
    ids = np.array([ord(c) for c in chars], dtype=np.int64)
    inside = ids < alphabet
    lut[ids[inside]] = np.flatnonzero(inside)
    outside = present[lut[present] < 0]
    if outside.size:
        names = ", ".join(repr(chr(c)) for c in outside[:10])
        more = f" (and {outside.size - 10} more)" if outside.size > 10 else ""
        raise DataError(f"data file {path} has characters outside the model's "
                        f"vocabulary: {names}{more}")

    perm = shuffled_indices(N, rng)
    tokens = np.empty(N + int((bounds[:, 1] - bounds[:, 0]).sum()) + 1, dtype=np.int32)
    starts = np.empty(N + 1, dtype=np.int64)
    _data.pack(codes, bounds, perm, lut, len(chars), tokens, starts)
    return Dataset(chars, _read_only(tokens), _read_only(starts))


def _read_only(array: np.ndarray) -> np.ndarray:
    """array, no longer writeable: a dataset's arrays, once checked, stay valid."""
    array.flags.writeable = False
    return array
