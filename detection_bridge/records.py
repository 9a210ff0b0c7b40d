"""CropRecord (one box to crop) and CategoryMap (COCO category ids <-> contiguous labels).

A record is everything needed to cut and label one crop, and nothing about pixels, so record lists
are cheap to hash (the cache key), to store in a crop cache's index and to compare.
The category map is saved with every dataset, cache and checkpoint: COCO's 80 category ids run
non-contiguously from 1 to 90, and a classifier's output index means nothing without the map.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

from .boxes import SIZE_BUCKETS
from .errors import SkipLog

Source = Literal["gt", "detection", "jitter"]
SOURCES: tuple[str, ...] = ("gt", "detection", "jitter")
BACKGROUND_CATEGORY_ID = 0  # COCO never uses 0; torchvision detection uses label 0 for background too
BACKGROUND_NAME = "background"


@dataclass(frozen=True, slots=True)
class CropRecord:
    """One box to crop and its label.

    ``box_xyxy`` is in source-image pixels (see :mod:`detection_bridge.boxes` for the convention).
    ``category_id`` is COCO's id (0 = background), ``label`` the contiguous one from a
    :class:`CategoryMap`. ``source_id`` is the annotation id for ``gt`` and ``jitter`` records and the
    index in the results file for ``detection`` records. ``score`` is the detector's score (None for
    ground truth); ``iou`` the IoU with the matched object (1.0 for ground truth; for background, the
    best IoU with any object). ``size_bucket`` is COCO's, from the annotation's ``area`` for ground truth
    and jitter, and from the box's own area for detections.
    """

    image_path: str
    image_id: int
    box_xyxy: tuple[float, float, float, float]
    label: int
    category_id: int
    source_id: int
    score: float | None
    iou: float | None
    size_bucket: str
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "box_xyxy", tuple(float(v) for v in self.box_xyxy))
        if len(self.box_xyxy) != 4:
            raise ValueError(f"box_xyxy must have 4 values, got {self.box_xyxy}")
        if self.size_bucket not in SIZE_BUCKETS:
            raise ValueError(f"size_bucket must be one of {SIZE_BUCKETS}, got {self.size_bucket!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"image_path": self.image_path, "image_id": self.image_id, "box_xyxy": list(self.box_xyxy),
                "label": self.label, "category_id": self.category_id, "source_id": self.source_id,
                "score": self.score, "iou": self.iou, "size_bucket": self.size_bucket, "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CropRecord":
        return cls(image_path=str(data["image_path"]), image_id=int(data["image_id"]),
                   box_xyxy=tuple(data["box_xyxy"]), label=int(data["label"]),
                   category_id=int(data["category_id"]), source_id=int(data["source_id"]),
                   score=None if data.get("score") is None else float(data["score"]),
                   iou=None if data.get("iou") is None else float(data["iou"]),
                   size_bucket=data["size_bucket"], source=data["source"])


@dataclass(frozen=True)
class CategoryMap:
    """COCO category ids (sorted ascending) <-> labels ``0..K-1``; background, if any, is label ``K``.

    Background goes last so the object labels are the same with and without it, and a classifier
    trained without background can be compared label for label with one trained with it.
    """

    category_ids: tuple[int, ...]
    category_names: tuple[str, ...]
    background: bool = False
    keys: tuple[str, ...] = ()  # class-folder names (ImageNet WordNet ids) for ImageNet-layout data; () for COCO

    def __post_init__(self) -> None:
        ids = tuple(int(c) for c in self.category_ids)
        if len(ids) != len(self.category_names):
            raise ValueError("category_ids and category_names differ in length")
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate category ids in {ids}")
        if BACKGROUND_CATEGORY_ID in ids:
            raise ValueError("category id 0 is reserved for background")
        if list(ids) != sorted(ids):
            raise ValueError("category_ids must be sorted ascending; use CategoryMap.from_coco")
        object.__setattr__(self, "category_ids", ids)
        object.__setattr__(self, "category_names", tuple(str(n) for n in self.category_names))
        object.__setattr__(self, "keys", tuple(str(k) for k in self.keys))
        if self.keys and len(self.keys) != len(ids):
            raise ValueError("keys and category_ids differ in length")
        object.__setattr__(self, "_label_of", {c: i for i, c in enumerate(ids)})

    @classmethod
    def from_coco(cls, categories: Iterable[dict[str, Any]], background: bool = False) -> "CategoryMap":
        """Build from a COCO ``categories`` list (``id``, ``name``), in ascending id order."""
        cats = sorted(categories, key=lambda c: int(c["id"]))
        return cls(tuple(int(c["id"]) for c in cats), tuple(str(c.get("name", c["id"])) for c in cats), background)

    @property
    def num_object_classes(self) -> int:
        return len(self.category_ids)

    @property
    def num_classes(self) -> int:
        """Classifier outputs: object classes plus one for background when present."""
        return len(self.category_ids) + int(self.background)

    @property
    def background_label(self) -> int | None:
        return len(self.category_ids) if self.background else None

    @property
    def names(self) -> list[str]:
        return list(self.category_names) + ([BACKGROUND_NAME] if self.background else [])

    def __contains__(self, category_id: object) -> bool:
        return category_id in self._label_of or (self.background and category_id == BACKGROUND_CATEGORY_ID)

    def label_of(self, category_id: int) -> int:
        if category_id == BACKGROUND_CATEGORY_ID and self.background:
            return len(self.category_ids)
        try:
            return self._label_of[int(category_id)]
        except KeyError:
            raise KeyError(f"category id {category_id} is not in the category map "
                           f"({self.num_object_classes} categories, background={self.background})") from None

    def category_id_of(self, label: int) -> int:
        if self.background and label == len(self.category_ids):
            return BACKGROUND_CATEGORY_ID
        if not 0 <= label < len(self.category_ids):
            raise KeyError(f"label {label} is out of range for {self.num_classes} classes")
        return self.category_ids[label]

    def name_of(self, label: int) -> str:
        return self.names[label]

    def to_dict(self) -> dict[str, Any]:
        return {"category_ids": list(self.category_ids), "names": list(self.category_names),
                "background": self.background, **({"keys": list(self.keys)} if self.keys else {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CategoryMap":
        return cls(tuple(data["category_ids"]), tuple(data["names"]), bool(data.get("background", False)),
                   tuple(data.get("keys", ())))


def records_to_dicts(records: Sequence[CropRecord]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in records]


def is_finite_box(values: Sequence[Any]) -> bool:
    """True when ``values`` is 4 finite real numbers (bools excluded: JSON ``true`` is not a coordinate)."""
    try:
        return len(values) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    except TypeError:
        return False


@dataclass
class CropSet:
    """Records of one split plus everything needed to explain them: the category map, what was
    filtered by rule (crowd, minimum size, IoU band, score, top-k) and what was skipped as bad input.
    """

    records: list[CropRecord]
    category_map: CategoryMap
    skipped: SkipLog = field(default_factory=SkipLog)
    filtered: Counter = field(default_factory=Counter)
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def cache_inputs(self) -> dict[str, Any]:
        """``data_root`` and ``source_files`` for the crop cache's key: the image folder (paths are keyed
        relative to it, so a copy of the data elsewhere keys the same) and the annotation / detection
        files the records came from (keyed by content)."""
        files = self.info.get("files", {})
        sources = [files[k] for k in ("annotations", "detections") if files.get(k)]
        if self.info.get("boxes") == "gt":
            sources = sources[:1]
        return {"data_root": files.get("images"), "source_files": sources}

    def summary(self) -> dict[str, Any]:
        """Counts per class, size bucket and source, plus filtered and skipped inputs with reasons."""
        return {**summarize_records(self.records, self.category_map),
                "filtered": {k: v for k, v in sorted(self.filtered.items()) if v}, "skipped": self.skipped.to_dict(),
                "category_map": self.category_map.to_dict(), **self.info}


def summarize_records(records: Sequence[CropRecord], category_map: CategoryMap) -> dict[str, Any]:
    """The count tables of a summary (every class, bucket and source listed, zeros included)."""
    per_class = Counter(category_map.names[r.label] for r in records)
    per_bucket = Counter(r.size_bucket for r in records)
    per_source = Counter(r.source for r in records)
    return {"num_records": len(records), "num_images": len({r.image_path for r in records}),
            "per_class": {n: per_class.get(n, 0) for n in category_map.names},
            "per_size_bucket": {b: per_bucket.get(b, 0) for b in SIZE_BUCKETS},
            "per_source": {s: per_source.get(s, 0) for s in SOURCES}}
