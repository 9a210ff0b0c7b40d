"""``--fusion auto``: fit the fusion of detector and classifier on a calibration split, by COCO AP.

The fixed rules apply one formula to every box whatever the classifier's quality; a weak classifier then
lowers AP. Here the rule is chosen on a split with ground truth (by default ``train``, scored with the same
detector's results there), per COCO size band (small below 32^2, medium below 96^2, large; cut at
``max_area``), among the tempered products ``s * p[label]^T`` of :mod:`lowres.rcnn.fusion`:

* ``T`` over :attr:`Grid.temperatures`; ``T = 0`` is the detector alone,
* relabelling (``max``: label ``argmax p``) or not,
* then, at the best of those, the background threshold over :attr:`Grid.background_thresholds` (or none).

Each band takes the candidate with the highest COCO AP of its own size (pycocotools COCOeval over that area
range: APs, APm, APl for COCO's bands) on the calibration split, replacing the detector alone only on a
strict gain; judged by its own AP, a band cannot win by merely shifting all its scores against the other
bands'. Then, since the overall AP also ranks boxes of different sizes against each other, the fitted bands
kept are the subset with the best overall COCO AP (``stats[0]``), the empty subset (the detector alone)
included and preferred on ties. The two stages per band (16 rules, not the 60 of the full product) keep it
to minutes: one COCOeval of coco-mini train takes seconds on a CPU. So the fitted rule's calibration AP
is at least the detector's, and a classifier that does not help anywhere leaves the
detector alone (``T = 0``) in every band. Whether the gain carries over to another split is what the README
measures (val, calibrated on train); a classifier trained on the calibration split's own crops looks better
there than it is, which pushes ``T`` up.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import InputError
from .files import ClassifiedResults, RescoreOptions, classify_results, coco_ap, coco_bbox_metrics, load_results, split_ground_truth
from .fusion import DETECTOR, FUSIONS, SIZE_THRESHOLDS, Band, Fusion, RuleParams, parse_max_area
from .second_stage import SecondStage

__all__ = ["Grid", "Calibration", "fit_fusion", "crossfit_fusion", "calibrate_file", "calibration_detections", "fusion_params_path", "size_bands",
           "describe", "rescore_fusions"]

_COCO_BANDS = (("small", SIZE_THRESHOLDS["small"]), ("medium", SIZE_THRESHOLDS["medium"]), ("large", math.inf))

logger = logging.getLogger(__name__)


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
               max_area: float | str | None = None, image_ids: Sequence[int] | None = None) -> Fusion:
    """The rule per size band with the best COCO AP of ``classified`` against ``coco_gt`` (module docstring),
    over ``image_ids`` alone when given (a cross-fitting fold), else every ground-truth image.

    The returned :class:`Fusion` is named ``auto``; its ``report`` holds the calibration's metrics
    (``before``: the detector alone, ``fitted``), each band's AP before and after, the grid and the number of
    rules evaluated. What was chosen per band is logged (a cross-fitting fold's at DEBUG: its fold line says it).
    """
    say = logger.info if image_ids is None else logger.debug
    bands = size_bands(max_area)
    names, bounds = [name for name, _ in bands], [bound for _, bound in bands]
    background = classified.background_label is not None
    alone = [DETECTOR] * len(bounds)
    chosen, per_band, evaluated = [], {}, 0
    for i, (low, high) in enumerate(zip([0.0] + bounds[:-1], bounds)):
        if not ((classified.areas >= low) & (classified.areas < high)).any():
            chosen.append(DETECTOR)  # no calibration box of this size: nothing to fit, the detector stays
            continue
        cache: dict[RuleParams, float] = {}

        def band_ap(rule: RuleParams, i: int = i, area_range: tuple[float, float] = (low, min(high, 1e10))) -> float:
            if rule not in cache:
                rules = alone[:i] + [rule] + alone[i + 1:]
                cache[rule] = coco_ap(coco_gt, classified.fused(_fusion(names, bounds, rules))[0], area_range,
                                      image_ids)
            return cache[rule]

        chosen.append(_fit_band(band_ap, grid, background))
        evaluated += len(cache)
        per_band[names[i]] = {"before": band_ap(DETECTOR), "fitted": band_ap(chosen[-1]), "rule": _describe(chosen[-1])}
        say(f"{names[i]}: best rule for the band alone: {per_band[names[i]]['rule']} (AP of the band "
            f"{per_band[names[i]]['before']:.4f} -> {per_band[names[i]]['fitted']:.4f})")
    rules = _best_subset(lambda r: coco_ap(coco_gt, classified.fused(_fusion(names, bounds, r))[0], None, image_ids),
                         chosen)
    fitted = _fusion(names, bounds, rules)
    for i, name in enumerate(names):
        if name in per_band:
            per_band[name]["kept"] = rules[i] != DETECTOR  # False: the overall AP preferred the detector here
            if not per_band[name]["kept"] and chosen[i] != DETECTOR:
                say(f"{name}: not kept: over all bands together the detector alone scores the better AP there")
    report = {"metric": "COCO bbox AP (pycocotools COCOeval): each band by its own AP, the set of bands by AP",
              "before": coco_bbox_metrics(coco_gt, classified.fused(_fusion(names, bounds, alone))[0], image_ids),
              "fitted": coco_bbox_metrics(coco_gt, classified.fused(fitted)[0], image_ids), "bands": per_band,
              "evaluated": evaluated, "grid": {k: list(v) for k, v in dataclasses.asdict(grid).items()}}
    return dataclasses.replace(fitted, report=report)


def crossfit_fusion(classified: ClassifiedResults, coco_gt: Any, *, folds: int = 5, seed: int = 0,
                    grid: Grid = Grid(), max_area: float | str | None = None
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``auto`` fitted on the evaluated split itself without seeing the boxes it scores (K-fold cross-fitting).

    The split's ground-truth images are dealt into ``folds`` folds (shuffled with ``seed``); each fold's boxes are
    fused by the rule fitted (:func:`fit_fusion`) on the other folds' images and boxes. A detector trained on the
    calibration split (all three of coco-mini's saw train2017) scores it better than new images, which biases a
    calibration on train; cross-fitting calibrates on images like the evaluated ones, and its AP is still an
    honest estimate, since no box is scored by a rule fitted on its own image. Returns the COCO results (each
    fold's, in fold order) and a report: per fold, its images, its rules and the AP of its fit.
    """
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    ids = sorted(coco_gt.getImgIds())
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    fold_of = {ids[j]: k % folds for k, j in enumerate(order)}
    results: list[dict[str, Any]] = []
    report: dict[str, Any] = {"folds": folds, "seed": seed, "per_fold": []}
    for f in range(folds):
        held = {i for i in ids if fold_of[i] == f}
        rest = [i for i in ids if fold_of[i] != f]
        fitted = fit_fusion(classified.subset(set(rest)), coco_gt, grid=grid, max_area=max_area, image_ids=rest)
        results += classified.subset(held).fused(fitted)[0]
        rules = {band.name: _describe(band.params) for band in fitted.bands}
        report["per_fold"].append({"images": len(held), "rules": rules, "fit_AP_before": fitted.report["before"]["AP"],
                                   "fit_AP_after": fitted.report["fitted"]["AP"]})
        logger.info(f"cross-fit fold {f + 1}/{folds} ({len(held)} images): " + "; ".join(
            f"{name} {rule}" for name, rule in rules.items()))
    return results, report


def _fit_band(ap: Callable[[RuleParams], float], grid: Grid, background: bool) -> RuleParams:
    """A band's best rule by its own AP: first ``T`` x relabelling, then the background threshold."""
    best, best_ap = DETECTOR, ap(DETECTOR)

    def consider(rule: RuleParams) -> None:
        nonlocal best, best_ap
        value = ap(rule)
        if value > best_ap:  # strict: ties keep what came first (the detector alone first of all)
            best, best_ap = rule, value

    for t in grid.temperatures:
        for relabel in grid.relabel:
            consider(RuleParams(float(t), bool(relabel), True, None))
    if background:
        base = best
        for threshold in grid.background_thresholds:
            consider(dataclasses.replace(base, background_threshold=float(threshold)))
    return best


def _best_subset(ap: Callable[[list[RuleParams]], float], chosen: list[RuleParams]) -> list[RuleParams]:
    """The bands' rules kept (the others: detector alone) that give the best overall AP; fewest changes on ties.

    Each band was fitted by its own AP; overall AP also ranks boxes of different sizes against each other,
    so a band's gain can cost elsewhere. The empty set (the detector alone) is a candidate, hence the guarantee.
    """
    fitted = [i for i, rule in enumerate(chosen) if rule != DETECTOR]
    best, best_ap = [DETECTOR] * len(chosen), None
    for size in range(len(fitted) + 1):
        for kept in itertools.combinations(fitted, size):
            rules = [chosen[i] if i in kept else DETECTOR for i in range(len(chosen))]
            value = ap(rules)
            if best_ap is None or value > best_ap:
                best, best_ap = rules, value
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
        lines.append(f"  chosen for {band.name or 'band'} [{low:g}, {high}) px^2: {_describe(band.params)}")
        low = band.max_area
    if not math.isinf(fusion.bands[-1].max_area):
        lines.append(f"  above {fusion.bands[-1].max_area:g} px^2: detector alone (gated)")
    return "\n".join(lines)


def calibration_detections(detections: str | os.PathLike, split: str) -> Path:
    """``<dir>/<name>_<split>.json`` for ``detections`` named ``<dir>/<name>_<other split>.json``."""
    path = Path(detections)
    name, sep, _ = path.stem.rpartition("_")
    if not sep or not name:
        raise InputError(f"{path}: cannot tell the detector's name (expected <name>_<split>.json); "
                         "pass the calibration split's detections file explicitly")
    return path.with_name(f"{name}_{split}{path.suffix}")


def fusion_params_path(checkpoint: str | os.PathLike, calibration: str | os.PathLike) -> Path:
    """``<checkpoint stem>.fusion.<detector name>.json`` beside the checkpoint: one per detector."""
    checkpoint, stem = Path(checkpoint), Path(calibration).stem
    detector = stem.rpartition("_")[0] or stem
    return checkpoint.with_name(f"{checkpoint.stem}.fusion.{detector}.json")


def calibrate_file(stage: SecondStage, detections: str | os.PathLike, *, data: str | os.PathLike, split: str = "train",
                   grid: Grid = Grid(), max_area: float | str | None = None,
                   options: RescoreOptions = RescoreOptions()) -> Fusion:
    """Fit ``auto`` on ``data``'s ``split`` (coco-mini layout) with that split's ``detections``.

    Errors name the file: a split without ground-truth boxes, a detections file that is missing or empty,
    or detections of categories the classifier does not know.
    """
    coco, index = split_ground_truth(str(data), split)
    results = load_results(detections)
    if not results:
        raise InputError(f"{detections}: no detections to calibrate on")
    classified = classify_results(stage, results, index, batch_images=options.batch_images,
                                  on_unknown=options.on_unknown, where=str(detections), progress=options.progress)
    if not classified.detections:
        raise InputError(f"{detections}: none of its detections is for an image of split {split!r}")
    fusion = fit_fusion(classified, coco, grid=grid, max_area=max_area)
    info = {"split": split, "detections": str(detections), "data": str(data), **(fusion.report or {})}
    return dataclasses.replace(fusion, report=info)


@dataclass(frozen=True)
class Calibration:
    """Where ``auto`` is fitted and kept: on ``data``'s ``split`` (coco-mini layout) with ``detections_file``
    (default: the rescored ``detections``' sibling for that split, :func:`calibration_detections`); its JSON
    goes to ``params_out`` (default: beside ``checkpoint``, :func:`fusion_params_path`)."""

    checkpoint: str | os.PathLike
    detections: str | os.PathLike
    data: str | os.PathLike | None = None
    split: str = "train"
    detections_file: str | os.PathLike | None = None
    params_out: str | os.PathLike | None = None


def rescore_fusions(stage: SecondStage, names: Sequence[str], calibration: Calibration, *,
                    max_area: float | str | None = None, options: RescoreOptions = RescoreOptions()
                    ) -> dict[str, Fusion]:
    """The fusions ``lowres rescore`` applies, by output name (``all``: the named rules), each gated by
    ``max_area``; ``auto`` fitted as ``calibration`` says (what was fitted is logged, in words)."""
    parse_max_area(max_area)  # a bad gate fails before anything slow
    wanted = list(dict.fromkeys(r for name in names for r in (FUSIONS if name == "all" else (name,))))
    fusions = {}
    c = calibration
    for name in wanted:
        if name != "auto":
            fusion = Fusion.rule(name, background_threshold=options.background_threshold, max_area=max_area)
            fusions[fusion.name] = fusion
            continue
        if c.data is None:
            raise InputError("fusion auto needs a coco-mini-layout data folder for the calibration split")
        source = Path(c.detections_file) if c.detections_file is not None else calibration_detections(
            c.detections, c.split)
        fusion = calibrate_file(stage, source, data=c.data, split=c.split, max_area=max_area, options=options)
        path = fusion.save(c.params_out if c.params_out is not None else fusion_params_path(c.checkpoint, source))
        before, fitted = fusion.report["before"]["AP"], fusion.report["fitted"]["AP"]
        logger.info(f"auto, fitted on {c.split} ({source}): AP there {before:.4f} -> {fitted:.4f}; parameters: "
                    f"{path}\n{describe(fusion)}")
        fusions["auto"] = fusion
    return fusions
