"""One line of progress, redrawn in place on stderr; training and sweeps both draw it.

    step 1200/5000 | 2350 steps/s | loss 2.3120 (avg 2.3544) | ETA 0:00:02   (train)
    [41/300] 3.2 s | 1 failed | best 2.3101 learning_rate=0.0112             (sweep)

StatusLine draws whatever text its caller gives; Progress is training's line.
The line stays silent when the stream is not a terminal (a log file or a pipe
gets no carriage returns), when disabled, and until `delay` seconds have passed
(training waits 2 s: short runs finish before it would help). Other output goes
through clear() first so that lines do not run into the display.
"""

from __future__ import annotations

import math
import time

CLEAR = "\r\033[K"  # back to the start of the line, erase to its end


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class StatusLine:
    """A line of text on a terminal, replaced by each show().

    stream: where to draw (sys.stderr); enabled: False turns it off entirely.
    delay: seconds before the first draw; interval: least seconds between draws;
    width: longest text drawn (a line that wraps leaves its first rows behind,
    since the carriage return goes back only to the start of the last).
    """

    def __init__(self, stream, enabled: bool = True, delay: float = 0.0,
                 interval: float = 0.0, width: int = 200, clock=time.monotonic):
        isatty = getattr(stream, "isatty", None)
        self.enabled = enabled and callable(isatty) and isatty()
        self.stream, self.delay, self.interval, self.width = stream, delay, interval, width
        self.clock = clock
        self.start = clock()
        self.last_draw = -math.inf
        self.shown = False

    def elapsed(self) -> float:
        """Seconds since the line was made."""
        return self.clock() - self.start

    def show(self, text: str) -> None:
        """Draw text in place of the line, unless disabled or not yet due (within
        the delay, or the interval since the last draw)."""
        if not self.enabled:
            return
        now = self.clock()
        if now - self.start < self.delay or now - self.last_draw < self.interval:
            return
        self.last_draw = now
        self.stream.write(CLEAR + text[:self.width])
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        """Erase the line (before other output, and at the end)."""
        if self.shown:
            self.stream.write(CLEAR)
            self.stream.flush()
            self.shown = False


class Progress(StatusLine):
    """Training's line: steps done out of total, their rate, the loss and its
    running mean, the ETA; nothing for the first 2 s, redrawn at most every 0.1 s."""

    def __init__(self, stream, total: int, first_step: int = 0, enabled: bool = True,
                 delay: float = 2.0, interval: float = 0.1, clock=time.monotonic):
        super().__init__(stream, enabled, delay, interval, clock=clock)
        self.total, self.first_step = total, first_step
        self.smoothed = None  # exponential moving average of the loss

    def update(self, step: int, loss: float) -> None:
        """Record that `step` steps are done and the last one's loss; redraw if due."""
        if not self.enabled:
            return
        if math.isfinite(loss):
            self.smoothed = loss if self.smoothed is None else 0.95 * self.smoothed + 0.05 * loss
        elapsed = self.elapsed()
        done = step - self.first_step
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else math.inf
        smoothed = f"{self.smoothed:.4f}" if self.smoothed is not None else "?"
        self.show(f"step {step}/{self.total} | {rate:.0f} steps/s | loss {loss:.4f} "
                  f"(avg {smoothed}) | ETA {format_seconds(eta)}")
