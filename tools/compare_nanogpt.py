"""Train nanoGPT's CPU "baby GPT" with our engine and in PyTorch, side by side,
from the same initial weights on the same batches (needs PyTorch).

    python tools/compare_nanogpt.py --json compare.json     # about 80 s ours + torch's time

The run is that of
    python -m microgpt_fast.train --data shakespeare --preset nanogpt --n-layer 4 \\
        --n-head 4 --n-embd 128 --block-size 64 --batch-size 12 --steps 2000 \\
        --eval-every 250 --dtype float32
whose final validation loss (about 1.91) is above the 1.88 nanoGPT's README
gives for the same recipe. This script asks whether the gap lies in our engine
or in the measurement:
  (a) the step losses of ours and of microgpt_fast.torch_model (same init,
      same windows, same update, float32): where they agree and where they part;
  (b) each one's validation loss every --eval-every steps on all held-out
      positions, and at the end also nanoGPT's estimate (eval_iters 20: the mean
      over 20 random batches of 12 windows of 64 characters of the validation
      text), for --draws different draws, to show that estimate's spread;
  (c) each one's training time on --threads threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from microgpt_fast.config import configs_from, with_preset  # noqa: E402
from microgpt_fast.data import Windows  # noqa: E402
from microgpt_fast.trainer import Trainer  # noqa: E402


def nanogpt_windows(val, rng: np.random.Generator, windows: int) -> Windows:
    """`windows` windows of T + 1 characters of the validation text at uniform
    offsets in 0 .. n - T - 1, as nanoGPT's get_batch draws them."""
    T = val.block_size
    offsets = rng.integers(0, val.num_chars - T, windows)
    tokens = val.tokens[offsets[:, None] + np.arange(T + 1)].reshape(-1).astype(np.int32)
    starts = np.arange(windows + 1, dtype=np.int64) * (T + 1)
    starts[-1] -= 1  # the last window, too, predicts T characters
    return Windows(val.chars, tokens, starts, T)


def mean_loss(model, docs: Windows, batch: int) -> float:
    """Mean over the predicted positions of docs (each window weighs its length)."""
    n = docs.num_docs
    per_doc = np.concatenate([model.evaluate(docs, np.arange(i, min(i + batch, n)))
                              for i in range(0, n, batch)])
    lengths = docs.lengths
    return float((per_doc * lengths).sum() / lengths.sum())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--draws", type=int, default=10,
                   help="draws of nanoGPT's 20 x 12 validation windows at the end")
    p.add_argument("--eager", action="store_true",
                   help="train the torch model eagerly (default: the step under torch.compile)")
    p.add_argument("--no-torch", action="store_true",
                   help="train ours alone: its validation losses and nanoGPT's estimates")
    p.add_argument("--json", help="write the curves and figures here")
    args = p.parse_args(argv)

    settings = with_preset("nanogpt", {
        "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12,
        "steps": args.steps, "dtype": "float32", "seed": args.seed})
    cfg, tc = configs_from(settings)
    ours = Trainer(cfg, tc, data="shakespeare", threads=args.threads)
    cfg, tc = ours.config, ours.train_config
    train_set, val = ours.dataset, ours.val_dataset
    held_out = val.held_out_windows()
    if args.no_torch:
        theirs = None
        print(f"ours alone; {cfg.num_params:,} parameters; {held_out.lengths.sum():,} "
              "held-out positions", flush=True)
    else:
        import torch

        from microgpt_fast.torch_model import TorchGPT
        theirs = TorchGPT(cfg, ours.model.params.copy(), "float32", args.threads,
                          tc.batch_size, compiled=not args.eager)
        print(f"torch {torch.__version__}, {theirs.threads} threads; {cfg.num_params:,} "
              f"parameters; {held_out.lengths.sum():,} held-out positions", flush=True)

    ours_losses, theirs_losses = [], []
    ours_seconds = theirs_seconds = 0.0
    curve = []  # (step, ours val, theirs val)
    print(f"{'step':>5} {'ours train':>11} {'torch train':>11} {'ours val':>9} "
          f"{'torch val':>9}", flush=True)
    step = 0
    while step < tc.steps:
        n = min(args.eval_every, tc.steps - step)
        t0 = time.perf_counter()
        ours_losses += ours.train(n).tolist()
        ours_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        if theirs is not None:
            theirs_losses += theirs.train(train_set, step, n, tc.steps, tc.adam).tolist()
        else:  # no torch: its columns repeat ours
            theirs_losses += ours_losses[-n:]
        theirs_seconds += time.perf_counter() - t0
        step += n
        val_ours = ours.evaluate()
        val_theirs = val_ours if theirs is None else mean_loss(theirs, held_out, 64)
        curve.append((step, val_ours, val_theirs))
        print(f"{step:>5} {np.mean(ours_losses[-n:]):>11.4f} {np.mean(theirs_losses[-n:]):>11.4f} "
              f"{val_ours:>9.4f} {val_theirs:>9.4f}", flush=True)

    a, b = np.array(ours_losses), np.array(theirs_losses)
    gap = np.abs(a - b)
    first_apart = {tol: int(np.argmax(gap > tol)) + 1 if (gap > tol).any() else None
                   for tol in (1e-4, 1e-3, 1e-2, 0.05)}
    if theirs is not None:
        print(f"\n(a) step losses: max |ours - torch| over steps 1-50 {gap[:50].max():.2e}, "
              f"1-200 {gap[:200].max():.2e}, all {gap.max():.2e}")
        print("    first step apart by more than: "
              + ", ".join(f"{tol:g}: {s}" for tol, s in first_apart.items()))
        for lo in range(0, len(a), max(args.eval_every, 1)):
            hi = min(lo + args.eval_every, len(a))
            d = a[lo:hi] - b[lo:hi]
            print(f"    steps {lo + 1:>4}-{hi:<4} mean ours - torch {d.mean():+.1e}, "
                  f"sd {d.std():.1e}")

    rng = np.random.default_rng(0)
    draws = []
    if val is not None:
        for _ in range(args.draws):
            docs = nanogpt_windows(val, rng, 20 * 12)
            mine = mean_loss(ours.model, docs, tc.batch_size)
            draws.append((mine, mine if theirs is None else mean_loss(theirs, docs, 64)))
    d = np.array(draws)
    print(f"\n(b) final validation loss, all held-out positions: ours {curve[-1][1]:.4f}"
          + ("" if theirs is None else f", torch {curve[-1][2]:.4f}"))
    print(f"    nanoGPT's estimate (20 batches of 12 x 64), {args.draws} draws:")
    print(f"      ours:  mean {d[:, 0].mean():.4f}, sd {d[:, 0].std(ddof=1):.4f}, "
          f"min {d[:, 0].min():.4f}, max {d[:, 0].max():.4f}")
    if theirs is not None:
        print(f"      torch: mean {d[:, 1].mean():.4f}, sd {d[:, 1].std(ddof=1):.4f}, "
              f"min {d[:, 1].min():.4f}, max {d[:, 1].max():.4f}")
    print("      each draw: " + ", ".join(f"{x:.3f}" for x, _ in draws) if theirs is None else
          "      each draw (ours, torch): " + ", ".join(f"({x:.3f}, {y:.3f})" for x, y in draws))
    if theirs is None:
        print(f"\n(c) training time, {args.threads} threads, evaluation excluded: ours "
              f"{ours_seconds:.1f} s")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"ours_losses": ours_losses, "val": [v[:2] for v in curve],
                           "nanogpt_estimates": [d[0] for d in draws],
                           "ours_seconds": ours_seconds, "threads": args.threads}, f, indent=1)
        return 0
    compile_note = (f" (its first step, compilation included, {theirs.compile_seconds:.1f} s)"
                    if theirs.compile_seconds is not None else "")
    print(f"\n(c) training time, {args.threads} threads, evaluation excluded: ours "
          f"{ours_seconds:.1f} s, torch{'.compile' if theirs.compiled else ' eager'} "
          f"{theirs_seconds:.1f} s{compile_note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ours_losses": ours_losses, "torch_losses": theirs_losses,
                       "val": curve, "nanogpt_estimates": draws,
                       "ours_seconds": ours_seconds, "torch_seconds": theirs_seconds,
                       "torch_compile_seconds": theirs.compile_seconds,
                       "torch_compiled": theirs.compiled, "threads": args.threads,
                       "first_step_apart": {str(k): v for k, v in first_apart.items()}},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
