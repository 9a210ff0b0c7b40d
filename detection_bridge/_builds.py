"""Safety of on-disk builds (crop caches, decoded-image stores): free space first, one builder per cache,
and the build folders of killed processes removed."""
from __future__ import annotations

import contextlib
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator

from .errors import CacheError
from .fileio import exclusive_lock, pid_alive

STALE_UNOWNED_SECONDS = 24 * 3600  # build folders of an older format (no owner pid): removed when this old


def remove_stale_builds(cache_root: Path) -> list[Path]:
    """Remove build folders left by killed runs: this host's whose process is dead, and folders of the
    older format (no owner) untouched for a day. Returns what was removed."""
    removed, host = [], socket.gethostname()
    for path in cache_root.glob(".crops_*"):
        name = path.name
        if name.endswith(".build"):
            owner = name[:-len(".build")].rsplit(".", 1)[-1]
            owner_host, _, pid = owner.rpartition("-")
            stale = owner_host == host and pid.isdigit() and not pid_alive(int(pid))
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
    the second now waits here (:func:`~detection_bridge.fileio.exclusive_lock`) and then finds the first
    one's cache."""
    path = root / f".{final.name}.lock"
    with contextlib.ExitStack() as held:
        try:
            root.mkdir(parents=True, exist_ok=True)
            held.enter_context(exclusive_lock(path))
        except OSError as e:
            raise CacheError(f"{path}: cannot lock the crop cache build: {e.strerror or e}") from None
        yield
