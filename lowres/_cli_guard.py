"""The CLI's one error policy: expected failures are one or two lines, unexpected ones a crash log.

Expected failures are the ones a user can fix: the project's own errors (:mod:`lowres.errors`: a bad or
damaged input file, a config value out of range, a missing device, a run folder in use, a diverged or
interrupted training) and a full, read-only or forbidden disk (the path and the reason). They end with the
error's exit code (1; 2 for usage and config mistakes, as click's own; 130 for Ctrl-C), never with a
traceback; no command catches exceptions itself. Anything else is a bug: its traceback goes to a log file
whose path is printed, so the terminal shows one line and the report loses nothing.

Output paths are checked when the options are parsed (:func:`writable_dir`, :func:`writable_file`), before
any data is read or any file created, so a wrong ``--out`` costs nothing.
"""
from __future__ import annotations

import datetime
import errno
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import click

from ._atomic import atomic_write_text

__all__ = ["GuardedGroup", "describe", "write_crash_log", "writable_dir", "writable_file", "check_writable_dir"]

_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free some space and run the command again (a run continues with --resume)",
    errno.EDQUOT: "the disk quota is exhausted: free some space and run the command again",
    errno.EFBIG: "file too large for this file system or for the process's file size limit (ulimit -f)",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.EACCES: "permission denied: choose a location you may write, or fix its permissions",
    errno.EPERM: "operation not permitted here: choose another location",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "this is a folder where a file is expected",
    errno.ENOENT: "no such file or folder",
}


def _os_message(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "<unknown file>"
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = exc.strerror or type(exc).__name__
    hint = _OS_HINTS.get(exc.errno)
    return f"{where}: {reason}" + (f"\n  {hint}" if hint else "")


def describe(exc: BaseException) -> tuple[str, int] | None:
    """``(message, exit code)`` for an expected failure, ``None`` for a bug.

    Expected: the project's own errors (one base, :class:`detection_bridge.errors.ExpectedError`, which carries
    its exit code) and what the environment does to a correct program (a disk, memory, a file that is not
    text). A bare ``ValueError``, ``KeyError`` ... is a bug, however plain its message."""
    import torch
    import yaml

    from detection_bridge.errors import ExpectedError

    if isinstance(exc, ExpectedError):  # with the context callers added on the way (exception notes)
        return "\n  ".join([str(exc), *getattr(exc, "__notes__", [])]), exc.exit_code
    if isinstance(exc, OSError):
        return _os_message(exc), 1
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return (f"out of memory: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}\n  lower the batch "
                "size (--batch-size, --chunk-size, train.batch_size) or use a smaller model"), 1
    if isinstance(exc, yaml.YAMLError):
        return f"malformed YAML: {exc}", 2
    if isinstance(exc, UnicodeDecodeError):
        return f"an input file is not UTF-8 text ({exc.reason} at byte {exc.start})", 1
    return None


def write_crash_log(exc: BaseException) -> Path | None:
    """Write the traceback of an unexpected error to a log file and return its path (None if that fails too)."""
    folder = Path(os.environ.get("LOWRES_LOG_DIR") or Path(tempfile.gettempdir()) / "lowres-logs")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = folder / f"crash-{stamp}-{os.getpid()}.log"
    from . import __version__

    text = (f"lowres {__version__}, python {sys.version.split()[0]}\ncommand: {' '.join(sys.argv)}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        atomic_write_text(path, text)
    except OSError:
        return None
    return path


class GuardedGroup(click.Group):
    """A click group whose commands never end in a traceback (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # the one place that turns every error into a message
            known = describe(exc)
            if known is not None:
                message, code = known
                click.echo(f"Error: {message}", err=True)
                ctx.exit(code)
            log = write_crash_log(exc)
            where = f"the traceback is in {log}" if log else "the traceback could not be written to a log file"
            click.echo(f"Error: internal error ({type(exc).__name__}: {str(exc)[:200]}); {where}. "
                       "Please report it with that file.", err=True)
            ctx.exit(1)


def check_writable_dir(path: str | os.PathLike) -> None:
    """Raise ``OSError`` if a folder could not be created or written at ``path`` (nothing is created).

    The nearest existing ancestor must be a writable folder on a writable file system (``os.access`` alone
    misses a read-only mount for root, hence ``statvfs``'s read-only flag too).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(path))
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder", str(path))
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(existing))


def _checked(param: click.Parameter, value: Any, check: Any) -> Any:
    if value is None:
        return value
    try:
        check(value)
    except OSError as exc:
        raise click.BadParameter(_os_message(exc), param=param) from None
    return value


def writable_dir(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """click callback: ``value`` can be (created and) written as a folder."""
    return _checked(param, value, check_writable_dir)


def writable_file(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """click callback: ``value`` can be written as a file (atomically: a temporary file beside it)."""

    def check(path: str) -> None:
        if Path(path).is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder", path)
        check_writable_dir(Path(path).parent)

    return _checked(param, value, check)
