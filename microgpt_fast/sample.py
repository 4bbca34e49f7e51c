"""Sample text from a saved model.

    python -m microgpt_fast.sample --checkpoint run.npz
    python -m microgpt_fast.sample --checkpoint run.npz --prompt ma --num-samples 5 --top-k 5
    python -m microgpt_fast.sample --checkpoint run.npz --seed 7 --temperature 0.8
    python -m microgpt_fast.sample --checkpoint play.npz --prompt "ROMEO:" --max-len 500

Prints the samples, each starting with the prompt: from a run on lines one
sample a line; from a run on a text (--data-format text) each sample is a
"--- sample i ---" line, then --max-len characters (300) after the prompt (a
newline), the context sliding to the last block-size characters. Without
--seed the draws continue the checkpoint's own random stream, so a checkpoint
saved at the end of training gives the samples that run printed (with the
prompt and length it sampled with, unless given); with --seed they come from
a stream seeded with it. Either way the same command prints the same samples.
"""

from __future__ import annotations

import random
import sys

from .cli import Parser, add_config_flags, check_at_least, given_fields, run_guarded
from .config import RunOptions, SampleConfig
from .sampling import text_sample_block
from .trainer import load_checkpoint


def build_parser() -> Parser:
    p = Parser(prog="python -m microgpt_fast.sample",
               description="Sample text from a checkpoint written by microgpt_fast.train --save.")
    p.add_argument("--checkpoint", metavar="PATH", required=True, help="the .npz checkpoint")
    add_config_flags(p, SampleConfig, skip=("num_samples",),
                     note=", or the one the checkpoint was trained with")
    add_config_flags(p, SampleConfig, skip=("temperature", "prompt", "max_len"))
    p.add_argument("--top-k", type=int, default=None,
                   help="draw only among the k likeliest characters (default: all)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the draws (default: continue the checkpoint's random stream)")
    add_config_flags(p, RunOptions, skip=("data", "engine", "threads", "adapt_threads"))
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: command(args))


def command(args) -> int:
    """Print the samples the parsed args ask for; returns the exit code."""
    check_at_least(("--num-samples", args.num_samples, 0), ("--top-k", args.top_k, 1),
                   ("--max-len", args.max_len, 1))
    sampling = SampleConfig(**given_fields(args, SampleConfig))  # before reading the checkpoint
    trainer = load_checkpoint(args.checkpoint, threads=1, kernel=args.kernel)
    rng = None if args.seed is None else random.Random(args.seed)
    # the temperature, prompt and length the run sampled with unless given;
    # always this many samples
    samples = trainer.sample(sampling.num_samples, args.temperature, args.prompt, args.top_k,
                             args.max_len, rng)
    for i, text in enumerate(samples):
        print(text_sample_block(i + 1, text) if trainer.text_mode else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
