"""lowres's import point for the repository's one file-writing helper, :mod:`detection_bridge.fileio`.

Every file lowres writes (checkpoints, metrics, config.yaml, reports, plots, rescored results, exported
models) goes through it: temporary file in the destination folder, fsync, ``os.replace``, fsync of the
folder, an ``OSError`` naming the target on a full or read-only disk. It lives in the bridge because
``lowres`` may import ``detection_bridge`` and never the reverse; this module only re-exports it.
"""
from __future__ import annotations

from detection_bridge.fileio import (atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text,
                                     finite_json, json_line, pid_alive, read_json, remove_stale_temporaries)

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "finite_json",
           "json_line", "pid_alive", "read_json", "remove_stale_temporaries"]
