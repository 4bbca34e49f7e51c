"""Train microgpt and sample from it: the original's run, compiled.

    python -m microgpt_fast.train                      # the original: 1000 steps, 20 names
    python -m microgpt_fast.train --engine reference --steps 20
    python -m microgpt_fast.train --dtype float32 --batch-size 16 --threads 2 --quiet
    python -m microgpt_fast.train --json run.json      # config, losses, timings, samples
    python -m microgpt_fast.train --data shakespeare --n-embd 64 --n-layer 2 --block-size 64 \
        --batch-size 8 --dtype float32 --steps 2000 --eval-every 500 --save run.npz
    python -m microgpt_fast.train --data play.txt --data-format text --log-csv run.csv
    python -m microgpt_fast.train --resume run.npz --save run.npz   # go on where it stopped

With no arguments it prints what the original prints, line for line, then one
summary line with the training time (the training loop only). --data names
or shakespeare picks a bundled dataset, read in its own format (names: one
document a line; shakespeare: one stream of characters, trained in windows of
block-size + 1 characters, with the last tenth held out); a text run prints
one header line (characters of the train and validation parts, vocabulary
size, parameters) and samples --max-len characters (300) after --prompt (a
newline), each as a "--- sample i ---" block.

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
from .cli import (ClosedReaderSafe, Parser, Stopped, StopSignals, add_config_flags,
                  add_preset_flag, check_at_least, given_fields, run_guarded)
from .config import (GPTConfig, RunOptions, SampleConfig, TrainConfig, configs_from,
                     with_preset)
from .paths import check_output
from .plots import plot_loss, pyplot
from .progress import Progress
from .sampling import text_sample_block
from .trainer import Trainer, TrainingDiverged, tail_loss

ON_RESUME = "; on --resume: the checkpoint's"


def rate_text(tokens_per_second: float) -> str:
    """A training rate in the unit that shows its digits: M, k or plain tokens/s
    (the compiled engine trains millions a second, the reference tens)."""
    if tokens_per_second >= 1e6:
        return f"{tokens_per_second / 1e6:.2f} M tokens/s"
    if tokens_per_second >= 1e3:
        return f"{tokens_per_second / 1e3:.1f} k tokens/s"
    return f"{tokens_per_second:.1f} tokens/s"


def loss_plot_title(trainer: Trainer) -> str:
    """What the loss plot shows: the data, the model's size and shape, how it trained."""
    cfg, tc = trainer.config, trainer.train_config
    layers = f"{cfg.n_layer} layer" + ("s" if cfg.n_layer > 1 else "")
    return (f"training loss: {os.path.basename(trainer.data)} ({tc.data_format}), "
            f"{cfg.num_params:,} parameters\n"
            f"n_embd {cfg.n_embd}, {layers}, block {cfg.block_size}; "
            f"{trainer.dtype}, batch {tc.batch_size}")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m microgpt_fast.train",
               description="Train a character-level GPT (Karpathy's microgpt) and sample from it.")
    # the settings: left out on --resume, they take the checkpoint's values
    add_config_flags(p, GPTConfig, skip=("vocab_size",), note=ON_RESUME)
    add_config_flags(p, TrainConfig, note=ON_RESUME)
    add_preset_flag(p)
    add_config_flags(p, SampleConfig, note=ON_RESUME)
    add_config_flags(p, RunOptions, skip=("engine", "kernel", "threads", "adapt_threads"),
                     note=ON_RESUME)
    add_config_flags(p, RunOptions, skip=("data",))
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="validation loss every N steps and at the end (0: only at the end)")
    p.add_argument("--eval-docs", type=int, default=None, metavar="N",
                   help="at most N validation documents per evaluation; text: N windows at "
                        "fixed offsets (default: all documents, or the whole held-out text)")
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
    """Every flag that can be checked before any work (the settings check themselves)."""
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
    if (args.resume or args.save) and args.engine not in (None, "compiled"):
        raise ValueError("checkpoints (--save, --resume) need the compiled engine")


def make_trainer(args) -> Trainer:
    """A fresh trainer from the flags, or one restored by --resume: the settings
    given must then agree with the checkpoint's, field by field of GPTConfig and
    TrainConfig (so a new field is checked without a word here). A --preset's
    settings count as given, under the flags given explicitly."""
    given = with_preset(args.preset, {**given_fields(args, GPTConfig),
                                      **given_fields(args, TrainConfig)})
    sampling = given_fields(args, SampleConfig)  # free to change on --resume
    options = RunOptions(**given_fields(args, RunOptions))
    if not args.resume:
        model, train = configs_from(given)
        return Trainer(model, train, data=options.data, engine=options.engine,
                       kernel=options.kernel, threads=options.threads,
                       sampling=SampleConfig(**sampling), adapt_threads=options.adapt_threads)
    ckpt = read_checkpoint(args.resume)
    saved = {**ckpt.config.to_dict(), **ckpt.train_config.to_dict()}
    conflicts = [f"--{name.replace('_', '-')} {value} (checkpoint: {saved[name]})"
                 for name, value in given.items() if value != saved[name]]
    if conflicts:
        raise ValueError(f"--resume {args.resume} was trained with other settings: "
                         + ", ".join(conflicts))
    ckpt.sampling = replace(ckpt.sampling, **sampling)
    return Trainer.from_checkpoint(ckpt, data=options.data, threads=options.threads,
                                   kernel=options.kernel, adapt_threads=options.adapt_threads)


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


class TrainingRun:
    """One run of the command, in three parts: prepare (check the flags, build or
    restore the trainer, print the header), loop (train to --stop-at with the
    evaluations, saves and stop signals asked for), finish (save, plot, sample,
    summarize; the JSON record)."""

    def __init__(self, args, out):
        self.args, self.out = args, out

    def prepare(self) -> None:
        args, out = self.args, self.out
        check_args(args)
        trainer = self.trainer = make_trainer(args)
        ds, val = trainer.dataset, trainer.val_dataset
        if trainer.text_mode:  # one line of its own
            parts = "" if val is None else (f" ({ds.num_chars} train, {val.num_chars} "
                                            "validation)")
            print(f"num chars: {ds.num_chars + (val.num_chars if val else 0)}{parts}, vocab "
                  f"size: {trainer.config.vocab_size}, num params: "
                  f"{trainer.config.num_params}", file=out)
        else:  # the original's three lines
            if val is None:
                print(f"num docs: {ds.num_docs}", file=out)
            else:
                print(f"num docs: {ds.num_docs + val.num_docs} ({ds.num_docs} train, "
                      f"{val.num_docs} validation)", file=out)
            print(f"vocab size: {trainer.config.vocab_size}", file=out)
            print(f"num params: {trainer.config.num_params}", file=out)
        trainer.prompt_ids()  # a prompt it cannot sample from fails now, not after training
        if val is None and (args.eval_every or args.eval_docs):
            raise ValueError("--eval-every and --eval-docs need --val-fraction > 0")
        self.steps, self.first_step = trainer.train_config.steps, trainer.step
        self.stop_at = self.steps if args.stop_at is None else args.stop_at
        if not self.first_step <= self.stop_at <= self.steps:
            raise ValueError(f"--stop-at must be in {self.first_step}..{self.steps}, "
                             f"got {self.stop_at}")
        if args.resume:
            print(f"resuming {args.resume} at step {self.first_step} of {self.steps}", file=out)

    def loop(self) -> None:
        args, trainer = self.args, self.trainer
        self.start = self.chunk_start = time.perf_counter()
        self.progress = Progress(sys.stderr, self.stop_at, self.first_step,
                                 enabled=not args.no_progress)
        self.log = CsvLog(args.log_csv)
        # Ctrl-C, SIGTERM and SIGHUP ask for a stop at the end of the chunk; the
        # checkpoint is still written, and a second signal quits at once
        self.stop = StopSignals(trainer.request_stop)
        with self.stop:
            try:
                self._train_to_stop_at()
            finally:
                self.progress.clear()
            val_done = trainer.val_steps and trainer.val_steps[-1] == trainer.step
            if (trainer.val_dataset is not None and not self.interrupted
                    and trainer.step > self.first_step and not val_done):
                self._evaluate()
            self.log.close()
            if args.save:
                trainer.save(args.save)

    @property
    def interrupted(self) -> bool:
        return self.trainer.step < self.stop_at or self.stop.signum is not None

    def _train_to_stop_at(self) -> None:
        """Train to stop_at, evaluating and saving at their intervals; returns early
        when a stop was requested. Divergence becomes Stopped(1) naming the step."""
        args, trainer = self.args, self.trainer
        try:
            while trainer.step < self.stop_at:
                boundary = self.stop_at
                for every in (args.eval_every, args.save_every):
                    if every:
                        boundary = min(boundary, (trainer.step // every + 1) * every)
                trainer.train(boundary - trainer.step, on_chunk=self._report)
                if trainer.step < boundary:
                    return  # a stop signal
                if trainer.val_dataset is not None and args.eval_every and (
                        trainer.step % args.eval_every == 0):
                    self._evaluate()
                if (args.save_every and trainer.step % args.save_every == 0
                        and trainer.step < self.stop_at):
                    trainer.save(args.save)
        except TrainingDiverged as exc:
            self.log.close()
            kept = (f"; the last checkpoint, {args.save}, is kept" if args.save
                    and os.path.exists(args.save) else "")
            raise Stopped(1, f"error: {exc}: training diverged (try a lower --learning-rate)"
                             f"{kept}") from None

    def _report(self, step0: int, losses) -> None:
        """After each chunk: its CSV rows, its step lines, the progress line."""
        args, out = self.args, self.out
        now = time.perf_counter()
        self.log.steps(step0, losses, self.chunk_start - self.start, now - self.start)
        self.chunk_start = now
        if not args.quiet:
            self.progress.clear()
            for k, loss in enumerate(losses):
                s = step0 + k + 1
                if s % args.log_every == 0 or s == self.steps:
                    print(f"step {s:4d} / {self.steps:4d} | loss {loss:.4f}", file=out)
            out.flush()
        self.progress.update(step0 + len(losses), float(losses[-1]))

    def _evaluate(self) -> None:
        trainer = self.trainer
        loss = trainer.evaluate(self.args.eval_docs)
        self.progress.clear()
        print(f"step {trainer.step:4d} / {self.steps:4d} | val loss {loss:.4f}", file=self.out)
        self.log.validation(trainer.step, loss, time.perf_counter() - self.start)
        self.chunk_start = time.perf_counter()

    def finish(self) -> dict:
        args, out, trainer = self.args, self.out, self.trainer
        if args.plot_loss:
            plot_loss(args.plot_loss, trainer.losses, trainer.val_steps, trainer.val_losses,
                      title=loss_plot_title(trainer))
        if self.interrupted:
            print(f"interrupted at step {trainer.step} of {self.steps}"
                  + (f"; saved {args.save}" if args.save else ""), file=sys.stderr)
            raise Stopped(self.stop.exit_code or 130)
        if args.save:
            print(f"saved checkpoint {args.save} (step {trainer.step})", file=out)

        samples = trainer.sample()
        if samples:  # --num-samples 0: no header over nothing
            what = "text" if trainer.text_mode else "names"
            print(f"\n--- inference (new, hallucinated {what}) ---", file=out)
        for i, text in enumerate(samples):
            if trainer.text_mode:
                print(text_sample_block(i + 1, text), file=out)
            else:
                print(f"sample {i + 1:2d}: {text}", file=out)

        trained = trainer.step - self.first_step
        seconds = trainer.train_seconds
        timed = trained > 0 and seconds > 0  # resuming a finished run trains nothing
        us_per_step = seconds / trained * 1e6 if timed else None
        tokens_per_second = trainer.tokens_trained / seconds if timed else None
        where = (f"{trainer.engine}" + (f"/{trainer.kernel}" if trainer.kernel else "")
                 + f", {trainer.dtype}, {trainer.threads} "
                 + ("threads" if trainer.threads > 1 else "thread"))
        if timed:
            print(f"trained {trained} steps in {seconds:.3f} s ({us_per_step:.1f} us/step, "
                  f"{rate_text(tokens_per_second)}; {where})", file=out)
        else:
            print(f"trained 0 steps ({where})", file=out)
        losses = trainer.losses
        ds, val = trainer.dataset, trainer.val_dataset
        if trainer.text_mode:
            sizes = {"num_chars": ds.num_chars,
                     "num_val_chars": val.num_chars if val is not None else 0}
        else:
            sizes = {"num_docs": ds.num_docs,
                     "num_val_docs": val.num_docs if val is not None else 0}
        return {
            "config": trainer.config.to_dict(),
            "train_config": trainer.train_config.to_dict(),
            "sample_config": trainer.sampling.to_dict(),
            "data": trainer.data,
            "data_format": trainer.train_config.data_format,
            "engine": trainer.engine,
            "kernel": trainer.kernel,
            "dtype": trainer.dtype,
            "threads": trainer.threads,
            **sizes,
            "num_params": trainer.config.num_params,
            "first_step": self.first_step,
            "step": trainer.step,
            "final_loss": float(losses[-1]) if len(losses) else None,
            "tail_loss": tail_loss(losses),
            "losses": losses.tolist(),
            "val_steps": trainer.val_steps,
            "val_losses": trainer.val_losses,
            "train_seconds": seconds,
            "us_per_step": us_per_step,
            "us_per_doc": (us_per_step / trainer.train_config.batch_size if timed
                           else None),
            "tokens_trained": trainer.tokens_trained,
            "tokens_per_second": tokens_per_second,
            "samples": samples,
        }


def run(args, out) -> dict:
    """Train and sample as the parsed args say, printing to out; returns the JSON record."""
    training = TrainingRun(args, out)
    training.prepare()
    training.loop()
    return training.finish()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: command(args))


def command(args) -> int:
    """run(), then the JSON record where --json asks for it; returns the exit code
    (the failures every command shares map to theirs in cli.run_guarded)."""
    stdout = ClosedReaderSafe(sys.stdout)  # a reader that leaves costs no files
    out = sys.stderr if args.json == "-" else stdout
    record = run(args, out)
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
