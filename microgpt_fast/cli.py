"""What the command-line tools share: an argument parser whose errors are one line."""

from __future__ import annotations

import argparse


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
