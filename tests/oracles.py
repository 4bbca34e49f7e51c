"""Plain-Python versions of what the package computes in compiled code, for the
tests to hold it against: no numpy tricks, no compiled module."""

from __future__ import annotations

from pathlib import Path

from microgpt_fast.data import default_data_path


def read_docs(path=None) -> list[str]:
    """The original's reading of a data file: its non-empty lines, stripped, in
    file order (UTF-8, split at '\\n' only; a leading byte-order mark is not part
    of the first line)."""
    raw = Path(default_data_path() if path is None else path).read_bytes()
    text = raw.decode("utf-8").removeprefix("\ufeff")
    return [line.strip() for line in text.strip().split("\n") if line.strip()]


def pack(docs: list[str], chars: list[str]) -> tuple[list[int], list[int]]:
    """docs as one token list, BOS d0 BOS d1 ... BOS (BOS = len(chars)), and the
    index of the BOS in front of each document, then of the last one."""
    bos = len(chars)
    index = {c: i for i, c in enumerate(chars)}
    tokens, starts = [bos], [0]
    for doc in docs:
        tokens += [index[c] for c in doc] + [bos]
        starts.append(len(tokens) - 1)
    return tokens, starts
