"""Drawing text from a model one token at a time, the way the original does.

Both engines give a function next_probs(token, pos) that feeds one token at a
position (keeping its own cache of earlier positions) and returns the
probabilities of the next token, softmax(logits / temperature), and a function
window_probs(tokens) that runs a fresh forward pass over up to block_size
tokens and returns the probabilities after the last one; feed_probs and
windows_probs do the same for several samples in one call. Every draw is the
original's: random.choices(range(vocab_size), weights=probs) on the caller's
random stream, so a seed fixes the samples.

draw samples a document of the lines format (from BOS to BOS, within the
block); draw_texts continues texts of the text format for as long as asked,
the context sliding to the last block_size characters once a text outgrows
the block, many samples at once with the draws of one at a time.
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
    """probs with all but the k largest entries of each row (of its last axis) set
    to 0 (the earliest of equals kept)."""
    keep = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    kept = np.zeros_like(probs)
    np.put_along_axis(kept, keep, np.take_along_axis(probs, keep, axis=-1), axis=-1)
    return kept


def choose(weights: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """The token each row of weights (n, V) gives with the uniform of its row
    (n,): what random.choices(range(V), weights=row)[0] returns when its one
    call of random() gives that uniform.

    CPython's choices sums the weights in order (itertools.accumulate), takes
    total = the last sum + 0.0 and returns bisect_right(sums, random() * total,
    0, V - 1); np.cumsum adds each row in the same order, and for weights >= 0
    the sums never decrease, so bisect_right is the count of sums[:V - 1] <=
    the point. tests/test_batch_sampling.py holds this to random.choices itself.
    """
    sums = np.cumsum(weights, axis=-1)
    totals = sums[:, -1] + 0.0
    if not np.all((totals > 0) & np.isfinite(totals)):
        raise ValueError("each row's weights must have a finite total greater than zero")
    points = uniforms * totals
    return np.count_nonzero(sums[:, :-1] <= points[:, None], axis=-1)


def draw_texts(feed_probs, windows_probs, rng, block_size: int, group_size: int,
               prompt: list[int], length: int, num_samples: int,
               top_k: int | None = None) -> list[list[int]]:
    """Token ids of num_samples text samples, each the prompt's ids (at least one),
    then `length` drawn ones: the same as drawing the samples one after another.

    Each token is drawn from the probabilities after the last block_size
    tokens so far: the position embedding covers no more. While the text fits
    in the block, each token is fed once at its position (the model's cache
    keeps the earlier ones); past it the window moves one token a draw and its
    positions all change, so its forward pass is run afresh from position 0.
    top_k as in draw.

    Every sample draws exactly `length` tokens, one random() each, so the
    samples of a group of up to group_size advance together: feed_probs(tokens
    (n,), pos) and windows_probs(windows (n, m)) give one row of probabilities
    per sample. The uniforms are taken first, in the order one sample after
    another would take them (sample-major), and each draw turns its own into a
    token as random.choices would (choose); rng ends where the one-at-a-time
    draws leave it.
    """
    prompt = list(prompt)
    if not prompt:
        raise ValueError("a text sample continues a prompt of at least one character")
    random = rng.random
    samples = []
    for first in range(0, num_samples, group_size):
        n = min(group_size, num_samples - first)
        uniforms = np.fromiter((random() for _ in range(n * length)), np.float64,
                               n * length).reshape(n, length)
        texts = np.empty((n, len(prompt) + length), np.intc)
        texts[:, :len(prompt)] = prompt
        fed = 0  # tokens of each text fed through feed_probs, at positions 0 .. fed - 1
        for i in range(length):
            end = len(prompt) + i  # tokens so far
            if end <= block_size:
                while fed < end:
                    probs = feed_probs(texts[:, fed], fed)
                    fed += 1
            else:
                probs = windows_probs(texts[:, end - block_size:end])
            probs = np.asarray(probs, np.float64)
            if top_k is not None and top_k < probs.shape[-1]:
                probs = keep_top_k(probs, top_k)
            texts[:, end] = choose(probs, uniforms[:, i])
        samples.extend(texts.tolist())
    return samples


def text_sample_block(i: int, text: str) -> str:
    """Text sample i as the commands print it: a line "--- sample i ---", then the
    text. A text that starts with a newline (the default prompt) ends the
    header line with it, so the continuation starts on the next line."""
    return f"--- sample {i} ---" + ("" if text.startswith("\n") else "\n") + text
