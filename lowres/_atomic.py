"""Atomic outputs: write to a temporary file beside the target, fsync, ``os.replace`` (atomic on POSIX).

A reader (or a crashed run) sees the old file or the new one, never half of one. Every file lowres writes
goes through here: checkpoints, metrics, rescored results, exported models, reports. (detection_bridge has
its own copy in ``detection_bridge/_io.py``: it never imports lowres.)

Temporary names carry the writer's pid (``.NAME.PID.XXXX.tmp``) so that :func:`remove_stale_temporaries`
can delete those of killed processes without touching a live writer's. Binary outputs are serialised in
memory first and written by :func:`atomic_write_bytes`: a full disk is then a plain ``OSError`` (ENOSPC,
EFBIG) raised by Python's ``write``, never a failure inside a C++ serialiser (which can abort the process).
JSON is written without NaN/Infinity (not JSON): non-finite floats become ``null``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "finite_json", "json_line",
           "remove_stale_temporaries", "pid_alive"]

_TEMP_RE = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions open() would
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; a full disk raises ``OSError`` naming ``path``."""
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    return Path(path)


def finite_json(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, +-Infinity) replaced by ``None``: strict JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(v) for v in data]
    return data


def json_line(data: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of ``data`` (see :func:`finite_json`), without a trailing newline."""
    return json.dumps(finite_json(data), indent=indent, allow_nan=False)


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = None) -> Path:
    """Write ``data`` as strict JSON to ``path`` atomically."""
    return atomic_write_bytes(path, (json_line(data, indent=indent) + "\n").encode("utf-8"))


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
    removed = []
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
