"""nanoGPT's CPU "baby GPT" recipe written as a plain PyTorch program, on its own
(needs PyTorch): where does that recipe's validation loss land on all the
held-out text, and how far do nanoGPT's 20-batch estimates of it scatter?

    python tools/nanogpt_recipe.py --seed 0      # about 85 s on 2 cores

Nothing here comes from microgpt_fast's engines: the model is torch.nn modules,
initialized, batched and optimized with torch's own random numbers, the way
nanoGPT's train.py does it (layer norms without bias, exact GELU, a tied head,
N(0, 0.02) weights with the two residual projections at 0.02 / sqrt(2 n_layer),
AdamW (0.9, 0.99) with decay 0.1 on the matrices, clipping at 1.0, a 100-step
linear warm-up and cosine decay to 1e-4 over 2000 iterations of 12 windows of
64 characters). tools/compare_nanogpt.py, in contrast, trains our recipe in
both engines from the same weights on the same batches.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

TEXT = Path(__file__).resolve().parent.parent / "microgpt_fast" / "data" / "tinyshakespeare.txt"
BATCH, BLOCK, WIDTH, LAYERS, HEADS = 12, 64, 128, 4, 4
WARMUP, PEAK_LR, MIN_LR = 100, 1e-3, 1e-4


class LayerNorm(nn.Module):
    """A gain and no bias."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(WIDTH))

    def forward(self, x):
        return F.layer_norm(x, (WIDTH,), self.weight, None, 1e-5)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn_norm, self.mlp_norm = LayerNorm(), LayerNorm()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.attn_proj = nn.Linear(WIDTH, WIDTH, bias=False)
        self.fc = nn.Linear(WIDTH, 4 * WIDTH, bias=False)
        self.mlp_proj = nn.Linear(4 * WIDTH, WIDTH, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (z.view(B, T, HEADS, C // HEADS).transpose(1, 2)
                   for z in self.qkv(self.attn_norm(x)).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(F.gelu(self.fc(self.mlp_norm(x))))


class BabyGPT(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, WIDTH), nn.Embedding(BLOCK, WIDTH)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.final_norm = LayerNorm()
        self.head = nn.Linear(WIDTH, vocab, bias=False)
        self.wte.weight = self.head.weight  # tied
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)
        for name, p in self.named_parameters():
            if name.endswith(("attn_proj.weight", "mlp_proj.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * LAYERS))

    def forward(self, inputs, targets):
        x = self.wte(inputs) + self.wpe(torch.arange(inputs.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.final_norm(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def windows(data: torch.Tensor, generator=None):
    """BATCH windows of BLOCK + 1 characters at uniform offsets, as (inputs, targets)."""
    at = torch.randint(len(data) - BLOCK, (BATCH,), generator=generator)
    return (torch.stack([data[i:i + BLOCK] for i in at]),
            torch.stack([data[i + 1:i + 1 + BLOCK] for i in at]))


def rate(it: int, iters: int) -> float:
    if it < WARMUP:
        return PEAK_LR * (it + 1) / (WARMUP + 1)
    done = (it - WARMUP) / (iters - WARMUP)
    return MIN_LR + 0.5 * (1 + math.cos(math.pi * done)) * (PEAK_LR - MIN_LR)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="added to nanoGPT's 1337")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--draws", type=int, default=20,
                   help="draws of nanoGPT's estimate (20 batches of 12 windows) at the end")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    text = TEXT.read_text(encoding="utf-8")
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    cut = int(0.9 * len(ids))
    train, val = ids[:cut], ids[cut:]

    torch.manual_seed(1337 + args.seed)
    model = BabyGPT(len(chars))
    matrices = [q for q in model.parameters() if q.dim() >= 2]
    gains = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                             {"params": gains, "weight_decay": 0.0}],
                            lr=PEAK_LR, betas=(0.9, 0.99))
    t0 = time.perf_counter()
    for it in range(args.iters):
        for group in opt.param_groups:
            group["lr"] = rate(it, args.iters)
        loss = model(*windows(train))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t0

    with torch.no_grad():
        # every held-out position once: consecutive windows of BLOCK predictions
        n = (len(val) - 1) // BLOCK
        inputs = val[:n * BLOCK].view(n, BLOCK)
        targets = val[1:n * BLOCK + 1].view(n, BLOCK)
        whole = sum(model(inputs[i:i + 64], targets[i:i + 64]).item() * len(inputs[i:i + 64])
                    for i in range(0, n, 64)) / n
        gen = torch.Generator().manual_seed(0)
        estimates = [np.mean([model(*windows(val, gen)).item() for _ in range(20)])
                     for _ in range(args.draws)]
    print(f"seed {args.seed}: {args.iters} iterations in {seconds:.1f} s; validation loss "
          f"over all held-out positions {whole:.4f}; nanoGPT's estimate over {args.draws} "
          f"draws: mean {np.mean(estimates):.4f}, sd {np.std(estimates):.4f}, "
          f"{min(estimates):.4f} to {max(estimates):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
