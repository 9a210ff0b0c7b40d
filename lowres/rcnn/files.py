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
from typing import Any, Callable, Iterable, Mapping

import torch

from detection_bridge.boxes import xywh_to_xyxy
from detection_bridge.records import CategoryMap

from .._atomic import atomic_write_json
from .fusion import Fusion, LabelSpace, fuse_with
from .second_stage import SecondStage, as_fusion

__all__ = ["ImageIndex", "ClassifiedResults", "RescoredResults", "load_results", "classify_results", "rescore_results",
           "rescore_file", "split_ground_truth", "coco_bbox_metrics", "coco_ap", "fusion_output_paths",
           "metrics_table", "METRIC_NAMES", "IMAGE_SUFFIXES"]

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]
_ALL_AREAS = (0.0, 1e5 ** 2)  # COCOeval's "all" area range
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
class ClassifiedResults:
    """A results file's detections with the classifier's probabilities, ready to fuse with any rule.

    Rows follow ``order`` (indices into ``results``, grouped by image); ``det_scores`` and ``areas`` are
    float64 so that a detector-alone box keeps its score exactly (see :func:`lowres.rcnn.fusion.fuse_with`).
    """

    results: list[dict[str, Any]]
    order: list[int]
    probs: torch.Tensor
    det_labels: torch.Tensor
    det_scores: torch.Tensor
    areas: torch.Tensor
    space: LabelSpace
    background_label: int | None
    skipped: Counter = field(default_factory=Counter)
    num_images: int = 0

    @classmethod
    def build(cls, results: list[dict[str, Any]], probs: torch.Tensor, category_map: CategoryMap,
              order: list[int] | None = None, *, where: str = "detections file", skipped: Counter | None = None,
              num_images: int | None = None) -> "ClassifiedResults":
        """From validated ``results`` and the classifier's ``probs`` for ``results[order]`` (default: all, in
        order); a category the classifier does not know raises ``ValueError`` naming ``where``."""
        order = list(range(len(results))) if order is None else order
        space = LabelSpace(category_map)
        rows = [results[i] for i in order]
        det_labels = space.to_classifier(torch.tensor([r["category_id"] for r in rows], dtype=torch.int64), where)
        det_scores = torch.tensor([float(r["score"]) for r in rows], dtype=torch.float64)
        areas = torch.tensor([float(r["bbox"][2]) * float(r["bbox"][3]) for r in rows], dtype=torch.float64)
        if len(probs) != len(rows):
            raise ValueError(f"{where}: {len(rows)} detections but {len(probs)} rows of probabilities")
        return cls(results, order, probs, det_labels, det_scores, areas, space, category_map.background_label,
                   Counter() if skipped is None else skipped,
                   len({r["image_id"] for r in rows}) if num_images is None else num_images)

    def fused(self, fusion: Fusion) -> tuple[list[dict[str, Any]], int]:
        """COCO results of ``fusion`` (input ``image_id`` and ``bbox`` kept) and the number suppressed."""
        labels, scores, keep = fuse_with(fusion, self.probs, self.det_scores, self.det_labels,
                                         background_label=self.background_label, candidates=self.space.candidates,
                                         areas=self.areas)
        cats = self.space.category_ids(labels)
        out = [{"image_id": self.results[i]["image_id"], "category_id": cats[k], "bbox": list(self.results[i]["bbox"]),
                "score": float(scores[k])} for k, i in enumerate(self.order) if keep[k]]
        return out, int((~keep).sum())


@dataclass
class RescoredResults:
    """Rescored results per fusion rule, plus what was skipped (reason -> count)."""

    by_fusion: dict[str, list[dict[str, Any]]]
    skipped: Counter = field(default_factory=Counter)
    num_images: int = 0


def _group(results: list[dict[str, Any]], index: ImageIndex, on_unknown: str, skipped: Counter, where: str
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
        raise ValueError(f"{where}: {sum(unknown.values())} detections are for {len(unknown)} image ids with no image "
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


def classify_results(stage: SecondStage, results: list[dict[str, Any]], index: ImageIndex, *,
                     batch_images: int = 8, on_unknown: str = "raise", where: str = "detections file",
                     progress: Callable[[int], None] | None = None) -> ClassifiedResults:
    """Classify every box of validated COCO ``results`` once (category ids must be in the model's map; an
    unknown one raises ``ValueError`` naming ``where``). ``progress`` gets the images done after each batch."""
    if on_unknown not in ("raise", "skip"):
        raise ValueError(f"on_unknown must be 'raise' or 'skip', got {on_unknown!r}")
    skipped = Counter()
    groups = _group(results, index, on_unknown, skipped, where)
    order = [i for image_id in sorted(groups) for i in groups[image_id]]
    LabelSpace(stage.category_map).to_classifier(  # unknown categories fail before the slow part
        torch.tensor([results[i]["category_id"] for i in order], dtype=torch.int64), where)
    ids, probs = sorted(groups), []
    for start in range(0, len(ids), batch_images):
        probs.append(_classify_batch(stage, index, results, ids[start:start + batch_images], groups))
        if progress is not None:
            progress(len(ids[start:start + batch_images]))
    probs_all = torch.cat(probs) if probs else torch.zeros((0, stage.num_classes))
    return ClassifiedResults.build(results, probs_all, stage.category_map, order, where=where, skipped=skipped,
                                   num_images=len(ids))


def rescore_results(stage: SecondStage, results: list[dict[str, Any]], index: ImageIndex,
                    fusions: Iterable[str] | Mapping[str, Fusion] = ("product",), *,
                    background_threshold: float | None = 0.5, batch_images: int = 8, on_unknown: str = "raise",
                    progress: Callable[[int], None] | None = None, where: str = "detections file"
                    ) -> RescoredResults:
    """Rescore validated COCO ``results`` with each of ``fusions`` (rule names, or name -> :class:`Fusion`).

    Classification runs once; each rule is a cheap fusion over the same probabilities.
    """
    fusions = _as_fusions(fusions, background_threshold)
    classified = classify_results(stage, results, index, batch_images=batch_images, on_unknown=on_unknown,
                                  where=where, progress=progress)
    by_fusion, skipped = {}, classified.skipped
    for name, fusion in fusions.items():
        by_fusion[name], suppressed = classified.fused(fusion)
        if suppressed:
            skipped[f"background_{name}"] += suppressed  # suppressed, per rule
    return RescoredResults(by_fusion, skipped, classified.num_images)


def _as_fusions(fusions: Iterable[str] | Mapping[str, Fusion], background_threshold: float | None
                ) -> dict[str, Fusion]:
    if isinstance(fusions, Mapping):
        return {str(name): as_fusion(f, background_threshold) for name, f in fusions.items()}
    return {rule: as_fusion(rule, background_threshold) for rule in fusions}


def coco_bbox_metrics(coco_gt: Any, results: list[dict[str, Any]]) -> dict[str, float]:
    """COCO bbox AP, AP50, AP75, APs, APm, APl (pycocotools COCOeval over every ground-truth image).

    An empty results list scores 0 everywhere (pycocotools cannot load one). pycocotools' prints are silenced.
    """
    if not results:
        return {name: 0.0 for name in METRIC_NAMES}
    evaluator = _cocoeval(coco_gt, results)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.summarize()
    return {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats[:6])}


def coco_ap(coco_gt: Any, results: list[dict[str, Any]], area_range: tuple[float, float] | None = None) -> float:
    """COCO bbox AP alone at 100 detections per image, over all sizes (``stats[0]``) or over the objects in
    ``area_range`` (``(0, 32**2)`` gives ``stats[3]``, APs); about twice as fast as :func:`coco_bbox_metrics`:
    COCOeval runs one area range and one detection limit instead of four and three (tested equal)."""
    if not results:
        return 0.0
    evaluator = _cocoeval(coco_gt, results, area_range=area_range or _ALL_AREAS)
    precision = evaluator.eval["precision"]  # (IoU thresholds, recall points, classes, 1 area, 1 maxDets)
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else -1.0  # summarize's convention: -1 when nothing is defined


def _cocoeval(coco_gt: Any, results: list[dict[str, Any]], *, area_range: tuple[float, float] | None = None) -> Any:
    """An accumulated pycocotools COCOeval (bbox) of ``results``; with ``area_range``, that range alone at 100
    detections per image."""
    import copy

    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))  # loadRes adds keys to the dicts it is given
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        if area_range is not None:
            evaluator.params.areaRng, evaluator.params.areaRngLbl = [list(area_range)], ["range"]
            evaluator.params.maxDets = [100]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


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


def split_ground_truth(data: str, split: str) -> tuple[Any, ImageIndex]:
    """``(pycocotools COCO, ImageIndex)`` of a coco-mini-layout split that must have ground-truth boxes."""
    from detection_bridge.coco import split_paths

    coco, index = _ground_truth(data, split, None, None)
    if not coco.dataset.get("annotations"):
        raise ValueError(f"{split_paths(data, split).annotations}: split {split!r} has no ground-truth boxes")
    return coco, index


def rescore_file(stage: SecondStage, detections: str | os.PathLike, out: str | os.PathLike, *,
                 fusions: list[str] | Mapping[str, Fusion], data: str | None = None, split: str = "val",
                 images: str | None = None, annotations: str | None = None,
                 background_threshold: float | None = 0.5, batch_images: int = 8, on_unknown: str = "raise",
                 progress: Callable[[int], None] | None = None,
                 label_map: dict[int, int | None] | None = None) -> dict[str, Any]:
    """Everything ``lowres rescore`` does, as a function: returns a summary with the written paths, the
    skipped counts and, when ground truth is known, COCO metrics ``before`` and per rule. ``label_map``
    (:func:`load_label_map`): the detections' ``category_id`` are detector labels, mapped to COCO ids."""
    coco, index = _ground_truth(data, split, images, annotations)
    results, unmapped = _to_coco_ids(load_results(detections), label_map, detections)
    rescored = rescore_results(stage, results, index, fusions, background_threshold=background_threshold,
                               batch_images=batch_images, on_unknown=on_unknown, progress=progress,
                               where=str(detections))
    written = {}
    for rule, path in fusion_output_paths(out, list(rescored.by_fusion)).items():
        written[rule] = str(atomic_write_json(path, rescored.by_fusion[rule]))
    summary: dict[str, Any] = {"detections": len(results), "images": rescored.num_images, "outputs": written,
                               "skipped": {**dict(rescored.skipped), **({"unmapped_label": unmapped} if unmapped else {})},
                               "kept": {r: len(v) for r, v in rescored.by_fusion.items()}}
    if coco is not None:
        known = [r for r in results if r["image_id"] in index.paths]  # what was rescored
        summary["metrics"] = {"before": coco_bbox_metrics(coco, known),
                              **{rule: coco_bbox_metrics(coco, found) for rule, found in rescored.by_fusion.items()}}
    return summary


def _to_coco_ids(results: list[dict[str, Any]], label_map: dict[int, int | None] | None,
                 source: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """Detector labels -> COCO category ids through ``label_map`` (:func:`load_label_map`), before anything else
    sees them; a label mapped to None (no COCO category) is dropped and counted, an unmapped one is an error."""
    if label_map is None:
        return results, 0
    out, dropped = [], 0
    for i, r in enumerate(results):
        label = r["category_id"]
        if label not in label_map:
            raise ValueError(f"{source}: detection {i}: detector label {label} is not in the label map")
        if label_map[label] is None:
            dropped += 1
            continue
        out.append({**r, "category_id": int(label_map[label])})
    return out, dropped


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per entry (``before`` = the detector's own scores), one column per COCO metric."""
    lines = ["| scores | " + " | ".join(METRIC_NAMES) + " |", "|---" * (len(METRIC_NAMES) + 1) + "|"]
    for name, row in metrics.items():
        label = "detector (before)" if name == "before" else f"rescored: {name}"
        lines.append(f"| {label} | " + " | ".join(f"{row[m]:.4f}" for m in METRIC_NAMES) + " |")
    return "\n".join(lines)
