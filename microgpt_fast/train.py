"""Train microgpt and sample from it: the original's run, compiled.

    python -m microgpt_fast.train                      # the original: 1000 steps, 20 names
    python -m microgpt_fast.train --engine reference --steps 20
    python -m microgpt_fast.train --dtype float32 --batch-size 16 --threads 2 --quiet
    python -m microgpt_fast.train --json run.json      # config, losses, timings, samples
    python -m microgpt_fast.train --data play.txt --val-fraction 0.1 --eval-every 500 \
        --steps 5000 --save run.npz --log-csv run.csv --plot-loss loss.png
    python -m microgpt_fast.train --resume run.npz --save run.npz   # go on where it stopped

With no arguments it prints what the original prints, line for line, then one
summary line with the training time (the training loop only).

Exit codes: 0 done, 1 the loss diverged (NaN, infinite, or above 10,000 x
ln(vocab size)), 2 bad input, 130 / 143 / 129 stopped by Ctrl-C / SIGTERM /
SIGHUP (the run stops at the end of the current chunk of steps, at most about
0.2 s or one step, and saves when --save is given; a second signal quits at
once). When standard output's reader goes away (`| head`), the run still
trains, saves and writes its files.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import replace

from .checkpoint import read_checkpoint
from .cli import ClosedReaderSafe, Parser, StopSignals, check_at_least, run_guarded
from .config import DTYPES, GPTConfig, TrainConfig, configs_from
from .kernels import VARIANTS
from .paths import check_output
from .plots import plot_loss, pyplot
from .progress import Progress
from .trainer import ENGINES, Trainer, TrainingDiverged

# Flags that shape the run: left out, they take the checkpoint's value on
# --resume (or the default); given, they must agree with the checkpoint.
MODEL_FLAGS = ("n_embd", "n_head", "n_layer", "block_size")
RUN_FLAGS = ("steps", "batch_size", "learning_rate", "beta1", "beta2", "eps", "seed", "dtype",
             "val_fraction")


def build_parser() -> argparse.ArgumentParser:
    g, t = GPTConfig(), TrainConfig()
    p = Parser(prog="python -m microgpt_fast.train",
               description="Train a character-level GPT (Karpathy's microgpt) and sample from it.")

    def run_flag(name, kind, help, **kw):
        default = getattr(g, name) if name in MODEL_FLAGS else getattr(t, name)
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                       help=f"{help} (default: {default}; on --resume: the checkpoint's)", **kw)

    p.add_argument("--data", metavar="PATH", default=None,
                   help="UTF-8 text file, one document a line (default: the bundled names.txt; "
                        "on --resume: the checkpoint's)")
    p.add_argument("--engine", choices=ENGINES, default="compiled",
                   help="compiled Cython engine, or the pure-Python reference")
    p.add_argument("--kernel", choices=VARIANTS, default=None,
                   help="compiled kernel variant (default: $MICROGPT_FAST_KERNEL, else the best "
                        "this CPU runs)")
    run_flag("dtype", str, "float64 reproduces the original; the reference is always float64",
             choices=DTYPES)
    p.add_argument("--threads", type=int, default=None,
                   help="OpenMP threads (default: $OMP_NUM_THREADS, else every core; never "
                        "more than the documents of a step)")
    run_flag("steps", int, "optimizer steps: the length of the learning-rate schedule")
    run_flag("batch_size", int, "documents per step")
    run_flag("n_embd", int, "embedding width")
    run_flag("n_head", int, "attention heads (divides n-embd)")
    run_flag("n_layer", int, "transformer blocks")
    run_flag("block_size", int, "most positions trained per document")
    run_flag("learning_rate", float, "Adam learning rate, decayed linearly to 0")
    run_flag("beta1", float, "Adam first-moment decay")
    run_flag("beta2", float, "Adam second-moment decay")
    run_flag("eps", float, "Adam epsilon")
    run_flag("seed", int, "seed of the random stream (shuffle, init, samples)")
    run_flag("val_fraction", float, "hold out this last fraction of the shuffled documents")
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="validation loss every N steps and at the end (0: only at the end)")
    p.add_argument("--eval-docs", type=int, default=None, metavar="N",
                   help="at most N validation documents per evaluation (default: all)")
    p.add_argument("--temperature", type=float, default=None,
                   help=f"sampling temperature, > 0 (default: {t.temperature}; on --resume: "
                        "the checkpoint's)")
    p.add_argument("--num-samples", type=int, default=None,
                   help=f"samples after training (default: {t.num_samples}; on --resume: "
                        "the checkpoint's)")
    p.add_argument("--save", metavar="PATH", default=None,
                   help="write a checkpoint (.npz) here at the end, and on Ctrl-C")
    p.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="also save every N steps (needs --save)")
    p.add_argument("--resume", metavar="PATH", default=None,
                   help="go on from this checkpoint (its config, weights, Adam state, step)")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop after this step (default: the last); the schedule still spans "
                        "--steps, so --resume goes on exactly")
    p.add_argument("--log-every", type=int, default=1, metavar="N",
                   help="print a step line every N steps (and always the last)")
    p.add_argument("--quiet", action="store_true",
                   help="print no training step lines (validation lines still print)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress line on stderr (it shows only on a terminal, after 2 s)")
    p.add_argument("--log-csv", metavar="PATH", default=None,
                   help="write step, loss, val_loss and elapsed seconds as CSV")
    p.add_argument("--plot-loss", metavar="PATH", default=None,
                   help="save a PNG of the training and validation loss (needs matplotlib)")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="write the run as one JSON object to PATH ('-': stdout, and the "
                        "text output goes to stderr)")
    return p


def check_args(args) -> None:
    check_at_least(("--log-every", args.log_every, 1), ("--eval-every", args.eval_every, 0),
                   ("--save-every", args.save_every, 0), ("--eval-docs", args.eval_docs, 1),
                   ("--stop-at", args.stop_at, 1))
    if args.save_every and not args.save:
        raise ValueError("--save-every needs --save PATH")
    for flag in ("json", "save", "log_csv", "plot_loss"):
        check_output("--" + flag.replace("_", "-"), getattr(args, flag),
                     image=flag == "plot_loss")
    if args.plot_loss:
        pyplot("--plot-loss")  # fail before training when matplotlib is missing
    if (args.resume or args.save) and args.engine != "compiled":
        raise ValueError("checkpoints (--save, --resume) need the compiled engine")


def make_trainer(args) -> Trainer:
    """A fresh trainer from the flags, or one restored by --resume."""
    given = {name: getattr(args, name) for name in MODEL_FLAGS + RUN_FLAGS
             if getattr(args, name) is not None}
    sampling = {name: getattr(args, name) for name in ("temperature", "num_samples")
                if getattr(args, name) is not None}  # free to change on --resume
    if not args.resume:
        config, tc = configs_from(given, threads=args.threads, **sampling)
        return Trainer(config, tc, data=args.data, engine=args.engine, kernel=args.kernel)
    ckpt = read_checkpoint(args.resume)
    saved = {**ckpt.config.to_dict(), **ckpt.train_config.to_dict()}
    conflicts = [f"--{name.replace('_', '-')} {value} (checkpoint: {saved[name]})"
                 for name, value in given.items() if value != saved[name]]
    if conflicts:
        raise ValueError(f"--resume {args.resume} was trained with other settings: "
                         + ", ".join(conflicts))
    ckpt.train_config = replace(ckpt.train_config, **sampling)
    return Trainer.from_checkpoint(ckpt, data=args.data, threads=args.threads, kernel=args.kernel)


class CsvLog:
    """step, loss, val_loss, elapsed_s rows, flushed as they come (tail -f works)."""

    def __init__(self, path: str | None):
        self.file = open(path, "w", newline="") if path else None
        if self.file:
            self.writer = csv.writer(self.file)
            self.writer.writerow(["step", "loss", "val_loss", "elapsed_s"])

    def steps(self, first_step: int, losses, t0: float, t1: float) -> None:
        if self.file:
            n = len(losses)
            for k, loss in enumerate(losses):
                # steps of one chunk share its time span evenly
                self.writer.writerow([first_step + k + 1, repr(float(loss)), "",
                                      f"{t0 + (t1 - t0) * (k + 1) / n:.6f}"])
            self.file.flush()

    def validation(self, step: int, loss: float, elapsed: float) -> None:
        if self.file:
            self.writer.writerow([step, "", repr(loss), f"{elapsed:.6f}"])
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


def run(args, out) -> dict:
    """Train and sample as the parsed args say, printing to out; returns the JSON record."""
    check_args(args)
    trainer = make_trainer(args)
    tc = trainer.train_config
    ds, val = trainer.dataset, trainer.val_dataset
    if val is None:
        print(f"num docs: {ds.num_docs}", file=out)
    else:
        print(f"num docs: {ds.num_docs + val.num_docs} ({ds.num_docs} train, "
              f"{val.num_docs} validation)", file=out)
    print(f"vocab size: {trainer.config.vocab_size}", file=out)
    print(f"num params: {trainer.config.num_params}", file=out)
    if val is None and (args.eval_every or args.eval_docs):
        raise ValueError("--eval-every and --eval-docs need --val-fraction > 0")
    steps, first_step = tc.steps, trainer.step
    stop_at = steps if args.stop_at is None else args.stop_at
    if not first_step <= stop_at <= steps:
        raise ValueError(f"--stop-at must be in {first_step}..{steps}, got {stop_at}")
    if args.resume:
        print(f"resuming {args.resume} at step {first_step} of {steps}", file=out)

    start = time.perf_counter()
    progress = Progress(sys.stderr, stop_at, first_step, enabled=not args.no_progress)
    log = CsvLog(args.log_csv)
    chunk_start = [start]

    def report(step0, losses):
        now = time.perf_counter()
        log.steps(step0, losses, chunk_start[0] - start, now - start)
        chunk_start[0] = now
        if not args.quiet:
            progress.clear()
            for k, loss in enumerate(losses):
                s = step0 + k + 1
                if s % args.log_every == 0 or s == steps:
                    print(f"step {s:4d} / {steps:4d} | loss {loss:.4f}", file=out)
            out.flush()
        progress.update(step0 + len(losses), float(losses[-1]))

    def evaluate():
        loss = trainer.evaluate(args.eval_docs)
        progress.clear()
        print(f"step {trainer.step:4d} / {steps:4d} | val loss {loss:.4f}", file=out)
        log.validation(trainer.step, loss, time.perf_counter() - start)
        chunk_start[0] = time.perf_counter()

    # Ctrl-C, SIGTERM and SIGHUP ask for a stop at the end of the chunk; the
    # checkpoint is still written, and a second signal quits at once
    stop = StopSignals(trainer.request_stop)
    with stop:
        train_until(trainer, stop_at, args, val, report, evaluate, progress, log)
        interrupted = trainer.step < stop_at or stop.signum is not None
        if val is not None and not interrupted and trainer.step > first_step and not (
                trainer.val_steps and trainer.val_steps[-1] == trainer.step):
            evaluate()
        log.close()
        if args.save:
            trainer.save(args.save)
        interrupted = trainer.step < stop_at or stop.signum is not None
    if args.plot_loss:
        plot_loss(args.plot_loss, trainer.losses, trainer.val_steps, trainer.val_losses)
    if interrupted:
        print(f"interrupted at step {trainer.step} of {steps}"
              + (f"; saved {args.save}" if args.save else ""), file=sys.stderr)
        raise Stopped(stop.exit_code or 130)
    if args.save:
        print(f"saved checkpoint {args.save} (step {trainer.step})", file=out)

    print("\n--- inference (new, hallucinated names) ---", file=out)
    samples = trainer.sample()
    for i, name in enumerate(samples):
        print(f"sample {i + 1:2d}: {name}", file=out)

    trained = trainer.step - first_step
    seconds = trainer.train_seconds
    us_per_step = seconds / trained * 1e6 if trained else 0.0
    tokens_per_second = trainer.tokens_trained / seconds if seconds > 0 else float("inf")
    where = (f"{trainer.engine}" + (f"/{trainer.kernel}" if trainer.kernel else "")
             + f", {trainer.dtype}, {trainer.threads} thread{'s' if trainer.threads > 1 else ''}")
    print(f"trained {trained} steps in {seconds:.3f} s ({us_per_step:.1f} us/step, "
          f"{tokens_per_second / 1e6:.2f} M tokens/s; {where})", file=out)
    losses = trainer.losses
    return {
        "config": trainer.config.to_dict(),
        "train_config": tc.to_dict(),
        "data": trainer.data or "names.txt (bundled)",
        "engine": trainer.engine,
        "kernel": trainer.kernel,
        "dtype": trainer.dtype,
        "threads": trainer.threads,
        "num_docs": ds.num_docs,
        "num_val_docs": val.num_docs if val is not None else 0,
        "num_params": trainer.config.num_params,
        "first_step": first_step,
        "step": trainer.step,
        "final_loss": float(losses[-1]) if len(losses) else None,
        "losses": losses.tolist(),
        "val_steps": trainer.val_steps,
        "val_losses": trainer.val_losses,
        "train_seconds": seconds,
        "us_per_step": us_per_step,
        "us_per_doc": us_per_step / tc.batch_size,
        "tokens_trained": trainer.tokens_trained,
        "tokens_per_second": tokens_per_second,
        "samples": samples,
    }


class Stopped(Exception):
    """The run ended early: diverged (exit 1, with its message) or stopped by a signal."""

    def __init__(self, code: int, message: str = ""):
        super().__init__(message)
        self.code = code


def train_until(trainer, stop_at, args, val, report, evaluate, progress, log) -> None:
    """Train to stop_at, evaluating and saving at their intervals; returns early
    when a stop was requested. Divergence becomes Stopped(1) naming the step."""
    try:
        while trainer.step < stop_at:
            boundary = stop_at
            for every in (args.eval_every, args.save_every):
                if every:
                    boundary = min(boundary, (trainer.step // every + 1) * every)
            trainer.train(boundary - trainer.step, on_chunk=report)
            if trainer.step < boundary:
                return  # a stop signal
            if val is not None and args.eval_every and trainer.step % args.eval_every == 0:
                evaluate()
            if args.save_every and trainer.step % args.save_every == 0 and trainer.step < stop_at:
                trainer.save(args.save)
    except TrainingDiverged as exc:
        progress.clear()
        log.close()
        kept = (f"; the last checkpoint, {args.save}, is kept" if args.save
                and os.path.exists(args.save) else "")
        raise Stopped(1, f"error: {exc}: training diverged (try a lower --learning-rate)"
                         f"{kept}") from None
    finally:
        progress.clear()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: command(args))


def command(args) -> int:
    """run(), then the JSON record where --json asks for it; returns the exit code."""
    stdout = ClosedReaderSafe(sys.stdout)  # a reader that leaves costs no files
    out = sys.stderr if args.json == "-" else stdout
    try:
        record = run(args, out)
    except Stopped as exc:
        if str(exc):
            print(exc, file=sys.stderr)
        return exc.code
    if args.json == "-":
        json.dump(record, stdout)
        stdout.write("\n")
        stdout.flush()
    elif args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
