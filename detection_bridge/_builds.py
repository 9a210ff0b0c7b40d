"""Safety of on-disk builds (crop caches, decoded-image stores): free space first, one builder per cache,
and the build folders of killed processes removed."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator

from .errors import CacheError

STALE_UNOWNED_SECONDS = 24 * 3600  # build folders of an older format (no owner pid): removed when this old


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_builds(cache_root: Path) -> list[Path]:
    """Remove build folders left by killed runs: this host's whose process is dead, and folders of the
    older format (no owner) untouched for a day. Returns what was removed."""
    removed, host = [], socket.gethostname()
    for path in cache_root.glob(".crops_*"):
        name = path.name
        if name.endswith(".build"):
            owner = name[:-len(".build")].rsplit(".", 1)[-1]
            owner_host, _, pid = owner.rpartition("-")
            stale = owner_host == host and pid.isdigit() and not _pid_alive(int(pid))
        else:
            try:
                stale = name.endswith(".tmp") and time.time() - path.stat().st_mtime > STALE_UNOWNED_SECONDS
            except OSError:
                stale = False
        if stale and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Fail before writing when ``needed`` bytes (plus 1% slack) exceed the free space under ``folder``."""
    free = shutil.disk_usage(folder).free
    if needed * 1.01 > free:
        raise CacheError(f"{folder}: not enough disk space for {what}: needs about {needed / 1e9:.2f} GB, "
                         f"{free / 1e9:.2f} GB free (free space or set another cache folder)")


@contextlib.contextmanager
def build_lock(root: Path, final: Path) -> Iterator[None]:
    """Hold ``.<cache>.lock`` (flock: released by the kernel if the holder dies) while building ``final``.

    Two runs started together on the same data would otherwise both decode everything and race to rename;
    the second now waits here and then finds the first one's cache. The file is removed on release; a
    waiter that locked the removed file (its inode is no longer the path's) tries again, so at most one
    process builds."""
    path = root / f".{final.name}.lock"
    try:
        root.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
    except OSError as e:
        raise CacheError(f"{path}: cannot lock the crop cache build: {e.strerror or e}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
