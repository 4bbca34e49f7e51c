"""Train microgpt and sample from it: the original's run, compiled.

    python -m microgpt_fast.train                      # the original: 1000 steps, 20 names
    python -m microgpt_fast.train --engine reference --steps 20
    python -m microgpt_fast.train --dtype float32 --batch-size 16 --threads 2 --quiet
    python -m microgpt_fast.train --json run.json      # config, losses, timings, samples

With no arguments it prints what the original prints, line for line, then one
summary line with the training time (the training loop only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .cli import Parser
from .config import DTYPES, GPTConfig, TrainConfig
from .data import DataError
from .kernels import VARIANTS, KernelError
from .trainer import ENGINES, Trainer


def build_parser() -> argparse.ArgumentParser:
    g, t = GPTConfig(), TrainConfig()
    p = Parser(prog="python -m microgpt_fast.train",
               description="Train a character-level GPT (Karpathy's microgpt) and sample from it.")
    p.add_argument("--data", metavar="PATH", default=None,
                   help="UTF-8 text file, one document a line (default: the bundled names.txt)")
    p.add_argument("--engine", choices=ENGINES, default="compiled",
                   help="compiled Cython engine, or the pure-Python reference")
    p.add_argument("--kernel", choices=VARIANTS, default=None,
                   help="compiled kernel variant (default: $MICROGPT_FAST_KERNEL, else the best "
                        "this CPU runs)")
    p.add_argument("--dtype", choices=DTYPES, default=t.dtype,
                   help="float64 reproduces the original; the reference is always float64")
    p.add_argument("--threads", type=int, default=None,
                   help="OpenMP threads (default: $OMP_NUM_THREADS, else every core; never "
                        "more than the documents of a step)")
    p.add_argument("--steps", type=int, default=t.steps, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=t.batch_size, help="documents per step")
    p.add_argument("--n-embd", type=int, default=g.n_embd, help="embedding width")
    p.add_argument("--n-head", type=int, default=g.n_head, help="attention heads (divides n-embd)")
    p.add_argument("--n-layer", type=int, default=g.n_layer, help="transformer blocks")
    p.add_argument("--block-size", type=int, default=g.block_size,
                   help="most positions trained per document")
    p.add_argument("--learning-rate", type=float, default=t.learning_rate,
                   help="Adam learning rate, decayed linearly to 0")
    p.add_argument("--beta1", type=float, default=t.beta1, help="Adam first-moment decay")
    p.add_argument("--beta2", type=float, default=t.beta2, help="Adam second-moment decay")
    p.add_argument("--eps", type=float, default=t.eps, help="Adam epsilon")
    p.add_argument("--seed", type=int, default=t.seed, help="seed of the random stream")
    p.add_argument("--temperature", type=float, default=t.temperature,
                   help="sampling temperature (> 0)")
    p.add_argument("--num-samples", type=int, default=t.num_samples, help="samples after training")
    p.add_argument("--log-every", type=int, default=1, metavar="N",
                   help="print a step line every N steps (and always the last)")
    p.add_argument("--quiet", action="store_true", help="print no step lines")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="write the run as one JSON object to PATH ('-': stdout, and the "
                        "text output goes to stderr)")
    return p


def run(args, out) -> dict:
    """Train and sample as the parsed args say, printing to out; returns the JSON record."""
    if args.log_every < 1:
        raise ValueError(f"log-every must be >= 1, got {args.log_every}")
    config = GPTConfig(n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer,
                       block_size=args.block_size)
    tc = TrainConfig(steps=args.steps, batch_size=args.batch_size,
                     learning_rate=args.learning_rate, beta1=args.beta1, beta2=args.beta2,
                     eps=args.eps, seed=args.seed, dtype=args.dtype, threads=args.threads,
                     temperature=args.temperature, num_samples=args.num_samples)
    trainer = Trainer(config, tc, data=args.data, engine=args.engine, kernel=args.kernel)
    ds = trainer.dataset
    print(f"num docs: {len(ds.docs)}", file=out)
    print(f"vocab size: {ds.vocab_size}", file=out)
    print(f"num params: {trainer.config.num_params}", file=out)

    steps = tc.steps

    def report(step0, losses):
        if args.quiet:
            return
        for k, loss in enumerate(losses):
            s = step0 + k + 1
            if s % args.log_every == 0 or s == steps:
                print(f"step {s:4d} / {steps:4d} | loss {loss:.4f}", file=out)
        out.flush()

    losses = trainer.train(on_chunk=report)
    print("\n--- inference (new, hallucinated names) ---", file=out)
    samples = trainer.sample()
    for i, name in enumerate(samples):
        print(f"sample {i + 1:2d}: {name}", file=out)

    seconds = trainer.train_seconds
    us_per_step = seconds / steps * 1e6
    tokens_per_second = trainer.tokens_trained / seconds if seconds > 0 else float("inf")
    where = (f"{trainer.engine}" + (f"/{trainer.kernel}" if trainer.kernel else "")
             + f", {trainer.dtype}, {trainer.threads} thread{'s' if trainer.threads > 1 else ''}")
    print(f"trained {steps} steps in {seconds:.3f} s ({us_per_step:.1f} us/step, "
          f"{tokens_per_second / 1e6:.2f} M tokens/s; {where})", file=out)
    return {
        "config": trainer.config.to_dict(),
        "train_config": tc.to_dict(),
        "data": args.data or "names.txt (bundled)",
        "engine": trainer.engine,
        "kernel": trainer.kernel,
        "dtype": trainer.dtype,
        "threads": trainer.threads,
        "num_docs": len(ds.docs),
        "num_params": trainer.config.num_params,
        "final_loss": float(losses[-1]),
        "losses": losses.tolist(),
        "train_seconds": seconds,
        "us_per_step": us_per_step,
        "us_per_doc": us_per_step / tc.batch_size,
        "tokens_trained": trainer.tokens_trained,
        "tokens_per_second": tokens_per_second,
        "samples": samples,
    }


def check_writable(path: str | None) -> None:
    """Fail before training, not after it, when the --json file cannot be written."""
    if path in (None, "-"):
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"--json path is a directory: {path}")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write --json file: {path}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = sys.stderr if args.json == "-" else sys.stdout
    try:
        check_writable(args.json)
        record = run(args, out)
        if args.json == "-":
            json.dump(record, sys.stdout)
            sys.stdout.write("\n")
        elif args.json:
            with open(args.json, "w") as f:
                json.dump(record, f, indent=1)
                f.write("\n")
    except (ValueError, DataError, KernelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: not enough memory for this model and batch size", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): stop quietly, as other filters do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
