"""ImageNet-layout folders in, labelled whole-image records out: the paper's own kind of data.

Table 2 of the paper is an ILSVRC-2012 result; this module lets every verb that takes a COCO folder take an
ImageNet-layout one instead (torchvision's ``ImageFolder`` convention)::

    DIR/train/<class>/<image>      class folders (ImageNet: WordNet ids such as n01440764)
    DIR/val/<class>/<image>        the same classes, or a subset of them
    DIR/LOC_synset_mapping.txt     optional: "<class> <name>, ..." lines give the classes readable names

Classes are the train split's folders in sorted order (``ImageFolder``'s rule), so a label means the same
in every split; a val class that train lacks is an error, not a silent new label. Files whose extension
is not an image's are left out and counted (as ``ImageFolder`` does); an image file that cannot be decoded
is an :class:`~detection_bridge.errors.ImageError` naming it when it is first read. Pixels (the
resolution-faithful crops) are :mod:`detection_bridge.imagecrops`' business.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import EmptyResultError, MalformedFileError
from .records import CategoryMap

__all__ = ["IMAGE_EXTENSIONS", "MAPPING_FILES", "Layout", "ImageRecord", "ImageSet", "detect_layout",
           "load_imagefolder_split", "imagefolder_category_map", "list_splits"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
MAPPING_FILES = ("LOC_synset_mapping.txt", "synset_words.txt", "classes.txt")  # "<class> <name>" per line
Layout = Literal["coco", "imagefolder"]


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One whole image and its label: the class-folder counterpart of :class:`~detection_bridge.CropRecord`.

    ``source``/``source_id`` and ``size_bucket`` exist so code that pairs predictions by record (the
    benchmark) or reports COCO size buckets treats both kinds alike; whole images have no size bucket.
    """

    image_path: str
    label: int
    class_key: str  # the class folder's name (a WordNet id for ImageNet)
    source_id: int  # position in the split's sorted file list: a stable key for pairing predictions
    source: str = "image"
    size_bucket: None = None

    def to_dict(self) -> dict[str, Any]:
        return {"image_path": self.image_path, "label": self.label, "class_key": self.class_key,
                "source_id": self.source_id}


@dataclass
class ImageSet:
    """Records of one split, the category map, and what was left out (non-image files) with counts."""

    records: list[ImageRecord]
    category_map: CategoryMap
    root: Path
    split: str
    ignored: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        per_class = Counter(self.category_map.names[r.label] for r in self.records)
        return {"layout": "imagefolder", "num_records": len(self.records), "num_images": len(self.records),
                "per_class": {n: per_class.get(n, 0) for n in self.category_map.names},
                "ignored_files": dict(sorted(self.ignored.items()))}


def _has_class_folders(split_dir: Path) -> bool:
    return split_dir.is_dir() and any(p.is_dir() for p in split_dir.iterdir())


def list_splits(root: str | os.PathLike) -> list[str]:
    """Split folders of an ImageNet-layout root (those holding class folders), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name != "annotations" and _has_class_folders(p))


def detect_layout(root: str | os.PathLike) -> Layout:
    """``"coco"`` (``annotations/`` inside) or ``"imagefolder"`` (split folders of class folders); else an
    error naming both layouts that were looked for."""
    from .layout import check_data_dir, describe_data_dir

    check_data_dir(root)  # the one message for a missing folder or an unknown layout, listing what is there
    return next(iter(describe_data_dir(root)))  # type: ignore[return-value]


def _class_names(root: Path, keys: list[str]) -> list[str]:
    """Readable names from the first mapping file found ("n01440764 tench, Tinca tinca" -> "tench"), else
    the folder names themselves."""
    for name in MAPPING_FILES:
        path = root / name
        if not path.is_file():
            continue
        names: dict[str, str] = {}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise MalformedFileError(str(path), None, "unreadable_file", f"cannot read class names: {e}") from None
        for line in lines:
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                names[parts[0]] = parts[1].split(",")[0].strip()
        return [names.get(k, k) for k in keys]
    return list(keys)


def _split_dir(root: Path, split: str) -> Path:
    from .layout import check_data_dir

    check_data_dir(root, split, layouts=("imagefolder",))  # the same message as every verb's, splits listed
    return root / split


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def imagefolder_category_map(root: str | os.PathLike, train_split: str = "train") -> CategoryMap:
    """Classes of ``train_split``'s folders, sorted, as labels 0..K-1 (ids 1..K; keys = folder names).

    A class folder without one image file is an error: a class the model can never see in training."""
    root = Path(root)
    split_dir = _split_dir(root, train_split)
    keys = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    for key in keys:
        if not any(_is_image(p) for p in (split_dir / key).iterdir() if p.is_file()):
            raise EmptyResultError(str(split_dir / key), None, "empty_class",
                                   f"class folder holds no image file ({', '.join(IMAGE_EXTENSIONS)})")
    return CategoryMap(tuple(range(1, len(keys) + 1)), tuple(_class_names(root, keys)), keys=tuple(keys))


def load_imagefolder_split(root: str | os.PathLike, split: str, *, train_split: str = "train",
                           category_map: CategoryMap | None = None) -> ImageSet:
    """Records of ``split`` labelled by ``category_map`` (default: the train split's classes)."""
    root = Path(root)
    cmap = category_map if category_map is not None else imagefolder_category_map(root, train_split)
    if not cmap.keys:
        raise MalformedFileError(str(root), None, "category_map_mismatch",
                                 "the model's classes are COCO categories, this is an ImageNet-layout folder")
    label_of = {k: i for i, k in enumerate(cmap.keys)}
    split_dir = _split_dir(root, split)
    records: list[ImageRecord] = []
    ignored: Counter = Counter()
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if class_dir.name not in label_of:
            raise MalformedFileError(str(class_dir), None, "unknown_class",
                                     f"class {class_dir.name!r} is not one of the {len(label_of)} training classes "
                                     f"(the {train_split!r} split's folders)")
        # scandir's entries know their type without a stat call per file: ImageNet's 1.28M files list in seconds
        for path in sorted(Path(e.path) for e in os.scandir(class_dir) if e.is_file()):
            if not _is_image(path):
                ignored[path.suffix.lower() or "<no extension>"] += 1
                continue
            records.append(ImageRecord(str(path), label_of[class_dir.name], class_dir.name, len(records)))
    if not records:
        raise EmptyResultError(str(split_dir), None, "empty_split", "no image files in any class folder")
    return ImageSet(records, cmap, root, split, ignored)
