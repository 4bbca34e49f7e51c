"""A one-line progress display for long training runs, redrawn in place on stderr.

    step 1200/5000 | 2350 steps/s | loss 2.3120 (avg 2.3544) | ETA 0:00:02

It stays silent for the first couple of seconds (short runs finish before it
would help), when the stream is not a terminal (a log file or a pipe gets no
carriage returns), and when disabled. Other output goes through clear() first
so that lines do not run into the display.
"""

from __future__ import annotations

import math
import time


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Steps done out of total, their rate, the loss and its running mean, the ETA.

    stream: where to draw (sys.stderr); enabled: False turns it off entirely.
    delay: seconds before the first draw; interval: least seconds between draws.
    """

    def __init__(self, stream, total: int, first_step: int = 0, enabled: bool = True,
                 delay: float = 2.0, interval: float = 0.1, clock=time.monotonic):
        isatty = getattr(stream, "isatty", None)
        self.enabled = enabled and callable(isatty) and isatty()
        self.stream, self.total, self.first_step = stream, total, first_step
        self.delay, self.interval, self.clock = delay, interval, clock
        self.start = clock()
        self.last_draw = -math.inf
        self.smoothed = None  # exponential moving average of the loss
        self.shown = False

    def update(self, step: int, loss: float) -> None:
        """Record that `step` steps are done and the last one's loss; redraw if due."""
        if not self.enabled:
            return
        if math.isfinite(loss):
            self.smoothed = loss if self.smoothed is None else 0.95 * self.smoothed + 0.05 * loss
        now = self.clock()
        elapsed = now - self.start
        if elapsed < self.delay or now - self.last_draw < self.interval:
            return
        self.last_draw = now
        done = step - self.first_step
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else math.inf
        smoothed = f"{self.smoothed:.4f}" if self.smoothed is not None else "?"
        line = (f"step {step}/{self.total} | {rate:.0f} steps/s | loss {loss:.4f} "
                f"(avg {smoothed}) | ETA {format_seconds(eta)}")
        self.stream.write("\r\033[K" + line)
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        """Erase the display (before other output, and at the end)."""
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False
