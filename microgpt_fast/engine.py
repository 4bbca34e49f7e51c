"""The compiled engine: picks a kernel variant, checks every argument once, and
hands the work to that variant's Engine.

    >>> import random
    >>> from microgpt_fast.config import GPTConfig, init_params
    >>> from microgpt_fast.engine import CompiledGPT
    >>> cfg = GPTConfig(vocab_size=27)
    >>> model = CompiledGPT(cfg, init_params(cfg, random.Random(0)))

The Engine (src/engine.pxi, one per variant) owns every buffer: the weights,
Adam's m and v (numpy arrays (P,) in config.param_layout's flat order, on its
own aligned memory), the transposed copies and the workspace. Training
chunks, gradients, evaluation and sampling run in it without the GIL. This
class is the boundary: past it the kernels run without checks.

The pure-Python reference (reference.ReferenceGPT) has the same interface:
train, evaluate, loss_and_grad, apply_adam, sample, sample_text, sample_texts,
params / m / v, set_state.
"""

from __future__ import annotations

import numpy as np

from .config import DTYPES, Adam, GPTConfig
from .data import Dataset
from .kernels import Kernel, free_cores, load_kernel, resolve_threads
from .sampling import draw, draw_texts


def _check_temperature(temperature: float) -> None:
    if not 0 < temperature < np.inf:
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")


class CompiledGPT:
    """A model on a compiled kernel variant.

    params: initial weights, length config.num_params (e.g. init_params).
    dtype: "float64" (reproduces the original) or "float32".
    threads: see kernels.resolve_threads, never more than batch_size (a thread
    owns whole documents); batch_size: the most documents a step trains.
    adapt_threads: train() runs on fewer threads while that measures faster
    (see Adaptive in src/engine.pxi), starting from the cores other programs
    leave free; evaluation and text sampling use the count it chose. Any count
    gives the same bits.
    """

    def __init__(self, config: GPTConfig, params, dtype: str = "float64",
                 threads: int | None = None, batch_size: int = 1,
                 kernel: Kernel | str | None = None, adapt_threads: bool = True):
        self.config = config.validate()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.kernel = kernel if isinstance(kernel, Kernel) else load_kernel(kernel)
        self.dtype = np.dtype(dtype)
        self.batch_size = batch_size
        given = np.asarray(params, dtype=self.dtype)
        if given.shape != (config.num_params,):
            raise ValueError(f"expected {config.num_params} parameters, got shape {given.shape}")
        self.threads = min(resolve_threads(threads, self.kernel), batch_size)
        c = config
        self.engine = self.kernel.module.Engine(
            c.n_embd, c.n_head, c.n_layer, c.block_size, c.vocab_size, batch_size, self.threads,
            dtype, c.mlp_ratio, c.norm, c.norm_gain, c.final_norm, c.activation,
            c.tie_embeddings, c.emb_norm, bool(adapt_threads))
        self.engine.set_params(given)
        self.adapt_threads = bool(adapt_threads)
        self._fresh = True  # nothing has run yet (_first_use)

    @property
    def kernel_name(self) -> str:
        return self.kernel.name

    @property
    def params(self) -> np.ndarray:
        """The weights, (P,) in the training dtype: the engine's own memory."""
        return self.engine.params

    @property
    def m(self) -> np.ndarray:
        """Adam's first moments, (P,)."""
        return self.engine.m

    @property
    def v(self) -> np.ndarray:
        """Adam's second moments, (P,)."""
        return self.engine.v

    def _vector(self, values, what: str) -> np.ndarray:
        values = np.ascontiguousarray(values, self.dtype)
        if values.shape != self.params.shape:
            raise ValueError(f"{what} must have shape {self.params.shape}, got {values.shape}")
        return values

    def set_params(self, params) -> None:
        """Replace the weights (keeps Adam's moments)."""
        self.engine.set_params(self._vector(params, "params"))

    def set_state(self, params, m=None, v=None) -> None:
        """Replace the weights and, where given, Adam's moments."""
        params = self._vector(params, "params")
        m = None if m is None else self._vector(m, "m")
        v = None if v is None else self._vector(v, "v")
        self.engine.set_params(params)
        if m is not None:
            self.engine.m[:] = m
        if v is not None:
            self.engine.v[:] = v

    def _check_dataset(self, data: Dataset) -> None:
        if data.vocab_size != self.config.vocab_size:
            raise ValueError(f"dataset vocab size {data.vocab_size} does not match the "
                             f"model's {self.config.vocab_size}")
        data.check(self.config.vocab_size)  # no index the kernels read can fall outside

    def _check_doc_ids(self, data: Dataset, doc_ids) -> np.ndarray:
        doc_ids = np.ascontiguousarray(doc_ids, np.int64)
        if doc_ids.ndim != 1 or not 1 <= len(doc_ids) <= self.batch_size:
            raise ValueError(f"need 1 to {self.batch_size} document ids")
        if doc_ids.min() < 0 or doc_ids.max() >= data.num_docs:
            raise ValueError("document ids out of range")
        return doc_ids

    def train(self, data: Dataset, step0: int, num_steps: int, total_steps: int,
              adam: Adam = Adam()) -> np.ndarray:
        """Train steps step0 .. step0 + num_steps - 1 of a total_steps schedule on the
        documents data.batches gives them.

        Returns the step losses, float64 (num_steps,). One call runs all steps in
        compiled code; call it in chunks to report progress. adam: the rates'
        schedule, weight decay and gradient clipping too (config.Adam).
        """
        if not (0 <= step0 and num_steps >= 1 and step0 + num_steps <= total_steps):
            raise ValueError(f"steps {step0}..{step0 + num_steps} outside 0..{total_steps}")
        docs, doc_ids = data.batches(step0, num_steps, self.batch_size)
        self._check_dataset(docs)
        self._first_use()
        return self.engine.train(docs.tokens, docs.starts, doc_ids, step0,
                                 adam.learning_rates(step0, num_steps, total_steps),
                                 float(adam.beta1), float(adam.beta2), float(adam.eps),
                                 float(adam.weight_decay), float(adam.grad_clip))

    def _first_use(self) -> None:
        """Beside busy programs, start on the cores they leave free (training then
        adapts the count; evaluation and sampling use the count it chose)."""
        if self._fresh and self.adapt_threads and self.threads > 1:
            self.engine.start_threads(min(self.threads, free_cores()))
        self._fresh = False

    def loss_and_grad(self, data: Dataset, doc_ids) -> tuple[float, np.ndarray]:
        """Loss of the documents doc_ids (one batch) and its gradient (P,), no update."""
        self._check_dataset(data)
        return self.engine.loss_and_grad(data.tokens, data.starts,
                                         self._check_doc_ids(data, doc_ids))

    def evaluate(self, data: Dataset, doc_ids) -> np.ndarray:
        """Each document's mean position loss, float64 (len(doc_ids),); no gradient."""
        self._check_dataset(data)
        self._first_use()
        return self.engine.evaluate(data.tokens, data.starts, self._check_doc_ids(data, doc_ids))

    def apply_adam(self, grad, step: int, total_steps: int, adam: Adam = Adam()) -> None:
        """One Adam update of every parameter from grad (P,), as step `step` of
        total_steps (at the schedule's rate for that step), with adam's weight
        decay and clipping of grad."""
        grad = self._vector(grad, "grad")
        if not 0 <= step < total_steps:
            raise ValueError(f"step {step} outside the schedule 0..{total_steps - 1}")
        self.engine.adam_step(grad, step, float(adam.learning_rate_at(step, total_steps)),
                              float(adam.beta1), float(adam.beta2), float(adam.eps),
                              float(adam.weight_decay), float(adam.grad_clip))

    def next_probs_fn(self, temperature: float = 0.5):
        """A function next_probs(token, pos) -> float64 (V,): feed token at position
        pos (the engine's KV cache holds positions < pos) and return
        softmax(logits / temperature), computed in compiled code."""
        _check_temperature(temperature)
        probs = np.empty(self.config.vocab_size, np.float64)

        def next_probs(token: int, pos: int) -> np.ndarray:
            self.engine.next_probs(token, pos, float(temperature), probs)
            return probs

        return next_probs

    def window_probs_fn(self, temperature: float = 0.5):
        """A function window_probs(tokens) -> float64 (V,): a fresh forward pass over
        tokens (1 to block_size ids) at positions 0, 1, ..., and softmax(logits /
        temperature) of the last, computed in compiled code."""
        _check_temperature(temperature)
        probs = np.empty(self.config.vocab_size, np.float64)

        def window_probs(tokens) -> np.ndarray:
            self.engine.window_probs(np.ascontiguousarray(tokens, np.intc), float(temperature),
                                     probs)
            return probs

        return window_probs

    def feed_probs_fn(self, temperature: float = 0.5):
        """A function feed_probs(tokens, pos) -> float64 (n, V): for each of n <=
        batch_size samples, feed tokens[j] at position pos of sample j's own KV
        cache (which holds its positions < pos) and return softmax(logits /
        temperature) of each; sample j's row is what next_probs would give it
        alone. The array is reused by the next call."""
        _check_temperature(temperature)
        V = self.config.vocab_size
        out = np.empty((self.batch_size, V), np.float64)

        def feed_probs(tokens, pos: int) -> np.ndarray:
            tokens = np.ascontiguousarray(tokens, np.intc)
            probs = out[:len(tokens)]
            self.engine.feed_probs(tokens, pos, float(temperature), probs)
            return probs

        return feed_probs

    def windows_probs_fn(self, temperature: float = 0.5):
        """A function windows_probs(windows) -> float64 (n, V): window_probs of each
        row of windows (n, m), n <= batch_size, m <= block_size, in one call over
        the threads, each row's result the same bits as window_probs gives it.
        The array is reused by the next call."""
        _check_temperature(temperature)
        V = self.config.vocab_size
        out = np.empty((self.batch_size, V), np.float64)

        def windows_probs(windows) -> np.ndarray:
            windows = np.ascontiguousarray(windows, np.intc)
            if windows.ndim != 2:
                raise ValueError(f"windows must be 2-D (n, m), got shape {windows.shape}")
            probs = out[:len(windows)]
            self.engine.windows_probs(windows, float(temperature), probs)
            return probs

        return windows_probs

    def sample(self, rng, bos: int, temperature: float = 0.5, prompt=(), top_k=None,
               max_len=None) -> list[int]:
        """Token ids of one sample (prompt's first), drawn with rng.choices as the
        original does; see sampling.draw."""
        return draw(self.next_probs_fn(temperature), rng, bos, self.config.block_size,
                    prompt, top_k, max_len)

    def sample_text(self, rng, temperature: float, prompt, length: int,
                    top_k=None) -> list[int]:
        """Token ids of one text sample: prompt's, then length drawn; see
        sampling.draw_texts."""
        return self.sample_texts(rng, temperature, prompt, length, 1, top_k)[0]

    def sample_texts(self, rng, temperature: float, prompt, length: int, num_samples: int,
                     top_k=None) -> list[list[int]]:
        """Token ids of num_samples text samples, each the prompt's, then length
        drawn: the same as sample_text num_samples times on rng, computed
        batch_size samples at a time; see sampling.draw_texts."""
        self._first_use()
        return draw_texts(self.feed_probs_fn(temperature), self.windows_probs_fn(temperature),
                          rng, self.config.block_size, self.batch_size, prompt, length,
                          num_samples, top_k)

    def op_times(self, reset: bool = False, thread: int | None = None) -> dict:
        """Seconds spent per op group since the last reset, summed over threads (or
        of thread `thread` alone): {"forward": {group: s}, "backward": {group: s},
        "adam": s, "weight_blocks": s}. weight_blocks is the time in the weight
        phases of the steps (the partial weight-gradient products, which also
        count in their backward groups, Adam and the transposed copies); the rest
        of the time is the documents' phase. Only the profiling variants
        ("<variant>_prof") time anything; elsewhere all are 0."""
        fwd, bwd, adam, weight_blocks = self.engine.read_timers(thread)
        groups = self.kernel.module.TIMER_GROUPS
        if reset:
            self.engine.reset_timers()
        return {"forward": dict(zip(groups, fwd)), "backward": dict(zip(groups, bwd)),
                "adam": adam, "weight_blocks": weight_blocks}
