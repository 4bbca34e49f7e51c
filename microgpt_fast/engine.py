"""The compiled engine behind a small Python class.

    >>> import random
    >>> from microgpt_fast.config import GPTConfig, init_params
    >>> from microgpt_fast.engine import CompiledGPT
    >>> cfg = GPTConfig(vocab_size=27)
    >>> model = CompiledGPT(cfg, init_params(cfg, random.Random(0)))

All buffers are numpy arrays in the flat parameter order (config.param_layout):
params and Adam's m and v, (P,) each. Training chunks, gradients and sampling
run in the compiled module, without the GIL; this class checks every argument
before calling it.
"""

from __future__ import annotations

import numpy as np

from .config import DTYPES, GPTConfig, param_layout
from .data import Dataset
from .kernels import Kernel, load_kernel, resolve_threads
from .sampling import draw


def _aligned_zeros(n: int, dtype: np.dtype) -> np.ndarray:
    """Zeros starting on a 64-byte boundary (numpy only promises 16): a weight
    row then starts on a cache line as often as its length allows, and the
    products' vector loads do not straddle two lines."""
    raw = np.zeros(n * dtype.itemsize + 64, np.uint8)
    skip = -raw.ctypes.data % 64
    return raw[skip:skip + n * dtype.itemsize].view(dtype)


class CompiledGPT:
    """Parameters, optimizer state and workspace of one model.

    params: initial weights, length config.num_params (e.g. init_params).
    dtype: "float64" (reproduces the original) or "float32".
    threads: see kernels.resolve_threads; batch_size: the most documents a step trains.
    """

    def __init__(self, config: GPTConfig, params, dtype: str = "float64",
                 threads: int | None = None, batch_size: int = 1,
                 kernel: Kernel | str | None = None):
        self.config = config.validate()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.kernel = kernel if isinstance(kernel, Kernel) else load_kernel(kernel)
        self.dtype = np.dtype(dtype)
        self.batch_size = batch_size
        P = config.num_params
        given = np.asarray(params, dtype=self.dtype)
        if given.shape != (P,):
            raise ValueError(f"expected {P} parameters, got shape {given.shape}")
        try:
            self.params = _aligned_zeros(P, self.dtype)
            self.m = _aligned_zeros(P, self.dtype)
            self.v = _aligned_zeros(P, self.dtype)
            self._wt = _aligned_zeros(P, self.dtype)
        except MemoryError:
            raise MemoryError(f"cannot allocate the weights, Adam's moments and the transposed "
                              f"copy: 4 x {P:,} {dtype} values, "
                              f"{4 * P * self.dtype.itemsize / 2**20:,.0f} MiB") from None
        self.params[:] = given
        self._k = self.kernel.module
        # Never more threads than documents: a thread owns whole documents.
        self.threads = min(resolve_threads(threads, self.kernel), batch_size)
        self._ws = self._k.Workspace(config.n_embd, config.n_head, config.n_layer,
                                     config.block_size, config.vocab_size, batch_size,
                                     self.threads, self.dtype.itemsize)
        self._sync_transposed()

    def _sync_transposed(self) -> None:
        self._k.transpose_weights(self._ws, self.params, self._wt)

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
              learning_rate: float = 0.01, beta1: float = 0.85, beta2: float = 0.99,
              eps: float = 1e-8) -> np.ndarray:
        """Train steps step0 .. step0 + num_steps - 1 of a total_steps schedule.

        Returns the step losses, float64 array (num_steps,). One call runs all
        steps in compiled code; call it in chunks to report progress.
        """
        self._check_dataset(data)
        if not (0 <= step0 and num_steps >= 1 and step0 + num_steps <= total_steps):
            raise ValueError(f"steps {step0}..{step0 + num_steps} outside 0..{total_steps}")
        losses = np.empty(num_steps, np.float64)
        self._k.train_chunk(self._ws, self.params, self._wt, self.m, self.v, data.tokens,
                            data.starts, step0, total_steps, self.batch_size,
                            float(learning_rate), float(beta1), float(beta2), float(eps), losses)
        return losses

    def loss_and_grad(self, data: Dataset, doc_ids) -> tuple[float, np.ndarray]:
        """Loss of the documents doc_ids (one batch) and its gradient (P,), no update."""
        self._check_dataset(data)
        doc_ids = self._check_doc_ids(data, doc_ids)
        grad = np.empty(self.params.size, self.dtype)
        loss = self._k.loss_and_grad(self._ws, self.params, self._wt, grad, data.tokens,
                                     data.starts, doc_ids)
        return loss, grad

    def evaluate(self, data: Dataset, doc_ids) -> np.ndarray:
        """Each document's mean position loss, float64 (len(doc_ids),); no gradient."""
        self._check_dataset(data)
        doc_ids = self._check_doc_ids(data, doc_ids)
        losses = np.empty(len(doc_ids), np.float64)
        self._k.eval_loss(self._ws, self.params, self._wt, data.tokens, data.starts, doc_ids,
                          losses)
        return losses

    def apply_adam(self, grad, step: int, total_steps: int, learning_rate: float = 0.01,
                   beta1: float = 0.85, beta2: float = 0.99, eps: float = 1e-8) -> None:
        """One Adam update of every parameter from grad (P,), as step `step` of
        total_steps (the learning rate decays linearly)."""
        grad = np.ascontiguousarray(grad, self.dtype)
        if grad.shape != self.params.shape:
            raise ValueError(f"grad must have shape {self.params.shape}, got {grad.shape}")
        self._k.adam_step(self._ws, self.params, self._wt, self.m, self.v, grad, step,
                          total_steps, float(learning_rate), float(beta1), float(beta2),
                          float(eps))

    def set_params(self, params) -> None:
        """Replace the weights (keeps Adam's moments)."""
        params = np.asarray(params, self.dtype)
        if params.shape != self.params.shape:
            raise ValueError(f"expected shape {self.params.shape}, got {params.shape}")
        self.params[:] = params
        self._sync_transposed()

    def next_probs_fn(self, temperature: float = 0.5):
        """A function next_probs(token, pos) -> float64 (V,): feed token at position
        pos (the workspace's KV cache holds positions < pos) and return
        softmax(logits / temperature), computed in compiled code."""
        if not 0 < temperature < np.inf:
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        probs = np.empty(self.config.vocab_size, np.float64)

        def next_probs(token: int, pos: int) -> np.ndarray:
            self._k.sample_probs(self._ws, self.params, self._wt, token, pos,
                                 float(temperature), probs)
            return probs

        return next_probs

    def sample(self, rng, bos: int, temperature: float = 0.5, prompt=(), top_k=None,
               max_len=None) -> list[int]:
        """Token ids of one sample (prompt's first), drawn with rng.choices as the
        original does; see sampling.draw."""
        return draw(self.next_probs_fn(temperature), rng, bos, self.config.block_size,
                    prompt, top_k, max_len)

    def op_times(self, reset: bool = False, thread: int | None = None) -> dict:
        """Seconds spent per op group since the last reset, summed over threads (or
        of thread `thread` alone): {"forward": {group: s}, "backward": {group: s},
        "adam": s, "weight_blocks": s}. weight_blocks is the time in the weight
        phases of the steps (the partial weight-gradient products, which also
        count in their backward groups, Adam and the transposed copies); the rest
        of the time is the documents' phase. Only the profiling variants ("<variant>_prof")
        time anything; elsewhere all are 0."""
        fwd, bwd, adam, weight_blocks = self._ws.read_timers(thread)
        groups = self._k.TIMER_GROUPS
        if reset:
            self._ws.reset_timers()
        return {"forward": dict(zip(groups, fwd)), "backward": dict(zip(groups, bwd)),
                "adam": adam, "weight_blocks": weight_blocks}

    def named_params(self) -> dict[str, np.ndarray]:
        """Views of params, one (rows, cols) array per matrix, in flat order."""
        views, offset = {}, 0
        for name, rows, cols in param_layout(self.config):
            views[name] = self.params[offset:offset + rows * cols].reshape(rows, cols)
            offset += rows * cols
        return views
