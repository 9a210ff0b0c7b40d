"""One check of a data folder for every command: which layouts and splits it holds, and one message per mistake.

``lowres train``, ``eval``, ``crops``, ``rescore`` and ``bench`` all pass their folder through
:func:`check_data_dir`, so the same wrong folder or split gives the same message everywhere, and that
message lists what *is* there (layouts and their splits) instead of only what is missing.

Layouts recognised:

- ``coco-mini``: ``annotations/instances_SPLIT.json`` and ``images/SPLIT/`` (what the bridge reads);
- ``image-folder``: ``SPLIT/<class>/<images>`` (torchvision's ImageFolder, ImageNet's train/<wnid>/*.JPEG),
  listed so that a user who points at one learns what the folder is.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import MalformedFileError

__all__ = ["COCO_LAYOUT", "describe_data_dir", "check_data_dir", "format_found"]

COCO_LAYOUT = "coco-mini"
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
_EXPECTED = "annotations/instances_SPLIT.json and images/SPLIT/"


def _coco_splits(root: Path) -> list[str]:
    ann = root / "annotations"
    if not ann.is_dir():
        return []
    return sorted(p.stem[len("instances_"):] for p in ann.glob("instances_*.json"))


def _has_image(folder: Path) -> bool:
    try:
        return any(p.suffix.lower() in _IMAGE_SUFFIXES for p in folder.iterdir())
    except OSError:
        return False


def _image_folder_splits(root: Path) -> list[str]:
    """Subfolders whose first class folder holds images (a cheap look: large trees are not walked)."""
    splits = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in {"annotations", "images"}):
        classes = sorted(p for p in sub.iterdir() if p.is_dir())[:1]
        if classes and _has_image(classes[0]):
            splits.append(sub.name)
    return splits


def describe_data_dir(path: str | os.PathLike) -> dict[str, list[str]]:
    """``{layout: [splits]}`` of every layout found in ``path`` ({} for none or a missing folder)."""
    root = Path(path)
    if not root.is_dir():
        return {}
    found = {}
    coco = _coco_splits(root)
    if coco or (root / "annotations").is_dir():
        found[COCO_LAYOUT] = coco
    try:
        folder = _image_folder_splits(root)
    except OSError:
        folder = []
    if folder:
        found["image-folder"] = folder
    return found


def format_found(found: dict[str, list[str]]) -> str:
    """``"coco-mini layout with splits train, val"``, or ``"no known layout"``."""
    if not found:
        return "no known layout"
    return "; ".join(f"{layout} layout with split(s) {', '.join(splits) or '(none)'}" for layout, splits in found.items())


def check_data_dir(path: str | os.PathLike, split: str | None = None, *, source: str = "data folder") -> Path:
    """Return ``path`` if it is a coco-mini-layout folder (holding ``split``, when given); else raise a
    :class:`MalformedFileError` that names the folder, says where the path came from (``source``, e.g.
    ``"--data"`` or ``"data.path from checkpoint X"``) and lists the layouts and splits that are there."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise MalformedFileError(str(root), None, "missing_file", f"{source}: folder not found")
    found = describe_data_dir(root)
    if COCO_LAYOUT not in found:
        raise MalformedFileError(str(root), None, "missing_file",
                                 f"{source} is not a coco-mini-layout folder (expected {_EXPECTED}); found: "
                                 f"{format_found(found)}")
    if split is not None:
        splits = found[COCO_LAYOUT]
        if split not in splits:
            raise MalformedFileError(str(root), None, "missing_file",
                                     f"{source} has no split {split!r} (no annotations/instances_{split}.json); "
                                     f"found: {format_found(found)}")
        if not (root / "images" / split).is_dir():
            raise MalformedFileError(str(root / "images" / split), None, "missing_file",
                                     f"{source}: split {split!r} has annotations but no image folder images/{split}/")
    return root
