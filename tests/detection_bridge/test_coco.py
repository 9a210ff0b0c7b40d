"""Ground truth and detections from COCO files; every kind of bad input raises or is counted."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from detection_bridge.boxes import size_bucket
from detection_bridge.coco import SplitOptions, load_split
from detection_bridge.errors import (AnnotationError, BridgeInputError, EmptyResultError, ImageError,
                                     MalformedFileError)


@pytest.mark.parametrize("min_size", [1.0, 8.0])
def test_coco_mini_val_record_count(coco_mini: Path, min_size):
    """The count of qualifying non-crowd boxes, computed straight from the JSON, equals the records'."""
    raw = json.loads((coco_mini / "annotations" / "instances_val.json").read_text())
    expected = [a for a in raw["annotations"] if not a["iscrowd"] and min(a["bbox"][2:]) >= min_size
                and min(a["bbox"][2:]) > 0]
    crop_set = load_split(coco_mini, "val", SplitOptions(min_size=min_size))
    assert len(crop_set.records) == len(expected) > 1000
    assert crop_set.filtered["gt_crowd"] == sum(a["iscrowd"] for a in raw["annotations"]) == 9
    assert {r.source_id for r in crop_set.records} == {a["id"] for a in expected}
    by_id = {a["id"]: a for a in expected}
    cmap = crop_set.category_map
    assert cmap.num_classes == 80
    for r in crop_set.records:
        a = by_id[r.source_id]
        assert cmap.category_id_of(r.label) == r.category_id == a["category_id"]
        assert r.size_bucket == size_bucket(a["area"]) and r.source == "gt" and r.iou == 1.0
        x, y, w, h = a["bbox"]
        assert r.box_xyxy == (x, y, x + w, y + h)
        assert Path(r.image_path).is_file()


def test_coco_mini_detections_are_all_accounted_for(coco_mini: Path):
    n_dets = len(json.loads((coco_mini / "detections" / "yolofastest_val.json").read_text()))
    crop_set = load_split(coco_mini, "val", SplitOptions(boxes="detections", top_k=5, score_threshold=0.01),
                          detections_file=coco_mini / "detections" / "yolofastest_val.json")
    f = crop_set.filtered
    assert len(crop_set.records) + sum(v for k, v in f.items() if k.startswith("detection_")) == n_dets
    assert f["detection_dropped_background"] > 0 and f["detection_beyond_top_k"] > 0
    assert all(r.source == "detection" and r.iou >= 0.5 and r.score >= 0.01 for r in crop_set.records)


def test_tiny_dataset_records(tiny_coco):
    crop_set = load_split(tiny_coco.root, "val", SplitOptions(boxes="both", background=True, jitter=2))
    by_source = {s: [r for r in crop_set.records if r.source == s] for s in ("gt", "detection", "jitter")}
    assert [r.source_id for r in by_source["gt"]] == [11, 12, 13, 15]  # crowd 14 is never a positive
    # categories 3 (dog) and 7 (cat): labels sorted by id, background last
    assert crop_set.category_map.names == ["dog", "cat", "background"]
    dets = {r.source_id: r for r in by_source["detection"]}
    assert sorted(dets) == [0, 1, 3]  # #2 lies inside the crowd region: ignored
    assert dets[0].category_id == 7 and dets[0].iou == pytest.approx(0.95)
    assert dets[1].category_id == 0 and dets[1].label == 2
    assert dets[3].category_id == 3 and dets[3].iou == pytest.approx(0.5)
    assert crop_set.filtered["detection_ignored_crowd"] == 1
    assert len(by_source["jitter"]) == 8
    summary = crop_set.summary()
    assert summary["per_source"] == {"gt": 4, "detection": 3, "jitter": 8}
    assert sum(summary["per_class"].values()) == summary["num_records"] == 15
    json.dumps(summary)


def test_explicit_paths_and_min_size(tiny_coco):
    crop_set = load_split(None, "train", SplitOptions(min_size=3.0), annotations=tiny_coco.annotations_path,
                          images=tiny_coco.root / "images" / "val")
    assert [r.source_id for r in crop_set.records] == [11, 12, 13]
    assert crop_set.filtered["gt_below_min_size"] == 1


def _edit(tiny, fn):
    fn(tiny)
    return tiny.write()


# (edit, expected exception class, reason, text the message must contain)
BAD_INPUTS = {
    "missing_image": (lambda t: t.image_path("b.jpg").unlink(), ImageError, "missing_image", "b.jpg"),
    "unreadable_image": (lambda t: t.image_path("b.jpg").write_text("junk"), ImageError, "unreadable_image", "b.jpg"),
    "size_mismatch": (lambda t: t.instances["images"][0].update(width=65), ImageError, "image_size_mismatch", "a.jpg"),
    "unknown_image": (lambda t: t.instances["annotations"][0].update(image_id=99), AnnotationError, "unknown_image",
                      "annotation 11"),
    "unknown_category": (lambda t: t.instances["annotations"][1].update(category_id=5), AnnotationError,
                         "unknown_category", "annotation 12"),
    "negative_width": (lambda t: t.instances["annotations"][0].update(bbox=[5, 6, -20, 10]), AnnotationError,
                       "bad_box", "annotation 11"),
    "zero_height": (lambda t: t.instances["annotations"][0].update(bbox=[5, 6, 20, 0]), AnnotationError,
                    "bad_box", "annotation 11"),
    "nan_size": (lambda t: t.instances["annotations"][0].update(bbox=[5, 6, float("nan"), 10]), AnnotationError,
                 "bad_box", "annotation 11"),
    "outside": (lambda t: t.instances["annotations"][0].update(bbox=[64, 6, 20, 10]), AnnotationError,
                "box_outside_image", "annotation 11"),
    "bad_annotation": (lambda t: t.instances["annotations"][0].pop("bbox"), AnnotationError, "bad_annotation",
                       "annotation"),
    "list_image_id": (lambda t: t.instances["annotations"][0].update(image_id=[1]), AnnotationError, "unknown_image",
                      "annotation 11"),
    "list_annotation_id": (lambda t: t.instances["annotations"][0].update(id=[11]), AnnotationError, "bad_annotation",
                           "annotation [11]"),
    "bad_image_entry": (lambda t: t.instances["images"][2].pop("width"), AnnotationError, "bad_image_entry",
                        "image 3"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_ground_truth_raises_or_is_counted(tiny_coco, case):
    edit, exc, reason, text = BAD_INPUTS[case]
    _edit(tiny_coco, edit)
    with pytest.raises(exc) as err:
        load_split(tiny_coco.root, "val")
    assert err.value.reason == reason and text in str(err.value)
    assert err.value.file is not None and Path(err.value.file).name in str(err.value)
    crop_set = load_split(tiny_coco.root, "val", SplitOptions(on_error="skip"))
    assert crop_set.skipped.counts[reason] == 1 and crop_set.summary()["skipped"]["by_reason"] == {reason: 1}
    assert text in crop_set.summary()["skipped"]["examples"][reason][0]
    assert 0 < len(crop_set.records) < 4


DET_CASES = {
    "unknown_image": ({"image_id": 77, "category_id": 7, "bbox": [1, 1, 5, 5], "score": 0.5}, "unknown_image"),
    "unknown_category": ({"image_id": 1, "category_id": 8, "bbox": [1, 1, 5, 5], "score": 0.5}, "unknown_category"),
    "nan_score": ({"image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5], "score": float("nan")}, "bad_score"),
    "bad_box": ({"image_id": 1, "category_id": 7, "bbox": [1, 1, 0, 5], "score": 0.5}, "bad_box"),
    "missing_key": ({"image_id": 1, "bbox": [1, 1, 5, 5], "score": 0.5}, "bad_detection"),
}


@pytest.mark.parametrize("case", sorted(DET_CASES))
def test_bad_detections_raise_or_are_counted(tiny_coco, case):
    det, reason = DET_CASES[case]
    _edit(tiny_coco, lambda t: t.detections.append(det))
    with pytest.raises(AnnotationError) as err:
        load_split(tiny_coco.root, "val", SplitOptions(boxes="detections", background=True))
    assert err.value.reason == reason and "det_val.json" in str(err.value) and "detection #4" in str(err.value)
    crop_set = load_split(tiny_coco.root, "val", SplitOptions(boxes="detections", background=True, on_error="skip"))
    assert crop_set.skipped.counts == {reason: 1} and len(crop_set.records) == 3


@pytest.mark.parametrize("which", ["annotations", "detections"])
@pytest.mark.parametrize("content", ["{not json", '{"images": 3}', "[1, 2", '{"annotations": []}'])
def test_malformed_json_is_an_error_even_when_skipping(tiny_coco, which, content):
    path = tiny_coco.annotations_path if which == "annotations" else tiny_coco.detections_path
    if which == "detections" and content.startswith('{"images"'):
        content = '{"not": "a list"}'
    path.write_text(content)
    for on_error in ("raise", "skip"):
        with pytest.raises(MalformedFileError) as err:
            load_split(tiny_coco.root, "val", SplitOptions(boxes="detections", on_error=on_error))
        assert path.name in str(err.value)


def test_missing_files_and_folders(tiny_coco, tmp_path):
    with pytest.raises(MalformedFileError) as err:
        load_split(tmp_path / "nowhere", "val")
    assert err.value.reason == "missing_file"
    with pytest.raises(MalformedFileError) as err:
        (tiny_coco.root / "images" / "train").mkdir()
        load_split(tiny_coco.root, "train")
    assert err.value.reason == "missing_split" and "instances_train.json" in str(err.value)  # the file is named
    (tiny_coco.root / "detections" / "other_val.json").write_text("[]")
    with pytest.raises(MalformedFileError) as err:
        load_split(tiny_coco.root, "val", SplitOptions(boxes="detections"))
    assert err.value.reason == "missing_file" and "other_val.json" in err.value.detail  # the candidates named


def test_empty_result_raises_or_is_counted(tiny_coco):
    _edit(tiny_coco, lambda t: [a.update(iscrowd=1) for a in t.instances["annotations"]])
    with pytest.raises(EmptyResultError) as err:
        load_split(tiny_coco.root, "val")
    assert err.value.reason == "empty_result"
    crop_set = load_split(tiny_coco.root, "val", SplitOptions(on_error="skip"))
    assert crop_set.records == [] and crop_set.summary()["skipped"]["by_reason"] == {"empty_result": 1}
    assert crop_set.filtered["gt_crowd"] == 5


def test_images_without_boxes_are_fine(tiny_coco):
    _edit(tiny_coco, lambda t: t.instances["annotations"].__setitem__(slice(None), t.instances["annotations"][:2]))
    crop_set = load_split(tiny_coco.root, "val")
    assert len(crop_set.records) == 2 and not crop_set.skipped.total


def test_errors_are_bridge_errors_not_library_errors(tiny_coco):
    _edit(tiny_coco, lambda t: t.instances["images"].append("not a dict"))
    with pytest.raises(BridgeInputError):
        load_split(tiny_coco.root, "val")
    assert load_split(tiny_coco.root, "val", SplitOptions(on_error="skip")).skipped.counts == {"bad_image_entry": 1}


def test_background_copies_repeat_the_detectors_false_positives(coco_mini: Path):
    options = SplitOptions(boxes="both", background=True)
    det = coco_mini / "detections" / "yolofastest_train.json"
    base = load_split(coco_mini, "train", options, detections_file=det)
    more = load_split(coco_mini, "train", dataclasses.replace(options, background_copies=2), detections_file=det)
    background = [r for r in base.records if r.category_id == 0]
    assert background and len(more.records) == len(base.records) + 2 * len(background)
    assert more.records[: len(base.records)] == base.records  # the copies come after, the rest is unchanged
    assert more.info["params"]["background_copies"] == 2
    with pytest.raises(ValueError, match="background_copies"):
        SplitOptions(background_copies=-1)

