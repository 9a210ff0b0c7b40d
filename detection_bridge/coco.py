"""COCO files in, CropRecords out: ground truth (instances JSON) and detector boxes (results JSON).

Every annotation, detection and image entry is validated before pycocotools indexes it, because
pycocotools trusts its input (``COCO.createIndex`` raises a bare ``KeyError`` on an image without an
id, ``COCO.loadRes`` a bare ``AssertionError`` on a detection for an unknown image). Bad entries become
:class:`~detection_bridge.errors.BridgeInputError` naming the file and the record, raised or counted
through one :class:`~detection_bridge.errors.ErrorPolicy`. Rule-based exclusions (crowd regions,
boxes under the minimum side, the IoU band between background and positive) are not errors; they are
counted in ``CropSet.filtered`` so the summary accounts for every input box. Detections are read by the
one COCO results reader (:mod:`detection_bridge.results`); here they are also checked against the ground
truth (known image and category, a box with a positive size inside its image, so a crop can be cut).

Folder layout (coco-mini's): ``DIR/annotations/instances_{split}.json``, ``DIR/images/{split}/``
(``file_name`` is relative to it), ``DIR/detections/<name>_{split}.json``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO

from .boxes import box_area, size_bucket, xywh_to_xyxy
from .errors import AnnotationError, EmptyResultError, ErrorPolicy, ImageError, MalformedFileError, OnError
from .fileio import read_json
from .layout import check_data_dir
from .matching import (BACKGROUND, POSITIVE, MatchParams, jitter_boxes, match_detections, pairwise_iou,
                       select_detections)
from .records import BACKGROUND_CATEGORY_ID, CategoryMap, CropRecord, CropSet, is_finite_box
from .results import Detection, ImageEntry, ImageIndex, group_by_image, read_results

BoxSource = Literal["gt", "detections", "both"]


@dataclass(frozen=True)
class SplitPaths:
    """Where one split's files are."""

    annotations: Path
    images: Path
    detections: Path | None = None


@dataclass(frozen=True)
class SplitOptions:
    """Which crop records :func:`load_split` makes from a split (its files are named separately).

    ``boxes``: ground truth, a detector's boxes matched to it, or both. ``background``: keep detections with
    max IoU < ``iou_background`` as an extra last class. ``min_size``: shorter box side in pixels below which a
    box is filtered. ``iou_positive`` / ``iou_background`` / ``score_threshold`` / ``top_k``: how detections are
    labelled and selected (:class:`~detection_bridge.matching.MatchParams`; R-CNN's 0.5 / 0.3 by default).
    ``jitter``: add this many jittered copies (IoU >= ``jitter_iou``) of every ground-truth record, seeded by
    ``seed``. ``background_copies``: add this many copies of every background detection record (the detector's
    false positives: DCR's hard negatives, so they weigh more in training). ``on_error``: raise on a bad entry, or count and skip it. ``check_images``: read every image
    header now, so a missing file fails here rather than halfway through a cache build.
    """

    boxes: BoxSource = "gt"
    background: bool = False
    min_size: float = 1.0
    iou_positive: float = 0.5
    iou_background: float = 0.3
    score_threshold: float | None = None
    top_k: int | None = None
    jitter: int = 0
    jitter_iou: float = 0.7
    seed: int = 0
    background_copies: int = 0
    on_error: OnError = "raise"
    check_images: bool = True

    def __post_init__(self) -> None:
        if self.boxes not in ("gt", "detections", "both"):
            raise ValueError(f"boxes must be 'gt', 'detections' or 'both', got {self.boxes!r}")
        if self.background_copies < 0:
            raise ValueError(f"background_copies must be >= 0, got {self.background_copies}")
        if self.jitter < 0 or not 0.0 < self.jitter_iou <= 1.0:
            raise ValueError(f"need jitter >= 0 and 0 < jitter_iou <= 1, got {self.jitter} and {self.jitter_iou}")
        self.match_params()  # the IoU thresholds and top-k are checked where they are defined

    def match_params(self) -> MatchParams:
        return MatchParams(self.iou_positive, self.iou_background, self.background, self.score_threshold, self.top_k)

def split_detections_file(pattern: str | os.PathLike | None, split: str, data_dir: str | os.PathLike | None
                          ) -> Path | None:
    """A detections file named for ``split``: ``{split}`` in it replaced by the split's name
    (``detections/yolofastest_{split}.json``); a relative path that is not a file here is looked up in
    ``data_dir``."""
    if pattern is None:
        return None
    path = Path(str(pattern).replace("{split}", split)).expanduser()
    if not path.is_absolute() and not path.exists() and data_dir is not None and (Path(data_dir) / path).exists():
        return Path(data_dir) / path
    return path


def split_paths(data_dir: str | os.PathLike | None = None, split: str = "train", *,
                annotations: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
                detections: str | os.PathLike | None = None, need_detections: bool = False) -> SplitPaths:
    """Resolve the files of a split: explicit paths win over the coco-mini layout under ``data_dir``;
    ``detections`` may name the split by pattern (:func:`split_detections_file`)."""
    if (annotations is None or images is None) and data_dir is None:
        raise MalformedFileError(None, None, "missing_file", "give data_dir, or both annotations and images")
    root = Path(data_dir) if data_dir is not None else None
    if root is not None and (annotations is None or images is None):
        check_data_dir(root, split, layouts=("coco",))  # the one message for a wrong folder or split
    ann = Path(annotations) if annotations is not None else root / "annotations" / f"instances_{split}.json"
    img = Path(images) if images is not None else root / "images" / split
    det = split_detections_file(detections, split, root)
    if need_detections and det is None:
        folder = root / "detections" if root is not None else None
        found = sorted(folder.glob(f"*_{split}.json")) if folder is not None and folder.is_dir() else []
        if len(found) != 1:
            why = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
            raise MalformedFileError(str(folder), None, "missing_file",
                                     f"{why} detections files match *_{split}.json; pass detections_file")
        det = found[0]
    if not img.is_dir():
        raise MalformedFileError(str(img), None, "missing_file", "image folder not found")
    return SplitPaths(ann, img, det)


def _in(value: Any, container: Any) -> bool:
    """Membership that is False, not a TypeError, for unhashable JSON values (a list where an id should be)."""
    return isinstance(value, Hashable) and value in container


def _require_list(data: Any, key: str, path: Path) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise MalformedFileError(str(path), None, "malformed_json", f"not a COCO instances file: no '{key}' list")
    return data[key]


def _check_categories(categories: list, path: Path) -> list[dict]:
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or isinstance(cat.get("id"), bool):
            raise MalformedFileError(str(path), f"category #{i}", "malformed_json", "category has no integer id")
    return categories


def _check_image(entry: Any, images_dir: Path, ann_file: str) -> ImageEntry:
    """Validate one ``images`` entry of the instances file: raises AnnotationError."""
    keys_ok = isinstance(entry, dict) and all(
        isinstance(entry.get(k), t) and not isinstance(entry.get(k), bool)
        for k, t in (("id", int), ("file_name", str), ("width", int), ("height", int)))
    if not keys_ok or entry["width"] <= 0 or entry["height"] <= 0:
        rid = f"image {entry.get('id')}" if isinstance(entry, dict) else "image entry"
        raise AnnotationError(ann_file, rid, "bad_image_entry", "needs integer id, file_name, positive width/height")
    return ImageEntry(entry["id"], str(images_dir / entry["file_name"]), entry["width"], entry["height"])


def check_image_file(entry: ImageEntry) -> None:
    """Read the image header (no pixel decoding): missing, unreadable or mis-sized files fail here."""
    rid = f"image {entry.image_id}"
    try:
        with Image.open(entry.path) as im:
            size = im.size
    except FileNotFoundError:
        raise ImageError(entry.path, rid, "missing_image", "image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageError(entry.path, rid, "unreadable_image", f"cannot read image header: {e}") from None
    if size != (entry.width, entry.height):
        raise ImageError(entry.path, rid, "image_size_mismatch",
                         f"file is {size[0]}x{size[1]} but the annotations say {entry.width}x{entry.height}")


def _load_images(raw_images: list, paths: SplitPaths, policy: ErrorPolicy, box_counts: Counter,
                 check_files: bool) -> tuple[ImageIndex, set[int]]:
    """Usable images by id, and the ids of images reported bad (their boxes are skipped with them)."""
    good: ImageIndex = {}
    bad: set[int] = set()
    ann_file = str(paths.annotations)
    for entry in raw_images:
        image_id = entry.get("id") if isinstance(entry, dict) else None
        try:
            image = _check_image(entry, paths.images, ann_file)
            if image.image_id in good or image.image_id in bad:
                raise AnnotationError(ann_file, f"image {image_id}", "duplicate_image_id", "image id repeated")
            if check_files:
                check_image_file(image)
            good[image.image_id] = image
        except AnnotationError as e:
            if isinstance(image_id, int) and e.reason != "duplicate_image_id":
                bad.add(image_id)
            policy.report(e)
        except ImageError as e:
            bad.add(image_id)
            n_boxes = box_counts.get(image_id, 0)
            policy.report(ImageError(e.file, e.record, e.reason, f"{e.detail} ({n_boxes} boxes on it skipped)"))
    return good, bad


def _check_box(bbox_xywh: Any, width: int, height: int, where: tuple[str, str]) -> None:
    """Non-finite, non-positive or wholly-outside boxes raise AnnotationError."""
    if not is_finite_box(bbox_xywh):
        raise AnnotationError(*where, "bad_box", f"bbox must be 4 finite numbers, got {bbox_xywh!r}")
    x, y, w, h = bbox_xywh
    if w <= 0 or h <= 0:
        raise AnnotationError(*where, "bad_box", f"bbox has non-positive size {w} x {h}")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise AnnotationError(*where, "box_outside_image", f"bbox {bbox_xywh} is wholly outside the "
                              f"{width}x{height} image")


def _check_annotation(ann: Any, images: ImageIndex, category_ids: set[int], ann_file: str) -> dict:
    keys_ok = isinstance(ann, dict) and all(k in ann for k in ("id", "image_id", "category_id", "bbox"))
    if not keys_ok or not isinstance(ann["id"], int) or isinstance(ann["id"], bool):
        rid = f"annotation {ann.get('id')}" if isinstance(ann, dict) else "annotation"
        raise AnnotationError(ann_file, rid, "bad_annotation", "needs integer id, image_id, category_id, bbox")
    where = (ann_file, f"annotation {ann['id']}")
    if not _in(ann["image_id"], images):
        raise AnnotationError(*where, "unknown_image", f"image_id {ann['image_id']} is not in 'images'")
    if not _in(ann["category_id"], category_ids):
        raise AnnotationError(*where, "unknown_category", f"category_id {ann['category_id']} is not in 'categories'")
    image = images[ann["image_id"]]
    _check_box(ann["bbox"], image.width, image.height, where)
    x, y, w, h = ann["bbox"]
    area = ann.get("area")
    area = float(area) if is_finite_box([area, 0, 0, 0]) and area > 0 else float(w * h)
    return {**ann, "area": area, "iscrowd": int(bool(ann.get("iscrowd", 0)))}


def _index_coco(categories: list, images: ImageIndex, annotations: list) -> COCO:
    """A pycocotools index over validated entries (its progress prints silenced)."""
    coco = COCO()
    coco.dataset = {"images": [{"id": i.image_id, "file_name": i.path, "width": i.width, "height": i.height}
                               for i in images.values()],
                    "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_ground_truth(paths: SplitPaths, policy: ErrorPolicy, filtered: Counter, *, check_images: bool = True
                      ) -> tuple[COCO, ImageIndex, set[int], list[dict]]:
    """Validate and index an instances file: ``(coco, usable images, bad image ids, categories)``.

    Boxes on images reported bad are counted in ``filtered["gt_on_skipped_images"]``.
    """
    raw = read_json(paths.annotations, "COCO instances")
    raw_images = _require_list(raw, "images", paths.annotations)
    raw_anns = _require_list(raw, "annotations", paths.annotations)
    categories = _check_categories(_require_list(raw, "categories", paths.annotations), paths.annotations)
    box_counts = Counter(a["image_id"] for a in raw_anns
                         if isinstance(a, dict) and isinstance(a.get("image_id"), Hashable))
    images, bad_images = _load_images(raw_images, paths, policy, box_counts, check_images)
    category_ids = {c["id"] for c in categories}
    anns, seen_ids = [], set()
    for ann in raw_anns:
        if isinstance(ann, dict) and _in(ann.get("image_id"), bad_images):
            filtered["gt_on_skipped_images"] += 1  # the image itself is the reported skip
            continue
        try:
            if isinstance(ann, dict) and _in(ann.get("id"), seen_ids):
                raise AnnotationError(str(paths.annotations), f"annotation {ann['id']}", "duplicate_annotation_id",
                                      "annotation id repeated")
            anns.append(_check_annotation(ann, images, category_ids, str(paths.annotations)))
            seen_ids.add(ann["id"])
        except AnnotationError as e:
            policy.report(e)
    return _index_coco(categories, images, anns), images, bad_images, categories


def gt_records(coco: COCO, images: ImageIndex, cmap: CategoryMap, min_size: float,
               filtered: Counter) -> list[CropRecord]:
    """One record per non-crowd box whose shorter side is at least ``min_size`` pixels."""
    records = []
    for image_id in sorted(images):
        for ann in sorted(coco.imgToAnns.get(image_id, []), key=lambda a: a["id"]):
            if ann["iscrowd"]:
                filtered["gt_crowd"] += 1  # crowd regions are never positives (COCO iscrowd semantics)
                continue
            if min(ann["bbox"][2], ann["bbox"][3]) < min_size:
                filtered["gt_below_min_size"] += 1
                continue
            records.append(CropRecord(
                image_path=images[image_id].path, image_id=image_id, box_xyxy=tuple(xywh_to_xyxy(ann["bbox"])),
                label=cmap.label_of(ann["category_id"]), category_id=ann["category_id"], source_id=ann["id"],
                score=None, iou=1.0, size_bucket=size_bucket(ann["area"]), source="gt"))
    return records


def load_detections(path: Path, images: ImageIndex, bad_images: set[int], category_ids: set[int],
                    policy: ErrorPolicy, filtered: Counter, *, split: str = "?") -> dict[int, list[Detection]]:
    """Valid detections (:func:`~detection_bridge.results.read_results`) on known images and categories, whose
    box can be cut from its image, grouped by image id. ``split``: named when a detection's image is not in the
    ground truth (the usual cause: another split's detections file)."""
    kept = []
    for d in read_results(path, policy):
        if d.image_id in bad_images:
            filtered["detection_on_skipped_images"] += 1  # the image itself is the reported skip
            continue
        where = (str(path), f"detection #{d.index}")
        try:
            if d.image_id not in images:
                raise AnnotationError(*where, "unknown_image", f"image_id {d.image_id} is not in the ground truth of split "
                                      f"{split!r}: are these another split's detections?")
            if d.category_id not in category_ids:
                raise AnnotationError(*where, "unknown_category",
                                      f"category_id {d.category_id} is not in 'categories'")
            image = images[d.image_id]
            _check_box(d.bbox, image.width, image.height, where)  # a crop needs a positive size inside the image
        except AnnotationError as e:
            policy.report(e)
            continue
        kept.append(d)
    return group_by_image(kept)


def detection_records(coco: COCO, images: ImageIndex, by_image: dict[int, list[Detection]],
                      cmap: CategoryMap, params: MatchParams, min_size: float, filtered: Counter
                      ) -> list[CropRecord]:
    """Label detections by IoU with ground truth (see :mod:`detection_bridge.matching`).

    Score threshold and top-k act on the detector's list as it is; the minimum side comes after.
    A positive takes the matched object's category; the detector's own category is not used.
    """
    records = []
    for image_id in sorted(by_image):
        dets = by_image[image_id]
        order, n_below, n_beyond = select_detections(np.array([d.score for d in dets]), params)
        filtered["detection_below_score"] += n_below
        filtered["detection_beyond_top_k"] += n_beyond
        dets = [dets[k] for k in order if min(dets[k].box_xyxy[2] - dets[k].box_xyxy[0],
                                               dets[k].box_xyxy[3] - dets[k].box_xyxy[1]) >= min_size]
        filtered["detection_below_min_size"] += len(order) - len(dets)
        if not dets:
            continue
        anns = coco.imgToAnns.get(image_id, [])
        gts_xyxy = xywh_to_xyxy(np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4))
        status, best, ious = match_detections(np.array([d.box_xyxy for d in dets]), gts_xyxy,
                                              np.array([a["iscrowd"] for a in anns], dtype=bool), params)
        for det, st, j, iou in zip(dets, status, best, ious):
            if st not in (POSITIVE, BACKGROUND):
                filtered[f"detection_{st}"] += 1
                continue
            cat = anns[j]["category_id"] if st == POSITIVE else BACKGROUND_CATEGORY_ID
            records.append(CropRecord(
                image_path=images[image_id].path, image_id=image_id, box_xyxy=det.box_xyxy, label=cmap.label_of(cat),
                category_id=cat, source_id=det.index, score=det.score, iou=float(iou),
                size_bucket=size_bucket(float(box_area(np.array(det.box_xyxy)))), source="detection"))
    return records


def jitter_records(gt: list[CropRecord], n: int, images: ImageIndex, *, min_iou: float = 0.7,
                   seed: int = 0) -> list[CropRecord]:
    """``n`` jittered copies of each ground-truth record (seeded per annotation: order-independent)."""
    records = []
    for r in gt:
        rng = np.random.default_rng([seed % 2**32, r.source_id % 2**32])
        image = images[r.image_id]
        boxes = jitter_boxes(np.array(r.box_xyxy), n, rng, min_iou=min_iou, image_size=(image.width, image.height))
        ious = pairwise_iou(boxes, np.array([r.box_xyxy]))[:, 0]
        records.extend(dataclasses.replace(r, box_xyxy=tuple(b), score=None, iou=float(iou), source="jitter")
                       for b, iou in zip(boxes, ious))
    return records


def load_split(data_dir: str | os.PathLike | None = None, split: str = "train",
               options: SplitOptions = SplitOptions(), *, detections_file: str | os.PathLike | None = None,
               annotations: str | os.PathLike | None = None, images: str | os.PathLike | None = None) -> CropSet:
    """Crop records of one split as ``options`` say (:class:`SplitOptions`): ground truth, detector boxes
    matched to it, or both. Files: the coco-mini layout under ``data_dir``, or ``annotations`` / ``images`` /
    ``detections_file`` given explicitly (:func:`split_paths`)."""
    o = options
    policy, filtered = ErrorPolicy(o.on_error), Counter()
    paths = split_paths(data_dir, split, annotations=annotations, images=images, detections=detections_file,
                        need_detections=o.boxes != "gt")
    coco, imgs, bad, categories = load_ground_truth(paths, policy, filtered, check_images=o.check_images)
    cmap = CategoryMap.from_coco(categories, background=o.background)
    gt = gt_records(coco, imgs, cmap, o.min_size, filtered) if o.boxes != "detections" or o.jitter else []
    records = list(gt) if o.boxes != "detections" else []
    if o.boxes != "gt":
        by_image = load_detections(paths.detections, imgs, bad, set(cmap.category_ids), policy, filtered,
                                   split=split)
        detected = detection_records(coco, imgs, by_image, cmap, o.match_params(), o.min_size, filtered)
        background = [r for r in detected if r.category_id == BACKGROUND_CATEGORY_ID]
        records += detected + background * o.background_copies
    if o.jitter:
        records += jitter_records(gt, o.jitter, imgs, min_iou=o.jitter_iou, seed=o.seed)
    if not records:
        policy.report(EmptyResultError(str(paths.detections if o.boxes == "detections" else paths.annotations),
                                       None, "empty_result", f"no crop records left for split {split!r} "
                                       f"(boxes={o.boxes!r}, min_size={o.min_size}); filtered: {dict(filtered)}"))
    params = {k: getattr(o, k) for k in ("min_size", "iou_positive", "iou_background", "background",
                                         "score_threshold", "top_k", "jitter", "jitter_iou", "seed",
                                         "background_copies")}
    files = {k: None if v is None else str(v) for k, v in vars(paths).items()}
    info = {"split": split, "boxes": o.boxes, "files": files, "params": params}
    return CropSet(records, cmap, policy.log, filtered, info)
