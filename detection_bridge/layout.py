"""One check of a data folder for every command: which layouts and splits it holds, and one message per mistake.

``lowres train``, ``eval``, ``crops``, ``rescore`` and ``bench`` all pass their folder through
:func:`check_data_dir` (directly, or through :func:`detection_bridge.coco.split_paths` and
:func:`detection_bridge.imagefolder.detect_layout`), so the same wrong folder or split gives the same
message everywhere, and the message lists what *is* there instead of only what is missing.

Layouts:

- ``coco``: ``annotations/instances_SPLIT.json`` and ``images/SPLIT/`` (coco-mini's; object crops);
- ``imagefolder``: ``SPLIT/<class>/<image>`` (ImageNet's, torchvision's ImageFolder; whole images).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .errors import MalformedFileError

__all__ = ["LAYOUTS", "describe_data_dir", "check_data_dir", "format_found"]

LAYOUTS = {"coco": "a COCO layout (annotations/instances_<split>.json, images/<split>/)",
           "imagefolder": "an ImageNet layout (<split>/<class>/<image>, e.g. train/n01440764/x.JPEG)"}
_NAMES = {"coco": "COCO layout", "imagefolder": "ImageNet layout"}


def _coco_splits(root: Path) -> list[str]:
    return sorted(p.stem[len("instances_"):] for p in (root / "annotations").glob("instances_*.json"))


def describe_data_dir(path: str | os.PathLike) -> dict[str, list[str]]:
    """``{layout: [splits]}`` of each layout found in ``path`` ({} for none or a missing folder). A folder with
    ``annotations/`` is read as COCO layout (as :func:`~detection_bridge.imagefolder.detect_layout` does)."""
    from .imagefolder import list_splits

    root = Path(path)
    if not root.is_dir():
        return {}
    if (root / "annotations").is_dir():
        return {"coco": _coco_splits(root)}
    splits = list_splits(root)
    return {"imagefolder": splits} if splits else {}


def format_found(found: dict[str, list[str]]) -> str:
    """``"COCO layout, splits found: train, val"``."""
    return "; ".join(f"{_NAMES[layout]}, splits found: {', '.join(splits) or 'none'}"
                     for layout, splits in found.items())


def _inside(root: Path, limit: int = 8) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "") or "nothing"


def check_data_dir(path: str | os.PathLike, split: str | None = None, *,
                   layouts: Iterable[str] = ("coco", "imagefolder"), source: str = "data folder") -> Path:
    """Return ``path`` if it holds one of ``layouts`` (with ``split``, when given); else raise a
    :class:`MalformedFileError` naming the folder, where the path came from (``source``, e.g. ``"data folder"``
    or ``"data.path 'x' taken from the checkpoint Y"``) and the layouts and splits that are there."""
    root, layouts = Path(path).expanduser(), tuple(layouts)
    if not root.is_dir():
        raise MalformedFileError(str(root), None, "missing_file", f"{source} not found")
    found = describe_data_dir(root)
    if not found:  # the same words whichever layouts this command reads: the folder is the mistake
        raise MalformedFileError(str(root), None, "unknown_layout",
                                 f"{source} is neither {' nor '.join(LAYOUTS.values())}; found inside: {_inside(root)}")
    layout, splits = next(iter(found.items()))
    if layout not in layouts:
        raise MalformedFileError(str(root), None, "unsupported_layout",
                                 f"{source} is in the {format_found(found)}; this command reads "
                                 + " or ".join(LAYOUTS[name] for name in layouts))
    if split is not None and split not in splits:
        where = f" (no annotations/instances_{split}.json)" if layout == "coco" else ""
        raise MalformedFileError(str(root), None, "missing_split",
                                 f"{source} has no split {split!r}{where}; {format_found(found)}")
    if split is not None and layout == "coco" and not (root / "images" / split).is_dir():
        raise MalformedFileError(str(root / "images" / split), None, "missing_file",
                                 f"{source}: split {split!r} has annotations but no image folder images/{split}/")
    return root
