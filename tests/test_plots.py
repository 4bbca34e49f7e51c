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
    def row(engine, threads, n_embd, us_per_doc):
        return Row(engine, "float32", threads, 16, n_embd, 1, 16, 10, 16 * us_per_doc,
                   us_per_doc, 1e5, 1.0, 10.0, 100.0, 1000.0 / us_per_doc)
    return [row("reference", 1, 16, 1000.0), row("avx2", 1, 16, 5.0), row("avx2", 1, 64, 40.0),
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
