"""Provenance: what made a run folder or checkpoint, so it explains itself later and elsewhere.

Recorded per invocation (a resumed run gets one entry per invocation): the command line and working directory,
the git commit of the code with a dirty flag, the versions of the packages that decide the numbers, the
absolute data folder and a SHA-256 fingerprint of its annotation (and detection) files, so that "the same
data" can be checked rather than assumed. Plain data only: it goes into ``provenance.json``, checkpoints
(``weights_only=True``) and the bench report.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

__all__ = ["git_state", "package_versions", "fingerprint_files", "annotation_files", "collect", "command_line"]

_PACKAGES = ("lowres", "torch", "torchvision", "numpy", "albumentations", "pycocotools", "pillow")


def git_state() -> dict[str, Any]:
    """``{"commit": sha or "unknown", "dirty": bool or None}`` of the source tree this code runs from."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit or "unknown", "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages behind the numbers (None where one is absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def fingerprint_files(paths: Iterable[str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """``{absolute path: {"sha256", "bytes"}}`` of each existing file (read in 1 MB blocks)."""
    out = {}
    for p in paths:
        path = Path(p).expanduser().resolve()
        if not path.is_file():
            continue
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out[str(path)] = {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}
    return out


def annotation_files(data_dir: str | os.PathLike, splits: Iterable[str], detections_file: str | None = None
                     ) -> list[Path]:
    """The label files of ``splits``: instances and detections JSON (COCO layout), the class-name mapping file
    (ImageNet layout; there the class folders themselves are the labels)."""
    from detection_bridge.imagefolder import MAPPING_FILES

    root = Path(data_dir)
    files = [root / name for name in MAPPING_FILES]
    for split in splits:
        files.append(root / "annotations" / f"instances_{split}.json")
        files += sorted((root / "detections").glob(f"*_{split}.json")) if (root / "detections").is_dir() else []
    if detections_file:
        files.append(Path(detections_file))
    return [f for f in dict.fromkeys(files) if f.is_file()]


def command_line(argv: list[str]) -> str:
    """``argv`` (the CLI's, which passes it in: only lowres.cli reads sys.argv) as one shell-quoted line, with
    the console script or ``python -m lowres.cli`` as the program name."""
    argv = list(argv)
    if argv and Path(argv[0]).name == "lowres":
        argv[0] = "lowres"
    elif argv and argv[0].endswith(os.path.join("lowres", "cli.py")):
        argv[0:1] = ["python", "-m", "lowres.cli"]
    return shlex.join(argv)


def collect(data_dir: str | os.PathLike | None, splits: Iterable[str] = (), *, detections_file: str | None = None,
            synthetic: bool = False, command: str | None = None) -> dict[str, Any]:
    """One invocation's provenance (see the module docstring); ``command``: the command line, if any."""
    data = Path(data_dir).expanduser().resolve() if data_dir is not None else None
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command or "python: lowres.training.train(...)",
            "cwd": os.getcwd(),
            "host": platform.node(), **git_state(), "versions": package_versions(),
            "data": {"path": str(data) if data else None, "synthetic": synthetic,
                     "files": fingerprint_files(annotation_files(data, splits, detections_file)) if data else {}}}
