"""Drawing text from a model one token at a time, the way the original does.

Both engines give a function next_probs(token, pos) that feeds one token at a
position (keeping its own cache of earlier positions) and returns the
probabilities of the next token, softmax(logits / temperature), and a function
window_probs(tokens) that runs a fresh forward pass over up to block_size
tokens and returns the probabilities after the last one. Every draw is the
original's: random.choices(range(vocab_size), weights=probs) on the caller's
random stream, so a seed fixes the samples.

draw samples a document of the lines format (from BOS to BOS, within the
block); draw_text continues a text of the text format for as long as asked,
the context sliding to the last block_size characters once the text outgrows
the block.
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


def draw_text(next_probs, window_probs, rng, block_size: int, prompt: list[int], length: int,
              top_k: int | None = None) -> list[int]:
    """Token ids of one text sample: the prompt's ids (at least one), then
    `length` drawn ones.

    Each token is drawn from the probabilities after the last block_size
    tokens so far: the position embedding covers no more. While the text fits
    in the block, each token is fed once at its position (the model's cache
    keeps the earlier ones); past it the window moves one token a draw and its
    positions all change, so its forward pass is run afresh from position 0.
    top_k as in draw.
    """
    out = list(prompt)
    if not out:
        raise ValueError("a text sample continues a prompt of at least one character")
    fed = 0  # tokens of out fed through next_probs, at positions 0 .. fed - 1
    for _ in range(length):
        if len(out) <= block_size:
            while fed < len(out):
                probs = next_probs(out[fed], fed)
                fed += 1
        else:
            probs = window_probs(out[-block_size:])
        probs = np.asarray(probs, np.float64)
        if top_k is not None and top_k < len(probs):
            probs = keep_top_k(probs, top_k)
        out.append(rng.choices(range(len(probs)), weights=probs.tolist())[0])
    return out


def text_sample_block(i: int, text: str) -> str:
    """Text sample i as the commands print it: a line "--- sample i ---", then the
    text. A text that starts with a newline (the default prompt) ends the
    header line with it, so the continuation starts on the next line."""
    return f"--- sample {i} ---" + ("" if text.startswith("\n") else "\n") + text
