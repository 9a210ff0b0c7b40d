"""Rescore a COCO results file from any detector: read, classify image by image, fuse, write, evaluate.

A COCO results file is a JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``, read
and validated by the bridge's one reader (:mod:`detection_bridge.results`), the same rules and errors as for
training crops from detections; fusion needs one more thing, scores in [0, 1]. Each image is decoded once
(the bridge's PIL decoder, RGB, EXIF orientation not applied, as COCO's boxes assume) and all boxes of
``batch_images`` images are classified in one :meth:`SecondStage.classify` call. Output entries keep the input's ``image_id`` and ``bbox`` exactly and
carry the fused ``category_id`` and ``score``; detections suppressed as background are left out.

Images are found through the bridge's one image index: ground truth (``images`` of an instances file:
``file_name`` under the image folder) or, without one, a folder whose file names are the image ids
(``000000000139.jpg`` -> 139). Fusion is :func:`lowres.rcnn.fusion.fuse_detections`, as on the tensor path.
A detection for an image that cannot be found is an error, or with ``on_unknown="skip"`` a counted skip.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from pycocotools.cocoeval import COCOeval

from detection_bridge.coco import load_ground_truth, split_paths
from detection_bridge.cropper import decode_image
from detection_bridge.errors import ErrorPolicy
from detection_bridge.fileio import atomic_write_json, read_json
from detection_bridge.records import CategoryMap
from detection_bridge.results import Detection, ImageIndex, group_by_image, images_in_folder, read_results

from .fusion import Fusion, LabelSpace, check_detector_scores, fuse_detections
from .second_stage import SecondStage, as_fusion
from ..errors import InputError

__all__ = ["RescoreOptions", "ImageSource", "ClassifiedResults", "RescoredResults", "load_results",
           "classify_results", "rescore_results",
           "rescore_file", "split_ground_truth", "coco_bbox_metrics", "coco_ap", "fusion_output_paths",
           "metrics_table", "METRIC_NAMES"]

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]
_ALL_AREAS = (0.0, 1e5 ** 2)  # COCOeval's "all" area range


@dataclass(frozen=True)
class RescoreOptions:
    """How a detections file is classified and fused, whatever the rule: ``background_threshold`` (drop a box
    whose background probability exceeds it; None keeps every box), ``batch_images`` decoded and classified
    together, ``on_unknown`` (``raise`` or ``skip`` detections of image ids with no image), ``label_map``
    (detector label -> COCO category id, :func:`load_label_map`; None: the file holds COCO ids) and ``progress``
    (called with the images done, for a progress bar; what was fitted is logged)."""

    background_threshold: float | None = 0.5
    batch_images: int = 8
    on_unknown: str = "raise"
    label_map: dict[int, int | None] | None = None
    progress: Callable[[int], None] | None = None


@dataclass(frozen=True)
class ImageSource:
    """Where a detections file's images (and ground truth, when there is some) are: ``data`` (coco-mini layout)
    and ``split``, or ``images`` with optional ``annotations`` (without them, files found by image id)."""

    data: str | None = None
    split: str = "val"
    images: str | None = None
    annotations: str | None = None


def load_label_map(path: str | os.PathLike) -> dict[int, int | None]:
    """A detector-label -> COCO-category-id map from JSON: an object ``{"1": 1, "2": 3, ...}`` or a list indexed
    by detector label (``null`` for unused labels, e.g. background). Bad entries raise ``ValueError`` naming them."""
    data = read_json(path, "label map")
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else None
    if items is None:
        raise InputError(f"{path}: a label map must be a JSON object {{detector label: COCO category id}} or a list")
    out: dict[int, int | None] = {}
    for key, value in items:
        try:
            label = int(key)
        except (TypeError, ValueError):
            raise InputError(f"{path}: key {key!r} is not an integer detector label") from None
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise InputError(f"{path}: label {key!r} maps to {value!r}, not an integer COCO category id or null")
        out[label] = value
    return out


def load_results(path: str | os.PathLike) -> list[Detection]:
    """A COCO results file read and validated by the bridge's one reader
    (:func:`detection_bridge.results.read_results`), whose scores must also be detector confidences in [0, 1]
    (what every fusion rule assumes, checked as on the tensor path). Errors name the file and the record."""
    dets = read_results(path)
    check_detector_scores(torch.tensor([d.score for d in dets], dtype=torch.float64),
                          lambda k: f"{path}: detection #{dets[k].index}")
    return dets


@dataclass
class ClassifiedResults:
    """A results file's detections with the classifier's probabilities, ready to fuse with any rule.

    ``detections`` are in classification order (grouped by image, image ids ascending, file order within an
    image); ``det_scores`` and ``areas`` are float64 so that a detector-alone box keeps its score exactly (see
    :func:`lowres.rcnn.fusion.fuse_with`).
    """

    detections: list[Detection]
    probs: torch.Tensor
    det_labels: torch.Tensor
    det_scores: torch.Tensor
    areas: torch.Tensor
    space: LabelSpace
    skipped: Counter = field(default_factory=Counter)
    num_images: int = 0

    @property
    def background_label(self) -> int | None:
        return self.space.category_map.background_label

    @classmethod
    def build(cls, detections: list[Detection], probs: torch.Tensor, category_map: CategoryMap, *,
              where: str = "detections file", skipped: Counter | None = None,
              num_images: int | None = None) -> "ClassifiedResults":
        """From validated ``detections`` and the classifier's ``probs`` for them (row for row); a category the
        classifier does not know raises ``ValueError`` naming ``where``."""
        space = LabelSpace(category_map)
        det_labels = space.to_classifier(torch.tensor([d.category_id for d in detections], dtype=torch.int64), where)
        det_scores = torch.tensor([d.score for d in detections], dtype=torch.float64)
        areas = torch.tensor([d.area for d in detections], dtype=torch.float64)
        if len(probs) != len(detections):
            raise InputError(f"{where}: {len(detections)} detections but {len(probs)} rows of probabilities")
        return cls(detections, probs, det_labels, det_scores, areas, space, Counter() if skipped is None else skipped,
                   len({d.image_id for d in detections}) if num_images is None else num_images)

    def subset(self, image_ids: set[int]) -> "ClassifiedResults":
        """The detections of ``image_ids`` alone, in the same order (a fold of a cross-fitted calibration)."""
        keep = [i for i, d in enumerate(self.detections) if d.image_id in image_ids]
        index = torch.tensor(keep, dtype=torch.int64)
        return ClassifiedResults([self.detections[i] for i in keep], self.probs[index], self.det_labels[index],
                                 self.det_scores[index], self.areas[index], self.space, Counter(),
                                 len({self.detections[i].image_id for i in keep}))

    def fused(self, fusion: Fusion) -> tuple[list[dict[str, Any]], int]:
        """COCO results of ``fusion`` (input ``image_id`` and ``bbox`` kept, input order) and the number
        suppressed."""
        labels, scores, kept = fuse_detections(fusion, self.probs, self.det_scores, self.det_labels, self.areas,
                                               self.space)
        kept_list = kept.tolist()
        cats = self.space.category_ids(labels[kept])
        out = [self.detections[k].to_result(category_id=c, score=float(scores[k])) for k, c in zip(kept_list, cats)]
        return out, len(self.detections) - len(kept_list)


@dataclass
class RescoredResults:
    """Rescored results per fusion rule, plus what was skipped (reason -> count)."""

    by_fusion: dict[str, list[dict[str, Any]]]
    skipped: Counter = field(default_factory=Counter)
    num_images: int = 0


def _group(detections: list[Detection], index: ImageIndex, on_unknown: str, skipped: Counter, where: str
           ) -> dict[int, list[Detection]]:
    """Detections per image id (:func:`~detection_bridge.results.group_by_image`), checking that every image
    can be found: an unknown one is an error, or with ``on_unknown="skip"`` counted and left out."""
    unknown = Counter(d.image_id for d in detections if d.image_id not in index)
    if unknown and on_unknown == "raise":
        ids = sorted(unknown)[:10]
        raise InputError(f"{where}: {sum(unknown.values())} detections are for {len(unknown)} image ids with no image "
                         f"(first: {ids}); check --images/--annotations, or pass --skip-unknown to count and skip them")
    if unknown:
        skipped["unknown_image_id"] += sum(unknown.values())
    return group_by_image(d for d in detections if d.image_id in index)


def _decode(index: ImageIndex, image_id: int) -> torch.Tensor:
    """uint8 ``(3, H, W)`` with the bridge's decoder (PIL, RGB, no EXIF rotation): the pixels training saw.
    A missing, unreadable or mis-sized image is the bridge's ``ImageError`` naming it."""
    entry = index[image_id]
    image, _ = decode_image(entry.path, expected_size=entry.size, record=f"image {image_id}")
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def _classify_batch(stage: SecondStage, index: ImageIndex, groups: dict[int, list[Detection]], ids: list[int]
                    ) -> torch.Tensor:
    images = [_decode(index, image_id) for image_id in ids]
    boxes = [torch.tensor([d.box_xyxy for d in groups[image_id]], dtype=torch.float64).reshape(-1, 4)
             for image_id in ids]
    return torch.cat(stage.classify(images, boxes)).cpu()


def classify_results(stage: SecondStage, detections: list[Detection], index: ImageIndex, *,
                     batch_images: int = 8, on_unknown: str = "raise", where: str = "detections file",
                     progress: Callable[[int], None] | None = None) -> ClassifiedResults:
    """Classify every box of validated ``detections`` (:func:`load_results`) once (category ids must be in the
    model's map; an unknown one raises ``ValueError`` naming ``where``). ``progress`` gets the images done after
    each batch."""
    if on_unknown not in ("raise", "skip"):
        raise ValueError(f"on_unknown must be 'raise' or 'skip', got {on_unknown!r}")
    skipped: Counter = Counter()
    groups = _group(detections, index, on_unknown, skipped, where)
    ordered = [d for dets in groups.values() for d in dets]
    LabelSpace(stage.category_map).to_classifier(  # unknown categories fail before the slow part
        torch.tensor([d.category_id for d in ordered], dtype=torch.int64), where)
    ids, probs = list(groups), []
    for start in range(0, len(ids), batch_images):
        probs.append(_classify_batch(stage, index, groups, ids[start:start + batch_images]))
        if progress is not None:
            progress(len(ids[start:start + batch_images]))
    probs_all = torch.cat(probs) if probs else torch.zeros((0, stage.num_classes))
    return ClassifiedResults.build(ordered, probs_all, stage.category_map, where=where, skipped=skipped,
                                   num_images=len(ids))


def rescore_results(stage: SecondStage, results: list[Detection], index: ImageIndex,
                    fusions: Iterable[str] | Mapping[str, Fusion] = ("product",),
                    options: RescoreOptions = RescoreOptions(), *, where: str = "detections file",
                    whole_set: Mapping[str, Callable[[ClassifiedResults], list[dict[str, Any]]]] | None = None
                    ) -> RescoredResults:
    """Rescore validated ``results`` (:func:`load_results`) with each of ``fusions`` (rule names, or name ->
    :class:`Fusion`).

    Classification runs once; each rule is a cheap fusion over the same probabilities. ``whole_set``: rules
    that need every classified box at once (the cross-fitted ``auto``), name -> results from the classified set.
    """
    fusions = _as_fusions(fusions, options.background_threshold)
    classified = classify_results(stage, results, index, batch_images=options.batch_images,
                                  on_unknown=options.on_unknown, where=where, progress=options.progress)
    by_fusion, skipped = {}, classified.skipped
    for name, fusion in fusions.items():
        by_fusion[name], suppressed = classified.fused(fusion)
        if suppressed:
            skipped[f"background_{name}"] += suppressed  # suppressed, per rule
    for name, rule in (whole_set or {}).items():
        by_fusion[name] = rule(classified)
    return RescoredResults(by_fusion, skipped, classified.num_images)


def _as_fusions(fusions: Iterable[str] | Mapping[str, Fusion], background_threshold: float | None
                ) -> dict[str, Fusion]:
    if isinstance(fusions, Mapping):
        return {str(name): as_fusion(f, background_threshold) for name, f in fusions.items()}
    return {rule: as_fusion(rule, background_threshold) for rule in fusions}


def coco_bbox_metrics(coco_gt: Any, results: list[dict[str, Any]], image_ids: Sequence[int] | None = None
                      ) -> dict[str, float]:
    """COCO bbox AP, AP50, AP75, APs, APm, APl (pycocotools COCOeval over every ground-truth image).

    An empty results list scores 0 everywhere (pycocotools cannot load one). pycocotools' prints are silenced.
    """
    if not results:
        return {name: 0.0 for name in METRIC_NAMES}
    evaluator = _cocoeval(coco_gt, results, image_ids=image_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.summarize()
    return {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats[:6])}


def coco_ap(coco_gt: Any, results: list[dict[str, Any]], area_range: tuple[float, float] | None = None,
            image_ids: Sequence[int] | None = None) -> float:
    """COCO bbox AP alone at 100 detections per image, over all sizes (``stats[0]``) or over the objects in
    ``area_range`` (``(0, 32**2)`` gives ``stats[3]``, APs); about twice as fast as :func:`coco_bbox_metrics`:
    COCOeval runs one area range and one detection limit instead of four and three (tested equal).
    ``image_ids``: over those images alone (a fold), else every ground-truth image."""
    if not results:
        return 0.0
    evaluator = _cocoeval(coco_gt, results, area_range=area_range or _ALL_AREAS, image_ids=image_ids)
    precision = evaluator.eval["precision"]  # (IoU thresholds, recall points, classes, 1 area, 1 maxDets)
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else -1.0  # summarize's convention: -1 when nothing is defined


def _cocoeval(coco_gt: Any, results: list[dict[str, Any]], *, area_range: tuple[float, float] | None = None,
              image_ids: Sequence[int] | None = None) -> Any:
    """An accumulated pycocotools COCOeval (bbox) of ``results``; with ``area_range``, that range alone at 100
    detections per image."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))  # loadRes adds keys to the dicts it is given
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
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


def _ground_truth(source: ImageSource) -> tuple[Any, ImageIndex]:
    """``(pycocotools COCO or None, ImageIndex)`` from a coco-mini folder, an instances file, or a bare folder."""
    if source.data is None and source.annotations is None:
        if source.images is None:
            raise InputError("give --data (with --split), or --images (optionally with --annotations)")
        return None, images_in_folder(source.images)
    paths = split_paths(source.data, source.split, annotations=source.annotations, images=source.images)
    coco, entries, _, _ = load_ground_truth(paths, ErrorPolicy("raise"), Counter(), check_images=False)
    return coco, entries


def split_ground_truth(data: str, split: str) -> tuple[Any, ImageIndex]:
    """``(pycocotools COCO, ImageIndex)`` of a coco-mini-layout split that must have ground-truth boxes."""
    coco, index = _ground_truth(ImageSource(data, split))
    if not coco.dataset.get("annotations"):
        raise InputError(f"{split_paths(data, split).annotations}: split {split!r} has no ground-truth boxes")
    return coco, index


def rescore_file(stage: SecondStage, detections: str | os.PathLike, out: str | os.PathLike,
                 fusions: list[str] | Mapping[str, Fusion], source: ImageSource,
                 options: RescoreOptions = RescoreOptions(), *, crossfit: int = 0) -> dict[str, Any]:
    """Everything ``lowres rescore`` does, as a function: returns a summary with the written paths, the
    skipped counts and, when ground truth is known, COCO metrics ``before`` and per rule. With ``options.label_map``
    (:func:`load_label_map`) the detections' ``category_id`` are detector labels, mapped to COCO ids.
    ``crossfit`` = K > 1 adds ``auto_crossfit``: ``auto`` fitted on this split itself, K folds over images, each
    fold's boxes fused by the rule fitted on the others (:func:`lowres.rcnn.calibrate.crossfit_fusion`)."""
    coco, index = _ground_truth(source)
    results, unmapped = _to_coco_ids(load_results(detections), options.label_map, detections)
    whole_set = {}
    if crossfit:
        if coco is None or not coco.dataset.get("annotations"):
            raise InputError(f"--crossfit fits on the evaluated split's ground truth: split {source.split!r} has none")
        from .calibrate import crossfit_fusion  # calibrate imports this module

        whole_set["auto_crossfit"] = lambda c: crossfit_fusion(c, coco, folds=crossfit)[0]
    rescored = rescore_results(stage, results, index, fusions, options, where=str(detections), whole_set=whole_set)
    written = {}
    for rule, path in fusion_output_paths(out, list(rescored.by_fusion)).items():
        written[rule] = str(atomic_write_json(path, rescored.by_fusion[rule]))
    summary: dict[str, Any] = {"detections": len(results), "images": rescored.num_images, "outputs": written,
                               "skipped": {**dict(rescored.skipped), **({"unmapped_label": unmapped} if unmapped else {})},
                               "kept": {r: len(v) for r, v in rescored.by_fusion.items()}}
    if coco is not None:
        known = [d.to_result() for d in results if d.image_id in index]  # what was rescored
        summary["metrics"] = {"before": coco_bbox_metrics(coco, known),
                              **{rule: coco_bbox_metrics(coco, found) for rule, found in rescored.by_fusion.items()}}
    return summary


def _to_coco_ids(results: list[Detection], label_map: dict[int, int | None] | None,
                 source: str | os.PathLike) -> tuple[list[Detection], int]:
    """Detector labels -> COCO category ids through ``label_map`` (:func:`load_label_map`), before anything else
    sees them; a label mapped to None (no COCO category) is dropped and counted, an unmapped one is an error."""
    if label_map is None:
        return results, 0
    out, dropped = [], 0
    for d in results:
        if d.category_id not in label_map:
            raise InputError(f"{source}: detection {d.index}: detector label {d.category_id} is not in the label map")
        if label_map[d.category_id] is None:
            dropped += 1
            continue
        out.append(dataclasses.replace(d, category_id=int(label_map[d.category_id])))
    return out, dropped


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per entry (``before`` = the detector's own scores), one column per COCO metric."""
    lines = ["| scores | " + " | ".join(METRIC_NAMES) + " |", "|---" * (len(METRIC_NAMES) + 1) + "|"]
    for name, row in metrics.items():
        label = "detector (before)" if name == "before" else f"rescored: {name}"
        lines.append(f"| {label} | " + " | ".join(f"{row[m]:.4f}" for m in METRIC_NAMES) + " |")
    return "\n".join(lines)
