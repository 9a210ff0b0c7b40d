"""An exclusive lock on an output folder, so two processes never write one run folder at the same time.

``fcntl.flock`` on ``FOLDER/.lock``: the kernel drops the lock when its holder dies (even by SIGKILL), so a
lock file left by a dead process is simply taken over; the file holds the holder's pid so that the error
can name it. The holder removes the file when it is done (see :func:`folder_lock` for why that is safe).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

__all__ = ["FolderLockedError", "folder_lock", "LOCK_NAME"]

LOCK_NAME = ".lock"


class FolderLockedError(RuntimeError):
    """Another live process holds the folder's lock."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return f"process {text}" if text.isdigit() else "another process"


def _acquire(path: Path, folder: str | os.PathLike, what: str) -> int:
    """Open and flock ``path``; retried when the file was replaced meanwhile (its holder removed it)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderLockedError(f"{folder} is in use by {_holder(path)} (another {what} writing there); wait "
                                    "for it to finish or choose another --out") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # we locked a lock file its holder had just removed: lock the current one instead


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold ``FOLDER/.lock`` exclusively for the ``with`` body; raise :class:`FolderLockedError` if held.

    The file is removed on exit while still locked; a waiter that opened the old file notices (its inode
    is no longer the path's) and retries, so at most one process ever holds the folder.
    """
    path = Path(folder) / LOCK_NAME
    fd = _acquire(path, folder, what)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)  # closing releases the flock
