"""An exclusive lock on an output folder, so two processes never write one run folder at the same time.

``fcntl.flock`` on ``FOLDER/.lock``: the kernel drops the lock when its holder dies (even by SIGKILL), so a
lock file left by a dead process is simply taken over; the file holds the holder's pid so that the error
can name it. The holder removes the file when it is done (see :func:`folder_lock` for why that is safe).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from detection_bridge.fileio import exclusive_lock

from .errors import FolderLockedError

__all__ = ["FolderLockedError", "folder_lock", "LOCK_NAME"]

LOCK_NAME = ".lock"


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return f"process {text}" if text.isdigit() else "another process"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold ``FOLDER/.lock`` exclusively for the ``with`` body; raise :class:`FolderLockedError` if held.

    The lock itself is :func:`detection_bridge.fileio.exclusive_lock` (removed on exit, safe against a
    waiter that opened the old file); here it fails at once, naming the holder.
    """
    path = Path(folder) / LOCK_NAME
    with contextlib.ExitStack() as held:
        try:
            fd = held.enter_context(exclusive_lock(path, wait=False))
        except BlockingIOError:
            raise FolderLockedError(f"{folder} is in use by {_holder(path)} (another {what} writing there); wait "
                                    "for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
