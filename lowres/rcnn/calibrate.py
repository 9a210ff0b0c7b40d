"""``--fusion auto``: fit the fusion of detector and classifier on a calibration split, by COCO AP.

The fixed rules apply one formula to every box whatever the classifier's quality; a weak classifier then
lowers AP. Here the rule is chosen on a split with ground truth (by default ``train``, scored with the same
detector's results there), per COCO size band (small below 32^2, medium below 96^2, large; cut at
``max_area``), among the tempered products ``s * p[label]^T`` of :mod:`lowres.rcnn.fusion`:

* ``T`` over :attr:`Grid.temperatures`; ``T = 0`` is the detector alone,
* relabelling (``max``: label ``argmax p``) or not,
* then, at the best of those, the background threshold over :attr:`Grid.background_thresholds` (or none).

The search is coordinate ascent over the bands, starting from the detector alone in every band: each band
in turn takes the candidate with the highest COCO AP (pycocotools COCOeval ``stats[0]``, all sizes) on the
calibration split with the other bands fixed, and replaces its rule only on a strict gain. The two stages
per band (16 rules, not the 60 of the full product) keep it to minutes: one COCOeval of coco-mini train
takes seconds on a CPU. So the fitted
rule's calibration AP is at least the detector's, and a classifier that does not help anywhere leaves the
detector alone (``T = 0``) in every band. Whether the gain carries over to another split is what the README
measures (val, calibrated on train); a classifier trained on the calibration split's own crops looks better
there than it is, which pushes ``T`` up.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .files import ClassifiedResults, classify_results, coco_ap, coco_bbox_metrics, load_results, split_ground_truth
from .fusion import DETECTOR, SIZE_THRESHOLDS, Band, Fusion, RuleParams, parse_max_area
from .second_stage import SecondStage

__all__ = ["Grid", "fit_fusion", "calibrate_file", "calibration_detections", "fusion_params_path", "size_bands",
           "describe"]

_COCO_BANDS = (("small", SIZE_THRESHOLDS["small"]), ("medium", SIZE_THRESHOLDS["medium"]), ("large", math.inf))


@dataclass(frozen=True)
class Grid:
    """The candidates tried per band (the detector alone is always one of them, and the starting point)."""

    temperatures: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    relabel: tuple[bool, ...] = (False, True)
    background_thresholds: tuple[float, ...] = (0.9, 0.7, 0.5, 0.3)


def size_bands(max_area: float | str | None = None) -> list[tuple[str, float]]:
    """COCO's size bands ``(name, max_area)``, cut at ``max_area`` (boxes above it keep the detector's scores)."""
    area = parse_max_area(max_area)
    bands, low = [], 0.0
    for name, high in _COCO_BANDS:
        if area is not None and low >= area:
            break
        bands.append((name, high if area is None else min(high, area)))
        low = high
    return bands


def fit_fusion(classified: ClassifiedResults, coco_gt: Any, *, grid: Grid = Grid(),
               max_area: float | str | None = None, passes: int = 2,
               progress: Callable[[str], None] | None = None) -> Fusion:
    """The rule per size band with the best COCO AP of ``classified`` against ``coco_gt`` (module docstring).

    The returned :class:`Fusion` is named ``auto``; its ``report`` holds the calibration's metrics
    (``before``: the detector alone, ``fitted``), the grid and the number of rules evaluated.
    """
    bands = size_bands(max_area)
    names, bounds = [name for name, _ in bands], [bound for _, bound in bands]
    lows = [0.0] + bounds[:-1]
    areas = classified.areas
    populated = [bool(((areas >= lo) & (areas < hi)).any()) for lo, hi in zip(lows, bounds)]
    cache: dict[tuple[RuleParams, ...], float] = {}

    def ap(rules: list[RuleParams]) -> float:
        if tuple(rules) not in cache:
            cache[tuple(rules)] = coco_ap(coco_gt, classified.fused(_fusion(names, bounds, rules))[0])
        return cache[tuple(rules)]

    current = [DETECTOR] * len(bounds)
    for _ in range(passes):
        changed = False
        for i in (i for i in range(len(bounds)) if populated[i]):  # an empty band has nothing to fit
            best = _fit_band(ap, current, i, grid, classified.background_label is not None)
            changed |= best != current[i]
            current[i] = best
            if progress is not None:
                progress(f"{names[i]}: {_describe(best)} (calibration AP {ap(current):.4f})")
        if not changed:
            break
    fitted, alone = _fusion(names, bounds, current), _fusion(names, bounds, [DETECTOR] * len(bounds))
    report = {"metric": "COCO bbox AP (pycocotools COCOeval stats[0], all sizes)",
              "before": coco_bbox_metrics(coco_gt, classified.fused(alone)[0]),
              "fitted": coco_bbox_metrics(coco_gt, classified.fused(fitted)[0]), "evaluated": len(cache),
              "grid": {k: list(v) for k, v in dataclasses.asdict(grid).items()}}
    return dataclasses.replace(fitted, report=report)


def _fit_band(ap: Callable[[list[RuleParams]], float], current: list[RuleParams], i: int, grid: Grid,
              background: bool) -> RuleParams:
    """Band ``i``'s best rule, others fixed: first ``T`` x relabelling, then the background threshold."""
    best, best_ap = current[i], ap(current)

    def consider(rule: RuleParams) -> None:
        nonlocal best, best_ap
        value = ap(current[:i] + [rule] + current[i + 1:])
        if value > best_ap:  # strict: ties keep what was there first (the detector alone, at the start)
            best, best_ap = rule, value

    for t in grid.temperatures:
        for relabel in grid.relabel:
            consider(RuleParams(float(t), bool(relabel), True, None))
    if background:
        base = best
        for threshold in grid.background_thresholds:
            consider(dataclasses.replace(base, background_threshold=float(threshold)))
    return best


def _fusion(names: list[str], bounds: list[float], rules: list[RuleParams]) -> Fusion:
    return Fusion(tuple(Band(bound, rule, name) for name, bound, rule in zip(names, bounds, rules)), "auto")


def _describe(rule: RuleParams) -> str:
    if rule == DETECTOR:
        return "detector alone (T=0)"
    threshold = "none" if rule.background_threshold is None else f"{rule.background_threshold:g}"
    return f"T={rule.temperature:g}, relabel={'yes' if rule.relabel else 'no'}, background>{threshold} dropped"


def describe(fusion: Fusion) -> str:
    """One line per band: its area range and rule (what ``lowres rescore`` prints)."""
    lines, low = [], 0.0
    for band in fusion.bands:
        high = "inf" if math.isinf(band.max_area) else f"{band.max_area:g}"
        lines.append(f"  {band.name or 'band'} [{low:g}, {high}) px^2: {_describe(band.params)}")
        low = band.max_area
    if not math.isinf(fusion.bands[-1].max_area):
        lines.append(f"  above {fusion.bands[-1].max_area:g} px^2: detector alone (gated)")
    return "\n".join(lines)


def calibration_detections(detections: str | os.PathLike, split: str) -> Path:
    """``<dir>/<name>_<split>.json`` for ``detections`` named ``<dir>/<name>_<other split>.json``."""
    path = Path(detections)
    name, sep, _ = path.stem.rpartition("_")
    if not sep or not name:
        raise ValueError(f"{path}: cannot tell the detector's name (expected <name>_<split>.json); "
                         "pass the calibration split's detections file explicitly")
    return path.with_name(f"{name}_{split}{path.suffix}")


def fusion_params_path(checkpoint: str | os.PathLike, calibration: str | os.PathLike) -> Path:
    """``<checkpoint stem>.fusion.<detector name>.json`` beside the checkpoint: one per detector."""
    checkpoint, stem = Path(checkpoint), Path(calibration).stem
    detector = stem.rpartition("_")[0] or stem
    return checkpoint.with_name(f"{checkpoint.stem}.fusion.{detector}.json")


def calibrate_file(stage: SecondStage, detections: str | os.PathLike, *, data: str | os.PathLike, split: str = "train",
                   grid: Grid = Grid(), max_area: float | str | None = None, batch_images: int = 8,
                   on_unknown: str = "raise", progress: Callable[[int], None] | None = None,
                   report: Callable[[str], None] | None = None) -> Fusion:
    """Fit ``auto`` on ``data``'s ``split`` (coco-mini layout) with that split's ``detections``.

    Errors name the file: a split without ground-truth boxes, a detections file that is missing or empty,
    or detections of categories the classifier does not know.
    """
    coco, index = split_ground_truth(str(data), split)
    results = load_results(detections)
    if not results:
        raise ValueError(f"{detections}: no detections to calibrate on")
    classified = classify_results(stage, results, index, batch_images=batch_images, on_unknown=on_unknown,
                                  where=str(detections), progress=progress)
    if not classified.order:
        raise ValueError(f"{detections}: none of its detections is for an image of split {split!r}")
    fusion = fit_fusion(classified, coco, grid=grid, max_area=max_area, progress=report)
    info = {"split": split, "detections": str(detections), "data": str(data), **(fusion.report or {})}
    return dataclasses.replace(fusion, report=info)
