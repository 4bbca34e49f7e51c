"""Checkpoints: one .npz file (no pickle) holding everything a run needs to go on.

    >>> from microgpt_fast.checkpoint import read_checkpoint
    >>> ckpt = read_checkpoint("run.npz")             # doctest: +SKIP
    >>> ckpt.step, ckpt.config.n_embd, ckpt.params.dtype  # doctest: +SKIP
    (500, 16, dtype('float64'))

Arrays: params, adam_m, adam_v (P,) in the training dtype, in the flat order of
config.param_layout; losses (step,) float64, the loss of every step so far;
val_steps int64 and val_losses float64 (one entry per evaluation). One more
entry, meta, is a JSON string: the format name and version, the model and
training configs, the vocabulary, the step, the dtype, the data file and the
state of the random stream (Python's random.Random.getstate()).

Writes are atomic: the file is written under a temporary name in the same
folder, flushed to disk, then renamed over the target, so a process killed
while saving leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import zipfile
from dataclasses import dataclass, field, fields

import numpy as np

from .config import DTYPES, GPTConfig, TrainConfig

FORMAT = "microgpt_fast.checkpoint"
VERSION = 1
_ARRAYS = ("params", "adam_m", "adam_v", "losses", "val_steps", "val_losses")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message is one line."""


@dataclass
class Checkpoint:
    """Everything saved about a run at the end of a step."""

    config: GPTConfig
    train_config: TrainConfig
    chars: list[str]          # the vocabulary; BOS = len(chars)
    step: int                 # steps trained so far
    params: np.ndarray        # (P,) float32 or float64
    adam_m: np.ndarray        # (P,) Adam's first moments, same dtype
    adam_v: np.ndarray        # (P,) Adam's second moments, same dtype
    rng_state: tuple          # random.Random.getstate() after the last draw
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0))      # (step,) float64
    val_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    val_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    data: str | None = None   # the text file trained on; None: the bundled names.txt

    @property
    def dtype(self) -> str:
        return str(self.params.dtype)


def _state_to_json(state: tuple) -> list:
    version, words, gauss_next = state
    return [version, list(words), gauss_next]


def _state_from_json(value) -> tuple:
    version, words, gauss_next = value
    # the Mersenne Twister's 624 32-bit words, then the index of the next one
    if (len(words) != 625 or not all(isinstance(w, int) and 0 <= w < 2**32 for w in words)
            or not words[-1] <= 624):
        raise ValueError("its random state is not a Mersenne Twister state")
    state = (int(version), tuple(words), None if gauss_next is None else float(gauss_next))
    random.Random().setstate(state)  # the last word: what Python itself accepts
    return state


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    """Write ckpt to path atomically (temporary file, fsync, rename)."""
    path = os.fspath(path)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "config": ckpt.config.to_dict(),
        "train_config": ckpt.train_config.to_dict(),
        "chars": ckpt.chars,
        "step": ckpt.step,
        "dtype": ckpt.dtype,
        "data": ckpt.data,
        "rng_state": _state_to_json(ckpt.rng_state),
    }
    arrays = {name: np.ascontiguousarray(getattr(ckpt, name)) for name in _ARRAYS}
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # the mode a plain open() would give, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and check a checkpoint; CheckpointError says what is wrong with it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path is a directory: {path}")
    try:
        with open(path, "rb") as f:
            zip_start = f.read(4) == b"PK\x03\x04"
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    if not zipfile.is_zipfile(path):
        if zip_start:  # a zip whose directory at the end is gone: cut short
            raise CheckpointError(f"checkpoint {path} is damaged or truncated "
                                  "(its zip directory is missing)")
        raise CheckpointError(f"not a checkpoint (not an .npz file): {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "meta" not in npz.files:
                raise CheckpointError(f"not a microgpt_fast checkpoint (no meta entry): {path}")
            meta = json.loads(str(npz["meta"][()]))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise CheckpointError(f"not a microgpt_fast checkpoint: {path}")
            if meta.get("version") != VERSION:
                raise CheckpointError(f"checkpoint {path} has format version "
                                      f"{meta.get('version')}; this version reads {VERSION}")
            missing = [name for name in _ARRAYS if name not in npz.files]
            if missing:
                raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
            arrays = {name: npz[name] for name in _ARRAYS}
    except CheckpointError:
        raise
    except Exception as exc:  # zipfile, numpy's header parser and json each fail their own way
        raise CheckpointError(f"checkpoint {path} is damaged or truncated "
                              f"({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    try:
        ckpt = _from_parts(meta, arrays)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is inconsistent: {exc}".replace("\n", " ")
                              ) from None
    return ckpt


def _from_parts(meta: dict, arrays: dict) -> Checkpoint:
    def known(cls, values: dict) -> dict:
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
        return values

    config = GPTConfig(**known(GPTConfig, meta["config"]))  # each validates when built
    train_config = TrainConfig(**known(TrainConfig, meta["train_config"]))
    chars = meta["chars"]
    if (not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars)
            or len(set(chars)) != len(chars) or len(chars) + 1 != config.vocab_size):
        raise ValueError("its vocabulary does not match vocab_size")
    dtype, step = meta["dtype"], meta["step"]
    if dtype not in DTYPES or dtype != train_config.dtype:
        raise ValueError(f"dtype {dtype!r}")
    if not isinstance(step, int) or not 0 <= step <= train_config.steps:
        raise ValueError(f"step {step!r} outside 0..{train_config.steps}")
    P = config.num_params
    for name in ("params", "adam_m", "adam_v"):
        a = arrays[name]
        if a.shape != (P,) or a.dtype != np.dtype(dtype):
            raise ValueError(f"{name} has shape {a.shape} and dtype {a.dtype}, "
                             f"expected ({P},) {dtype}")
    losses = arrays["losses"]
    if losses.shape != (step,) or losses.dtype != np.float64:
        raise ValueError(f"losses has shape {losses.shape}, expected ({step},)")
    val_steps, val_losses = arrays["val_steps"], arrays["val_losses"]
    if val_steps.ndim != 1 or val_steps.shape != val_losses.shape:
        raise ValueError("val_steps and val_losses differ in shape")
    data = meta.get("data")
    if data is not None and not isinstance(data, str):
        raise ValueError("data is not a path")
    return Checkpoint(config, train_config, chars, step, arrays["params"], arrays["adam_m"],
                      arrays["adam_v"], _state_from_json(meta["rng_state"]), losses,
                      val_steps.astype(np.int64), val_losses.astype(np.float64), data)
