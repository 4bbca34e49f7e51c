"""Training, evaluation, sampling and checkpoints with either engine.

    >>> from microgpt_fast import GPTConfig, TrainConfig, Trainer, load_checkpoint
    >>> trainer = Trainer(GPTConfig(), TrainConfig(steps=1000, val_fraction=0.1))
    >>> losses = trainer.train(500)       # numpy float64 (500,), one loss per step
    >>> trainer.evaluate()                # mean loss of the held-out documents
    >>> trainer.save("run.npz")
    >>> trainer = load_checkpoint("run.npz")
    >>> losses = trainer.train()          # the other 500 steps, bit-identical
    >>> trainer.sample(5, prompt="ma")    # ['mara', 'malia', ...]
    >>> text = Trainer(GPTConfig(block_size=64), TrainConfig(steps=200), data="shakespeare")
    >>> text.train_config.data_format, text.train_config.val_fraction
    ('text', 0.1)

The random stream is the original's: seeded once, it shuffles the documents
(lines; a text is not shuffled), draws the initial weights, and then draws
every sampled token. Training uses no random numbers (a text's windows are a
hash of the seed and the step: data.window_draws), so a checkpoint needs only
the stream's state to go on exactly where the run was.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import replace

import numpy as np

from .checkpoint import Checkpoint, CheckpointError, read_checkpoint, save_checkpoint
from .config import ENGINES, GPTConfig, SampleConfig, TrainConfig, init_params
from .data import DataError, Dataset, TextStream, Windows, data_source, load_data, natural_format
from .engine import CompiledGPT
from .paths import refuse_stdin
from .reference import ReferenceGPT


def tail_loss(losses) -> float | None:
    """The tail loss: the mean loss of the last tenth of the steps (at least the
    last step), steadier than the last step's loss alone for ranking runs; None
    before any step. losses: one float per step."""
    if not len(losses):
        return None
    return float(np.asarray(losses, dtype=np.float64)[-max(1, len(losses) // 10):].mean())


class TrainingDiverged(ArithmeticError):
    """Training broke down at (1-based) step `step`: its loss was NaN, infinite
    or above Trainer.loss_limit, or its update made a weight NaN or infinite."""

    def __init__(self, step: int, loss: float, what: str | None = None):
        super().__init__(what or f"the loss became {loss} at step {step}")
        self.step, self.loss = step, loss


def _memory_limit() -> int | None:
    """Bytes this process may map: the smaller of physical memory and ulimit -v."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    except (ImportError, OSError, ValueError):
        pass
    return min(limits) if limits else None


def _check_fits_in_memory(config: GPTConfig) -> None:
    """Refuse, before drawing weights for minutes, a model this process cannot hold."""
    # the initial weights as Python floats (~32 bytes each), then params, Adam's
    # two moments and the transposed copy, in float64 at most
    need = config.num_params * (32 + 4 * 8)
    have = _memory_limit()
    if have is not None and need > have:
        raise MemoryError(f"a model of {config.num_params:,} parameters needs about "
                          f"{need / 2**30:.1f} GiB; this process may use "
                          f"{have / 2**30:.1f} GiB")


def _draw_params(config: GPTConfig, rng: random.Random) -> list[float]:
    try:
        return init_params(config, rng)
    except MemoryError:
        raise MemoryError(f"cannot allocate the initial weights: {config.num_params:,} "
                          f"parameters, about {config.num_params * 32 / 2**20:,.0f} MiB as "
                          "Python floats") from None


# Characters drawn per text sample unless max_len says otherwise.
TEXT_SAMPLE_LENGTH = 300


class Trainer:
    """A dataset, a model on one engine, and the position in the step schedule.

    config.vocab_size is replaced by the data's. data: a bundled dataset's name
    ("names", the default, or "shakespeare") or the path of a UTF-8 text file,
    read in train_config.data_format (default: the data's natural format,
    data.natural_format): lines, one document a line, or text, one stream of
    characters. train_config is kept with its data defaults filled in
    (TrainConfig.resolved). The last train_config.val_fraction of the shuffled
    documents, or of the characters, is held out for evaluate(). engine,
    kernel and threads say how to run (config.RunOptions: threads never change
    the numbers, a kernel at most their last bits but for avx512_bf16);
    sampling: sample()'s defaults.
    """

    def __init__(self, config: GPTConfig | None = None, train_config: TrainConfig | None = None,
                 data=None, engine: str = "compiled", kernel: str | None = None,
                 threads: int | None = None, sampling: SampleConfig | None = None,
                 adapt_threads: bool = True):
        tc = (train_config or TrainConfig()).validate()
        config = (config or GPTConfig()).validate()  # fail on bad sizes before reading any data
        self._setup(tc, engine, data, threads, sampling, adapt_threads)
        tc = self.train_config
        self.rng = random.Random(tc.seed)
        full = load_data(self.data, tc.data_format, self.rng, config.block_size, tc.seed)
        self._set_data(full)
        self.config = replace(config, vocab_size=full.vocab_size)
        _check_fits_in_memory(self.config)
        self._make_model(_draw_params(self.config, self.rng), kernel)

    @classmethod
    def from_checkpoint(cls, source: str | os.PathLike | Checkpoint, data=None,
                        threads: int | None = None, kernel: str | None = None,
                        adapt_threads: bool = True) -> "Trainer":
        """A trainer that goes on from a checkpoint (a path or a read Checkpoint).

        data: the text to train on from here (default: the file the checkpoint
        was trained on); its characters must be in the checkpoint's vocabulary.
        The data is read when training or evaluation first needs it, so
        sampling needs no data file. threads may differ from the saving run
        (the results do not depend on them), and so may the kernel (see
        config.RunOptions for what that changes).
        """
        ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source)
        self = cls.__new__(cls)
        self._setup(ckpt.train_config.validate(), "compiled", ckpt.data if data is None else data,
                    threads, ckpt.sampling, adapt_threads)
        self.chars = list(ckpt.chars)
        self.config = ckpt.config
        self.rng = random.Random()
        self.rng.setstate(ckpt.rng_state)
        self._make_model(ckpt.params, kernel)
        self.model.set_state(ckpt.params, ckpt.adam_m, ckpt.adam_v)
        self.step = ckpt.step
        self._keep_losses(0, ckpt.losses)
        self.val_steps = ckpt.val_steps.tolist()
        self.val_losses = ckpt.val_losses.tolist()
        return self

    def _setup(self, tc: TrainConfig, engine: str, data, threads: int | None,
                sampling: SampleConfig | None, adapt_threads: bool = True) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if threads is not None and not (isinstance(threads, int) and threads >= 1):
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        self.engine = engine
        self.sampling = (sampling or SampleConfig()).validate()
        self._threads_asked = threads
        self._adapt_threads = bool(adapt_threads)
        if data is not None:
            refuse_stdin(data, "data file", DataError)
        self.data = data_source(data)  # a bundled dataset's name or an absolute path
        self.train_config = tc.resolved(natural_format(self.data))
        self._train_set: Dataset | TextStream | None = None
        self._val_set: Dataset | TextStream | None = None
        self._held_out: tuple[int | None, Windows] | None = None  # (max_docs, its windows)
        self.step = 0
        self._losses = np.empty(min(tc.steps, 1 << 16))  # grown as steps are trained
        self.val_steps: list[int] = []      # steps after which evaluate() recorded a loss
        self.val_losses: list[float] = []
        self.train_seconds = 0.0  # time inside training calls only
        self.tokens_trained = 0
        self.diverged_at: int | None = None
        self._stop_requested = False

    def _set_data(self, full: Dataset | TextStream) -> None:
        self.chars = full.chars
        self._train_set, self._val_set = full.split(self.train_config.val_fraction)
        self._held_out = None

    def _make_model(self, params, kernel) -> None:
        self.model = new_model(self.engine, self.config, params, self.train_config,
                               self._threads_asked, kernel, self._adapt_threads)
        self.threads = self.model.threads
        self.kernel = self.model.kernel_name

    # -- data --------------------------------------------------------------

    def _load_data(self) -> None:
        if self._train_set is None:
            # lines: the original's shuffle, a fresh stream with the run's seed
            tc = self.train_config
            full = load_data(self.data, tc.data_format, random.Random(tc.seed),
                             self.config.block_size, tc.seed, self.chars)
            self._set_data(full)

    @property
    def text_mode(self) -> bool:
        """The data is read as one stream of characters (data_format "text")."""
        return self.train_config.data_format == "text"

    @property
    def dataset(self) -> Dataset | TextStream:
        """The training documents or text (the data file less its validation part)."""
        self._load_data()
        return self._train_set

    @property
    def val_dataset(self) -> Dataset | TextStream | None:
        """The held-out documents or text, or None when val_fraction is 0."""
        self._load_data()
        return self._val_set

    @property
    def bos(self) -> int | None:
        """The BOS token of the lines format; None for a text, which has none."""
        return None if self.text_mode else len(self.chars)

    @property
    def dtype(self) -> str:
        return str(self.model.dtype)

    @property
    def losses(self) -> np.ndarray:
        """The loss of every step trained so far, float64 (step,)."""
        return self._losses[:self.step].copy()

    # -- training ----------------------------------------------------------

    def batch_doc_ids(self, step: int) -> list[int]:
        """Documents of a step: s*B .. s*B + B - 1, modulo the number of documents
        (lines; a text's windows are dataset.window_offsets)."""
        if self.text_mode:
            raise ValueError("a text has windows, not documents: see "
                             "Trainer.dataset.window_offsets")
        B, N = self.train_config.batch_size, self.dataset.num_docs
        return [(step * B + b) % N for b in range(B)]

    def request_stop(self) -> None:
        """Ask train() to return at the end of its current chunk (safe in a signal handler)."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        """A stop was asked for and train() has not answered it yet."""
        return self._stop_requested

    @property
    def loss_limit(self) -> float:
        """A step loss above this counts as divergence: 10,000 x ln(vocab size),
        ten thousand times the loss of uniform guessing. Single steps of runs
        that still learn spike far above ln(vocab size) at high learning rates
        (measured on names with batch 1: up to 600x at learning rate 0.3), but
        every run measured that passed this bound ended worse than guessing,
        and a run whose weights blow up passes it at once."""
        return 1e4 * math.log(self.config.vocab_size)

    def train(self, num_steps: int | None = None, on_chunk=None) -> np.ndarray:
        """Run the next num_steps steps (default: all that remain); returns their losses,
        float64 (num_steps,), or fewer when request_stop() was called meanwhile.

        on_chunk(first_step, losses) is called after each chunk of steps, outside
        the timed region: the compiled engine trains many steps per call, in
        chunks of 0.05 to 0.2 s (one step when a step is slower), and a stop
        request is answered at the end of the chunk.
        Raises TrainingDiverged naming the first step whose loss is NaN, infinite
        or above loss_limit, or whose update made a weight NaN or infinite; the
        model is then spoiled and save() refuses it.
        """
        tc = self.train_config
        if self.diverged_at is not None:
            raise TrainingDiverged(self.diverged_at, float("nan"))
        remaining = tc.steps - self.step
        num_steps = remaining if num_steps is None else num_steps
        if not (isinstance(num_steps, int) and 0 <= num_steps <= remaining):
            raise ValueError(f"num_steps must be in 0..{remaining}, got {num_steps!r}")
        data = self.dataset
        first, done, chunk = self.step, 0, 1
        while done < num_steps and not self._stop_requested:
            n = min(chunk, num_steps - done)
            before = self._snapshot() if n > 1 else None
            t0 = time.perf_counter()
            losses = self._train_steps(self.step, n)
            elapsed = time.perf_counter() - t0
            if self._first_bad_loss(losses) is not None or not self._weights_finite():
                self._diverged(losses, before)
            self.train_seconds += elapsed
            self.tokens_trained += int(data.positions(self.config.block_size, tc.batch_size,
                                                      self.step, n).sum())
            self._keep_losses(self.step, losses)
            if on_chunk is not None:
                on_chunk(self.step, losses)
            self.step += n
            done += n
            # chunks of 0.05 to 0.2 s: progress and stop requests come through
            # that often, and a call into the engine costs little next to it
            if elapsed < 0.05:
                chunk *= 2
            elif elapsed > 0.2:
                chunk = max(1, chunk // 2)
        self._stop_requested = False  # the request is answered
        return self._losses[first:self.step].copy()

    def _first_bad_loss(self, losses: np.ndarray) -> int | None:
        bad = np.flatnonzero(~(np.abs(losses) <= self.loss_limit))  # NaN fails <=
        return int(bad[0]) if len(bad) else None

    def _snapshot(self):
        """Weights and moments before a chunk, to find the step that broke them."""
        m = self.model
        return m.params.copy(), m.m.copy(), m.v.copy()

    def _diverged(self, losses: np.ndarray, before) -> None:
        """Raise TrainingDiverged for the first bad step of the chunk just trained.

        A weight can turn NaN in a step whose loss stays finite (a ReLU masks
        it), so a chunk of several steps is replayed from its snapshot one step
        at a time, which gives the same bits, to name that step."""
        step0 = self.step
        if before is not None:
            self.model.set_state(*before)
            for k in range(len(losses)):
                loss = self._train_steps(step0 + k, 1)
                if self._first_bad_loss(loss) is not None or not self._weights_finite():
                    losses = loss
                    step0 += k
                    break
        k = self._first_bad_loss(losses)
        if k is None:  # the losses are fine: the last step's update broke a weight
            self.diverged_at = step0 + len(losses)
            raise TrainingDiverged(self.diverged_at, float(losses[-1]),
                                   f"the weights became NaN or infinite at step "
                                   f"{self.diverged_at}")
        self.diverged_at = step0 + k + 1
        loss = float(losses[k])
        if math.isfinite(loss):
            raise TrainingDiverged(self.diverged_at, loss,
                                   f"the loss reached {loss:.4g} at step {self.diverged_at}, "
                                   f"above {self.loss_limit:,.0f} (10,000 x ln of the "
                                   "vocabulary size), which no learning run reaches")
        raise TrainingDiverged(self.diverged_at, loss)

    def _weights_finite(self) -> bool:
        m = self.model
        return bool(np.isfinite(m.params).all() and np.isfinite(m.m).all()
                    and np.isfinite(m.v).all())

    def _keep_losses(self, step0: int, losses: np.ndarray) -> None:
        end = step0 + len(losses)
        if end > len(self._losses):
            grown = np.empty(max(end, 2 * len(self._losses)))
            grown[:step0] = self._losses[:step0]
            self._losses = grown
        self._losses[step0:end] = losses

    def _train_steps(self, step0: int, n: int) -> np.ndarray:
        tc = self.train_config
        return self.model.train(self.dataset, step0, n, tc.steps, tc.adam)

    def evaluate(self, max_docs: int | None = None, record: bool = True) -> float:
        """The validation loss, computed without gradients. Lines: the mean over the
        validation documents (the first max_docs of them, default all) of each
        one's mean loss. Text: the mean over predicted positions of the held-out
        text in consecutive windows (every held-out character after the first
        predicted once), or of max_docs windows at fixed offsets
        (TextStream.held_out_windows). record: keep it in val_steps / val_losses
        at the current step."""
        val = self.val_dataset
        if val is None:
            raise ValueError("no validation documents: set val_fraction > 0")
        if max_docs is not None and not (isinstance(max_docs, int) and max_docs >= 1):
            raise ValueError(f"max_docs must be >= 1, got {max_docs!r}")
        if self.text_mode:
            if self._held_out is None or self._held_out[0] != max_docs:
                self._held_out = (max_docs, val.held_out_windows(max_docs))
            docs = self._held_out[1]
            n = docs.num_docs
        else:
            docs = val
            n = val.num_docs if max_docs is None else min(max_docs, val.num_docs)
        B = self.train_config.batch_size
        per_doc = np.concatenate([self.model.evaluate(docs, np.arange(i, min(i + B, n)))
                                  for i in range(0, n, B)])
        if self.text_mode:  # each window weighs as many positions as it predicts
            lengths = docs.lengths[:n]
            loss = float((per_doc * lengths).sum() / lengths.sum())
        else:
            loss = float(per_doc.mean())
        if record:
            if self.val_steps and self.val_steps[-1] == self.step:
                self.val_losses[-1] = loss
            else:
                self.val_steps.append(self.step)
                self.val_losses.append(loss)
        return loss

    # -- sampling ----------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of text; ValueError naming any character outside the vocabulary."""
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted({c for c in text if c not in index})
        if unknown:
            raise ValueError("prompt has characters outside the model's vocabulary: "
                             + ", ".join(repr(c) for c in unknown[:10]))
        return [index[c] for c in text]

    @property
    def default_prompt(self) -> str:
        """What a sample continues unless told: nothing for lines (a sample starts
        at BOS); for a text, a newline, or the vocabulary's first character when
        the text has no newline."""
        if not self.text_mode:
            return ""
        return "\n" if "\n" in self.chars else self.chars[0]

    def prompt_ids(self, prompt: str | None = None) -> list[int]:
        """Token ids of the prompt a sample continues (None: the sampling config's,
        else default_prompt); ValueError, before any draw, for one the model
        cannot continue: characters outside the vocabulary, an empty prompt for a
        text, or (lines) one that fills the block."""
        if prompt is None:
            prompt = self.sampling.prompt
        ids = self.encode(self.default_prompt if prompt is None else prompt)
        if self.text_mode and not ids:
            raise ValueError("a text sample continues a prompt: give at least one character")
        if not self.text_mode and len(ids) >= self.config.block_size:
            raise ValueError(f"prompt has {len(ids)} characters; the model's block size "
                             f"{self.config.block_size} leaves no room to sample")
        return ids

    def sample(self, num_samples: int | None = None, temperature: float | None = None,
               prompt: str | None = None, top_k: int | None = None,
               max_len: int | None = None, rng: random.Random | None = None) -> list[str]:
        """Texts drawn from the model, each starting with prompt (default: the
        sampling config's, else default_prompt).

        The draws come from rng (default: the run's own stream, continued, as
        the original does). top_k: draw only among the k likeliest tokens.
        Lines: a document from BOS to BOS, max_len at most this many drawn
        characters (the block size bounds it). Text: exactly max_len drawn
        characters (default 300), each from the last block_size characters
        (sampling.draw_texts).
        """
        given = {name: value for name, value in (("num_samples", num_samples),
                                                  ("temperature", temperature),
                                                  ("prompt", prompt), ("max_len", max_len))
                 if value is not None}
        sampling = replace(self.sampling, **given)  # SampleConfig checks them
        if top_k is not None and not (isinstance(top_k, int) and top_k >= 1):
            raise ValueError(f"top_k must be >= 1, got {top_k!r}")
        ids = self.prompt_ids(sampling.prompt)
        rng = self.rng if rng is None else rng
        if self.text_mode:
            length = TEXT_SAMPLE_LENGTH if sampling.max_len is None else sampling.max_len
            return ["".join(self.chars[t] for t in sample)
                    for sample in self.model.sample_texts(rng, sampling.temperature, ids,
                                                          length, sampling.num_samples, top_k)]
        return ["".join(self.chars[t] for t in self.model.sample(
                    rng, self.bos, sampling.temperature, ids, top_k, sampling.max_len))
                for _ in range(sampling.num_samples)]

    # -- checkpoints -------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """The run's state as a Checkpoint (arrays copied)."""
        if self.diverged_at is not None or not self._weights_finite():
            raise ValueError(f"the model diverged (step {self.diverged_at}); not saving it")
        m = self.model
        tc = replace(self.train_config, dtype=self.dtype)  # the reference's is float64
        return Checkpoint(self.config, tc, list(self.chars), self.step,
                          m.params.copy(), m.m.copy(), m.v.copy(), self.rng.getstate(),
                          self.losses, np.array(self.val_steps, np.int64),
                          np.array(self.val_losses, np.float64), self.data, self.sampling)

    def save(self, path: str | os.PathLike) -> None:
        """Write a checkpoint to path atomically (checkpoint.save_checkpoint)."""
        save_checkpoint(path, self.checkpoint())

    def flat_params(self) -> np.ndarray:
        return self.model.params.astype(np.float64)


def new_model(engine: str, config: GPTConfig, params, train_config: TrainConfig,
              threads: int | None = None, kernel: str | None = None,
              adapt_threads: bool = True):
    """A model on the named engine, both behind one interface (engine.CompiledGPT):
    the compiled one in the run's dtype and threads (adapting their count when
    adapt_threads), or the pure-Python reference (float64, one thread)."""
    tc = train_config
    if engine == "compiled":
        return CompiledGPT(config, params, tc.dtype, threads, tc.batch_size, kernel,
                           adapt_threads)
    return ReferenceGPT(config, list(params), tc.batch_size)


def load_checkpoint(path: str | os.PathLike, data=None, threads: int | None = None,
                    kernel: str | None = None) -> Trainer:
    """A Trainer restored from a checkpoint file; see Trainer.from_checkpoint."""
    return Trainer.from_checkpoint(path, data, threads, kernel)


__all__ = ["Trainer", "TrainingDiverged", "load_checkpoint", "CheckpointError", "ENGINES"]
