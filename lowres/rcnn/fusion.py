"""Fusion of a detector's score with the second stage's class probabilities, and label-space mapping.

Notation, per detection: ``s`` the detector's score, ``d`` the detector's label mapped to a classifier
label, ``p`` the classifier's softmax over its ``C`` outputs (``K`` object classes, plus background as the
last label ``K`` when the category map has one; see :class:`detection_bridge.records.CategoryMap`).
``argmax`` is taken over the ``K`` object classes only (ties: the lowest label, as ``torch.argmax``), and,
when the output label space cannot express every class (a ``label_map`` covering part of the model's
categories), over those it can express: a relabelled detection must have a label to be written with.

* ``replace``: label ``argmax_k p_k``, score ``p_label``. The detector only proposes boxes.
* ``product``: label ``d`` (unchanged), score ``s * p_d``. The classifier only re-weights.
* ``max``: label ``argmax_k (s * p_k)`` (= ``argmax_k p_k``: ``s`` is one scalar per box), score
  ``s * p_label``, i.e. the largest entry of the vector ``s * p``. It lets the classifier relabel (unlike
  ``product``) and keeps the detector's confidence in the score (unlike ``replace``).

Background suppression, only when the model has a background class and ``background_threshold`` is not
None: a detection with ``p_background > background_threshold`` is dropped, whatever the rule. The kept
scores still carry the background mass (probabilities are not renormalised over object classes), so a
likely-background box ranks low even below the threshold, which is what AP rewards.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from detection_bridge.records import CategoryMap

__all__ = ["FUSIONS", "fuse", "LabelSpace"]

FUSIONS: tuple[str, ...] = ("replace", "product", "max")


def fuse(probs: Tensor, det_scores: Tensor, det_labels: Tensor, rule: str, *, background_label: int | None = None,
         background_threshold: float | None = 0.5, candidates: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Apply ``rule`` (see the module docstring): ``(labels, scores, keep)`` in the classifier's label space.

    ``probs`` ``(N, C)``, ``det_scores`` ``(N,)``, ``det_labels`` ``(N,)`` classifier labels. ``candidates``:
    optional bool ``(K,)`` mask of the object classes ``replace``/``max`` may choose (default: all). ``keep`` is
    a bool mask of the detections that survive background suppression.
    """
    if rule not in FUSIONS:
        raise ValueError(f"unknown fusion rule {rule!r}; choose one of {FUSIONS}")
    if probs.dim() != 2 or len(probs) != len(det_scores) or len(probs) != len(det_labels):
        raise ValueError(f"probs {tuple(probs.shape)}, scores {tuple(det_scores.shape)} and labels "
                         f"{tuple(det_labels.shape)} disagree on the number of detections")
    probs, det_scores = probs.float(), det_scores.to(probs.device, torch.float32)
    det_labels = det_labels.to(probs.device, torch.int64)
    num_objects = probs.shape[1] - (background_label is not None)
    if background_label is not None and background_label != num_objects:
        raise ValueError(f"background must be the last label ({num_objects}), got {background_label}")
    if len(probs) == 0:
        empty = torch.zeros(0, device=probs.device)
        return empty.long(), empty, empty.bool()
    object_probs = probs[:, :num_objects]
    if candidates is not None and rule != "product":
        object_probs = object_probs.masked_fill(~candidates.to(probs.device)[None, :num_objects], -1.0)
    if rule == "product":
        labels = det_labels
        scores = det_scores * probs.gather(1, labels[:, None])[:, 0]
    else:
        best, labels = object_probs.max(dim=1)
        scores = best if rule == "replace" else det_scores * best
    keep = torch.ones(len(probs), dtype=torch.bool, device=probs.device)
    if background_label is not None and background_threshold is not None:
        keep = probs[:, background_label] <= background_threshold
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
            raise ValueError("the label_map maps no detector label to a category of the second stage's map")
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
            raise ValueError(f"{where}: labels {bad} (read as {space}) are not classes of the second stage's "
                             f"category map ({self.category_map.num_object_classes} categories); pass a label_map "
                             "that maps the detector's labels to COCO category ids the model was trained on")
        return out

    def to_detector(self, labels: Tensor) -> Tensor:
        """Detector labels of classifier ``labels`` (used when a rule relabels)."""
        cpu = labels.to(torch.int64).cpu().tolist()
        missing = sorted({c for c in cpu if c not in self._to_detector})
        if missing:
            names = [self.category_map.name_of(c) for c in missing[:10]]
            raise ValueError(f"the second stage chose classes {names} that the label_map gives no detector label; "
                             "extend the label_map or use fusion='product' (which keeps the detector's labels)")
        return torch.tensor([self._to_detector[c] for c in cpu], dtype=torch.int64)

    def category_ids(self, labels: Tensor) -> list[int]:
        """COCO category ids of classifier ``labels`` (files are written in category ids)."""
        return [self.category_map.category_id_of(int(c)) for c in labels.tolist()]
