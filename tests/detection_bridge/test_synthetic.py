"""The generated default dataset: COCO-valid, deterministic, varied sizes, a realistic detector."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection_bridge import synthetic
from detection_bridge.coco import load_split
from detection_bridge.matching import pairwise_iou
from detection_bridge.boxes import xywh_to_xyxy


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_by_seed(tmp_path):
    kwargs = {"num_images": (3, 2)}
    a = synthetic.generate(tmp_path / "a", seed=5, **kwargs)
    b = synthetic.generate(tmp_path / "b", seed=5, **kwargs)
    c = synthetic.generate(tmp_path / "c", seed=6, **kwargs)
    assert _files(a) == _files(b)
    assert _files(a) != _files(c)


def test_layout_and_coco_validity(synthetic_dir):
    for split in ("train", "val"):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(synthetic_dir / "annotations" / f"instances_{split}.json"))
        assert len(coco.cats) == len(synthetic.CLASSES) >= 6
        for img in coco.imgs.values():
            with Image.open(synthetic_dir / "images" / split / img["file_name"]) as im:
                assert im.format == "JPEG" and im.size == (img["width"], img["height"])
        dets = json.loads((synthetic_dir / "detections" / f"synthetic_{split}.json").read_text())
        assert dets and all(set(d) == {"image_id", "category_id", "bbox", "score"} for d in dets)
    crop_set = load_split(synthetic_dir, "train")  # the bridge reads it with no skips
    assert not crop_set.skipped.total and len(crop_set.records) > 50


def test_sizes_classes_and_crowds(synthetic_dir):
    summary = load_split(synthetic_dir, "train").summary()
    assert min(summary["per_class"].values()) > 0
    assert summary["per_size_bucket"]["small"] > 10 and summary["per_size_bucket"]["medium"] > 10
    raw = json.loads((synthetic_dir / "annotations" / "instances_train.json").read_text())
    sides = [min(a["bbox"][2:]) for a in raw["annotations"] if not a["iscrowd"]]
    assert min(sides) < 12 and max(sides) > 80  # a wide range of sizes, including tiny objects


def test_detector_is_realistic(synthetic_dir):
    """Localisation noise, misses, false positives, and an AP that is neither trivial nor perfect."""
    gt_path = synthetic_dir / "annotations" / "instances_val.json"
    dets = json.loads((synthetic_dir / "detections" / "synthetic_val.json").read_text())
    gt = json.loads(gt_path.read_text())
    objects = [a for a in gt["annotations"] if not a["iscrowd"]]
    best_per_det, best_per_gt = [], []
    for image in gt["images"]:
        g = np.array([a["bbox"] for a in objects if a["image_id"] == image["id"]]).reshape(-1, 4)
        d = np.array([x["bbox"] for x in dets if x["image_id"] == image["id"]]).reshape(-1, 4)
        iou = pairwise_iou(xywh_to_xyxy(d), xywh_to_xyxy(g))
        best_per_det += list(iou.max(axis=1)) if g.size else [0.0] * len(d)
        best_per_gt += list(iou.max(axis=0)) if d.size else [0.0] * len(g)
    best_per_det, best_per_gt = np.array(best_per_det), np.array(best_per_gt)
    assert (best_per_det < 0.3).sum() >= 3           # false positives
    assert (best_per_gt < 0.5).sum() >= 2            # misses
    hits = best_per_det[best_per_det >= 0.5]
    assert 0.6 < np.median(hits) < 0.97              # noisy, not copied boxes
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert 0.15 < ev.stats[1] < 0.95  # AP50


def test_reused(tmp_path):
    out = synthetic.generate(tmp_path / "d")  # the default size: a few hundred boxes
    n_boxes = len(json.loads((out / "annotations" / "instances_train.json").read_text())["annotations"])
    assert 150 < n_boxes < 600
    stamp = (out / "annotations" / "instances_train.json").stat().st_mtime_ns
    assert synthetic.generate(tmp_path / "d") == out
    assert (out / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError):
        synthetic.generate(tmp_path / "d", seed=1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        synthetic.generate(tmp_path / "other")


def test_a_set_another_process_finished_first_is_kept_not_replaced(tmp_path, monkeypatch):
    """Two `lowres crops` without --data start together: the slower one must not delete or replace the set
    the faster one already published (and may be reading)."""
    out, kwargs = tmp_path / "synthetic", {"num_images": (2, 1)}
    real_split, raced = synthetic._split, []

    def split_while_another_process_publishes(*args, **kw):  # type: ignore[no-untyped-def]
        if not raced:
            with monkeypatch.context() as m:
                m.setattr(synthetic, "_split", real_split)
                synthetic.generate(out, **kwargs)  # the other process, finishing first
            raced.append(out.stat().st_ino)
        return real_split(*args, **kw)

    monkeypatch.setattr(synthetic, "_split", split_while_another_process_publishes)
    assert synthetic.generate(out, **kwargs) == out
    assert raced and out.stat().st_ino == raced[0]  # the first publisher's folder survives, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]  # no temporary folder left behind
