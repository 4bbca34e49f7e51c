"""Shared fixtures of the microgpt_fast test suite (helpers live in helpers.py).

The pure-Python reference is the oracle of most tests; it costs about 0.1 s per
default-sized step, so every reference result is computed once and cached.
"""

from __future__ import annotations

import gc
import random
from pathlib import Path

import pytest

from microgpt_fast.data import load_dataset

from helpers import UNICODE_DOCS


def pytest_configure(config):
    """The reference's graph of Values allocates about a million small objects a
    step; at the default thresholds (a collection every 700 allocations, a full one
    every 100 of those) the cyclic collector walks them, and everything else the
    suite has imported, thousands of times: more than half of the reference's time.
    Its graphs hold no cycles (reference counts free them), so here the collector
    runs every half million allocations and seldom in full; it still runs, and the
    suite's peak memory is unchanged."""
    gc.set_threshold(500_000, 20, 100)


@pytest.fixture(scope="session")
def names_ds():
    """The bundled names.txt, shuffled as the default run shuffles it (seed 42)."""
    return load_dataset(None, random.Random(42))


@pytest.fixture(scope="session")
def unicode_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "unicode.txt"
    path.write_text("\n".join(UNICODE_DOCS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def unicode_ds(unicode_path):
    return load_dataset(unicode_path, random.Random(7))


@pytest.fixture(scope="session")
def tiny_ds(tmp_path_factory):
    """Seven short documents: a batch of 3 wraps around within a few steps."""
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text("anna\nbob\ncarla\ndave\neve\nfrancesca\ngil\n", encoding="utf-8")
    return load_dataset(path, random.Random(3))
