"""Figures: matplotlib is an optional extra (pip install -e ".[plot]")."""

from __future__ import annotations

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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
