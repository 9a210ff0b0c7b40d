"""Atomic file writes and JSON reading with errors that name the file.

Everything the bridge writes goes to a temporary file in the destination folder first and is moved
into place with ``os.replace``, which is atomic on POSIX and Windows: a reader sees the old file or
the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import MalformedFileError


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """Permissions a plain ``open``/``mkdir`` would give (``mkstemp``/``mkdtemp`` make private ones)."""
    return (0o777 if directory else 0o666) & ~_current_umask()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """JSON counterpart of :func:`atomic_write_text` (sorted keys: stable, diffable files)."""
    return atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


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
