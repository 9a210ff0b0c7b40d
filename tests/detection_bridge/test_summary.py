"""build_crops: what `lowres crops` runs. Summary on disk equals the returned one and accounts for all."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from detection_bridge.cache import CacheSpec, CropCache
from detection_bridge.coco import SplitOptions
from detection_bridge.errors import ImageError
from detection_bridge.summary import build_crops, format_summary


def test_build_crops_on_synthetic(synthetic_dir, tmp_path):
    dets = synthetic_dir / "detections" / "synthetic_val.json"
    summary = build_crops(synthetic_dir, "val", CacheSpec(79), SplitOptions(boxes="detections", background=True), out=tmp_path,
                          detections=dets)
    assert json.loads(Path(summary["summary_path"]).read_text()) == summary
    assert summary["per_source"]["detection"] == summary["num_records"] > 0
    assert sum(summary["per_class"].values()) == sum(summary["per_size_bucket"].values()) == summary["num_records"]
    assert summary["per_class"]["background"] > 0 and summary["skipped"]["total"] == 0
    cache = CropCache(summary["cache"]["path"])
    assert len(cache) == summary["num_records"] and cache.size == 79 and cache.category_map.background
    text = format_summary(summary)
    assert "crops of 79 px" in text and summary["cache"]["path"] in text


def test_build_crops_with_explicit_paths_and_skips(tiny_coco, tmp_path):
    path = tiny_coco.image_path("a.jpg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated: the header still reads, decoding fails
    kwargs = {"annotations": tiny_coco.annotations_path, "images": tiny_coco.root / "images" / "val",
              "out": tmp_path / "out"}
    with pytest.raises(ImageError, match="a.jpg") as err:
        build_crops(None, "val", CacheSpec(32), **kwargs)
    assert err.value.reason == "corrupt_image"
    assert not any((tmp_path / "out").glob("crops_*"))
    summary = build_crops(None, "val", CacheSpec(32), SplitOptions(on_error="skip"), **kwargs)
    assert summary["num_records_before_decoding"] == 4 and summary["num_records"] == 2
    assert summary["skipped"]["by_reason"] == {"corrupt_image": 1}
    assert summary["filtered"] == {"gt_crowd": 1}
    assert "corrupt_image=1" in format_summary(summary)


def test_empty_result_in_skip_mode_still_writes_a_summary(tiny_coco, tmp_path):
    for a in tiny_coco.instances["annotations"]:
        a["iscrowd"] = 1
    tiny_coco.write()
    summary = build_crops(tiny_coco.root, "val", CacheSpec(16), SplitOptions(on_error="skip"), out=tmp_path)
    assert summary["num_records"] == 0 and summary["skipped"]["by_reason"] == {"empty_result": 1}
    assert Path(summary["summary_path"]).is_file() and len(CropCache(summary["cache"]["path"])) == 0
