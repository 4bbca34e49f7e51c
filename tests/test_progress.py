"""The progress line: drawn in place on a terminal after a delay, never into a pipe.

Unit tests drive progress.StatusLine (the line any command draws) and
progress.Progress (training's) with a fake terminal and a fake clock; the
command-line tests run training with stderr on a pipe or on a pseudo-terminal
(the sweep's are in test_sweep.py).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from microgpt_fast.progress import Progress, StatusLine, format_seconds

from helpers import cli_env, interrupt_training, run_on_tty

CLEAR = "\r\033[K"


class FakeStream:
    """A stream that records what is written and says whether it is a terminal."""

    def __init__(self, tty: bool = True):
        self.text, self.tty = "", tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.tty


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_nothing_before_the_delay_then_one_line():
    stream, clock = FakeStream(), FakeClock()
    p = Progress(stream, total=1000, clock=clock)
    assert p.enabled
    clock.t = 101.9
    p.update(50, 2.5)
    assert stream.text == ""
    p.clear()  # nothing shown: nothing to erase
    assert stream.text == ""

    clock.t = 102.0  # 2 s after the start: 100 steps at 50 steps/s, 900 to go
    p.update(100, 2.0)
    assert stream.text.startswith(CLEAR) and "\n" not in stream.text
    line = stream.text[len(CLEAR):]
    for part in ("step 100/1000", "50 steps/s", "loss 2.0000", "avg 2.4750", "ETA 0:00:18"):
        assert part in line, (part, line)
    assert line == "step 100/1000 | 50 steps/s | loss 2.0000 (avg 2.4750) | ETA 0:00:18"


def test_redraws_at_most_every_interval_and_clear_erases():
    stream, clock = FakeStream(), FakeClock()
    p = Progress(stream, total=400, clock=clock)
    clock.t = 104.0
    p.update(200, 1.5)
    drawn = stream.text
    assert "step 200/400" in drawn and "ETA 0:00:04" in drawn
    clock.t = 104.05  # within the 0.1 s interval: no redraw
    p.update(210, 1.4)
    assert stream.text == drawn
    clock.t = 104.2
    p.update(300, 1.4)
    assert stream.text.count(CLEAR) == 2 and stream.text.endswith("ETA 0:00:01")
    p.clear()
    assert stream.text.endswith("ETA 0:00:01" + CLEAR)
    p.clear()  # erased already: nothing more
    assert stream.text.endswith("ETA 0:00:01" + CLEAR)


def test_rate_counts_from_first_step():
    """A resumed run: the rate and ETA count only the steps of this run."""
    stream, clock = FakeStream(), FakeClock()
    p = Progress(stream, total=1000, first_step=500, clock=clock)
    clock.t = 104.0
    p.update(600, 2.0)
    assert "step 600/1000 | 25 steps/s" in stream.text and "ETA 0:00:16" in stream.text


def test_non_finite_loss_keeps_the_average():
    stream, clock = FakeStream(), FakeClock()
    p = Progress(stream, total=10, clock=clock, delay=0.0)
    p.update(1, 3.0)
    clock.t += 1
    p.update(2, float("nan"))
    assert "avg 3.0000" in stream.text


@pytest.mark.parametrize("stream, enabled", [(FakeStream(tty=False), True),
                                             (FakeStream(tty=True), False),
                                             (object(), True)],
                         ids=["not-a-terminal", "disabled", "no-isatty"])
def test_off_when_not_a_terminal_or_disabled(stream, enabled):
    clock = FakeClock()
    p = Progress(stream, total=100, enabled=enabled, clock=clock)
    assert not p.enabled
    for k in range(1, 50):
        clock.t += 1.0
        p.update(k, 2.0)
    p.clear()
    assert getattr(stream, "text", "") == ""


def test_status_line_draws_each_text_at_once_cut_to_width():
    """The sweep's use: no delay, no interval, the caller's text as it is."""
    stream, clock = FakeStream(), FakeClock()
    line = StatusLine(stream, width=12, clock=clock)
    line.clear()  # nothing shown: nothing to erase
    assert stream.text == ""
    line.show("[1/3] 0.1 s")
    line.show("[2/3] 0.2 s | best 2.3000")
    assert stream.text == CLEAR + "[1/3] 0.1 s" + CLEAR + "[2/3] 0.2 s "
    line.clear()
    assert stream.text.endswith("0.2 s " + CLEAR)


@pytest.mark.parametrize("stream, enabled", [(FakeStream(tty=False), True),
                                             (FakeStream(tty=True), False)],
                         ids=["not-a-terminal", "disabled"])
def test_status_line_off_when_not_a_terminal_or_disabled(stream, enabled):
    line = StatusLine(stream, enabled=enabled, clock=FakeClock())
    line.show("[1/3] 0.1 s")
    line.clear()
    assert not line.enabled and stream.text == ""


def test_format_seconds():
    assert format_seconds(0) == "0:00:00"
    assert format_seconds(3725.2) == "1:02:05"
    assert format_seconds(float("inf")) == "?"


# ---------------------------------------------------------------------------
# Through the command line

# the CLI with the progress line due at once (no 2 s delay, no redraw interval)
NO_DELAY = ("import functools, sys\n"
            "import microgpt_fast.train as train\n"
            "train.Progress = functools.partial(train.Progress, delay=0.0, interval=0.0)\n"
            "sys.exit(train.main(sys.argv[1:]))\n")
ARGS = ["--steps", "3000", "--quiet", "--num-samples", "0"]


def test_cli_progress_shows_on_a_terminal(tmp_path):
    """The control for the tests below: with the delay gone, a terminal gets the line."""
    code, err, out = run_on_tty([sys.executable, "-c", NO_DELAY, *ARGS], tmp_path)
    assert code == 0, err
    assert CLEAR.encode() in err
    assert re.search(rb"step \d+/3000 \| \d+ steps/s \| loss \d+\.\d{4} \(avg \d+\.\d{4}\) "
                     rb"\| ETA \d+:\d\d:\d\d", err), err
    assert "trained 3000 steps" in out


def test_cli_no_progress_on_a_terminal(tmp_path):
    code, err, out = run_on_tty([sys.executable, "-c", NO_DELAY, *ARGS, "--no-progress"],
                                tmp_path)
    assert code == 0, err
    assert err == b""
    assert "trained 3000 steps" in out


def test_cli_no_progress_into_a_pipe(tmp_path):
    result = subprocess.run([sys.executable, "-c", NO_DELAY, *ARGS], cwd=tmp_path,
                            env=cli_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "trained 3000 steps" in result.stdout


def test_cli_long_run_into_a_pipe_has_no_progress(tmp_path):
    """The real CLI, unpatched, for longer than its 2 s delay, stderr on a pipe."""
    code, _, stderr = interrupt_training(["--steps", "100000000", "--quiet", "--num-samples",
                                          "0"], tmp_path, 2.6)
    assert code == 130, stderr
    assert "\r" not in stderr and "steps/s" not in stderr and "\033" not in stderr
    assert re.fullmatch(r"interrupted at step \d+ of 100000000\n", stderr), stderr
