"""IoU and labels against pycocotools (``pycocotools.mask.iou``, the reference for crowd semantics)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detection_bridge.boxes import xywh_to_xyxy, xyxy_to_xywh
from detection_bridge.coco import SplitOptions, load_split
from detection_bridge.matching import (BACKGROUND, CROWD, DROPPED_BACKGROUND, IGNORED, POSITIVE, MatchParams,
                                       jitter_boxes, match_detections, pairwise_iou, select_detections)
from detection_bridge.fileio import read_json


def random_boxes_xywh(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 100, (n, 2))
    return np.concatenate([xy, rng.uniform(1, 60, (n, 2))], axis=1)


def test_pairwise_iou_equals_pycocotools():
    rng = np.random.default_rng(0)
    dets, gts = random_boxes_xywh(rng, 40), random_boxes_xywh(rng, 15)
    iscrowd = rng.random(15) < 0.3
    ref = mask_utils.iou(dets.tolist(), gts.tolist(), iscrowd.astype(np.uint8).tolist())
    ours = pairwise_iou(xywh_to_xyxy(dets), xywh_to_xyxy(gts), iscrowd)
    assert np.allclose(ours, ref, atol=1e-9)


def test_labels_at_the_thresholds():
    gts_xyxy = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 90, 90]], dtype=float)
    iscrowd = np.array([False, False, True])
    dets_xyxy = np.array([
        [0, 0, 10, 5],      # IoU 0.5 with gt 0: positive (>= is inclusive)
        [0, 0, 10, 3],      # IoU 0.3: ignored (background is strictly below)
        [0, 0, 10, 2.9],    # IoU 0.29: background
        [60, 60, 70, 70],   # inside the crowd region, no object: ignored, never background
        [18, 0, 30, 10],    # best match gt 1 (IoU 10/12)
        [200, 200, 210, 210],  # nothing anywhere: background
    ])
    status, best, iou = match_detections(dets_xyxy, gts_xyxy, iscrowd, MatchParams(background=True))
    assert status == [POSITIVE, IGNORED, BACKGROUND, CROWD, POSITIVE, BACKGROUND]
    assert best.tolist()[:5] == [0, 0, 0, -1, 1] and best[5] == -1
    assert np.allclose(iou, [0.5, 0.3, 0.29, 0.0, 10 / 12, 0.0])
    status, _, _ = match_detections(dets_xyxy, gts_xyxy, iscrowd, MatchParams(background=False))
    assert status[2] == status[5] == DROPPED_BACKGROUND
    status, _, _ = match_detections(dets_xyxy, gts_xyxy, iscrowd, MatchParams(iou_positive=0.6, iou_background=0.2))
    assert status[:3] == [IGNORED, IGNORED, IGNORED]
    status, _, _ = match_detections(dets_xyxy, np.zeros((0, 4)), np.zeros(0, bool), MatchParams(background=True))
    assert status == [BACKGROUND] * 6


def test_score_threshold_and_top_k():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.05])
    kept, below, beyond = select_detections(scores, MatchParams(score_threshold=0.1, top_k=2))
    assert kept.tolist() == [1, 3] and below == 1 and beyond == 2
    kept, below, beyond = select_detections(scores, MatchParams())
    assert kept.tolist() == [1, 3, 2, 0, 4] and below == beyond == 0


def test_detection_labels_on_coco_mini_match_a_pycocotools_computation(coco_mini: Path):
    """Every detection's fate recomputed independently with ``pycocotools.mask.iou``."""
    crop_set = load_split(coco_mini, "val", SplitOptions(boxes="detections", background=True, check_images=False),
                          detections_file=coco_mini / "detections" / "yolofastest_val.json")
    gt = read_json(coco_mini / "annotations" / "instances_val.json")
    dets = read_json(coco_mini / "detections" / "yolofastest_val.json")
    anns_by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        anns_by_image.setdefault(a["image_id"], []).append(a)
    by_index = {r.source_id: r for r in crop_set.records}
    counts = {"positive": 0, "background": 0, "ignored": 0}
    for i, d in enumerate(dets):
        anns = anns_by_image.get(d["image_id"], [])
        ious = np.zeros(0)
        if anns:
            ious = np.array(mask_utils.iou([d["bbox"]], [a["bbox"] for a in anns], [a["iscrowd"] for a in anns]))
        ious = ious.reshape(-1)
        crowd = np.array([a["iscrowd"] for a in anns], bool)
        obj = np.where(crowd, -1, ious)
        best = obj.max() if len(obj) else 0.0
        if best >= 0.5:
            counts["positive"] += 1
            assert by_index[i].category_id == anns[int(obj.argmax())]["category_id"]
            assert by_index[i].iou == pytest.approx(best)
        elif best < 0.3 and not (crowd.any() and ious[crowd].max() >= 0.3):
            counts["background"] += 1
            assert by_index[i].category_id == 0
        else:
            counts["ignored"] += 1
            assert i not in by_index
    assert counts["positive"] + counts["background"] == len(crop_set.records)
    filtered = crop_set.filtered
    assert counts["ignored"] == filtered["detection_ignored_iou"] + filtered["detection_ignored_crowd"]
    assert counts["positive"] > 100 and counts["background"] > 100


def test_jittered_boxes_keep_their_iou_and_are_deterministic():
    box_xyxy = np.array([10.0, 20.0, 60.0, 45.0])
    a = jitter_boxes(box_xyxy, 50, np.random.default_rng(1), min_iou=0.7, image_size=(64, 48))
    b = jitter_boxes(box_xyxy, 50, np.random.default_rng(1), min_iou=0.7, image_size=(64, 48))
    assert np.array_equal(a, b) and a.shape == (50, 4)
    assert (pairwise_iou(a, box_xyxy[None])[:, 0] >= 0.7).all()
    assert (a[:, [0, 1]] >= 0).all() and (a[:, 2] <= 64).all() and (a[:, 3] <= 48).all()
    assert len({tuple(r) for r in a.round(6)}) > 40  # really jittered
    assert (xyxy_to_xywh(a)[:, 2:] > 0).all()
