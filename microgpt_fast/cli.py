"""What the command-line tools share: a parser whose errors are one line, and the
checks of their flags that run before any work."""

from __future__ import annotations

import argparse
import os
import sys


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


def check_at_least(*checks: tuple[str, int | None, int]) -> None:
    """ValueError for the first (flag, value, least) whose given value is below least."""
    for flag, value, least in checks:
        if value is not None and value < least:
            raise ValueError(f"{flag} must be >= {least}, got {value}")


def check_writable(flag: str, path: str | None) -> None:
    """Fail before the work, not after it, when an output file cannot be written
    ('-' is standard output)."""
    if path in (None, "-"):
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{flag} path is a directory: {path}")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write {flag} file: {path}")


def run_guarded(body) -> int:
    """body() -> exit code, with the failures every command shares turned into one
    `error:` line: bad input (ValueError and its kinds: DataError, KernelError,
    CheckpointError, ...), memory and file errors exit 2; a reader that went away
    (`| head`) ends quietly with 0; Ctrl-C outside training exits 130."""
    try:
        return body()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(f"error: {exc or 'not enough memory for this model and batch size'}",
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
