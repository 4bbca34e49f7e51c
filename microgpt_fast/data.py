"""Data files, read in one of two formats, and the documents each step trains.

    >>> import random
    >>> from microgpt_fast.data import load_dataset, load_text
    >>> ds = load_dataset("names", random.Random(42))   # the bundled names.txt
    >>> ds.num_docs, ds.vocab_size
    (32033, 27)
    >>> train, val = ds.split(0.1)                     # the last 10% held out
    >>> train.num_docs, val.num_docs
    (28830, 3203)
    >>> text = load_text("shakespeare", block_size=64, seed=42)
    >>> text.num_chars, text.vocab_size
    (1115394, 65)

Two datasets come with the package, each with its natural format: names
(names.txt, the original's, lines) and shakespeare (tinyshakespeare.txt,
text). Any other name is a path.

The lines format (the original's): a UTF-8 text file holds one document a
line (a leading byte-order mark is ignored). Lines are stripped, empty ones
dropped, and the list is shuffled once with the caller's random stream. The
vocabulary is the sorted set of characters; token id = index in it, and BOS =
len(chars) marks both the start and the end of a document.

load_dataset does this in compiled code (microgpt_fast._data, src/data.pyx):
one pass over the file's code points finds the stripped lines and the
characters used, Python's shuffle runs on an index array (the same Mersenne
Twister draws, the rng left in the same state), and one pass packs the tokens
in shuffled order. The tests hold it against the plain-Python steps it
reproduces (tests/oracles.py and rng.shuffle).

The text format: the whole file is one stream of characters, newlines
included, nothing stripped or shuffled; the vocabulary is its distinct
characters, sorted, with no BOS. A training step draws batch_size windows of
block_size + 1 consecutive characters (block_size predictions each) from the
training part, at offsets that are a pure function of (seed, step, index in
the batch): see window_draws. TextStream.batches packs a chunk's windows into
a Windows dataset, whose documents the engines train as they train lines.
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
from .config import FORMATS
from .paths import read_regular


class DataError(ValueError):
    """A data file that cannot be used; the message is one line."""


# The bundled datasets: their file in microgpt_fast/data/ and their natural format.
BUNDLED = {"names": ("names.txt", "lines"), "shakespeare": ("tinyshakespeare.txt", "text")}


def bundled_path(name: str) -> str:
    return str(resources.files("microgpt_fast") / "data" / BUNDLED[name][0])


def default_data_path() -> str:
    return bundled_path("names")


def _is_bundled(data) -> bool:
    # only a str names a bundled dataset: a Path("names") is a file
    return isinstance(data, str) and data in BUNDLED


def data_source(data) -> str:
    """What a run records of its data: a bundled dataset's name (None is names),
    or the absolute path of a file."""
    if data is None:
        return "names"
    return data if _is_bundled(data) else os.path.abspath(os.fspath(data))


def data_path(data) -> str:
    """The file to read for data: a bundled dataset's file (None is names), or the path."""
    if data is None:
        return default_data_path()
    return bundled_path(data) if _is_bundled(data) else os.fspath(data)


def natural_format(data) -> str:
    """The format data is read in unless another is asked for: a bundled
    dataset's own (names: lines, shakespeare: text); lines for any file."""
    return BUNDLED[data][1] if _is_bundled(data) else "lines"


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
        _check_fraction(val_fraction)
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


def _check_fraction(val_fraction) -> None:
    if (isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real)
            or not 0 <= val_fraction < 1):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")


def _check_chars(chars) -> list[str]:
    chars = list(chars)
    if not all(isinstance(c, str) and len(c) == 1 for c in chars):
        raise ValueError("chars must be single-character strings")
    if any(a >= b for a, b in zip(chars, chars[1:])):
        raise ValueError("chars must be sorted and distinct")
    return chars


def load_dataset(path: str | os.PathLike | None, rng: random.Random,
                 chars: list[str] | None = None) -> Dataset:
    """Read in the lines format, shuffle with rng (random.Random), build the
    vocabulary, tokenize. path: a bundled dataset's name, a file, or None (names).

    The same documents, order, tokens and rng state as read_docs, rng.shuffle,
    sorted(set(...)) and tokenize. chars: the vocabulary to use instead of the
    data's own (sorted single characters); DataError if the data holds others.
    """
    if chars is not None:
        chars = _check_chars(chars)
    path = data_path(path)
    codes = _code_points(path)
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
    _refuse_outside(present[lut[present] < 0], path)

    perm = shuffled_indices(N, rng)
    tokens = np.empty(N + int((bounds[:, 1] - bounds[:, 0]).sum()) + 1, dtype=np.int32)
    starts = np.empty(N + 1, dtype=np.int64)
    _data.pack(codes, bounds, perm, lut, len(chars), tokens, starts)
    return Dataset(chars, _read_only(tokens), _read_only(starts))


def _code_points(path: str) -> np.ndarray:
    """The file's characters as code points: uint8 for ASCII, else uint32."""
    raw = _read_bytes(path)
    if raw.isascii():  # valid UTF-8 whose bytes are the code points
        return np.frombuffer(raw, dtype=np.uint8)
    return np.frombuffer(_decode(raw, path).encode("utf-32-le"), dtype=np.uint32)


def _refuse_outside(outside: np.ndarray, path: str) -> None:
    """DataError naming the code points outside the vocabulary, if any."""
    if outside.size:
        names = ", ".join(repr(chr(c)) for c in outside[:10])
        more = f" (and {outside.size - 10} more)" if outside.size > 10 else ""
        raise DataError(f"data file {path} has characters outside the model's "
                        f"vocabulary: {names}{more}")


def _read_only(array: np.ndarray) -> np.ndarray:
    """array, no longer writeable: a dataset's arrays, once checked, stay valid."""
    array.flags.writeable = False
    return array


# ---------------------------------------------------------------------------
# The text format: one stream of characters, trained in windows

# splitmix64's constants: the increment (2^64 / the golden ratio, odd) and the
# finalizer's two multipliers
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

# The streams of window_draws: the training windows, and the held-out windows
# of an evaluation on a sample (--eval-docs)
TRAIN_WINDOWS = 0
HELD_OUT_WINDOWS = 1


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 arrays: a bijection whose outputs pass
    for independent even for consecutive inputs (products wrap modulo 2^64)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def window_draws(seed: int, stream: int, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """uint64 (len(rows), batch_size): draw b of row r (a step, or a held-out
    window's index) of the stream keyed by seed.

    A counter-based generator: each draw is a hash of its coordinates alone,
    key = mix(seed + (stream + 1) G), row key = mix(key + (r + 1) G), draw =
    mix(row key + (b + 1) G), with splitmix64's increment G and finalizer mix,
    all modulo 2^64 (draw b of a row is output b + 1 of a splitmix64 stream
    seeded with the row's key, and the row keys are the outputs of one seeded
    with the stream's key). So the windows of a step do not depend on the steps
    trained before it, on how the steps are cut into chunks, on the thread
    count, or on a save and resume in between; and no random stream is drawn
    from (the run's stays the original's)."""
    key = np.array([int(seed) % 2**64], np.uint64) + _GAMMA * np.array([stream + 1], np.uint64)
    row_keys = _mix64(_mix64(key) + _GAMMA * (np.asarray(rows).astype(np.uint64) + np.uint64(1)))
    columns = _GAMMA * np.arange(1, batch_size + 1, dtype=np.uint64)
    return _mix64(row_keys[:, None] + columns[None, :])


def _offsets(draws: np.ndarray, count: int) -> np.ndarray:
    """int64: each draw reduced to 0..count - 1 (a remainder: its bias, below
    count / 2^64, is far below anything a run can see)."""
    return (draws % np.uint64(count)).astype(np.int64)


class Windows(Dataset):
    """Windows of a text stream, as documents the engines train and evaluate the
    way they do lines: window i is tokens[starts[i]:starts[i] + n_i + 1], its
    n_i = min(block_size, starts[i+1] - starts[i]) predictions (the engines read
    a document's length this way, schedule.pxd's doc_rows_of).

    Two layouts: the training windows are packed one after another, T + 1
    tokens each, starts[i] = i (T + 1), the last start on the last token (so
    that the last window, too, counts T predictions); the held-out windows of
    an evaluation tile the text and share their boundary characters, as lines
    share their BOS. No BOS: vocab_size = len(chars).
    """

    def __init__(self, chars: list[str], tokens: np.ndarray, starts: np.ndarray,
                 block_size: int):
        super().__init__(chars, tokens, starts)
        self.block_size = block_size

    @property
    def bos(self) -> None:
        return None

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def lengths(self) -> np.ndarray:
        """Predictions in each window, int64 (num_docs,)."""
        return np.minimum(self.block_size, np.diff(self.starts))

    def doc_tokens(self, i: int) -> list[int]:
        """The n_i + 1 tokens of window i (mod the number of windows)."""
        i %= self.num_docs
        start = int(self.starts[i])
        return self.tokens[start:start + int(self.lengths[i]) + 1].tolist()

    @property
    def docs(self) -> list[str]:
        return ["".join(self.chars[t] for t in self.doc_tokens(i)) for i in range(self.num_docs)]

    def split(self, val_fraction: float):
        raise TypeError("windows are not split; split the TextStream they come from")


def _packed_windows(stream: "TextStream", offsets: np.ndarray) -> Windows:
    """The windows of T + 1 tokens at offsets (int64 (n,)), packed one after another."""
    span = stream.block_size + 1
    tokens = stream.tokens[offsets[:, None] + np.arange(span)].reshape(-1)
    starts = np.arange(len(offsets) + 1, dtype=np.int64) * span
    starts[-1] -= 1  # on the last token: the last window counts T predictions too
    return Windows(stream.chars, _read_only(tokens), _read_only(starts), stream.block_size)


@dataclass(eq=False)
class TextStream:
    """A text read as one stream of characters (the text format).

    chars: the vocabulary, the text's distinct characters sorted; token id =
        index, vocab_size = len(chars) (no BOS).
    tokens: int32 (n,), the id of every character, in order.
    block_size: T, the predictions of a window (T + 1 characters).
    seed: keys the windows' offsets (window_draws).

    Step s trains batch_size windows at offsets window_draws(seed,
    TRAIN_WINDOWS, s, b) mod (n - T), b = 0 .. batch_size - 1. The step loss is
    the mean over all its predicted positions, which, every window counting T,
    is the mean of the windows' mean losses (what the engines compute for a
    batch of documents).
    """

    chars: list[str]
    tokens: np.ndarray
    block_size: int
    seed: int

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def num_chars(self) -> int:
        return len(self.tokens)

    @property
    def text(self) -> str:
        return "".join(self.chars[t] for t in self.tokens.tolist())

    def window_offsets(self, step0: int, num_steps: int, batch_size: int) -> np.ndarray:
        """Offsets of the windows of steps step0 .. step0 + num_steps - 1, int64
        (num_steps, batch_size); window = tokens[offset:offset + T + 1]."""
        steps = np.arange(step0, step0 + num_steps, dtype=np.int64)
        return _offsets(window_draws(self.seed, TRAIN_WINDOWS, steps, batch_size),
                        self.num_chars - self.block_size)

    def batches(self, step0: int, num_steps: int, batch_size: int) -> tuple[Windows, np.ndarray]:
        """What steps step0 .. step0 + num_steps - 1 train: (their windows packed as
        a Windows dataset, the ids 0 .. num_steps * batch_size - 1 of its windows,
        int64); step s takes windows (s - step0) * B .. (s - step0) * B + B - 1."""
        offsets = self.window_offsets(step0, num_steps, batch_size).reshape(-1)
        return _packed_windows(self, offsets), np.arange(len(offsets), dtype=np.int64)

    def positions(self, block_size: int, batch_size: int, step0: int,
                  num_steps: int) -> np.ndarray:
        """Positions trained in each window of the steps: int64 (num_steps * B,)."""
        return np.full(num_steps * batch_size, min(block_size, self.block_size), np.int64)

    def held_out_windows(self, max_windows: int | None = None) -> Windows:
        """The windows an evaluation runs on. Without max_windows, the whole stream
        in consecutive windows of T predictions (the last may have fewer), each
        starting on the character the previous one ends on: every character
        after the first is predicted exactly once. With it, max_windows windows of
        T predictions at fixed offsets (window_draws' HELD_OUT_WINDOWS stream)."""
        T, n = self.block_size, self.num_chars
        if max_windows is None:
            starts = np.append(np.arange(0, n - 1, T, dtype=np.int64), n - 1)
            return Windows(self.chars, self.tokens, _read_only(starts), T)
        rows = np.arange(max_windows, dtype=np.int64)
        offsets = _offsets(window_draws(self.seed, HELD_OUT_WINDOWS, rows, 1)[:, 0], n - T)
        return _packed_windows(self, offsets)

    def split(self, val_fraction: float) -> tuple[TextStream, TextStream | None]:
        """(train, validation): the last round(n * val_fraction) characters held out.

        val_fraction 0 gives (self, None). Each part must hold a window, T + 1
        characters; its tokens are a slice of this stream's."""
        _check_fraction(val_fraction)
        if val_fraction == 0:
            return self, None
        n = self.num_chars
        n_val = round(n * val_fraction)
        n_train = n - n_val
        need = self.block_size + 1
        for part, count in (("training", n_train), ("validation", n_val)):
            if count < need:
                raise ValueError(f"val_fraction {val_fraction!r} of {n} characters leaves the "
                                 f"{part} part {count} characters, fewer than a window "
                                 f"(block_size + 1 = {need})")
        return (TextStream(self.chars, self.tokens[:n_train], self.block_size, self.seed),
                TextStream(self.chars, self.tokens[n_train:], self.block_size, self.seed))


def load_text(path: str | os.PathLike | None, block_size: int, seed: int,
              chars: list[str] | None = None) -> TextStream:
    """Read a file as one stream of characters (a bundled name, None for names,
    or a path). chars: the vocabulary to use instead of the text's own (sorted
    single characters); DataError if the text holds others. DataError too for
    a text shorter than one window (block_size + 1 characters)."""
    if chars is not None:
        chars = _check_chars(chars)
    path = data_path(path)
    codes = _code_points(path)
    if codes.size == 0:
        raise DataError(f"data file is empty: {path}")
    present = np.unique(codes)
    if chars is None:
        chars = [chr(c) for c in present]
    ids = np.array([ord(c) for c in chars], dtype=np.int64)
    _refuse_outside(present[~np.isin(present, ids)], path)
    need = block_size + 1
    if codes.size < need:
        raise DataError(f"data file {path} has {codes.size} characters; the text format "
                        f"needs at least one window of block_size + 1 = {need}")
    tokens = np.searchsorted(ids, codes).astype(np.int32)
    return TextStream(chars, _read_only(tokens), block_size, seed)


def load_data(data, data_format: str, rng: random.Random, block_size: int, seed: int,
              chars: list[str] | None = None) -> Dataset | TextStream:
    """data read in data_format (config.FORMATS): load_dataset (shuffled with
    rng) for lines, load_text (windows keyed by seed) for text."""
    if data_format not in FORMATS:
        raise ValueError(f"data_format must be one of {', '.join(FORMATS)}, got {data_format!r}")
    if data_format == "text":
        return load_text(data, block_size, seed, chars)
    return load_dataset(data, rng, chars)
