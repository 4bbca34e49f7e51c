"""What may be read and written: every input is a regular file, every output
path is checked before the work that fills it.

    >>> from microgpt_fast.paths import check_output, read_regular
    >>> check_output("--save", "run.npz")              # doctest: +SKIP
    >>> check_output("--plot", "loss.xyz", image=True)  # doctest: +SKIP
    Traceback (most recent call last):
    ValueError: --plot loss.xyz: unknown image format '.xyz' (choose from .eps, .jpeg, ...)

Inputs (data files, checkpoints) are opened without blocking and refused
unless they are regular files: a FIFO would wait for a writer forever and a
device such as /dev/zero never ends. Standard input ('-', /dev/stdin) is
refused for the same reason.

Outputs may not be directories, devices or FIFOs, and their folder must exist
and be writable. A symlink is followed: the file it points to is replaced and
the link stays (checkpoints are written next to that file and renamed over it).
"""

from __future__ import annotations

import errno
import os
import stat

# Suffixes matplotlib's Agg canvas writes (FigureCanvasAgg.get_supported_filetypes)
IMAGE_SUFFIXES = (".eps", ".jpeg", ".jpg", ".pdf", ".pgf", ".png", ".ps", ".raw", ".rgba",
                  ".svg", ".svgz", ".tif", ".tiff", ".webp")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def refuse_stdin(path: str, what: str, error=ValueError) -> None:
    """error when path names standard input, which is never a regular file."""
    if os.fspath(path) in ("-", "/dev/stdin"):
        raise error(f"{what} must be a regular file, not standard input: {path}")


def open_regular(path: str, what: str, error=ValueError):
    """A binary file object for reading path, or error(one line) when path is
    missing, unreadable, or not a regular file. Never blocks on a FIFO."""
    refuse_stdin(path, what, error)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} is a directory, not a file: {path}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _kind(mode)
            kind = "" if kind == "not a regular file" else f" ({kind})"
            raise error(f"{what} is not a regular file{kind}: {path}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str, what: str, error=ValueError) -> bytes:
    """The whole content of a regular file (see open_regular)."""
    with open_regular(path, what, error) as f:
        try:
            return f.read()
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror}") from None


def check_output(flag: str, path: str | os.PathLike | None, image: bool = False) -> None:
    """ValueError (one line, naming flag and path) unless path can take an output
    file: not a directory (nor a name ending in '/'), not an existing device,
    FIFO or socket, in an existing writable folder; with image=True its suffix
    must name a format matplotlib writes. None and '-' (standard output) pass."""
    if path is None or path == "-":
        return
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{flag} needs a file name")
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        raise ValueError(f"{flag} {path}: names a directory, not a file")
    real = os.path.realpath(path)  # where the bytes go: a symlink's target
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise ValueError(f"{flag} {path}: {exc.strerror}") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise ValueError(f"{flag} {path}: exists and is {_kind(mode)}, not a regular file")
    folder = os.path.dirname(real)
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {path}: folder {os.path.dirname(path) or '.'} does not exist")
    if not os.access(folder, os.W_OK) or (mode is not None and not os.access(real, os.W_OK)):
        raise ValueError(f"{flag} {path}: {os.strerror(errno.EACCES).lower()}")
    if image:
        suffix = os.path.splitext(path)[1].lower()
        if not suffix:
            raise ValueError(f"{flag} {path}: no file suffix to name the image format "
                             f"(e.g. {os.path.basename(path)}.png)")
        if suffix not in IMAGE_SUFFIXES:
            raise ValueError(f"{flag} {path}: unknown image format {suffix!r} "
                             f"(choose from {', '.join(IMAGE_SUFFIXES)})")


def resolve_output(path: str | os.PathLike) -> str:
    """The file a write to path replaces: path itself, or the end of its symlinks."""
    return os.path.realpath(os.fspath(path))
