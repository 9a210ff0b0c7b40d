"""Crops equal an independent PIL reference; decode-once, draft mode and mean fill stay within tolerance."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from detection_bridge.boxes import CropGeometry
from detection_bridge.coco import SplitOptions, load_split
from detection_bridge.cropper import (RESAMPLE, choose_draft_scale, decode_image, extract_crops, naive_crop,
                                      resample_region)
from detection_bridge.errors import ImageError
from detection_bridge.records import CropRecord

TOLERANCE = 2.0  # mean absolute difference in uint8 levels, i.e. 2/255


def reference_crop(image: Image.Image, box_xyxy, size: int, context: float, mode: str, fill) -> np.ndarray:
    """Independent reference: pad the whole image with the fill colour, then one PIL resize of the
    region computed here by hand (centre, side * context, longer side when square)."""
    x0, y0, x1, y1 = box_xyxy
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = max(x1 - x0, 1.0) * context, max(y1 - y0, 1.0) * context
    if mode == "square":
        w = h = max(w, h)
    border = int(max(w, h)) + 16
    padded = ImageOps.expand(image, border=border, fill=fill)
    region = (cx - w / 2 + border, cy - h / 2 + border, cx + w / 2 + border, cy + h / 2 + border)
    return np.asarray(padded.resize((size, size), Image.Resampling.BILINEAR, box=region))


def test_the_filter_is_pils_antialiased_bilinear():
    assert RESAMPLE == Image.Resampling.BILINEAR  # the references below are written for it


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@pytest.fixture(scope="module")
def coco_val_records(coco_mini: Path) -> list[CropRecord]:
    return load_split(coco_mini, "val", SplitOptions(check_images=False)).records


@pytest.mark.parametrize("size", [79, 151, 299])
def test_decode_once_equals_pil_reference_on_coco_mini(coco_val_records, size):
    geo = CropGeometry()
    by_image: dict[str, list[CropRecord]] = {}
    for r in coco_val_records:
        by_image.setdefault(r.image_path, []).append(r)
    worst = 0.0
    for path in sorted(by_image)[:: max(len(by_image) // 6, 1)][:6]:  # six images, all their boxes
        recs = by_image[path]
        crops = extract_crops(path, np.array([r.box_xyxy for r in recs]), size, geo)
        image = Image.open(path).convert("RGB")
        for r, crop in zip(recs, crops):
            worst = max(worst, mad(crop, reference_crop(image, r.box_xyxy, size, geo.context, "square", (128,) * 3)))
    assert worst < TOLERANCE


def test_draft_mode_stays_within_tolerance(coco_val_records):
    geo = CropGeometry()
    big = [r for r in coco_val_records if choose_draft_scale(geo.context_boxes(np.array([r.box_xyxy])), 79) > 1]
    assert len(big) >= 3  # the draft path is really exercised
    for r in big[:: max(len(big) // 6, 1)][:6]:
        box = np.array([r.box_xyxy])
        crop = extract_crops(r.image_path, box, 79, geo)[0]
        image = Image.open(r.image_path).convert("RGB")
        assert mad(crop, reference_crop(image, r.box_xyxy, 79, geo.context, "square", (128,) * 3)) < TOLERANCE


@pytest.mark.parametrize("mode", ["square", "warp"])
@pytest.mark.parametrize("box_xyxy", [(5.3, 7.9, 30.2, 20.1),      # inside
                                      (-10.0, -4.0, 20.0, 30.0),   # over the top-left corner
                                      (40.0, 30.0, 90.0, 70.0),    # over the bottom-right corner
                                      (-30.0, -30.0, 110.0, 90.0),  # larger than the image
                                      (20.0, 20.0, 20.5, 40.0)])   # sliver
def test_out_of_image_pixels_are_the_mean(tmp_path, jpeg_writer, mode, box_xyxy):
    jpeg_writer(tmp_path / "im.jpg", 64, 48, seed=1)
    geo = CropGeometry(mode=mode, mean=(0.2, 0.4, 0.6))
    crop = extract_crops(str(tmp_path / "im.jpg"), np.array([box_xyxy]), 33, geo)[0]
    image = Image.open(tmp_path / "im.jpg").convert("RGB")
    assert mad(crop, reference_crop(image, box_xyxy, 33, geo.context, mode, geo.fill_uint8)) < TOLERANCE


def test_wholly_outside_and_huge_regions():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    fill = (10, 20, 30)
    far = resample_region(image, (500, 500, 540, 540), 16, fill)
    assert (far == np.array(fill, np.uint8)).all()
    huge_box = (-300.0, -280.0, 340.0, 330.0)  # the reduce-first path: canvas >> image
    got = resample_region(image, huge_box, 24, fill)
    ref = np.asarray(ImageOps.expand(image, 400, fill).resize((24, 24), Image.Resampling.BILINEAR,
                                                             box=tuple(np.add(huge_box, 400))))
    assert mad(got, ref) < TOLERANCE


def test_naive_crop_equals_decode_once(tiny_coco):
    recs = load_split(tiny_coco.root, "val").records
    geo = CropGeometry()
    same_image = [r for r in recs if r.image_id == 1]
    once = extract_crops(same_image[0].image_path, np.array([r.box_xyxy for r in same_image]), 40, geo)
    for r, crop in zip(same_image, once):
        assert np.array_equal(naive_crop(r, 40, geo), crop)


def test_decode_errors_are_image_errors(tmp_path, jpeg_writer):
    jpeg_writer(tmp_path / "ok.jpg", 64, 48, seed=0)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("not an image")
    cases = {"missing.jpg": "missing_image", "truncated.jpg": "corrupt_image", "text.jpg": "corrupt_image"}
    for name, reason in cases.items():
        with pytest.raises(ImageError) as err:
            extract_crops(str(tmp_path / name), np.array([[1.0, 1, 10, 10]]), 8, CropGeometry(), record="image 5")
        assert err.value.reason == reason and name in str(err.value) and "image 5" in str(err.value)
    with pytest.raises(ImageError) as err:
        decode_image(str(tmp_path / "ok.jpg"), expected_size=(10, 10))
    assert err.value.reason == "image_size_mismatch"
