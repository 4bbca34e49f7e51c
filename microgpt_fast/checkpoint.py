"""Checkpoints: one .npz file (no pickle) holding everything a run needs to go on.

    >>> from microgpt_fast.checkpoint import read_checkpoint
    >>> ckpt = read_checkpoint("run.npz")             # doctest: +SKIP
    >>> ckpt.step, ckpt.config.n_embd, ckpt.params.dtype  # doctest: +SKIP
    (500, 16, dtype('float64'))

Arrays: params, adam_m, adam_v (P,) in the training dtype, in the flat order of
config.param_layout; losses (step,) float64, the loss of every step so far;
val_steps int64 and val_losses float64 (one entry per evaluation). One more
entry, meta, is a JSON string: the format name and version, the model,
training and sampling configs, the vocabulary, the step, the dtype, the data
file and the state of the random stream (Python's random.Random.getstate()).
Checkpoints written before the sampling config had its own entry keep
temperature and num_samples (and the thread count, now ignored) in the
training config; they load the same. Checkpoints written before the text
format existed have no data_format: they were trained on lines.

Writes are atomic: the file is written under a temporary name in the same
folder, flushed to disk, then renamed over the target, so a process killed
while saving leaves the previous checkpoint whole; the temporary file such a
process leaves is removed by the next save to the same target. A symlink is
followed (its target is replaced, the link kept); a target that exists and is
not a regular file is refused. Reading refuses anything but a regular file,
and a checkpoint whose weights or moments are NaN or infinite, or whose second
moments are negative.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import zipfile
from dataclasses import dataclass, field, fields

import numpy as np

from .config import DTYPES, GPTConfig, SampleConfig, TrainConfig
from .data import natural_format
from .paths import check_output, open_regular, resolve_output

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
    chars: list[str]          # the vocabulary; lines: BOS = len(chars); text: no BOS
    step: int                 # steps trained so far
    params: np.ndarray        # (P,) float32 or float64
    adam_m: np.ndarray        # (P,) Adam's first moments, same dtype
    adam_v: np.ndarray        # (P,) Adam's second moments, same dtype
    rng_state: tuple          # random.Random.getstate() after the last draw
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0))      # (step,) float64
    val_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    val_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    data: str | None = None   # a bundled dataset's name, or the file's absolute path;
                              # None (older checkpoints): the bundled names
    sampling: SampleConfig = field(default_factory=SampleConfig)  # sample()'s defaults

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


def _temp_prefix(target: str) -> str:
    """Temporary files of a save to target are named .<name>.<pid>.<random>.tmp."""
    return f".{os.path.basename(target)}."


def _remove_stale_temps(target: str) -> None:
    """Delete temporary files that saves to target left behind when their process
    was killed (their pid no longer runs); a live process's save is left alone."""
    folder, prefix = os.path.dirname(target), _temp_prefix(target)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running: maybe saving right now
        except ProcessLookupError:
            pass
        except OSError:  # another user's process: not ours to judge
            continue
        try:
            os.unlink(os.path.join(folder, name))
        except OSError:
            pass


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    """Write ckpt to path atomically (temporary file, fsync, rename).

    A symlink at path is followed: its target is replaced and the link kept.
    Anything at the target other than a regular file (a directory, a device,
    a FIFO) is a ValueError and stays untouched."""
    check_output("checkpoint", path)  # the CLI's --save had the same check, before training
    target = resolve_output(path)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "config": ckpt.config.to_dict(),
        # what the run trained on, the data's defaults filled in where not given
        "train_config": ckpt.train_config.resolved(natural_format(ckpt.data)).to_dict(),
        "sample_config": ckpt.sampling.to_dict(),
        "chars": ckpt.chars,
        "step": ckpt.step,
        "dtype": ckpt.dtype,
        "data": ckpt.data,
        "rng_state": _state_to_json(ckpt.rng_state),
    }
    arrays = {name: np.ascontiguousarray(getattr(ckpt, name)) for name in _ARRAYS}
    folder = os.path.dirname(target)
    _remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(target)}{os.getpid()}.", suffix=".tmp",
                               dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # the mode a plain open() would give, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
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
    """Read and check a checkpoint; CheckpointError says what is wrong with it.
    Only a regular file is read (paths.open_regular): a FIFO or device is refused."""
    path = os.fspath(path)
    with open_regular(path, "checkpoint", CheckpointError) as f:
        try:
            zip_start = f.read(4) == b"PK\x03\x04"
            f.seek(0)
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
        if not zipfile.is_zipfile(f):
            if zip_start:  # a zip whose directory at the end is gone: cut short
                raise CheckpointError(f"checkpoint {path} is damaged or truncated "
                                      "(its zip directory is missing)")
            raise CheckpointError(f"not a checkpoint (not an .npz file): {path}")
        f.seek(0)
        meta, arrays = _read_npz(f, path)
    try:
        ckpt = _from_parts(meta, arrays)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is inconsistent: {exc}".replace("\n", " ")
                              ) from None
    return ckpt


def _read_npz(f, path: str) -> tuple[dict, dict]:
    """The meta dict and the arrays of an open .npz file."""
    try:
        with np.load(f, allow_pickle=False) as npz:
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
            return meta, {name: npz[name] for name in _ARRAYS}
    except CheckpointError:
        raise
    except Exception as exc:  # zipfile, numpy's header parser and json each fail their own way
        raise CheckpointError(f"checkpoint {path} is damaged or truncated "
                              f"({type(exc).__name__}: {exc})".replace("\n", " ")) from None


def _from_parts(meta: dict, arrays: dict) -> Checkpoint:
    def known(cls, values: dict) -> dict:
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
        return values

    config = GPTConfig(**known(GPTConfig, meta["config"]))  # each validates when built
    train, sampling = dict(meta["train_config"]), meta.get("sample_config")
    if sampling is None:  # written before the settings were split: all in train_config
        train.pop("threads", None)  # how it ran, never its numbers
        sampling = {f.name: train.pop(f.name) for f in fields(SampleConfig) if f.name in train}
    train.setdefault("data_format", "lines")  # written before the text format existed
    data = meta.get("data")
    if data is not None and not isinstance(data, str):
        raise ValueError("data is not a path")
    train_config = TrainConfig(**known(TrainConfig, train)).resolved(natural_format(data))
    sampling = SampleConfig(**known(SampleConfig, sampling))
    chars = meta["chars"]
    bos = 1 if train_config.data_format == "lines" else 0  # a text has no BOS token
    if (not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars)
            or len(set(chars)) != len(chars) or len(chars) + bos != config.vocab_size):
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
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds NaN or infinite values")
    if (arrays["adam_v"] < 0).any():
        raise ValueError("adam_v (Adam's second moments, squares) holds negative values")
    losses = arrays["losses"]
    if losses.shape != (step,) or losses.dtype != np.float64:
        raise ValueError(f"losses has shape {losses.shape}, expected ({step},)")
    val_steps, val_losses = arrays["val_steps"], arrays["val_losses"]
    if val_steps.ndim != 1 or val_steps.shape != val_losses.shape:
        raise ValueError("val_steps and val_losses differ in shape")
    return Checkpoint(config, train_config, chars, step, arrays["params"], arrays["adam_m"],
                      arrays["adam_v"], _state_from_json(meta["rng_state"]), losses,
                      val_steps.astype(np.int64), val_losses.astype(np.float64), data, sampling)
