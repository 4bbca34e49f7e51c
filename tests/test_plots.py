"""Every figure in plots.py writes a PNG and closes its figure: pyplot keeps an
open figure alive, so a program that plots many times would grow without end.

The commands' tests check the files their --plot flags write; these call the
functions in-process, where the figures left open can be counted.
"""

from __future__ import annotations

import numpy as np
import pytest

from microgpt_fast import plots
from microgpt_fast.bench import Row

plt = pytest.importorskip("matplotlib.pyplot")

PNG = b"\x89PNG\r\n\x1a\n"


def sweep_results():
    runs = []
    for i, (rate, loss) in enumerate([(0.001, 2.6), (0.01, 2.3), (0.01, 2.4), (0.1, 2.9)]):
        runs.append({"id": i, "setting": {"learning_rate": rate, "dtype": "float64"},
                     "seed": i, "status": "ok", "tail_loss": loss, "val_loss": None,
                     "steps": 10, "seconds": 0.01, "error": None})
    runs.append({**runs[0], "id": 4, "status": "diverged", "tail_loss": None})
    return runs


def bench_rows():
    def row(engine, threads, n_embd, us_per_doc, batch=16, dtype="float32"):
        return Row(engine, dtype, threads, batch, n_embd, 1, 16, 10, batch * us_per_doc,
                   us_per_doc, 1e5, 1.0, 10.0, 100.0, 1000.0 / us_per_doc)
    return [row("reference", 1, 16, 1000.0, 1, "float64"), row("avx2", 1, 16, 12.0, 1, "float64"),
            row("generic", 1, 16, 40.0, 1, "float64"), row("generic", 1, 16, 20.0),
            row("avx2", 1, 16, 5.0), row("avx2", 1, 64, 40.0),
            row("avx2", 2, 16, 3.0), row("avx2", 2, 64, 22.0)]


FIGURES = {
    "loss": lambda path: plots.plot_loss(path, np.linspace(3.3, 2.2, 500), [100, 500],
                                         [2.8, 2.3]),
    "sweep": lambda path: plots.plot_sweep(path, sweep_results(),
                                           ["learning_rate", "dtype"], ["learning_rate"]),
    "bench": lambda path: plots.plot_bench(path, bench_rows()),
}


@pytest.mark.parametrize("name", FIGURES)
def test_figure_written_and_closed(tmp_path, name):
    plt.close("all")
    path = tmp_path / f"{name}.png"
    FIGURES[name](str(path))
    assert path.read_bytes()[:8] == PNG
    assert plt.get_fignums() == []


@pytest.mark.parametrize("name", FIGURES)
def test_figure_closed_when_the_file_cannot_be_written(tmp_path, name):
    plt.close("all")
    with pytest.raises(OSError):
        FIGURES[name](str(tmp_path / "missing-folder" / f"{name}.png"))
    assert plt.get_fignums() == []


@pytest.fixture
def kept_figure(monkeypatch):
    """The figure a plot function draws, kept open for the test to read."""
    kept = []
    monkeypatch.setattr(plots, "_save", lambda plt, fig, path, **layout: kept.append(fig))
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    yield kept
    monkeypatch.undo()
    plt.close("all")


def test_log_spaced():
    assert plots.log_spaced([0.003, 0.01, 0.03, 0.1])
    assert plots.log_spaced([16, 32, 64])
    assert plots.log_spaced([0.001, 0.1])
    assert not plots.log_spaced([16, 24, 32])
    assert not plots.log_spaced([1, 2])
    assert not plots.log_spaced([0.0, 0.5, 1.0])


def test_sweep_grid_axes_ticks_and_legend(kept_figure):
    """Log-spaced rates on a log axis, integer fields ticked at their values only,
    one line per value of the other field, named in a legend with the seeds."""
    runs = []
    for i, (rate, width, seed) in enumerate((r, w, s) for r in (0.003, 0.01, 0.03)
                                            for w in (16, 32, 64) for s in (1, 2)):
        runs.append({"id": i, "setting": {"learning_rate": rate, "n_embd": width},
                     "seed": seed, "status": "ok", "tail_loss": 2 + rate + width / 100 + seed,
                     "val_loss": None, "steps": 10, "seconds": 0.01, "error": None})
    plots.plot_sweep("unused.png", runs, ["learning_rate", "n_embd"])
    rate_ax, width_ax = kept_figure[0].axes
    assert rate_ax.get_xscale() == "log" and width_ax.get_xscale() == "log"
    assert [t.get_text() for t in width_ax.get_xticklabels()] == ["16", "32", "64"]
    assert list(width_ax.get_xticks(minor=True)) == []
    assert [t.get_text() for t in rate_ax.get_xticklabels()] == ["0.003", "0.01", "0.03"]
    legend = [t.get_text() for t in rate_ax.get_legend().get_texts()]
    assert legend == ["n_embd=16", "n_embd=32", "n_embd=64", "mean over seeds (line)",
                      "one run (seed)"]
    # the n_embd=16 line passes through the means over seeds 1 and 2
    line = next(ln for ln in rate_ax.get_lines() if ln.get_linestyle() == "-")
    assert list(line.get_ydata()) == pytest.approx([2 + r + 0.16 + 1.5
                                                    for r in (0.003, 0.01, 0.03)])


def test_bench_plot_one_hue_per_variant_and_the_exact_mode(kept_figure):
    plots.plot_bench("unused.png", bench_rows())
    fig = kept_figure[0]
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    one, two = lines["avx2, 1 thread"], lines["avx2, 2 threads"]
    assert one.get_color() == two.get_color() != lines["generic, 1 thread"].get_color()
    assert one.get_linestyle() == "-" and two.get_linestyle() == "--"
    star = lines["avx2, exact mode (float64, batch 1, 1 thread)"]
    assert star.get_marker() == "*" and list(star.get_ydata()) == [12.0]
    assert star.get_color() == one.get_color()
    assert "reference" not in " ".join(lines)
    # the legend sits below the panels, over no point
    assert ax.get_legend() is None and len(fig.legends) == 1


def test_loss_plot_title_names_the_data_and_the_model():
    from microgpt_fast import GPTConfig, TrainConfig, Trainer
    from microgpt_fast.train import loss_plot_title
    title = loss_plot_title(Trainer(GPTConfig(), TrainConfig(steps=2)))
    # the original's model: 4,192 parameters (its own printout)
    assert title.startswith("training loss: names (lines), 4,192 parameters")
    assert "n_embd 16, 1 layer, block 16; float64, batch 1" in title


def test_bench_plot_without_the_reference(kept_figure):
    """--reference-steps 0: no speedups (NaN), so the right panel says why it is
    empty instead of failing on a log scale of nothing."""
    rows = [r for r in bench_rows() if r.engine != "reference"]
    for r in rows:
        r.speedup_step = r.speedup_doc = float("nan")
    plots.plot_bench("unused.png", rows)
    right = kept_figure[0].axes[1]
    assert right.get_yscale() == "linear"
    assert "reference was not timed" in " ".join(t.get_text() for t in right.texts)
