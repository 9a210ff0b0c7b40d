"""`--fusion auto` on synthetic COCO splits whose classifier quality is known: perfect (must gain), noise (must
fall back to the detector alone, same AP), helpful on small boxes only (must gate); the fitted JSON round trip.

Each split: images with one small, one medium and one large object. The detector finds every object (a true
positive scored in [0.2, 1)), repeats it with a wrong label, and adds a false positive elsewhere (both scored
in [0, 0.8)): its scores are informative but imperfect, so a good classifier can reorder and a random one
can only hurt. AP is pycocotools' COCOeval, as in `lowres rescore`.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from detection_bridge.records import CategoryMap
from detection_bridge.results import check_detection
from lowres.rcnn.calibrate import Grid, describe, fit_fusion, size_bands
from lowres.rcnn.files import ClassifiedResults, coco_ap, coco_bbox_metrics
from lowres.rcnn.fusion import DETECTOR, Fusion, fuse_with

CATEGORIES = [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}, {"id": 7, "name": "c"}]
SIDES = {"small": 20, "medium": 50, "large": 150}  # areas 400 < 32^2 <= 2500 < 96^2 <= 22500
GRID = Grid(temperatures=(0.0, 0.5, 1.0, 2.0), background_thresholds=(0.5,))  # small: the tests stay fast


def _split(seed: int, num_images: int = 24) -> tuple[dict, list[dict], list[dict]]:
    """``(ground truth, detections, truth per detection)``; truth: the box's real class or None (background)."""
    g = torch.Generator().manual_seed(seed)
    ids = [c["id"] for c in CATEGORIES]
    images, anns, dets, truth = [], [], [], []

    def det(image_id: int, box: list[float], cat: int, score: float, real: int | None, size: str) -> None:
        dets.append({"image_id": image_id, "category_id": cat, "bbox": box, "score": round(score, 6)})
        truth.append((real, size))

    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 640, "height": 480})
        for k, (size, side) in enumerate(SIDES.items()):
            cat = ids[int(torch.randint(3, (1,), generator=g))]
            wrong = ids[(ids.index(cat) + 1) % 3]
            box = [10.0 + 200 * k, 10.0, float(side), float(side)]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": box,
                         "area": float(side * side), "iscrowd": 0})
            rand = torch.rand(3, generator=g).tolist()
            det(image_id, box, cat, 0.2 + 0.8 * rand[0], cat, size)
            det(image_id, box, wrong, 0.8 * rand[1], cat, size)
            det(image_id, [10.0 + 200 * k, 300.0, float(side), float(side)], cat, 0.8 * rand[2], None, size)
    gt = {"images": images, "annotations": anns, "categories": CATEGORIES}
    return gt, dets, truth


def _coco(gt: dict):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
    return coco


def _probs(truth: list, cmap: CategoryMap, good_sizes: set[str], seed: int) -> torch.Tensor:
    """Near one-hot on the real class (background for false positives) for boxes of ``good_sizes``, else noise."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.distributions.Dirichlet(torch.ones(cmap.num_classes))
    rows = []
    for real, size in truth:
        if size in good_sizes:
            label = cmap.background_label if real is None else cmap.label_of(real)
            row = torch.full((cmap.num_classes,), 0.02)
            row[label] = 1 - 0.02 * (cmap.num_classes - 1)
        else:
            torch.manual_seed(int(torch.randint(2 ** 31, (1,), generator=g)))
            row = noise.sample()
        rows.append(row)
    return torch.stack(rows).double()


def _case(good_sizes: set[str], seed: int = 0, num_images: int = 24) -> tuple[ClassifiedResults, object]:
    cmap = CategoryMap.from_coco(CATEGORIES, background=True)
    gt, dets, truth = _split(seed, num_images)
    detections = [check_detection(i, d, "synthetic") for i, d in enumerate(dets)]
    return ClassifiedResults.build(detections, _probs(truth, cmap, good_sizes, seed + 100), cmap), _coco(gt)


def _detector(classified: ClassifiedResults) -> list[dict]:
    """The detector's own results, as the file held them."""
    return [d.to_result() for d in classified.detections]


def test_perfect_classifier_gains_on_calibration_and_on_a_fresh_split() -> None:
    classified, coco = _case({"small", "medium", "large"})
    fusion = fit_fusion(classified, coco, grid=GRID)
    before, fitted = fusion.report["before"]["AP"], fusion.report["fitted"]["AP"]
    assert fitted > before + 0.1, (before, fitted)
    assert all(b.params.temperature > 0 for b in fusion.bands)
    other, other_coco = _case({"small", "medium", "large"}, seed=1)  # fitted once, applied to another split
    assert coco_ap(other_coco, other.fused(fusion)[0]) > coco_ap(other_coco, _detector(other)) + 0.1


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_classifier_falls_back_to_the_detector_alone(seed: int) -> None:
    classified, coco = _case(set(), seed)
    fusion = fit_fusion(classified, coco, grid=GRID)
    assert [b.params for b in fusion.bands] == [DETECTOR] * 3, describe(fusion)
    detector_ap = coco_ap(coco, _detector(classified))
    assert abs(fusion.report["fitted"]["AP"] - detector_ap) <= 1e-6
    assert abs(coco_ap(coco, classified.fused(fusion)[0]) - detector_ap) <= 1e-6
    rescored, suppressed = classified.fused(fusion)  # the detector alone, bit for bit
    assert suppressed == 0 and [(d["category_id"], d["score"]) for d in rescored] == \
        [(d["category_id"], d["score"]) for d in _detector(classified)]


def test_classifier_helping_only_on_small_boxes_is_gated_to_them() -> None:
    classified, coco = _case({"small"})
    fusion = fit_fusion(classified, coco, grid=GRID)
    small, medium, large = fusion.bands
    assert (small.name, small.max_area, medium.max_area) == ("small", 32.0 ** 2, 96.0 ** 2)
    assert small.params.temperature > 0 and medium.params == large.params == DETECTOR, describe(fusion)
    report = fusion.report
    assert report["fitted"]["APs"] > report["before"]["APs"] + 0.1
    assert report["fitted"]["APm"] == report["before"]["APm"] and report["fitted"]["APl"] == report["before"]["APl"]


def test_max_area_limits_the_fitted_bands() -> None:
    assert size_bands("small") == [("small", 1024.0)]
    assert size_bands(5000) == [("small", 1024.0), ("medium", 5000.0)]
    classified, coco = _case({"small", "medium", "large"})
    fusion = fit_fusion(classified, coco, grid=GRID, max_area="small")
    assert [b.name for b in fusion.bands] == ["small"] and fusion.bands[0].params.temperature > 0
    rescored, _ = classified.fused(fusion)
    large = [(d["category_id"], d["score"]) for d in rescored if d["bbox"][2] * d["bbox"][3] > 1024]
    assert large == [(d["category_id"], d["score"]) for d in _detector(classified) if d["bbox"][2] * d["bbox"][3] > 1024]


def test_ap_only_evaluation_equals_cocoeval_stats0() -> None:
    classified, coco = _case({"small"})
    for results in (_detector(classified), classified.fused(Fusion.rule("max"))[0]):
        assert coco_ap(coco, results) == coco_bbox_metrics(coco, results)["AP"]


def test_fitted_json_round_trip(tmp_path: Path) -> None:
    classified, coco = _case({"small"})
    fusion = fit_fusion(classified, coco, grid=GRID)
    path = fusion.save(tmp_path / "last.fusion.det.json")
    loaded = Fusion.load(path)
    assert loaded == fusion and loaded.report == json.loads(json.dumps(fusion.report))
    assert json.loads(path.read_text())["bands"][-1]["max_area"] is None  # infinity as null: plain JSON
    a, b = classified.fused(fusion)[0], classified.fused(loaded)[0]
    assert a == b
    path.write_text(json.dumps({"format": "lowres.fusion/1", "bands": [{"max_area": 5}]}))
    with pytest.raises(ValueError, match="last.fusion.det.json: bad fusion band"):
        Fusion.load(path)
    path.write_text("[]")
    with pytest.raises(ValueError, match="last.fusion.det.json: not a lowres.fusion/1 file"):
        Fusion.load(path)


def test_size_gate_of_a_named_rule_leaves_large_boxes_to_the_detector() -> None:
    probs = torch.tensor([[0.1, 0.7, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1]])
    scores, labels = torch.tensor([0.9, 0.8]), torch.tensor([0, 0])
    areas = torch.tensor([500.0, 5000.0])
    out_labels, out_scores, keep = fuse_with(Fusion.rule("max", max_area="small"), probs, scores, labels,
                                             background_label=3, areas=areas)
    assert out_labels.tolist() == [1, 0] and keep.all()
    torch.testing.assert_close(out_scores, torch.tensor([0.9 * 0.7, 0.8]))
    with pytest.raises(ValueError, match="areas"):
        fuse_with(Fusion.rule("max", max_area=100), probs, scores, labels, background_label=3)
    with pytest.raises(ValueError, match="max area"):
        Fusion.rule("max", max_area="tiny")


def test_crossfit_perfect_classifier_gains_and_noise_keeps_the_detector() -> None:
    from lowres.rcnn.calibrate import crossfit_fusion

    classified, coco = _case({"small", "medium", "large"})
    results, report = crossfit_fusion(classified, coco, folds=4, grid=GRID)
    assert sorted((r["image_id"], r["bbox"][0], r["bbox"][1]) for r in results) == \
        sorted((d["image_id"], d["bbox"][0], d["bbox"][1]) for d in _detector(classified))  # every box once
    assert [f["images"] for f in report["per_fold"]] == [6, 6, 6, 6]
    assert coco_ap(coco, results) > coco_ap(coco, _detector(classified)) + 0.1
    noise, noise_coco = _case(set(), seed=1, num_images=64)
    results, report = crossfit_fusion(noise, noise_coco, folds=4, grid=GRID)
    assert all(rule == "detector alone (T=0)" for f in report["per_fold"] for rule in f["rules"].values())
    assert abs(coco_ap(noise_coco, results) - coco_ap(noise_coco, _detector(noise))) <= 1e-6


def test_crossfit_fits_each_fold_without_its_own_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fit sees the other folds' images and boxes only; the held folds cover the split once."""
    import lowres.rcnn.calibrate as calibrate

    fits = []

    def recording_fit(classified: ClassifiedResults, coco_gt: object, **kwargs: object) -> Fusion:
        fits.append(({d.image_id for d in classified.detections}, set(kwargs["image_ids"])))
        return fit_fusion(classified, coco_gt, **kwargs)

    monkeypatch.setattr(calibrate, "fit_fusion", recording_fit)
    classified, coco = _case({"small", "medium", "large"})
    results, report = calibrate.crossfit_fusion(classified, coco, folds=3, grid=GRID)
    all_ids = set(coco.getImgIds())
    held = [all_ids - evaluated for _, evaluated in fits]
    assert len(fits) == 3 and set().union(*held) == all_ids and sum(map(len, held)) == len(all_ids)
    for (boxes_from, evaluated), fold in zip(fits, held):
        assert not (boxes_from | evaluated) & fold
    with pytest.raises(ValueError, match="at least 2 folds"):
        calibrate.crossfit_fusion(classified, coco, folds=1)
