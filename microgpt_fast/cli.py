"""What the command-line tools share: a parser whose errors are one line, and the
checks of their flags that run before any work."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import fields

from .config import PRESETS, describe_preset, on_off


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless its help already says it or it has none."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default:" in text or default is None or default is False or default == []
                or default == argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit code 2, argparse's own) and no usage dump."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _switch(text: str) -> bool:
    """on_off for argparse: its message, not "invalid on_off value"."""
    try:
        return on_off(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_config_flags(parser: argparse.ArgumentParser, cls, skip=(), note: str = "") -> None:
    """One flag for each field of the config dataclass cls (--n-embd for n_embd),
    with the type, choices and help its declaration gives (config._field). The
    default is None, so that a command tells a flag given from one left out;
    the help names the field's default, then note."""
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = dict(f.metadata)
        text = flag.pop("help")
        kind = flag.pop("type", type(f.default))
        shown = flag.pop("shown", f.default)
        if kind is bool:  # a switch: --flag on / --flag off
            kind, shown = _switch, "on" if shown else "off"
            flag.setdefault("metavar", "{on,off}")
        if "choices" not in flag:
            flag.setdefault("metavar", kind.__name__.upper())
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None,
                            help=f"{text} (default: {shown}{note})", **flag)


def add_preset_flag(parser: argparse.ArgumentParser) -> None:
    """--preset NAME: a known recipe's settings (config.PRESETS), under any flag given."""
    recipes = "; ".join(f"{name}: {describe_preset(name)}" for name in PRESETS)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help=f"start from a known recipe's settings; flags given explicitly "
                             f"override it ({recipes})")


def given_fields(args, cls) -> dict:
    """The fields of cls whose flags were given (not None) in the parsed args."""
    return {f.name: getattr(args, f.name) for f in fields(cls)
            if getattr(args, f.name, None) is not None}


def check_at_least(*checks: tuple[str, int | None, int]) -> None:
    """ValueError for the first (flag, value, least) whose given value is below least."""
    for flag, value, least in checks:
        if value is not None and value < least:
            raise ValueError(f"{flag} must be >= {least}, got {value}")


class Stopped(Exception):
    """A command that ends early with its own exit code: 1 when training diverged
    (with the message to print), 128 + n when stop signal n ended it."""

    def __init__(self, code: int, message: str = ""):
        super().__init__(message)
        self.code = code


class Interrupted(BaseException):
    """A second stop signal (Ctrl-C, SIGTERM, SIGHUP): quit now; exit code 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP, while inside the with block, as a
    request to stop: the first calls on_stop() and is kept in .signum (the
    command finishes what it must, saves, and exits with exit_code); a second
    raises Interrupted at once, unless hold() was called: from then on signals
    are only noted, while the command writes what it has. A signal ignored when
    the block starts (nohup, a background job) stays ignored; outside the main
    thread nothing is installed."""

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self, on_stop=lambda: None):
        self.on_stop = on_stop
        self.signum: int | None = None
        self.holding = False
        self._previous = {}

    def _handle(self, signum, frame):
        first = self.signum is None
        if first:
            self.signum = signum
        if self.holding:
            return
        if not first:
            raise Interrupted(signum)
        self.on_stop()

    def hold(self) -> None:
        self.holding = True

    @property
    def exit_code(self) -> int | None:
        """128 + the first signal's number (130 for Ctrl-C), or None when none came."""
        return None if self.signum is None else 128 + self.signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in self.NAMES:
                num = getattr(signal, name, None)
                if num is not None and signal.getsignal(num) is not signal.SIG_IGN:
                    self._previous[num] = signal.signal(num, self._handle)
        return self

    def __exit__(self, *exc):
        for num, previous in self._previous.items():
            signal.signal(num, previous)
        self._previous = {}
        return False


class ClosedReaderSafe:
    """A text stream (standard output) that keeps the program going when its
    reader has gone (`| head`): the first BrokenPipeError points the file
    descriptor at /dev/null, and every later write succeeds there, so a run
    still trains, saves and writes its files."""

    def __init__(self, stream):
        self.stream = stream
        self.reader_gone = False

    def _gone(self) -> None:
        self.reader_gone = True
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def run_guarded(body) -> int:
    """body() -> exit code, with every command's failures mapped to theirs, each
    one `error:` line at most: bad input (ValueError and its kinds: DataError,
    KernelError, CheckpointError, ...), memory and file errors exit 2; Stopped
    exits with its code (1 diverged, 128 + n stopped by signal n); a reader that
    went away (`| head`) ends quietly with 0; Ctrl-C outside training exits 130,
    a second stop signal inside it 128 + its number."""
    try:
        return body()
    except Stopped as exc:
        if str(exc):
            print(exc, file=sys.stderr)
        return exc.code
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(f"error: out of memory: {str(exc) or 'not enough memory for this model and batch'}",
              file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Interrupted as exc:
        print(f"interrupted ({exc})", file=sys.stderr)
        return 128 + exc.signum
