"""Fusion of a detector's score with the second stage's class probabilities, and label-space mapping.

Notation, per detection: ``s`` the detector's score, ``d`` the detector's label mapped to a classifier
label, ``p`` the classifier's softmax over its ``C`` outputs (``K`` object classes, plus background as the
last label ``K`` when the category map has one; see :class:`detection_bridge.records.CategoryMap`).
``argmax`` is taken over the ``K`` object classes only (ties: the lowest label, as ``torch.argmax``), and,
when the output label space cannot express every class (a ``label_map`` covering part of the model's
categories), over those it can express: a relabelled detection must have a label to be written with.

Every rule is one :class:`RuleParams`: label ``argmax_k p_k`` when it relabels, else ``d``; score
``s * p[label]^T`` (``T`` the temperature), or ``p[label]^T`` alone when it ignores the detector. The named rules:

* ``replace``: label ``argmax_k p_k``, score ``p_label``. The detector only proposes boxes.
* ``product``: label ``d`` (unchanged), score ``s * p_d``. The classifier only re-weights.
* ``max``: label ``argmax_k (s * p_k)`` (= ``argmax_k p_k``: ``s`` is one scalar per box), score
  ``s * p_label``, i.e. the largest entry of the vector ``s * p``. It lets the classifier relabel (unlike
  ``product``) and keeps the detector's confidence in the score (unlike ``replace``).
* the tempered product ``s * p_d^T`` with ``T = 0`` is the detector alone (:data:`DETECTOR`), which is why
  a rule calibrated over ``T`` (``auto``, :mod:`lowres.rcnn.calibrate`) can only match or beat the detector
  on its calibration split.

Background suppression, only when the model has a background class and ``background_threshold`` is not
None: a detection with ``p_background > background_threshold`` is dropped, whatever the rule. The kept
scores still carry the background mass (probabilities are not renormalised over object classes), so a
likely-background box ranks low even below the threshold, which is what AP rewards.

Size gating (:class:`Fusion`): a detection uses the first band whose ``max_area`` exceeds its box area
(``w * h`` in pixels, the area COCOeval gives detections); boxes beyond every band keep the detector's label
and score. Section 9 of the paper argues for a low-resolution network for *small* objects, so the second
stage can be confined to them (COCO's thresholds: small below 32^2, medium below 96^2).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from detection_bridge.fileio import atomic_write_json, read_json
from detection_bridge.records import CategoryMap
from ..errors import InputError

__all__ = ["FUSIONS", "fuse", "fuse_with", "fuse_detections", "check_detector_scores",
           "LabelSpace", "RuleParams", "Band", "Fusion", "DETECTOR", "SIZE_THRESHOLDS", "parse_max_area"]

FUSIONS: tuple[str, ...] = ("replace", "product", "max")
SIZE_THRESHOLDS: dict[str, float] = {"small": 32.0 ** 2, "medium": 96.0 ** 2}  # COCOeval's area ranges
FORMAT = "lowres.fusion/1"


@dataclass(frozen=True)
class RuleParams:
    """One fusion rule (module docstring): relabel or not, temperature ``T``, detector score used or not,
    background threshold (None: never suppress)."""

    temperature: float = 1.0
    relabel: bool = False
    detector_score: bool = True
    background_threshold: float | None = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise InputError(f"temperature must be a finite number >= 0, got {self.temperature}")
        t = self.background_threshold
        if t is not None and not (math.isfinite(t) and 0 <= t <= 1):
            raise InputError(f"background_threshold must be in [0, 1] or None, got {t}")

    @property
    def is_detector(self) -> bool:
        """True when the rule gives back the detector's labels and scores exactly."""
        return self.temperature == 0 and not self.relabel and self.detector_score and self.background_threshold is None


DETECTOR = RuleParams(temperature=0.0, relabel=False, detector_score=True, background_threshold=None)


def _rule_params(rule: str, background_threshold: float | None) -> RuleParams:
    if rule not in FUSIONS:
        raise ValueError(f"unknown fusion rule {rule!r}; choose one of {FUSIONS}")
    return RuleParams(1.0, relabel=rule != "product", detector_score=rule != "replace",
                      background_threshold=background_threshold)


def parse_max_area(value: str | float | None) -> float | None:
    """``small`` / ``medium`` (COCO's 32^2 / 96^2) or a positive number of square pixels; None: no gate."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        area = value
    elif str(value).lower() in SIZE_THRESHOLDS:
        area = SIZE_THRESHOLDS[str(value).lower()]
    else:
        try:
            area = float(value)
        except ValueError:
            raise InputError(f"max area must be small, medium or a number of square pixels, got {value!r}") from None
    if area is not None and not (area > 0 and not math.isnan(area)):
        raise InputError(f"max area must be > 0, got {value!r}")
    return None if area is None else float(area)


def _area_name(area: float) -> str:
    """``small`` / ``medium`` for COCO's thresholds, else ``a<area>`` (names output files: no odd characters)."""
    named = {v: k for k, v in SIZE_THRESHOLDS.items()}
    return named.get(area, f"a{area:g}")


@dataclass(frozen=True)
class Band:
    """Boxes with area below ``max_area`` (and not in an earlier band) use ``params``; ``inf``: no bound."""

    max_area: float
    params: RuleParams
    name: str = ""


@dataclass(frozen=True)
class Fusion:
    """A fusion rule per size band, in increasing ``max_area``; boxes beyond the last band keep the detector's
    label and score. ``report``: what a calibration measured (kept in the JSON, never used to fuse)."""

    bands: tuple[Band, ...]
    name: str = "custom"
    report: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        bounds = [b.max_area for b in self.bands]
        if not bounds or any(not (a > 0) for a in bounds) or bounds != sorted(set(bounds)):
            raise InputError(f"fusion bands need positive, strictly increasing max_area, got {bounds}")

    @classmethod
    def rule(cls, rule: str, *, background_threshold: float | None = 0.5, max_area: float | str | None = None
             ) -> "Fusion":
        """A named rule (:data:`FUSIONS`) for every box, or only below ``max_area`` (:func:`parse_max_area`)."""
        area = parse_max_area(max_area)
        name = rule if area is None else f"{rule}-{_area_name(area)}"
        return cls((Band(math.inf if area is None else area, _rule_params(rule, background_threshold)),), name)

    @property
    def relabels(self) -> bool:
        return any(b.params.relabel for b in self.bands)

    def to_dict(self) -> dict[str, Any]:
        bands = [{"name": b.name, "max_area": None if math.isinf(b.max_area) else b.max_area,
                  **dataclasses.asdict(b.params)} for b in self.bands]
        return {"format": FORMAT, "name": self.name, "bands": bands, "report": dict(self.report or {})}

    @classmethod
    def from_dict(cls, data: Any, source: str = "fusion parameters") -> "Fusion":
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("bands"), list):
            raise InputError(f"{source}: not a {FORMAT} file (needs format and bands)")
        try:
            bands = tuple(Band(math.inf if b["max_area"] is None else float(b["max_area"]),
                               RuleParams(float(b["temperature"]), bool(b["relabel"]), bool(b["detector_score"]),
                                          b["background_threshold"]), str(b.get("name", "")))
                          for b in data["bands"])
            return cls(bands, str(data.get("name", "custom")), data.get("report") or None)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{source}: bad fusion band ({type(e).__name__}: {e})") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON atomically (small: the bands and the calibration report)."""
        return atomic_write_json(path, self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Fusion":
        return cls.from_dict(read_json(path, "fusion parameters"), str(path))


def fuse(probs: Tensor, det_scores: Tensor, det_labels: Tensor, rule: str, *, background_label: int | None = None,
         background_threshold: float | None = 0.5, candidates: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """A named ``rule`` on every box: :func:`fuse_with` of :meth:`Fusion.rule` (a rule gated by box area:
    ``fuse_with(Fusion.rule(rule, max_area=...), ..., areas=...)``)."""
    fusion = Fusion.rule(rule, background_threshold=background_threshold)
    return fuse_with(fusion, probs, det_scores, det_labels, background_label=background_label, candidates=candidates)


def fuse_with(fusion: Fusion, probs: Tensor, det_scores: Tensor, det_labels: Tensor, *,
              background_label: int | None = None, candidates: Tensor | None = None, areas: Tensor | None = None
              ) -> tuple[Tensor, Tensor, Tensor]:
    """Apply ``fusion`` (module docstring): ``(labels, scores, keep)`` in the classifier's label space.

    ``probs`` ``(N, C)``, ``det_scores`` ``(N,)``, ``det_labels`` ``(N,)`` classifier labels, ``areas`` ``(N,)``
    box areas (needed when a band is bounded). ``candidates``: optional bool ``(K,)`` mask of the object classes
    a relabelling rule may choose (default: all). ``keep`` is a bool mask of the detections that survive
    background suppression. Scores are float64 when ``det_scores`` is (files: a detector-alone box keeps its
    score bit for bit), else float32.
    """
    n = len(probs)
    if probs.dim() != 2 or n != len(det_scores) or n != len(det_labels) or (areas is not None and n != len(areas)):
        raise ValueError(f"probs {tuple(probs.shape)}, scores {tuple(det_scores.shape)}, labels "
                         f"{tuple(det_labels.shape)} and areas disagree on the number of detections")
    num_objects = probs.shape[1] - (background_label is not None)
    if background_label is not None and background_label != num_objects:
        raise ValueError(f"background must be the last label ({num_objects}), got {background_label}")
    dtype = torch.float64 if det_scores.dtype == torch.float64 else torch.float32
    probs, device = probs.to(dtype), probs.device
    labels = det_labels.to(device, torch.int64).clone()
    scores = det_scores.to(device, dtype).clone()
    keep = torch.ones(n, dtype=torch.bool, device=device)
    if n == 0:
        return labels, scores, keep
    bounds = torch.tensor([b.max_area for b in fusion.bands], dtype=torch.float64, device=device)
    if areas is None and math.isfinite(fusion.bands[-1].max_area):
        raise ValueError(f"fusion {fusion.name!r} is gated by box area: pass the boxes' areas")
    band_of = (torch.zeros(n, dtype=torch.int64, device=device) if areas is None
               else torch.bucketize(areas.to(device, torch.float64), bounds, right=True))  # area < max_area
    for i, band in enumerate(fusion.bands):
        rows = (band_of == i).nonzero()[:, 0]
        if len(rows) and not band.params.is_detector:
            labels[rows], scores[rows], keep[rows] = _apply(band.params, probs[rows], scores[rows], labels[rows],
                                                            num_objects, background_label, candidates)
    return labels, scores, keep


def check_detector_scores(scores: Tensor, where: Callable[[int], str]) -> None:
    """Detector confidences must lie in [0, 1]: anything else (logits, NaN) would make every rule lie.
    ``where(k)`` names the ``k``-th score in the error (a tensor entry, or a results file's record)."""
    bad = ~((scores >= 0) & (scores <= 1))  # also true for NaN
    if bad.any():
        k = int(bad.nonzero()[0])
        raise InputError(f"{where(k)}: score must be a number in [0, 1] (a detector's confidence), "
                         f"got {float(scores[k])}")


def fuse_detections(fusion: Fusion, probs: Tensor, det_scores: Tensor, det_labels: Tensor, areas: Tensor,
                    space: "LabelSpace") -> tuple[Tensor, Tensor, Tensor]:
    """:func:`fuse_with` for detections whose labels are in ``space`` (background and relabelling candidates
    from its category map): ``(labels, scores, kept)`` with ``kept`` the indices that survive background
    suppression, in input order. Used by the tensor path (:meth:`SecondStage.rescore`, :func:`attach`) and the
    file path (:class:`lowres.rcnn.files.ClassifiedResults`), which differ only in how they order the output."""
    labels, scores, keep = fuse_with(fusion, probs, det_scores, det_labels.to(probs.device),
                                     background_label=space.category_map.background_label,
                                     candidates=space.candidates, areas=areas)
    return labels, scores, keep.nonzero()[:, 0]


def _apply(params: RuleParams, probs: Tensor, det_scores: Tensor, det_labels: Tensor, num_objects: int,
           background_label: int | None, candidates: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """One band's rule on its rows (``probs`` already in the scores' dtype)."""
    if params.relabel:
        object_probs = probs[:, :num_objects]
        if candidates is not None:
            object_probs = object_probs.masked_fill(~candidates.to(probs.device)[None, :num_objects], -1.0)
        best, labels = object_probs.max(dim=1)
    else:
        labels = det_labels
        best = probs.gather(1, labels[:, None])[:, 0]
    weight = best.clamp(min=0).pow(params.temperature)  # 0^0 = 1: T = 0 leaves the score alone
    scores = det_scores * weight if params.detector_score else weight
    keep = torch.ones(len(probs), dtype=torch.bool, device=probs.device)
    if background_label is not None and params.background_threshold is not None:
        keep = probs[:, background_label] <= params.background_threshold
    return labels, scores, keep


class LabelSpace:
    """Detector labels <-> classifier labels, through COCO category ids and the model's category map.

    ``label_map``: None when the detector's labels are COCO category ids (torchvision's COCO detectors:
    their label indices equal COCO category ids, with ``N/A`` gaps); a mapping ``{detector label: category
    id}``; or a sequence whose index is the detector label and whose value is the category id (``None``
    for unused entries, e.g. background). A detection whose label maps to no category of the model is an
    error, never silently dropped: the classifier has no probability for it.
    """

    def __init__(self, category_map: CategoryMap,
                 label_map: Mapping[int, int] | Sequence[int | None] | None = None) -> None:
        self.category_map = category_map
        if label_map is None:
            pairs = {int(c): int(c) for c in category_map.category_ids}
        elif isinstance(label_map, Mapping):
            pairs = {int(k): int(v) for k, v in label_map.items() if v is not None}
        else:
            pairs = {i: int(v) for i, v in enumerate(label_map) if v is not None}
        self.identity = label_map is None
        self.to_category = pairs
        self._to_classifier = {d: category_map.label_of(c) for d, c in pairs.items() if c in category_map}
        self._to_detector = {}
        for d, cls in sorted(self._to_classifier.items(), reverse=True):
            self._to_detector[cls] = d  # several detector labels on one class: the smallest wins
        self.candidates = torch.zeros(category_map.num_object_classes, dtype=torch.bool)
        for cls in self._to_detector:
            if cls < category_map.num_object_classes:
                self.candidates[cls] = True
        if not self.candidates.any():
            raise InputError("the label_map maps no detector label to a category of the second stage's map")
        size = max(self._to_classifier, default=0) + 1
        self._lut = torch.full((size,), -1, dtype=torch.int64)
        for d, cls in self._to_classifier.items():
            if d >= 0:
                self._lut[d] = cls

    def to_classifier(self, labels: Tensor, where: str = "detections") -> Tensor:
        """Classifier labels of detector ``labels``; an unmapped label raises ``ValueError`` naming it."""
        labels = labels.to(torch.int64)
        if labels.numel() == 0:
            return labels.cpu()
        cpu = labels.cpu()
        inside = (cpu >= 0) & (cpu < len(self._lut))
        out = torch.full_like(cpu, -1)
        out[inside] = self._lut[cpu[inside]]
        if (out < 0).any():
            bad = sorted({int(v) for v in cpu[out < 0].tolist()})[:10]
            space = "COCO category ids" if self.identity else "detector labels of the label_map"
            raise InputError(f"{where}: labels {bad} (read as {space}) are not classes of the second stage's "
                             f"category map ({self.category_map.num_object_classes} categories); pass a label_map "
                             "that maps the detector's labels to COCO category ids the model was trained on")
        return out

    def to_detector(self, labels: Tensor) -> Tensor:
        """Detector labels of classifier ``labels`` (used when a rule relabels)."""
        cpu = labels.to(torch.int64).cpu().tolist()
        missing = sorted({c for c in cpu if c not in self._to_detector})
        if missing:
            names = [self.category_map.name_of(c) for c in missing[:10]]
            raise InputError(f"the second stage chose classes {names} that the label_map gives no detector label; "
                             "extend the label_map or use fusion='product' (which keeps the detector's labels)")
        return torch.tensor([self._to_detector[c] for c in cpu], dtype=torch.int64)

    def category_ids(self, labels: Tensor) -> list[int]:
        """COCO category ids of classifier ``labels`` (files are written in category ids)."""
        return [self.category_map.category_id_of(int(c)) for c in labels.tolist()]
