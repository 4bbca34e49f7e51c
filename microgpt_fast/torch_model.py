"""The same model, optimizer and batches in PyTorch: a yardstick for the engine.

    pip install -e .[torch]
    >>> import random
    >>> from microgpt_fast.config import GPTConfig, init_params
    >>> from microgpt_fast.torch_model import TorchGPT
    >>> cfg = GPTConfig(vocab_size=27)
    >>> model = TorchGPT(cfg, init_params(cfg, random.Random(0)), "float32", threads=2,
    ...                  batch_size=16, compiled=True)

Nothing in the package imports this module unless asked (bench --torch,
tools/compare_nanogpt.py): PyTorch is an optional extra.

The model is config.GPTConfig's, written from ALGORITHM.md and the options of
config.py, on one flat parameter vector in config.param_layout's order, so
that it starts from the very weights the engines start from (init_params);
each matrix is a view of that vector. A step trains B documents padded to
B x T (T = block_size) with a weight per position: document b's n_b
positions weigh 1 / (B n_b) each and the padding 0, so that the weighted sum
of the position losses is the engines' step loss, the mean over documents of
each document's mean loss. Padding only ever follows a document's positions,
so the causal mask keeps it out of every real position's attention.

The update is the engines' (config.Adam) on the flat vectors: clipping of the
global gradient norm, decoupled decay of the weight matrices, Adam with bias
correction, at the rates Adam.learning_rates gives. `compiled=True` runs the
whole step (forward, gradient, clipping, decay and Adam) as one torch.compile
graph with static shapes; the rate and the bias corrections enter as 0-d
tensors, so no step recompiles it.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from .config import DTYPES, Adam, GPTConfig, decays, param_layout

TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}

# the norms' variance guard, as in reference.rmsnorm / reference.layernorm
NORM_EPS = 1e-5

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact, with erf
    "relu2": lambda x: F.relu(x).square(),
    "silu": F.silu,
}


def pack_batch(data, doc_ids: np.ndarray, block_size: int):
    """Documents doc_ids of data (a Dataset or Windows) padded to (len(doc_ids), T):
    (inputs int64, targets int64, lengths int64 (B,)). Document i's n_i =
    min(T, starts[i+1] - starts[i]) positions predict tokens[starts[i] + t + 1]
    from tokens[starts[i] + t]; padding is token 0."""
    T = block_size
    starts = data.starts[doc_ids]
    lengths = np.minimum(T, data.starts[doc_ids + 1] - starts)
    at = starts[:, None] + np.arange(T)[None, :]
    real = np.arange(T)[None, :] < lengths[:, None]
    at = np.where(real, at, 0)
    tokens = data.tokens
    inputs = np.where(real, tokens[at], 0).astype(np.int64)
    targets = np.where(real, tokens[np.where(real, at + 1, 0)], 0).astype(np.int64)
    return inputs, targets, lengths.astype(np.int64)


class TorchGPT:
    """GPTConfig's model in PyTorch on a flat parameter vector (param_layout order).

    params: initial weights (P,), e.g. init_params; dtype: float64 or float32;
    threads: torch.set_num_threads (process-wide); batch_size: B, the documents
    of a step (a step's tensors are B x block_size); compiled: the step under
    torch.compile (compiled on its first call: see compile_seconds).
    """

    def __init__(self, config: GPTConfig, params, dtype: str = "float32",
                 threads: int | None = None, batch_size: int = 1, compiled: bool = False):
        self.config = config.validate()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self.torch_dtype = TORCH_DTYPES[dtype]
        self.batch_size = batch_size
        if threads is not None:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        given = torch.tensor(np.asarray(params, np.float64), dtype=self.torch_dtype)
        if given.shape != (config.num_params,):
            raise ValueError(f"expected {config.num_params} parameters, got {tuple(given.shape)}")
        self.flat = given
        self.adam_m = torch.zeros_like(given)
        self.adam_v = torch.zeros_like(given)
        # (name, offset, rows, cols) of every matrix in the flat vector
        self.slots, at = [], 0
        for name, rows, cols in param_layout(config):
            self.slots.append((name, at, rows, cols))
            at += rows * cols
        self.decay_mask = torch.cat([torch.full((rows * cols,), float(decays(name)),
                                                dtype=self.torch_dtype)
                                     for name, _, rows, cols in self.slots])
        self.activation = ACTIVATIONS[config.activation]
        self.compiled = compiled
        self._steps = {}  # (clip, decay, betas, eps) -> the step function
        self.compile_seconds = None  # the first compiled call, compilation included

    # -- state ---------------------------------------------------------------

    @property
    def params(self) -> np.ndarray:
        return self.flat.numpy().copy()

    @property
    def m(self) -> np.ndarray:
        return self.adam_m.numpy().copy()

    @property
    def v(self) -> np.ndarray:
        return self.adam_v.numpy().copy()

    def set_state(self, params, m=None, v=None) -> None:
        """Replace the weights, in place, and Adam's moments (zero where not given)."""
        for target, values in ((self.flat, params), (self.adam_m, m), (self.adam_v, v)):
            if values is None:
                target.zero_()
            else:
                target.copy_(torch.tensor(np.asarray(values, np.float64), dtype=target.dtype))

    # -- the model -----------------------------------------------------------

    def matrices(self, flat: torch.Tensor) -> dict:
        """name -> (rows, cols) view of flat."""
        return {name: flat[at:at + rows * cols].view(rows, cols)
                for name, at, rows, cols in self.slots}

    def _norm(self, x: torch.Tensor, w: dict, name: str) -> torch.Tensor:
        C = self.config.n_embd
        gain = w[f"{name}_gain"].view(C) if self.config.norm_gain else None
        if self.config.norm == "layernorm":
            # (x - mean) / sqrt(var + eps), the variance biased, no bias term
            return F.layer_norm(x, (C,), gain, None, NORM_EPS)
        x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + NORM_EPS)
        return x if gain is None else x * gain

    def logits(self, flat: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """(B, T, V) logits of the token ids inputs (B, T), each row a document
        from position 0, every position attending to itself and those before."""
        cfg, w = self.config, self.matrices(flat)
        B, T = inputs.shape
        H, D = cfg.n_head, cfg.head_dim
        x = w["wte"][inputs] + w["wpe"][:T]          # (B, T, C)
        if cfg.emb_norm:
            x = self._norm(x, w, "emb_norm")
        for i in range(cfg.n_layer):
            p = f"layer{i}."
            h = self._norm(x, w, p + "attn_norm")
            q, k, v = (F.linear(h, w[p + name]).view(B, T, H, D).transpose(1, 2)
                       for name in ("attn_wq", "attn_wk", "attn_wv"))   # (B, H, T, D)
            # softmax(q k^T / sqrt(D)) v over the positions u <= t
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            y = y.transpose(1, 2).reshape(B, T, H * D)
            x = x + F.linear(y, w[p + "attn_wo"])     # x = Wo x_attn + residual
            h = self._norm(x, w, p + "mlp_norm")
            x = x + F.linear(self.activation(F.linear(h, w[p + "mlp_fc1"])), w[p + "mlp_fc2"])
        if cfg.final_norm:
            x = self._norm(x, w, "final_norm")
        return F.linear(x, w["wte" if cfg.tie_embeddings else "lm_head"])

    def position_losses(self, flat, inputs, targets) -> torch.Tensor:
        """-log softmax(logits)[target] at every position, (B, T)."""
        logits = self.logits(flat, inputs)
        V = logits.shape[-1]
        return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1),
                               reduction="none").view(targets.shape)

    def batch_loss(self, flat, inputs, targets, weights) -> torch.Tensor:
        """The step loss: sum of position losses times weights (1 / (B n_b), 0 on padding)."""
        return (self.position_losses(flat, inputs, targets) * weights).sum()

    # -- tensors of a batch --------------------------------------------------

    def batch_tensors(self, data, doc_ids):
        """(inputs, targets, weights) of documents doc_ids, padded to (B, T)."""
        inputs, targets, lengths = pack_batch(data, np.asarray(doc_ids, np.int64),
                                              self.config.block_size)
        T = self.config.block_size
        real = np.arange(T)[None, :] < lengths[:, None]
        weights = np.where(real, 1.0 / (len(lengths) * lengths[:, None]), 0.0)
        return (torch.from_numpy(inputs), torch.from_numpy(targets),
                torch.tensor(weights, dtype=self.torch_dtype))

    # -- gradient and update -------------------------------------------------

    def grad_and_loss(self, flat, inputs, targets, weights):
        """(gradient (P,), loss) of batch_loss by plain autograd: in eager mode
        about twice as fast as torch.func's transform, which the compiled step
        needs (a graph with a backward call in it does not compile whole)."""
        leaf = flat.detach().requires_grad_()
        loss = self.batch_loss(leaf, inputs, targets, weights)
        grad, = torch.autograd.grad(loss, leaf)
        return grad, loss.detach()

    def loss_and_grad(self, data, doc_ids) -> tuple[float, np.ndarray]:
        """Loss of the documents doc_ids (one batch) and its gradient (P,), no update."""
        grad, loss = self.grad_and_loss(self.flat, *self.batch_tensors(data, doc_ids))
        return float(loss), grad.numpy().copy()

    @torch.no_grad()
    def evaluate(self, data, doc_ids) -> np.ndarray:
        """Each document's mean position loss, float64 (len(doc_ids),); no update."""
        inputs, targets, lengths = pack_batch(data, np.asarray(doc_ids, np.int64),
                                              self.config.block_size)
        losses = self.position_losses(self.flat, torch.from_numpy(inputs),
                                      torch.from_numpy(targets)).double()
        real = torch.arange(self.config.block_size)[None, :] < torch.from_numpy(lengths)[:, None]
        return ((losses * real).sum(1) / torch.from_numpy(lengths)).numpy()

    def _step_function(self, adam: Adam):
        """step(flat, m, v, inputs, targets, weights, lr, bc1, bc2) -> loss: one
        training step that updates flat, m and v in place (config.Adam's update;
        bc1, bc2 = 1 - beta^(s+1)). Compiled once per set of Adam settings."""
        key = (adam.grad_clip, adam.weight_decay, adam.beta1, adam.beta2, adam.eps)
        if key in self._steps:
            return self._steps[key]
        clip, decay, beta1, beta2, eps = key
        grad_and_loss = (torch.func.grad_and_value(self.batch_loss) if self.compiled
                         else self.grad_and_loss)
        decay_mask = self.decay_mask

        def step(flat, m, v, inputs, targets, weights, lr, bc1, bc2):
            grad, loss = grad_and_loss(flat, inputs, targets, weights)
            if clip > 0:  # scale by min(1, clip / (norm + 1e-6))
                norm = torch.linalg.vector_norm(grad)
                grad = grad * torch.clamp(clip / (norm + 1e-6), max=1.0)
            if decay > 0:  # p * (1 - lr * decay) on the decayed matrices only
                flat.mul_(1 - decay_mask * (lr * decay))
            m.mul_(beta1).add_(grad * (1 - beta1))
            v.mul_(beta2).add_(grad.square() * (1 - beta2))
            flat.sub_(lr * (m / bc1) / (torch.sqrt(v / bc2) + eps))
            return loss

        if self.compiled:
            step = torch.compile(step, fullgraph=True, dynamic=False)
        self._steps[key] = step
        return step

    def train(self, data, step0: int, num_steps: int, total_steps: int,
              adam: Adam = Adam()) -> np.ndarray:
        """Steps step0 .. step0 + num_steps - 1 of a total_steps schedule on the
        documents data.batches gives them (as the engines train them); returns
        their losses, float64 (num_steps,)."""
        B = self.batch_size
        docs, doc_ids = data.batches(step0, num_steps, B)
        rates = adam.learning_rates(step0, num_steps, total_steps)
        step = self._step_function(adam)
        dt = self.torch_dtype
        losses = np.empty(num_steps, np.float64)
        for k in range(num_steps):
            s = step0 + k
            inputs, targets, weights = self.batch_tensors(docs, doc_ids[k * B:(k + 1) * B])
            scalars = [torch.tensor(x, dtype=dt) for x in
                       (rates[k], 1 - adam.beta1 ** (s + 1), 1 - adam.beta2 ** (s + 1))]
            first = self.compiled and self.compile_seconds is None
            t0 = time.perf_counter()
            loss = step(self.flat, self.adam_m, self.adam_v, inputs, targets, weights, *scalars)
            losses[k] = float(loss)
            if first:
                self.compile_seconds = time.perf_counter() - t0
        return losses

