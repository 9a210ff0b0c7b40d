"""Where messages go: the console and a run's ``train.log`` (logging handlers), and progress bars.

Library modules log through ``logging.getLogger(__name__)`` under the ``lowres`` and ``detection_bridge``
loggers and never print. Only two places attach handlers: the CLI (:func:`setup_console`: stderr, drawn
around any tqdm bar so a note never splits a bar's line; ranks other than 0 show warnings only) and a
training run for its own folder (:func:`log_to_file`: every note of the run, time-stamped, appended to
``RUN/train.log``, which is one of the run's outputs like ``scalars.csv``, so it is written under Python
callers too). A note that would repeat for every run of one process (the synthetic-data note, TensorBoard
being off) is logged with ``extra=ONCE``: the console shows it once, each run's train.log still gets it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

__all__ = ["LOGGERS", "ONCE", "setup_console", "log_to_file", "stderr_is_tty", "progress_bar"]

LOGGERS = ("lowres", "detection_bridge")
ONCE = {"once": True}


def stderr_is_tty() -> bool:
    """Progress bars only make sense on a terminal: in a pipe or a log file they are ``\\r`` noise."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _ConsoleHandler(logging.Handler):
    """stderr through ``tqdm.write`` (clears the bars, prints, redraws them); ``ONCE`` notes once."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self._said: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if getattr(record, "once", False):
                if message in self._said:
                    return
                self._said.add(message)
            from tqdm import tqdm

            stream = sys.stderr  # as it is now: click's test runner swaps it
            tqdm.write(message, file=stream)
            stream.flush()  # in order with click.echo's output, and seen at once in a log file
        except Exception:  # logging's contract: a failing handler reports itself and never raises
            self.handleError(record)


def setup_console() -> None:
    """The CLI's console: INFO and up on stderr (rank 0 under torchrun; other ranks: warnings only).
    Idempotent: a second call (another command in the same process) replaces the first handler."""
    rank = int(os.environ.get("RANK", "0") or 0)
    handler = _ConsoleHandler(logging.INFO if rank == 0 else logging.WARNING)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


class _StampedFormatter(logging.Formatter):
    """Every line of a message time-stamped, as ``train.log`` has always been."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        return "\n".join(f"{stamp} {line}" for line in (record.getMessage().splitlines() or [""]))


@contextlib.contextmanager
def log_to_file(path: str | os.PathLike) -> Iterator[None]:
    """Append every INFO-and-up message of both packages to ``path`` while the block runs (a run's train.log)."""
    handler = logging.FileHandler(Path(path), encoding="utf-8")
    handler.setFormatter(_StampedFormatter())
    handler.setLevel(logging.INFO)
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:  # a Python caller that configured nothing
            logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)
        handler.close()


def progress_bar(enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on a terminal; elsewhere (pipes, log files, ``enabled=False``) a silent one."""
    from tqdm.auto import tqdm

    return tqdm(disable=not (enabled and stderr_is_tty()), dynamic_ncols=True, **kwargs)
