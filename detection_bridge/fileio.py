"""The repository's one way to write a file, and JSON reading with errors that name the file.

Every output (crop-cache indexes, synthetic data, and through ``lowres._atomic`` every checkpoint, metrics
file, config.yaml, report, plot and rescored result of ``lowres``) is written by :func:`atomic_path`:

1. a temporary file in the destination folder (``.NAME.PID.XXXX.tmp``: the writer's pid lets
   :func:`remove_stale_temporaries` delete those of killed processes without touching a live writer's),
2. ``fsync`` of its content, 3. ``os.replace`` onto the target (atomic on POSIX), 4. ``fsync`` of the
folder, so that the rename itself survives a power cut.

A reader (or a crashed run) sees the old file or the new one, never half of one. Any ``OSError`` on the
way (ENOSPC, EDQUOT, EFBIG, EROFS, EACCES) is re-raised with the *target* path as its filename, so the
message a user sees names the file they asked for, not a temporary one; the temporary file is removed.
Binary outputs are serialised in memory first and written by :func:`atomic_write_bytes`: a full disk is
then a plain ``OSError`` raised by Python's ``write``, never a failure inside a C++ serialiser (which can
abort the process). JSON is strict: non-finite numbers become ``null``.

Folders (crop caches, decoded-image stores, the synthetic set) are published the same way: built in a
temporary sibling (:func:`building_folder`), then renamed into place whole (:func:`publish_folder`), so a
reader finds no folder or a complete one.

This lives in ``detection_bridge`` because ``lowres`` may import the bridge but never the reverse.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import MalformedFileError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "finite_json",
           "json_line", "read_json", "default_mode", "fsync_dir", "pid_alive", "remove_stale_temporaries",
           "exclusive_lock"]

_TEMP_RE = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """Permissions a plain ``open``/``mkdir`` would give (``mkstemp``/``mkdtemp`` make private ones)."""
    return (0o777 if directory else 0o666) & ~_current_umask()


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def building_folder(final: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh temporary sibling of ``final`` (``.NAME.XXXX.tmp``) to build a folder in; removed when the block
    fails. Hand it to :func:`publish_folder` at the block's end."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_folder(build: str | os.PathLike, final: str | os.PathLike, *, same: Callable[[Path], bool]) -> Path:
    """Rename the finished folder ``build`` onto ``final`` (one ``os.replace``: readers see no folder or a whole
    one), with the permissions a plain ``mkdir`` gives. A rename onto a filled folder fails rather than
    replaces: when ``same(final)`` says another process published the same content first, theirs is kept (it
    may be in use) and ``build`` removed; otherwise the error is raised."""
    build, final = Path(build), Path(final)
    os.chmod(build, default_mode(directory=True))
    try:
        os.replace(build, final)
    except OSError:
        if not same(final):
            raise
        shutil.rmtree(build, ignore_errors=True)
        return final
    fsync_dir(final.parent)
    return final


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` with the target ``path`` as its filename where it named nothing or a temporary file of it."""
    named = exc.filename is None or Path(os.fsdecode(exc.filename)).name.startswith(f".{path.name}.")
    if exc.errno is None or not named:
        return exc  # e.g. a parent folder that cannot be created: that folder is the one to name
    return type(exc)(exc.errno, exc.strerror, str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, default_mode())  # mkstemp creates 0600; give the file the permissions open() would
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as exc:
        raise _naming(exc, path) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; a full disk raises ``OSError`` naming ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def finite_json(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, +-Infinity) replaced by ``None``: strict JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(v) for v in data]
    return data


def json_line(data: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """Strict JSON text of ``data`` (see :func:`finite_json`), without a trailing newline."""
    return json.dumps(finite_json(data), indent=indent, sort_keys=sort_keys, allow_nan=False)


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = None,
                      sort_keys: bool = False) -> Path:
    """Write ``data`` as strict JSON (one trailing newline) to ``path`` atomically.

    The bridge writes its indexes with ``indent=1, sort_keys=True`` (stable, diffable files whose bytes
    feed no cache key of their own); lowres's metrics keep their insertion order.
    """
    return atomic_write_text(path, json_line(data, indent=indent, sort_keys=sort_keys) + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON") -> Any:
    """Read a JSON file, turning every failure into a :class:`MalformedFileError` naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise MalformedFileError(str(path), None, "missing_file", f"{what} file not found") from None
    except OSError as e:
        raise MalformedFileError(str(path), None, "unreadable_file", f"cannot read {what}: {e}") from None
    except json.JSONDecodeError as e:
        raise MalformedFileError(str(path), None, "malformed_json",
                                 f"malformed {what}: {e.msg} at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise MalformedFileError(str(path), None, "malformed_json", f"{what} is not UTF-8 text: {e}") from None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 probes without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder`` (their pid is gone); return them."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_RE.match(entry.name)
        if match and entry.is_file() and not pid_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, *, wait: bool = True) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` body; yields its fd.

    The kernel drops the lock when its holder dies (even by SIGKILL), so a file left by a dead process is
    simply taken over. The file is removed on release while still locked; a waiter that had opened the old
    file notices (its inode is no longer the path's) and locks the current one, so at most one process ever
    holds it. ``wait=False`` raises :class:`BlockingIOError` at once when another process holds it.
    """
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # we locked a file its holder had just removed: lock the current one instead
    try:
        yield fd
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)  # closing releases the flock
