"""Training and sampling with either engine, the way the original runs.

    >>> from microgpt_fast import GPTConfig, TrainConfig, Trainer
    >>> trainer = Trainer(GPTConfig(), TrainConfig(steps=100))
    >>> losses = trainer.train()          # numpy float64 (100,)
    >>> names = trainer.sample(5)

The random stream is the original's: seeded once, it shuffles the documents,
draws the initial weights, and then draws every sampled token.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace

import numpy as np

from .config import GPTConfig, TrainConfig, init_params
from .data import Dataset, load_dataset
from .engine import CompiledGPT
from .reference import ReferenceGPT

ENGINES = ("compiled", "reference")


class Trainer:
    """A dataset, a model on one engine, and the position in the step schedule.

    config.vocab_size is replaced by the data's. data: path of a text file,
    one document a line (default: the bundled names.txt).
    """

    def __init__(self, config: GPTConfig | None = None, train_config: TrainConfig | None = None,
                 data=None, engine: str = "compiled", kernel: str | None = None):
        self.train_config = (train_config or TrainConfig()).validate()
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        (config or GPTConfig()).validate()  # fail on bad sizes before reading any data
        self.engine = engine
        self.rng = random.Random(self.train_config.seed)
        self.dataset: Dataset = load_dataset(data, self.rng)
        self.config = replace(config or GPTConfig(), vocab_size=self.dataset.vocab_size).validate()
        params = init_params(self.config, self.rng)
        tc = self.train_config
        if engine == "compiled":
            self.model = CompiledGPT(self.config, params, tc.dtype, tc.threads,
                                     tc.batch_size, kernel)
            self.threads = self.model.threads
            self.kernel = self.model.kernel.name
        else:
            self.model = ReferenceGPT(self.config, params)
            self.threads = 1
            self.kernel = None
        self.step = 0
        self.train_seconds = 0.0  # time inside training calls only
        self.tokens_trained = 0

    @property
    def dtype(self) -> str:
        return self.train_config.dtype if self.engine == "compiled" else "float64"

    def batch_doc_ids(self, step: int) -> list[int]:
        """Documents of a step: s*B .. s*B + B - 1, modulo the number of documents."""
        B, N = self.train_config.batch_size, len(self.dataset.docs)
        return [(step * B + b) % N for b in range(B)]

    def train(self, num_steps: int | None = None, on_chunk=None) -> np.ndarray:
        """Run the next num_steps steps (default: all that remain); returns their losses.

        on_chunk(first_step, losses) is called after each chunk of steps, outside
        the timed region: the compiled engine trains many steps per call.
        """
        tc = self.train_config
        remaining = tc.steps - self.step
        num_steps = remaining if num_steps is None else num_steps
        if not 0 <= num_steps <= remaining:
            raise ValueError(f"num_steps must be in 0..{remaining}, got {num_steps}")
        out = np.empty(num_steps, np.float64)
        done, chunk = 0, 16
        while done < num_steps:
            n = min(chunk, num_steps - done)
            t0 = time.perf_counter()
            losses = self._train_steps(self.step, n)
            elapsed = time.perf_counter() - t0
            self.train_seconds += elapsed
            self.tokens_trained += int(self.dataset.positions(
                self.config.block_size, tc.batch_size, self.step, n).sum())
            out[done:done + n] = losses
            if on_chunk is not None:
                on_chunk(self.step, losses)
            self.step += n
            done += n
            # grow chunks until each takes about a tenth of a second
            if elapsed < 0.05:
                chunk *= 2
        return out

    def _train_steps(self, step0: int, n: int) -> np.ndarray:
        tc = self.train_config
        if self.engine == "compiled":
            return self.model.train(self.dataset, step0, n, tc.steps, tc.learning_rate,
                                    tc.beta1, tc.beta2, tc.eps)
        losses = np.empty(n, np.float64)
        for k in range(n):
            batch = [self.dataset.doc_tokens(i) for i in self.batch_doc_ids(step0 + k)]
            losses[k] = self.model.train_step(batch, step0 + k, tc.steps, tc.learning_rate,
                                              tc.beta1, tc.beta2, tc.eps)
        return losses

    def sample(self, num_samples: int | None = None, temperature: float | None = None) -> list[str]:
        """Draw samples from the shared random stream, as text."""
        tc = self.train_config
        num_samples = tc.num_samples if num_samples is None else num_samples
        temperature = tc.temperature if temperature is None else temperature
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        chars, bos = self.dataset.chars, self.dataset.bos
        return ["".join(chars[t] for t in self.model.sample(self.rng, bos, temperature))
                for _ in range(num_samples)]

    def flat_params(self) -> np.ndarray:
        if self.engine == "compiled":
            return self.model.params.astype(np.float64)
        return np.array(self.model.flat_params(), np.float64)
