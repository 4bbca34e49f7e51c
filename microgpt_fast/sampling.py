"""Drawing text from a model one token at a time, the way the original does.

Both engines give a function next_probs(token, pos) that feeds one token at a
position (keeping its own cache of earlier positions) and returns the
probabilities of the next token, softmax(logits / temperature). The draw is
the original's: random.choices(range(vocab_size), weights=probs) on the
caller's random stream, so a seed fixes the samples.
"""

from __future__ import annotations

import numpy as np


def draw(next_probs, rng, bos: int, block_size: int, prompt: list[int] = (),
         top_k: int | None = None, max_len: int | None = None) -> list[int]:
    """Token ids of one sample: the prompt's ids, then the drawn ones.

    The sample starts with BOS at position 0, the prompt's tokens are fed in
    order without drawing, then tokens are drawn until BOS, until max_len drawn
    tokens, or until the block is full. top_k keeps only the k most likely
    tokens (ties broken by the lower token id) before drawing.
    """
    out = list(prompt)
    limit = block_size if max_len is None else min(block_size, len(out) + max_len)
    fed = [bos] + out  # fed at positions 0, 1, ...; only the last one's output is drawn from
    for pos, token in enumerate(fed[:-1]):
        next_probs(token, pos)
    pos, token = len(fed) - 1, fed[-1]
    while pos < limit:
        probs = np.asarray(next_probs(token, pos), np.float64)
        if top_k is not None and top_k < len(probs):
            probs = keep_top_k(probs, top_k)
        token = rng.choices(range(len(probs)), weights=probs.tolist())[0]
        if token == bos:
            break
        out.append(token)
        pos += 1
    return out


def keep_top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """probs with all but its k largest entries set to 0 (the earliest of equals kept)."""
    keep = np.argsort(-probs, kind="stable")[:k]
    kept = np.zeros_like(probs)
    kept[keep] = probs[keep]
    return kept
