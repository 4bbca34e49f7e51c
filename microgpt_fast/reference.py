"""The pure-Python reference: the original microgpt, scalar autograd and all.

    python -m microgpt_fast.train --engine reference --steps 20

This module is the baseline of every speedup figure and the oracle of the
tests, so it computes the way the original does: one Value node per scalar
operation, lists of lists for matrices, a topological backward pass; numpy
only hands the results over. It adds only what the original lacks:
configurable sizes, the architecture options of config.GPTConfig (layernorm,
gains, a final norm, a tied head, the MLP width, the init), batches of
documents (the mean over documents of each document's mean loss), and the
interface both engines share.
"""

from __future__ import annotations

import math

import numpy as np

from .config import Adam, GPTConfig, decays, param_layout
from .sampling import draw, draw_texts


class Value:
    """A scalar in the graph: its value, its gradient, and how it was made."""

    __slots__ = ("data", "grad", "_children", "_local_grads")

    def __init__(self, data, children=(), local_grads=()):
        self.data = data
        self.grad = 0
        self._children = children
        self._local_grads = local_grads  # d self / d child, one per child

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1, 1))

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, other):
        return Value(self.data ** other, (self,), (other * self.data ** (other - 1),))

    def log(self):
        return Value(math.log(self.data), (self,), (1 / self.data,))

    def exp(self):
        return Value(math.exp(self.data), (self,), (math.exp(self.data),))

    def relu(self):
        return Value(max(0, self.data), (self,), (float(self.data > 0),))

    # the other MLP activations (GPTConfig.activation), each with its derivative

    def gelu(self):
        cdf = 0.5 * (1 + math.erf(self.data / math.sqrt(2)))
        pdf = math.exp(-0.5 * self.data * self.data) / math.sqrt(2 * math.pi)
        return Value(self.data * cdf, (self,), (cdf + self.data * pdf,))

    def relu2(self):
        r = max(0.0, self.data)
        return Value(r * r, (self,), (2 * r,))

    def silu(self):
        # the sigmoid s from exp(-|x|), which cannot overflow
        e = math.exp(-abs(self.data))
        s = 1 / (1 + e) if self.data >= 0 else e / (1 + e)
        return Value(self.data * s, (self,), (s * (1 + self.data * (1 - s)),))

    def __neg__(self):
        return self * -1

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other ** -1

    def __rtruediv__(self, other):
        return other * self ** -1

    def backward(self):
        """Chain rule over the graph in reverse topological order."""
        topo, visited = [], set()
        # Depth-first post-order without recursion: deep graphs (long
        # documents, several layers) would exceed Python's recursion limit.
        stack = [(self, False)]
        while stack:
            v, children_done = stack.pop()
            if children_done:
                topo.append(v)
            elif v not in visited:
                visited.add(v)
                stack.append((v, True))
                for child in reversed(v._children):
                    stack.append((child, False))
        self.grad = 1
        for v in reversed(topo):
            for child, local_grad in zip(v._children, v._local_grads):
                child.grad += local_grad * v.grad


def linear(x, w):
    return [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]


def softmax(logits):
    max_val = max(val.data for val in logits)
    exps = [(val - max_val).exp() for val in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x):
    ms = sum(xi * xi for xi in x) / len(x)
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def layernorm(x):
    """(x - mean) / sqrt(var + 1e-5), the variance biased (over len(x)); no bias term."""
    mean = sum(x) / len(x)
    centered = [xi - mean for xi in x]
    var = sum(ci * ci for ci in centered) / len(x)
    scale = (var + 1e-5) ** -0.5
    return [ci * scale for ci in centered]


NORMS = {"rmsnorm": rmsnorm, "layernorm": layernorm}


class ReferenceGPT:
    """The original model and its Adam optimizer over Value scalars, behind the
    same interface as engine.CompiledGPT (train, evaluate, loss_and_grad,
    apply_adam, sample, sample_text, sample_texts, params / m / v, set_state), so
    that the trainer and the tests treat both alike. numpy only carries results
    out; every number is computed by Value operations and Python floats, as the
    original does.

    params: the flat parameter list (param_layout order), e.g. from init_params;
    batch_size: documents per training step.
    """

    threads = 1
    kernel_name = None
    dtype = np.dtype(np.float64)

    def __init__(self, config: GPTConfig, params: list[float], batch_size: int = 1):
        self.config = config.validate()
        if len(params) != config.num_params:
            raise ValueError(f"expected {config.num_params} parameters, got {len(params)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        # the MLP's activation: Value.relu (the original's), gelu, relu2 or silu
        self.activation = getattr(Value, config.activation)
        values = iter([Value(float(p)) for p in params])
        self.state_dict = {
            name: [[next(values) for _ in range(cols)] for _ in range(rows)]
            for name, rows, cols in param_layout(config)
        }
        # every parameter's Value, in flat order, and Adam's moments beside them
        self.weights = [p for mat in self.state_dict.values() for row in mat for p in row]
        # whether weight decay applies to each, decided by its matrix's name
        self.decays = [decays(name) for name, rows, cols in param_layout(config)
                       for _ in range(rows * cols)]
        self.adam_m = [0.0] * len(self.weights)
        self.adam_v = [0.0] * len(self.weights)

    @property
    def params(self) -> np.ndarray:
        return np.array(self.flat_params(), np.float64)

    @property
    def m(self) -> np.ndarray:
        return np.array(self.adam_m, np.float64)

    @property
    def v(self) -> np.ndarray:
        return np.array(self.adam_v, np.float64)

    def flat_params(self) -> list[float]:
        return [p.data for p in self.weights]

    def set_state(self, params, m=None, v=None) -> None:
        """Replace the weights and, where given, Adam's moments."""
        for name, values in (("params", params), ("m", m), ("v", v)):
            if values is not None and len(values) != len(self.weights):
                raise ValueError(f"{name} must have {len(self.weights)} values")
        for p, value in zip(self.weights, params):
            p.data = float(value)
        if m is not None:
            self.adam_m = [float(x) for x in m]
        if v is not None:
            self.adam_v = [float(x) for x in v]

    def norm(self, x, name: str):
        """The config's norm of x, times the norm's gain `name`_gain when norm_gain."""
        x = NORMS[self.config.norm](x)
        if self.config.norm_gain:
            x = [xi * gi for xi, gi in zip(x, self.state_dict[f"{name}_gain"][0])]
        return x

    def gpt(self, token_id, pos_id, keys, values):
        """Logits (vocab_size Values) for one token, appending to the KV cache."""
        sd, cfg = self.state_dict, self.config
        head_dim = cfg.head_dim
        tok_emb = sd["wte"][token_id]
        pos_emb = sd["wpe"][pos_id]
        x = [t + p for t, p in zip(tok_emb, pos_emb)]
        if cfg.emb_norm:
            x = self.norm(x, "emb_norm")
        for li in range(cfg.n_layer):
            x_residual = x
            x = self.norm(x, f"layer{li}.attn_norm")
            q = linear(x, sd[f"layer{li}.attn_wq"])
            k = linear(x, sd[f"layer{li}.attn_wk"])
            v = linear(x, sd[f"layer{li}.attn_wv"])
            keys[li].append(k)
            values[li].append(v)
            x_attn = []
            for h in range(cfg.n_head):
                hs = h * head_dim
                q_h = q[hs:hs + head_dim]
                k_h = [ki[hs:hs + head_dim] for ki in keys[li]]
                v_h = [vi[hs:hs + head_dim] for vi in values[li]]
                attn_logits = [sum(q_h[j] * k_h[t][j] for j in range(head_dim)) / head_dim ** 0.5
                               for t in range(len(k_h))]
                attn_weights = softmax(attn_logits)
                head_out = [sum(attn_weights[t] * v_h[t][j] for t in range(len(v_h)))
                            for j in range(head_dim)]
                x_attn.extend(head_out)
            x = linear(x_attn, sd[f"layer{li}.attn_wo"])
            x = [a + b for a, b in zip(x, x_residual)]
            x_residual = x
            x = self.norm(x, f"layer{li}.mlp_norm")
            x = linear(x, sd[f"layer{li}.mlp_fc1"])
            x = [self.activation(xi) for xi in x]
            x = linear(x, sd[f"layer{li}.mlp_fc2"])
            x = [a + b for a, b in zip(x, x_residual)]
        if cfg.final_norm:
            x = self.norm(x, "final_norm")
        return linear(x, sd["wte" if cfg.tie_embeddings else "lm_head"])

    def doc_loss(self, tokens: list[int]):
        """Mean next-token loss over the first min(block_size, len - 1) positions."""
        n_layer = self.config.n_layer
        n = min(self.config.block_size, len(tokens) - 1)
        keys, values = [[] for _ in range(n_layer)], [[] for _ in range(n_layer)]
        losses = []
        for pos_id in range(n):
            token_id, target_id = tokens[pos_id], tokens[pos_id + 1]
            logits = self.gpt(token_id, pos_id, keys, values)
            probs = softmax(logits)
            losses.append(-probs[target_id].log())
        return (1 / n) * sum(losses)

    def batch_loss(self, batch: list[list[int]]):
        """The step loss: one document's loss, or the mean over documents."""
        if len(batch) == 1:
            return self.doc_loss(batch[0])
        return (1 / len(batch)) * sum(self.doc_loss(tokens) for tokens in batch)

    def batch_loss_and_grad(self, batch: list[list[int]]) -> tuple[float, list[float]]:
        """Loss and flat gradient of a batch of token lists; gradients are zeroed
        afterwards."""
        loss = self.batch_loss(batch)
        loss.backward()
        grads = [p.grad for p in self.weights]
        for p in self.weights:
            p.grad = 0
        return loss.data, grads

    def train_step(self, batch: list[list[int]], step: int, num_steps: int,
                   adam: Adam = Adam()) -> float:
        """Forward, backward and one Adam update at the schedule's rate; returns the loss."""
        loss = self.batch_loss(batch)
        loss.backward()
        self._adam(step, num_steps, adam)
        return loss.data

    def _adam(self, step: int, num_steps: int, adam: Adam) -> None:
        """The original's update from each weight's .grad, which it then zeroes;
        before it, when asked, the gradient's clipping and the weights' decay
        (config.Adam states the formulas)."""
        lr_t = adam.learning_rate_at(step, num_steps)
        beta1, beta2 = adam.beta1, adam.beta2
        m, v = self.adam_m, self.adam_v
        if adam.grad_clip > 0:
            norm = math.sqrt(sum(p.grad * p.grad for p in self.weights))
            scale = adam.grad_clip / (norm + 1e-6)
            if scale < 1:
                for p in self.weights:
                    p.grad = p.grad * scale
        if adam.weight_decay > 0:
            shrink = 1 - lr_t * adam.weight_decay
            for p, decayed in zip(self.weights, self.decays):
                if decayed:
                    p.data = p.data * shrink
        for i, p in enumerate(self.weights):
            m[i] = beta1 * m[i] + (1 - beta1) * p.grad
            v[i] = beta2 * v[i] + (1 - beta2) * p.grad ** 2
            m_hat = m[i] / (1 - beta1 ** (step + 1))
            v_hat = v[i] / (1 - beta2 ** (step + 1))
            p.data -= lr_t * m_hat / (v_hat ** 0.5 + adam.eps)
            p.grad = 0

    # -- the engine interface ------------------------------------------------

    def train(self, data, step0: int, num_steps: int, total_steps: int,
              adam: Adam = Adam()) -> np.ndarray:
        """Steps step0 .. step0 + num_steps - 1 of a total_steps schedule, on the
        documents data.batches gives them.
        Returns their losses (num_steps,), or fewer ending in inf when a step
        failed as the original would (math.log of a probability that underflowed
        to 0, math.exp past the largest float): the compiled engine's NaN."""
        B = self.batch_size
        docs, doc_ids = data.batches(step0, num_steps, B)
        losses = np.empty(num_steps, np.float64)
        for k in range(num_steps):
            step = step0 + k
            batch = [docs.doc_tokens(int(i)) for i in doc_ids[k * B:(k + 1) * B]]
            try:
                losses[k] = self.train_step(batch, step, total_steps, adam)
            except (ValueError, OverflowError, ZeroDivisionError):
                losses[k] = math.inf
                return losses[:k + 1]
        return losses

    def evaluate(self, data, doc_ids) -> np.ndarray:
        """Each document's mean position loss, float64 (len(doc_ids),); no update."""
        return np.array([self.doc_loss(data.doc_tokens(int(i))).data for i in doc_ids])

    def loss_and_grad(self, data, doc_ids) -> tuple[float, np.ndarray]:
        """Loss of the documents doc_ids (one batch) and its gradient (P,), no update."""
        loss, grads = self.batch_loss_and_grad([data.doc_tokens(int(i)) for i in doc_ids])
        return loss, np.array(grads, np.float64)

    def apply_adam(self, grad, step: int, total_steps: int, adam: Adam = Adam()) -> None:
        """One Adam update of every parameter from grad (P,), as step `step` of
        total_steps, with adam's clipping (of grad) and weight decay."""
        for p, g in zip(self.weights, grad):
            p.grad = float(g)
        self._adam(step, total_steps, adam)

    def next_probs_fn(self, temperature: float = 0.5):
        """A function next_probs(token, pos) -> list of V floats, softmax(logits /
        temperature), with its own KV cache (positions fed in order from 0)."""
        cfg = self.config
        keys, values = [[] for _ in range(cfg.n_layer)], [[] for _ in range(cfg.n_layer)]

        def next_probs(token_id: int, pos_id: int) -> list[float]:
            logits = self.gpt(token_id, pos_id, keys, values)
            return [p.data for p in softmax([l / temperature for l in logits])]

        return next_probs

    def window_probs_fn(self, temperature: float = 0.5):
        """A function window_probs(tokens) -> list of V floats: tokens fed at
        positions 0, 1, ... with fresh caches, softmax(logits / temperature) of the
        last."""
        cfg = self.config

        def window_probs(tokens) -> list[float]:
            keys, values = [[] for _ in range(cfg.n_layer)], [[] for _ in range(cfg.n_layer)]
            for pos_id, token_id in enumerate(tokens):
                logits = self.gpt(int(token_id), pos_id, keys, values)
            return [p.data for p in softmax([l / temperature for l in logits])]

        return window_probs

    def feed_probs_fn(self, temperature: float = 0.5):
        """A function feed_probs(tokens, pos) -> float64 (n, V): next_probs of each of
        n <= batch_size samples, sample j with its own KV cache (position 0
        starts it afresh)."""
        cfg = self.config
        caches = []

        def feed_probs(tokens, pos: int) -> np.ndarray:
            if not 1 <= len(tokens) <= self.batch_size:
                raise ValueError(f"need 1 to {self.batch_size} tokens, got {len(tokens)}")
            if pos == 0:
                caches[:] = [([[] for _ in range(cfg.n_layer)], [[] for _ in range(cfg.n_layer)])
                             for _ in tokens]
            rows = []
            for token_id, (keys, values) in zip(tokens, caches):
                logits = self.gpt(int(token_id), pos, keys, values)
                rows.append([p.data for p in softmax([l / temperature for l in logits])])
            return np.array(rows, np.float64)

        return feed_probs

    def windows_probs_fn(self, temperature: float = 0.5):
        """A function windows_probs(windows) -> float64 (n, V): window_probs of each
        row of windows (n, m), n <= batch_size."""
        window_probs = self.window_probs_fn(temperature)

        def windows_probs(windows) -> np.ndarray:
            if not 1 <= len(windows) <= self.batch_size:
                raise ValueError(f"need 1 to {self.batch_size} windows, got {len(windows)}")
            return np.array([window_probs(w) for w in windows], np.float64)

        return windows_probs

    def sample(self, rng, bos: int, temperature: float = 0.5, prompt=(), top_k=None,
               max_len=None) -> list[int]:
        """Token ids of one sample, drawn with rng.choices as the original does."""
        return draw(self.next_probs_fn(temperature), rng, bos, self.config.block_size,
                    prompt, top_k, max_len)

    def sample_text(self, rng, temperature: float, prompt, length: int,
                    top_k=None) -> list[int]:
        """Token ids of one text sample: prompt's, then length drawn (sampling.draw_texts)."""
        return self.sample_texts(rng, temperature, prompt, length, 1, top_k)[0]

    def sample_texts(self, rng, temperature: float, prompt, length: int, num_samples: int,
                     top_k=None) -> list[list[int]]:
        """Token ids of num_samples text samples, as sample_text num_samples times on
        rng (sampling.draw_texts, batch_size samples at a time)."""
        return draw_texts(self.feed_probs_fn(temperature), self.windows_probs_fn(temperature),
                          rng, self.config.block_size, self.batch_size, prompt, length,
                          num_samples, top_k)
