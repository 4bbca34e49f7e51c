"""Every figure the commands draw, each a PNG: the training loss (train
--plot-loss), a sweep's loss against its fields (sweep --plot), the bench's
throughput by kernel variant (bench --plot).

matplotlib is an optional extra (pip install -e ".[plot]"): it is imported only
when a figure is asked for, and each figure is closed once written, since
pyplot keeps every open one alive.
"""

from __future__ import annotations

import statistics

import numpy as np


def pyplot(flag: str):
    """matplotlib.pyplot on the file-only Agg backend; a one-line ValueError naming
    the flag that asked for it when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError(f"{flag} needs matplotlib: pip install -e \".[plot]\"") from None
    return plt


def _save(plt, fig, path: str) -> None:
    """Lay out, write the PNG and close the figure, written or not."""
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def plot_loss(path: str, losses: np.ndarray, val_steps=(), val_losses=(),
              title: str = "microgpt_fast training loss") -> None:
    """PNG of the loss of every step (faint), its moving average, and the
    validation loss at the steps it was measured (steps count from 1)."""
    plt = pyplot("--plot-loss")
    steps = np.arange(1, len(losses) + 1)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (step)")
    window = max(1, min(len(losses) // 20, 200))
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color="tab:blue", linewidth=1.8,
                label=f"train (mean of {window} steps)")
    if len(val_steps):
        ax.plot(val_steps, val_losses, "o-", color="tab:orange", linewidth=1.8,
                markersize=3, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(plt, fig, path)


def plot_sweep(path: str, results: list[dict], fields_: list[str], log_fields=()) -> None:
    """PNG of a sweep: the loss of every run (dots) and the mean per value (line)
    against each swept field; validation loss where the runs have it."""
    plt = pyplot("--plot")
    ok = [r for r in results if r["status"] == "ok"]
    use_val = any(r["val_loss"] is not None for r in ok)
    loss_key = "val_loss" if use_val else "final_loss"
    fig, axes = plt.subplots(1, max(1, len(fields_)), figsize=(4.5 * max(1, len(fields_)), 4),
                             squeeze=False)
    for ax, name in zip(axes[0], fields_):
        xs = [r["setting"][name] for r in ok]
        ys = [r[loss_key] for r in ok]
        ax.plot(xs, ys, "o", alpha=0.4, markersize=4)
        means = {}
        for x, y in zip(xs, ys):
            means.setdefault(x, []).append(y)
        if not all(isinstance(x, str) for x in means):
            line = sorted((x, statistics.fmean(v)) for x, v in means.items())
            ax.plot([p[0] for p in line], [p[1] for p in line], "-", linewidth=1.5)
        numeric = [x for x in means if isinstance(x, (int, float))]
        if name in log_fields or (numeric and min(numeric) > 0
                                  and max(numeric) >= 20 * min(numeric)):
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("validation loss" if use_val else "final loss")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"microgpt_fast sweep: {len(ok)} runs")
    _save(plt, fig, path)


def plot_bench(path: str, rows: list) -> None:
    """PNG of the bench's throughput mode: microseconds per document and speedup
    over the reference against n_embd, one line per kernel variant and thread
    count; rows timed beside a competitor (--busy) are left out. rows: bench.Row
    records."""
    plt = pyplot("--plot")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    groups = {}
    for r in rows:
        if r.engine != "reference" and r.batch > 1 and not r.busy:
            groups.setdefault(f"{r.engine} {r.threads}t", []).append(r)
    for label, rs in sorted(groups.items()):
        rs.sort(key=lambda r: r.n_embd)
        ax1.plot([r.n_embd for r in rs], [r.us_per_doc for r in rs], "o-", label=label)
        ax2.plot([r.n_embd for r in rs], [r.speedup_doc for r in rs], "o-", label=label)
    for ax, what in ((ax1, "us per document"), (ax2, "speedup per document vs reference")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("n_embd")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("microgpt_fast: throughput mode by kernel variant and threads")
    _save(plt, fig, path)
