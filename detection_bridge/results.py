"""COCO results files (a detector's boxes): the one reader and validator, and the one image index.

A COCO results file is a JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (what
``pycocotools.COCO.loadRes`` reads and detectron2 / mmdetection write). Both consumers of such files go
through :func:`read_results`: the bridge, to turn detections into crop records (:mod:`detection_bridge.coco`),
and ``lowres rescore``, to classify and rescore them. One set of rules, one error type
(:class:`~detection_bridge.errors.AnnotationError` naming the file, ``detection #i`` and a reason code), raised
or counted through an :class:`~detection_bridge.errors.ErrorPolicy`:

* ``bad_detection``: not an object with integer ``image_id`` and ``category_id``, ``bbox`` and ``score``;
* ``bad_box``: ``bbox`` not 4 finite numbers, or a negative width or height (a zero-size box is a valid
  detector output; what a consumer needs beyond that, e.g. a crop's positive size, it checks itself);
* ``bad_score``: ``score`` not a finite number.

Whether the image and category exist depends on the ground truth a consumer has, so those checks are the
consumer's. Images are found through an :data:`ImageIndex` (image id -> :class:`ImageEntry`), built from the
``images`` of an instances file (:func:`detection_bridge.coco.load_ground_truth`) or, without one, from a
folder whose file names are image ids (:func:`images_in_folder`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .errors import AnnotationError, ErrorPolicy, MalformedFileError
from .fileio import read_json

__all__ = ["Detection", "ImageEntry", "ImageIndex", "IMAGE_SUFFIXES", "check_detection", "read_results",
           "group_by_image", "images_in_folder"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class ImageEntry:
    """Where one image is; its size when ground truth states it (checked against the file on decoding)."""

    image_id: int
    path: str
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> tuple[int, int] | None:
        return None if self.width is None or self.height is None else (self.width, self.height)


ImageIndex = dict[int, ImageEntry]  # image id -> entry: the one index of images, ground truth or folder


def images_in_folder(folder: str | os.PathLike) -> ImageIndex:
    """Images named by their integer id (COCO's 12-digit names: ``000000000139.jpg`` -> 139); other names
    are ignored. Sizes are unknown until decoded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MalformedFileError(str(folder), None, "missing_file", "image folder not found")
    index: ImageIndex = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.isdigit():
            index.setdefault(int(p.stem), ImageEntry(int(p.stem), str(p)))
    return index


@dataclass(frozen=True)
class Detection:
    """One validated entry of a results file; ``index`` is its position in the file, ``bbox`` its
    ``[x, y, w, h]`` exactly as written (a rescored file gives it back unchanged)."""

    index: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    score: float

    @property
    def box_xyxy(self) -> tuple[float, float, float, float]:
        x, y, w, h = (float(v) for v in self.bbox)
        return (x, y, x + w, y + h)

    @property
    def area(self) -> float:
        """``w * h``: the area COCOeval gives a detection (its size band)."""
        return float(self.bbox[2]) * float(self.bbox[3])

    def to_result(self, **changes: Any) -> dict[str, Any]:
        """The COCO results entry (with ``changes``, e.g. a fused ``category_id`` and ``score``)."""
        return {"image_id": self.image_id, "category_id": self.category_id, "bbox": list(self.bbox),
                "score": self.score, **changes}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_detection(i: int, det: Any, path: str) -> Detection:
    """Validate entry ``i`` of results file ``path`` (module docstring); raises :class:`AnnotationError`."""
    where = (path, f"detection #{i}")
    if not isinstance(det, dict) or not all(k in det for k in ("image_id", "category_id", "bbox", "score")):
        raise AnnotationError(*where, "bad_detection", "needs image_id, category_id, bbox and score")
    if not _is_int(det["image_id"]) or not _is_int(det["category_id"]):
        raise AnnotationError(*where, "bad_detection", "image_id and category_id must be integers")
    bbox = det["bbox"]
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise AnnotationError(*where, "bad_box", f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise AnnotationError(*where, "bad_box", f"bbox {list(bbox)} has a negative width or height")
    if not _is_number(det["score"]):
        raise AnnotationError(*where, "bad_score", f"score must be a finite number, got {det['score']!r}")
    return Detection(i, det["image_id"], det["category_id"], tuple(bbox), float(det["score"]))


def read_results(path: str | os.PathLike, policy: ErrorPolicy | None = None) -> list[Detection]:
    """The valid detections of a COCO results file, in file order.

    A file that is not a JSON list is a :class:`MalformedFileError`; a bad entry is reported to ``policy``
    (default: raise), so with ``ErrorPolicy("skip")`` it is counted under its reason and left out.
    """
    policy = ErrorPolicy("raise") if policy is None else policy
    raw = read_json(path, "COCO results")
    if not isinstance(raw, list):
        raise MalformedFileError(str(path), None, "malformed_json", "a COCO results file must be a JSON list")
    out = []
    for i, det in enumerate(raw):
        try:
            out.append(check_detection(i, det, str(path)))
        except AnnotationError as e:
            policy.report(e)
    return out


def group_by_image(detections: Iterable[Detection]) -> dict[int, list[Detection]]:
    """Detections per image id, image ids ascending, each image's detections in file order."""
    groups: dict[int, list[Detection]] = {}
    for d in detections:
        groups.setdefault(d.image_id, []).append(d)
    return {image_id: groups[image_id] for image_id in sorted(groups)}
