"""Detector boxes <-> ground truth by IoU, and jittered copies of ground-truth boxes.

Labelling follows R-CNN's fine-tuning rule (Girshick et al. 2014, section 2.3 / appendix B): a box
takes the class of the object it overlaps most when IoU >= 0.5 and is background below a lower
threshold; boxes in between are ambiguous and ignored. Several detections may take the same object
(labelling is many-to-one, unlike COCOeval's one-to-one matching for AP).

Crowd regions follow pycocotools' ``iscrowd`` semantics (``maskApi.c: bbIou``): the overlap of a box
with a crowd region is ``intersection / area(box)``, since a crowd region is a union of objects, not
one object. Crowd regions never make a positive; a box that overlaps one by at least the background
threshold is ignored rather than called background, because it likely shows unannotated objects.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boxes import box_area, clip_xyxy, scale_about_centre

# Status codes of a detection after matching (also the keys of the summary's "filtered" counts).
POSITIVE = "positive"
BACKGROUND = "background"
IGNORED = "ignored_iou"            # between the thresholds: ambiguous
CROWD = "ignored_crowd"            # overlaps a crowd region, not positive
DROPPED_BACKGROUND = "dropped_background"  # would be background, but no background class requested


@dataclass(frozen=True)
class MatchParams:
    """Thresholds of detection labelling; the defaults are R-CNN's (0.5 / 0.3) and the issue's."""

    iou_positive: float = 0.5        # IoU >= this with an object: the object's label
    iou_background: float = 0.3      # max IoU < this with every object: background
    background: bool = False         # keep background boxes as an extra class (else drop and count)
    score_threshold: float | None = None  # drop detections scoring below this before matching
    top_k: int | None = None         # keep at most this many detections per image, highest score first

    def __post_init__(self) -> None:
        if not 0.0 <= self.iou_background <= self.iou_positive <= 1.0:
            raise ValueError("need 0 <= iou_background <= iou_positive <= 1, got "
                             f"{self.iou_background} and {self.iou_positive}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")


def pairwise_iou(dets_xyxy: np.ndarray, gts_xyxy: np.ndarray, gt_iscrowd: np.ndarray | None = None) -> np.ndarray:
    """IoU matrix ``(N, M)`` of detections and ground truth, with pycocotools' crowd rule.

    For a crowd ground truth the union is the detection's own area (``pycocotools.mask.iou`` with
    ``iscrowd=1``). Empty boxes have IoU 0 with everything.
    """
    d = np.asarray(dets_xyxy, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gts_xyxy, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(d[:, None, 2], g[None, :, 2]) - np.maximum(d[:, None, 0], g[None, :, 0])
    ih = np.minimum(d[:, None, 3], g[None, :, 3]) - np.maximum(d[:, None, 1], g[None, :, 1])
    inter = iw.clip(min=0) * ih.clip(min=0)
    area_d, area_g = box_area(d)[:, None], box_area(g)[None, :]
    union = area_d + area_g - inter
    if gt_iscrowd is not None and len(g):
        crowd = np.asarray(gt_iscrowd, dtype=bool).reshape(1, -1)
        union = np.where(crowd, np.broadcast_to(area_d, union.shape), union)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def select_detections(scores: np.ndarray, params: MatchParams) -> tuple[np.ndarray, int, int]:
    """Indices of detections kept by the score threshold and top-k, highest score first.

    Returns ``(kept_indices, n_below_score, n_beyond_top_k)`` so both filters can be counted.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    n_below = 0
    if params.score_threshold is not None:
        keep = scores[order] >= params.score_threshold
        n_below = int((~keep).sum())
        order = order[keep]
    n_beyond = 0
    if params.top_k is not None and len(order) > params.top_k:
        n_beyond = len(order) - params.top_k
        order = order[: params.top_k]
    return order, n_below, n_beyond


def match_detections(dets_xyxy: np.ndarray, gts_xyxy: np.ndarray, gt_iscrowd: np.ndarray,
                     params: MatchParams) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Label detections against one image's ground truth.

    Returns ``(status, gt_index, iou)`` per detection: ``status`` is one of the module's codes,
    ``gt_index`` the best non-crowd object (-1 when there is none), ``iou`` the IoU with it.
    """
    n = len(np.asarray(dets_xyxy).reshape(-1, 4))
    iscrowd = np.asarray(gt_iscrowd, dtype=bool).reshape(-1)
    ious = pairwise_iou(dets_xyxy, gts_xyxy, iscrowd)  # N x M
    object_idx = np.flatnonzero(~iscrowd)
    best, best_iou = np.full(n, -1), np.zeros(n)
    if len(object_idx):
        j = ious[:, object_idx].argmax(axis=1)
        best_iou = ious[np.arange(n), object_idx[j]]
        best = np.where(best_iou > 0, object_idx[j], -1)
    crowd_overlap = ious[:, iscrowd].max(axis=1) if iscrowd.any() else np.zeros(n)
    status = []
    for i in range(n):
        if best_iou[i] >= params.iou_positive:
            status.append(POSITIVE)
        elif crowd_overlap[i] >= params.iou_background:
            status.append(CROWD)
        elif best_iou[i] >= params.iou_background:
            status.append(IGNORED)
        else:
            status.append(BACKGROUND if params.background else DROPPED_BACKGROUND)
    return status, best, best_iou


def jitter_boxes(box_xyxy: np.ndarray, n: int, rng: np.random.Generator, *, min_iou: float = 0.7,
                 scale: float = 0.15, shift: float = 0.1, image_size: tuple[float, float] | None = None,
                 max_rounds: int = 20) -> np.ndarray:
    """``n`` jittered copies of a ground-truth box, each with IoU >= ``min_iou`` with it.

    R-CNN fine-tunes on any proposal with IoU >= 0.5 with an object; jittered copies give the same kind
    of imperfect positives when no detector boxes are available. Candidates get a log-uniform
    scale per side (``+-scale``) and a shift (``+-shift`` of the side), are clipped to the image, and
    are kept by rejection; if too few pass after ``max_rounds`` the rest are the box itself.
    """
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(4)
    kept: list[np.ndarray] = []
    for _ in range(max_rounds):
        if len(kept) >= n:
            break
        m = 4 * n
        fx, fy = np.exp(rng.uniform(-scale, scale, (2, m)))
        w, h = box[2] - box[0], box[3] - box[1]
        cand = scale_about_centre(np.broadcast_to(box, (m, 4)), fx, fy)
        cand = cand + (rng.uniform(-shift, shift, (m, 2)) * [w, h]).repeat(2, axis=1)[:, [0, 2, 1, 3]]
        if image_size is not None:
            cand = clip_xyxy(cand, *image_size)
        ok = pairwise_iou(cand, box[None])[:, 0] >= min_iou
        kept.extend(cand[ok][: n - len(kept)])
    kept.extend([box.copy()] * (n - len(kept)))
    return np.asarray(kept, dtype=np.float64).reshape(n, 4)
