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


def _save(plt, fig, path: str, rect=(0, 0, 1, 1)) -> None:
    """Lay out (in rect, a fraction of the figure), write the PNG and close the
    figure, written or not."""
    try:
        fig.tight_layout(rect=rect)
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


def log_spaced(values) -> bool:
    """Whether sorted positive values are closer to a geometric than to an
    arithmetic progression (0.003, 0.01, 0.03; 16, 32, 64), so that a log axis
    spaces them evenly; two values when they span a factor of 10 or more."""
    xs = sorted(set(values))
    if len(xs) < 2 or xs[0] <= 0:
        return False
    if len(xs) == 2:
        return xs[1] >= 10 * xs[0]
    ratios = [b / a for a, b in zip(xs, xs[1:])]
    steps = [b - a for a, b in zip(xs, xs[1:])]
    return max(ratios) / min(ratios) < max(steps) / min(steps)


def _axis_value(v):
    """A setting's value as matplotlib places it: numbers as numbers, anything
    else (dtype, activation, on/off) as a category label."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return v


# a panel draws one line per combination of the other fields' values up to this
# many; past it (a random search) one line pools them, and says so
MAX_LINES = 8


def plot_sweep(path: str, results: list[dict], fields_: list[str], log_fields=()) -> None:
    """PNG of a sweep: one panel per swept field, the loss of every run (a point
    per seed) and the mean over seeds (a line, or a bar for categories) against
    the field, one line per value of the other swept fields; validation loss
    where the runs have it, else the tail loss. A log axis where the values are
    log-spaced (or drawn log-uniform: log_fields), ticks at the values swept."""
    plt = pyplot("--plot")
    from matplotlib.lines import Line2D
    ok = [r for r in results if r["status"] == "ok"]
    use_val = any(r["val_loss"] is not None for r in ok)
    loss_key = "val_loss" if use_val else "tail_loss"
    n = max(1, len(fields_))
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.6), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes[0], fields_):
        others = [f for f in fields_ if f != name]
        groups: dict[tuple, list[dict]] = {}
        for r in ok:
            key = tuple(_axis_value(r["setting"][f]) for f in others)
            groups.setdefault(key, []).append(r)
        pooled = len(groups) > MAX_LINES
        if pooled:
            groups = {(): ok}
        xs_all = [_axis_value(r["setting"][name]) for r in ok]
        categorical = any(isinstance(x, str) for x in xs_all)
        order = sorted(set(xs_all), key=lambda x: (isinstance(x, str), x))
        place = {x: i for i, x in enumerate(order)} if categorical else {x: x for x in order}
        handles = []
        ordered = sorted(groups.items(), key=lambda kv: str(kv[0]))
        for i, (key, runs) in enumerate(ordered):
            colour = colours[i % len(colours)]
            # side by side within a category, so that the groups' bars do not overlap
            dodge = (i - (len(ordered) - 1) / 2) * min(0.15, 0.6 / len(ordered))
            xs = [place[_axis_value(r["setting"][name])] + (dodge if categorical else 0)
                  for r in runs]
            ys = [r[loss_key] for r in runs]
            ax.plot(xs, ys, "o", color=colour, alpha=0.35, markersize=4)
            by_x: dict = {}
            for x, y in zip(xs, ys):
                by_x.setdefault(x, []).append(y)
            line = sorted((x, statistics.fmean(v)) for x, v in by_x.items())
            style = "_" if categorical else "-"
            ax.plot([p[0] for p in line], [p[1] for p in line], style, color=colour,
                    linewidth=1.8, markersize=18, markeredgewidth=2)
            label = ("every setting of " + ", ".join(others) + " pooled" if pooled and others
                     else ", ".join(f"{f}={v}" for f, v in zip(others, key)) or "mean")
            handles.append(Line2D([], [], color=colour, linewidth=1.8, label=label))
        generic = colours[0] if not others else "black"
        handles += [Line2D([], [], color=generic, linewidth=1.8,
                           label="mean over seeds" + (" (bar)" if categorical else " (line)")),
                    Line2D([], [], color=generic, marker="o", linestyle="", alpha=0.35,
                           markersize=4, label="one run (seed)")]
        if not others:  # one line: the generic entries say it all
            handles = handles[-2:]
        if categorical:
            ax.set_xticks(range(len(order)), [str(x) for x in order])
            ax.set_xlim(-0.5, len(order) - 0.5)
        else:
            from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator
            log = name in log_fields or log_spaced(order)
            if log:
                ax.set_xscale("log")
            integers = all(isinstance(x, int) for x in order)
            if len(order) <= 10:  # a grid: a tick at each value swept, and only there
                ax.set_xticks(order, [str(x) if integers else f"{x:g}" for x in order])
                ax.xaxis.set_minor_locator(NullLocator())
            elif log:  # draws: ticks at 1, 2 and 5 of each decade, written plainly
                ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_locator(NullLocator())
            elif integers:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(name)
        ax.set_ylabel("validation loss" if use_val
                      else "tail loss (mean of the last tenth of the steps)")
        ax.grid(True, alpha=0.3)
        ax.legend(handles=handles, fontsize=8)
    fig.suptitle(f"microgpt_fast sweep: {len(ok)} runs")
    _save(plt, fig, path)


# one hue per kernel variant, from the slowest to the fastest
VARIANT_COLOURS = {"novec": "tab:gray", "generic": "tab:blue", "avx2": "tab:green",
                   "avx512": "tab:red"}
# solid for 1 thread, a dash pattern per larger count
THREAD_STYLES = {1: "-", 2: "--", 4: "-.", 8: ":"}


def plot_bench(path: str, rows: list) -> None:
    """PNG of the bench: microseconds per document and speedup over the
    reference against n_embd, a line per kernel variant (one hue each) and
    thread count (solid for 1 thread, dashed for more) in the throughput mode,
    and a star per variant for the exact float64 mode (batch 1); rows timed
    beside a competitor (--busy) are left out. rows: bench.Row records."""
    plt = pyplot("--plot")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    variants = list(dict.fromkeys(r.engine for r in rows if r.engine
                                  not in ("reference", "original")))
    colour = {v: VARIANT_COLOURS.get(v, colours[i % len(colours)])
              for i, v in enumerate(variants)}
    lines, exact = {}, {}
    for r in rows:
        if r.engine not in colour or r.busy:
            continue
        if r.batch == 1 and r.dtype == "float64":
            exact.setdefault(r.engine, []).append(r)
        else:
            lines.setdefault((r.engine, r.threads, r.n_layer), []).append(r)
    for (engine, threads, n_layer), rs in sorted(lines.items(),
                                                 key=lambda kv: (variants.index(kv[0][0]),
                                                                 kv[0][1], kv[0][2])):
        rs.sort(key=lambda r: r.n_embd)
        label = (f"{engine}, {threads} thread{'s' if threads > 1 else ''}"
                 + (f", {n_layer} layers" if n_layer > 1 else ""))
        style = dict(color=colour[engine], linestyle=THREAD_STYLES.get(threads, (0, (6, 2, 1, 2))),
                     marker="o" if n_layer == 1 else "s", markersize=4, label=label)
        ax1.plot([r.n_embd for r in rs], [r.us_per_doc for r in rs], **style)
        ax2.plot([r.n_embd for r in rs], [r.speedup_doc for r in rs], **style)  # NaN: a gap
    for engine, rs in exact.items():
        star = dict(color=colour[engine], marker="*", markersize=12, linestyle="",
                    markeredgecolor="black", markeredgewidth=0.5,
                    label=f"{engine}, exact mode (float64, batch 1, 1 thread)")
        ax1.plot([r.n_embd for r in rs], [r.us_per_doc for r in rs], **star)
        ax2.plot([r.n_embd for r in rs], [r.speedup_doc for r in rs], **star)
    widths = sorted({r.n_embd for r in rows if r.engine in colour})
    # without the reference (--reference-steps 0) there is no speedup to draw
    timed_reference = any(r.engine == "reference" for r in rows)
    for ax, what in ((ax1, "microseconds per document (lower is faster)"),
                     (ax2, "speedup per document (x reference)")):
        ax.set_xscale("log", base=2)
        if ax is ax1 or timed_reference:
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no speedup: the reference was not timed\n"
                    "(--reference-steps 0)", ha="center", va="center",
                    transform=ax.transAxes, color="dimgray")
            ax.set_yticks([])
        ax.minorticks_off()
        if widths:
            ax.set_xticks(widths, [str(w) for w in widths])
            ax.set_xlim(widths[0] / 1.3, widths[-1] * 1.3)
        ax.set_xlabel("n_embd")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    batch = next((r.batch for r in rows if r.batch > 1), None)
    dtype = next((r.dtype for r in rows if r.batch > 1), "float32")
    modes = ([f"lines: throughput mode ({dtype}, batch {batch})"] if batch else []) + (
        ["stars: exact mode (float64, batch 1, the original's run)"] if exact else [])
    # the legend below the panels, where it hides no point
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, max(1, len(labels))),
               fontsize=8, frameon=False)
    fig.suptitle("microgpt_fast bench: time per document by kernel variant and threads\n"
                 + "; ".join(modes), fontsize=11)
    rows_of_legend = -(-len(labels) // 3)
    _save(plt, fig, path, rect=(0, min(0.5, 0.05 + 0.045 * rows_of_legend), 1, 1))
