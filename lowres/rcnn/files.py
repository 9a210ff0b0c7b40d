"""Rescore a COCO results file from any detector: read, classify image by image, fuse, write, evaluate.

A COCO results file is a JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
Each image is decoded once (the bridge's PIL decoder, RGB, EXIF orientation not applied, as COCO's
boxes assume) and all boxes of ``batch_images`` images are classified in one
:meth:`SecondStage.classify` call. Output entries keep the input's ``image_id`` and ``bbox`` exactly and
carry the fused ``category_id`` and ``score``; detections suppressed as background are left out.

Images are found through ground truth (``images`` of an instances file: ``file_name`` under the image
folder) or, without one, in a folder whose file names are the image ids (``000000000139.jpg`` -> 139).
A detection for an image that cannot be found is an error, or with ``on_unknown="skip"`` a counted skip.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from detection_bridge.boxes import xywh_to_xyxy

from .._atomic import atomic_write_json
from .fusion import FUSIONS, LabelSpace, fuse
from .second_stage import SecondStage

__all__ = ["ImageIndex", "RescoredResults", "load_results", "rescore_results", "rescore_file", "coco_bbox_metrics",
           "fusion_output_paths", "metrics_table", "METRIC_NAMES", "IMAGE_SUFFIXES"]

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class ImageIndex:
    """Where each image id's file is, and its size when ground truth says it (checked on decode)."""

    paths: dict[int, str]
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "ImageIndex":
        """Images named by their integer id (COCO's 12-digit names); other names are ignored."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} not found")
        paths = {}
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.isdigit():
                paths.setdefault(int(p.stem), str(p))
        return cls(paths)

    @classmethod
    def from_ground_truth(cls, images: Iterable[Any]) -> "ImageIndex":
        """From the bridge's validated ``ImageEntry`` values (``image_id``, ``path``, ``width``, ``height``)."""
        images = list(images)
        return cls({e.image_id: e.path for e in images}, {e.image_id: (e.width, e.height) for e in images})


def load_label_map(path: str | os.PathLike) -> dict[int, int | None]:
    """A detector-label -> COCO-category-id map from JSON: an object ``{"1": 1, "2": 3, ...}`` or a list indexed
    by detector label (``null`` for unused labels, e.g. background). Bad entries raise ``ValueError`` naming them."""
    from detection_bridge._io import read_json

    data = read_json(path, "label map")
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else None
    if items is None:
        raise ValueError(f"{path}: a label map must be a JSON object {{detector label: COCO category id}} or a list")
    out: dict[int, int | None] = {}
    for key, value in items:
        try:
            label = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: key {key!r} is not an integer detector label") from None
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{path}: label {key!r} maps to {value!r}, not an integer COCO category id or null")
        out[label] = value
    return out


def load_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and validate a COCO results file (a JSON list); a bad entry raises ``ValueError`` naming it."""
    from detection_bridge._io import read_json

    data = read_json(path, "COCO results")
    if not isinstance(data, list):
        raise ValueError(f"{path}: a COCO results file must be a JSON list of detections")
    for i, det in enumerate(data):
        _check_result(det, f"{path}: detection #{i}")
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_result(det: Any, where: str) -> None:
    if not isinstance(det, dict) or not all(k in det for k in ("image_id", "category_id", "bbox", "score")):
        raise ValueError(f"{where}: needs image_id, category_id, bbox and score")
    if not isinstance(det["image_id"], int) or not isinstance(det["category_id"], int):
        raise ValueError(f"{where}: image_id and category_id must be integers")
    bbox = det["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise ValueError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"{where}: bbox {bbox} has a negative width or height")
    if not _is_number(det["score"]) or not 0.0 <= det["score"] <= 1.0:
        raise ValueError(f"{where}: score must be a number in [0, 1] (a detector's confidence), got {det['score']!r}")


@dataclass
class RescoredResults:
    """Rescored results per fusion rule, plus what was skipped (reason -> count)."""

    by_fusion: dict[str, list[dict[str, Any]]]
    skipped: Counter = field(default_factory=Counter)
    num_images: int = 0


def _group(results: list[dict[str, Any]], index: ImageIndex, on_unknown: str, skipped: Counter
           ) -> dict[int, list[int]]:
    """Indices of ``results`` per image id, checking that every image can be found."""
    groups: dict[int, list[int]] = {}
    unknown: Counter = Counter()
    for i, det in enumerate(results):
        if det["image_id"] in index.paths:
            groups.setdefault(det["image_id"], []).append(i)
        else:
            unknown[det["image_id"]] += 1
    if unknown and on_unknown == "raise":
        ids = sorted(unknown)[:10]
        raise ValueError(f"{sum(unknown.values())} detections are for {len(unknown)} image ids with no image "
                         f"(first: {ids}); check --images/--annotations, or pass --skip-unknown to count and skip them")
    if unknown:
        skipped["unknown_image_id"] += sum(unknown.values())
    return groups


def _decode(index: ImageIndex, image_id: int) -> torch.Tensor:
    """uint8 ``(3, H, W)`` with the bridge's decoder (PIL, RGB, no EXIF rotation): the pixels training saw."""
    import numpy as np

    from detection_bridge.cropper import decode_image
    from detection_bridge.errors import ImageError

    path = index.paths[image_id]
    try:
        image, _ = decode_image(path, expected_size=index.sizes.get(image_id), record=f"image {image_id}")
    except ImageError as e:
        raise ValueError(str(e)) from None
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def _classify_batch(stage: SecondStage, index: ImageIndex, results: list[dict[str, Any]], ids: list[int],
                    groups: dict[int, list[int]]) -> torch.Tensor:
    images = [_decode(index, image_id) for image_id in ids]
    boxes = [torch.tensor(xywh_to_xyxy([results[i]["bbox"] for i in groups[image_id]]), dtype=torch.float64
                          ).reshape(-1, 4) for image_id in ids]
    return torch.cat(stage.classify(images, boxes)).cpu()


def rescore_results(stage: SecondStage, results: list[dict[str, Any]], index: ImageIndex,
                    fusions: Iterable[str] = ("product",), *, background_threshold: float | None = 0.5,
                    batch_images: int = 8, on_unknown: str = "raise",
                    progress: Callable[[int], None] | None = None, label_space: LabelSpace | None = None
                    ) -> RescoredResults:
    """Rescore validated COCO ``results`` (category ids must be in the model's map, or detector labels of
    ``label_space``'s map) with each rule in ``fusions``; outputs are written in COCO category ids.

    Classification runs once; each rule is a cheap fusion over the same probabilities. ``progress`` is
    called with the number of images done after each batch.
    """
    fusions = list(fusions)
    for rule in fusions:
        if rule not in FUSIONS:
            raise ValueError(f"unknown fusion rule {rule!r}; choose from {FUSIONS}")
    if on_unknown not in ("raise", "skip"):
        raise ValueError(f"on_unknown must be 'raise' or 'skip', got {on_unknown!r}")
    space, skipped = label_space or LabelSpace(stage.category_map), Counter()
    groups = _group(results, index, on_unknown, skipped)
    order = [i for image_id in sorted(groups) for i in groups[image_id]]
    det_labels = space.to_classifier(torch.tensor([results[i]["category_id"] for i in order], dtype=torch.int64),
                                     "detections file")
    ids, probs = sorted(groups), []
    for start in range(0, len(ids), batch_images):
        probs.append(_classify_batch(stage, index, results, ids[start:start + batch_images], groups))
        if progress is not None:
            progress(len(ids[start:start + batch_images]))
    probs_all = torch.cat(probs) if probs else torch.zeros((0, stage.num_classes))
    det_scores = torch.tensor([float(results[i]["score"]) for i in order], dtype=torch.float32)
    by_fusion = {}
    for rule in fusions:
        labels, scores, keep = fuse(probs_all, det_scores, det_labels, rule,
                                    background_label=stage.category_map.background_label,
                                    background_threshold=background_threshold, candidates=space.candidates)
        cats = space.category_ids(labels)
        by_fusion[rule] = [{"image_id": results[i]["image_id"], "category_id": cats[k],
                            "bbox": list(results[i]["bbox"]), "score": float(scores[k])}
                           for k, i in enumerate(order) if keep[k]]
        if not keep.all():
            skipped[f"background_{rule}"] += int((~keep).sum())  # suppressed, per rule (same set for every rule)
    return RescoredResults(by_fusion, skipped, len(ids))


def coco_bbox_metrics(coco_gt: Any, results: list[dict[str, Any]]) -> dict[str, float]:
    """COCO bbox AP, AP50, AP75, APs, APm, APl (pycocotools COCOeval over every ground-truth image).

    An empty results list scores 0 everywhere (pycocotools cannot load one). pycocotools' prints are silenced.
    """
    import copy

    from pycocotools.cocoeval import COCOeval

    if not results:
        return {name: 0.0 for name in METRIC_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))  # loadRes adds keys to the dicts it is given
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats[:6])}


def fusion_output_paths(out: str | os.PathLike, fusions: list[str]) -> dict[str, Path]:
    """``out`` itself for one rule; ``name.<rule>.json`` beside it for several (``--fusion all``)."""
    out = Path(out)
    if len(fusions) == 1:
        return {fusions[0]: out}
    return {rule: out.with_name(f"{out.stem}.{rule}{out.suffix or '.json'}") for rule in fusions}


def _ground_truth(data: str | None, split: str, images: str | None, annotations: str | None) -> tuple[Any, ImageIndex]:
    """``(pycocotools COCO or None, ImageIndex)`` from a coco-mini folder, an instances file, or a bare folder."""
    from detection_bridge.coco import load_ground_truth, split_paths
    from detection_bridge.errors import ErrorPolicy

    if data is None and annotations is None:
        if images is None:
            raise ValueError("give --data (with --split), or --images (optionally with --annotations)")
        return None, ImageIndex.from_folder(images)
    paths = split_paths(data, split, annotations=annotations, images=images)
    coco, entries, _, _ = load_ground_truth(paths, ErrorPolicy("raise"), Counter(), check_images=False)
    return coco, ImageIndex.from_ground_truth(entries.values())


def rescore_file(stage: SecondStage, detections: str | os.PathLike, out: str | os.PathLike, *,
                 fusions: list[str], data: str | None = None, split: str = "val", images: str | None = None,
                 annotations: str | None = None, background_threshold: float | None = 0.5, batch_images: int = 8,
                 on_unknown: str = "raise", progress: Callable[[int], None] | None = None,
                 label_map: dict[int, int | None] | None = None) -> dict[str, Any]:
    """Everything ``lowres rescore`` does, as a function: returns a summary with the written paths, the
    skipped counts and, when ground truth is known, COCO metrics ``before`` and per rule. ``label_map``
    (:func:`load_label_map`): the detections' ``category_id`` are detector labels, mapped to COCO ids."""
    coco, index = _ground_truth(data, split, images, annotations)
    results = load_results(detections)
    space = LabelSpace(stage.category_map, label_map)
    rescored = rescore_results(stage, results, index, fusions, background_threshold=background_threshold,
                               batch_images=batch_images, on_unknown=on_unknown, progress=progress, label_space=space)
    written = {}
    for rule, path in fusion_output_paths(out, fusions).items():
        written[rule] = str(atomic_write_json(path, rescored.by_fusion[rule]))
    summary: dict[str, Any] = {"detections": len(results), "images": rescored.num_images, "outputs": written,
                               "skipped": dict(rescored.skipped),
                               "kept": {r: len(v) for r, v in rescored.by_fusion.items()}}
    if coco is not None:
        known = [r if space.identity else {**r, "category_id": space.to_category.get(r["category_id"], -1)}
                 for r in results if r["image_id"] in index.paths]  # what was rescored, in COCO category ids
        summary["metrics"] = {"before": coco_bbox_metrics(coco, known),
                              **{rule: coco_bbox_metrics(coco, rescored.by_fusion[rule]) for rule in fusions}}
    return summary


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per entry (``before`` = the detector's own scores), one column per COCO metric."""
    lines = ["| scores | " + " | ".join(METRIC_NAMES) + " |", "|---" * (len(METRIC_NAMES) + 1) + "|"]
    for name, row in metrics.items():
        label = "detector (before)" if name == "before" else f"rescored: {name}"
        lines.append(f"| {label} | " + " | ".join(f"{row[m]:.4f}" for m in METRIC_NAMES) + " |")
    return "\n".join(lines)
