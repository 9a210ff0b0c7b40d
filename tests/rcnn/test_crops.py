"""roi_align crops: equal to the bridge's PIL crops within a stated tolerance; fill, batching, bad input.

Tolerance against ``detection_bridge.cropper.extract_crops`` (PIL, antialiased bilinear) on real coco-mini
images, in [0, 1] pixel units: mean absolute difference < 0.006 over all crops and < 0.02 for every crop
(measured on 10 val images: 0.0029 mean and 0.011 worst at 79; 0.0013 and 0.005 at 299; enlarged boxes
0.0012, the JPEG decode and uint8 rounding; shrunk boxes up to 0.007, box versus triangle filter). PIL's
own bicubic differs from its bilinear by about twice that, so a model's top-1 on roi crops is compared
against the top-1 on bicubic crops as the reference for "another reasonable resampler" (below).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detection_bridge import cropper
from detection_bridge.boxes import CropGeometry, xywh_to_xyxy
from lowres import build_model
from lowres.rcnn.crops import batch_images, check_boxes, context_regions, roi_crops, sampling_grid

MEAN_TOL, CROP_TOL = 0.006, 0.02


def _coco_mini_boxes(root: Path, n_images: int) -> list[tuple[str, np.ndarray]]:
    data = json.loads((root / "annotations" / "instances_val.json").read_text())
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        if not a["iscrowd"]:
            by_image.setdefault(a["image_id"], []).append(a["bbox"])
    out = []
    for im in data["images"]:
        if im["id"] in by_image and len(out) < n_images:
            out.append((str(root / "images" / "val" / im["file_name"]), np.array(xywh_to_xyxy(by_image[im["id"]]))))
    return out


def _pil_crops(items: list[tuple[str, np.ndarray]], size: int, geometry: CropGeometry,
               resample: Image.Resampling | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> torch.Tensor:
    if resample is not None and monkeypatch is not None:
        monkeypatch.setattr(cropper, "RESAMPLE", resample)
    crops = [cropper.extract_crops(path, boxes, size, geometry, draft=False) for path, boxes in items]
    return torch.from_numpy(np.concatenate(crops)).permute(0, 3, 1, 2).float() / 255  # [0, 1]


def _roi(items: list[tuple[str, np.ndarray]], size: int, geometry: CropGeometry) -> torch.Tensor:
    images = [torch.from_numpy(np.array(cropper.decode_image(path)[0])).permute(2, 0, 1) for path, _ in items]
    crops = roi_crops(images, [torch.from_numpy(b) for _, b in items], size, geometry, chunk_size=7)
    return crops * 0.5 + 0.5  # back to [0, 1] (geometry mean = std = 0.5)


@pytest.mark.parametrize("size", [79, 299])
def test_crops_match_bridge_pil_crops(coco_mini: Path, geometry: CropGeometry, size: int) -> None:
    items = _coco_mini_boxes(coco_mini, 4)
    ref, ours = _pil_crops(items, size, geometry), _roi(items, size, geometry)
    per_crop = (ref - ours).abs().mean(dim=(1, 2, 3))
    assert len(per_crop) >= 20
    assert per_crop.mean() < MEAN_TOL and per_crop.max() < CROP_TOL, (per_crop.mean(), per_crop.max())


def _calibrated_random_model(crops: torch.Tensor) -> torch.nn.Module:
    """Random weights with BatchNorm statistics from ``crops``: outputs depend on content (a fresh model's
    eval outputs are nearly constant). A stand-in for a trained model: it has no margin, so it is far
    more sensitive to resampling than a trained one; compare it against a reference, not against 1."""
    model = build_model(79, 81, width=0.125, min_depth=8, aux_logits=False)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    with torch.no_grad():
        model.train()(crops)
    return model.eval()


def test_model_top1_on_roi_crops_as_close_as_another_pil_filter(coco_mini: Path, geometry: CropGeometry,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    items = _coco_mini_boxes(coco_mini, 6)
    bridge = _pil_crops(items, 79, geometry)  # what training sees (the bridge's filter)
    bicubic = _pil_crops(items, 79, geometry, Image.Resampling.BICUBIC, monkeypatch)
    ours = _roi(items, 79, geometry)
    assert (ours - bridge).abs().mean() < (bicubic - bridge).abs().mean()
    torch.manual_seed(0)
    model = _calibrated_random_model((bridge - 0.5) / 0.5)
    with torch.no_grad():
        top1 = {k: model((v - 0.5) / 0.5).argmax(1) for k, v in
                {"bridge": bridge, "bicubic": bicubic, "roi": ours}.items()}
    agree_roi = (top1["roi"] == top1["bridge"]).float().mean()
    agree_pil = (top1["bicubic"] == top1["bridge"]).float().mean()
    print(f"top-1 agreement with the bridge crops: roi {agree_roi:.3f}, PIL bicubic {agree_pil:.3f}")
    assert agree_roi >= agree_pil - 0.05 and agree_roi > 0.6, (agree_roi, agree_pil)


def test_uint8_and_float_images_give_the_same_crops(geometry: CropGeometry) -> None:
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    boxes = [torch.tensor([[5.0, 5.0, 30.0, 20.0], [0.0, 0.0, 50.0, 40.0]])]
    a = roi_crops([image], boxes, 33, geometry)
    b = roi_crops([image.float() / 255], boxes, 33, geometry)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_batching_and_chunking_do_not_change_crops(geometry: CropGeometry) -> None:
    small, big = torch.rand(3, 30, 40), torch.rand(3, 90, 70)
    boxes_small = torch.tensor([[20.0, 10.0, 40.0, 30.0], [-5.0, -5.0, 10.0, 10.0]])  # touch the right/bottom edges
    alone = roi_crops([small], [boxes_small], 21, geometry)
    together = roi_crops([big, small], [torch.tensor([[1.0, 2.0, 50.0, 60.0]]), boxes_small], 21, geometry,
                         chunk_size=1)
    torch.testing.assert_close(together[1:], alone, atol=1e-6, rtol=0)


def test_outside_the_image_is_the_mean() -> None:
    image = torch.ones(3, 20, 20)  # white: normalises to +1
    boxes = [torch.tensor([[100.0, 100.0, 120.0, 120.0],   # wholly outside: a uniform mean crop
                           [10.0, 0.0, 30.0, 20.0]])]      # right half outside
    crops = roi_crops([image], boxes, 16, CropGeometry(context=1.0))
    assert crops[0].abs().max() == 0
    # inside: the image; outside: exactly the mean; across the border a ramp about half a pixel wide
    # (bilinear between the last pixel and the mean, as resampling "the image extended by the mean" gives)
    inside, outside = crops[1][:, 1:-1, :7], crops[1][..., 9:]
    assert outside.abs().max() < 1e-6 and torch.allclose(inside, torch.ones_like(inside))


def test_adaptive_sampling_is_an_area_filter(geometry: CropGeometry) -> None:
    """sampling_ratio=-1 takes ceil(region side / output side) samples per bin: ~1 per source pixel."""
    boxes = check_boxes([torch.tensor([[0.0, 0.0, 390.0, 195.0], [0.0, 0.0, 10.0, 10.0]])], 1)
    regions = context_regions(boxes, geometry, torch.device("cpu"))
    grid = sampling_grid(regions, 79)
    assert grid[0].tolist() == [6, 6] and grid[1].tolist() == [1, 1]  # 390 * 227/195 = 454 px; 454/79 -> 6
    # a checkerboard shrunk 8x averages to grey (no aliasing) instead of keeping stripes
    board = ((torch.arange(160)[:, None] + torch.arange(160)[None, :]) % 2).float().expand(3, -1, -1)
    crop = roi_crops([board], [torch.tensor([[0.0, 0.0, 160.0, 160.0]])], 20, CropGeometry(context=1.0))
    assert crop.abs().max() < 0.05


@pytest.mark.parametrize("image, error", [
    (torch.rand(1, 20, 20), "expected \\(3, H, W\\)"),
    (torch.rand(4, 20, 20), "expected \\(3, H, W\\)"),
    (torch.rand(20, 20), "expected \\(3, H, W\\)"),
    (torch.randint(0, 9, (3, 20, 20), dtype=torch.int32), "dtype torch.int32"),
    (torch.rand(3, 20, 20) * 255, "must be in \\[0, 1\\]"),
    (torch.rand(3, 20, 20) - 0.5, "must be in \\[0, 1\\]"),
    (torch.full((3, 20, 20), float("nan")), "must be in \\[0, 1\\]"),
])
def test_bad_images_are_clear_errors(image: torch.Tensor, error: str, geometry: CropGeometry) -> None:
    with pytest.raises((ValueError, TypeError), match=error):
        roi_crops([image], [torch.zeros(1, 4)], 16, geometry)


@pytest.mark.parametrize("boxes, error", [
    (torch.tensor([[0.0, 0.0, float("nan"), 5.0]]), "not finite"),
    (torch.tensor([[0.0, 0.0, float("inf"), 5.0]]), "not finite"),
    (torch.tensor([[10.0, 0.0, 5.0, 5.0]]), "x1 < x0"),
    (torch.zeros(2, 5), "expected \\(N, 4\\)"),
])
def test_bad_boxes_are_clear_errors(boxes: torch.Tensor, error: str, geometry: CropGeometry) -> None:
    with pytest.raises(ValueError, match=error):
        roi_crops([torch.rand(3, 20, 20)], [boxes], 16, geometry)


def test_zero_area_and_empty_boxes(geometry: CropGeometry) -> None:
    image = torch.rand(3, 20, 20)
    point = roi_crops([image], [torch.tensor([[5.0, 5.0, 5.0, 5.0]])], 16, geometry)  # min_side region: finite
    assert point.shape == (1, 3, 16, 16) and torch.isfinite(point).all()
    assert roi_crops([image], [torch.zeros(0, 4)], 16, geometry).shape == (0, 3, 16, 16)
    with pytest.raises(ValueError, match="2 box tensors"):
        roi_crops([image], [torch.zeros(0, 4), torch.zeros(0, 4)], 16, geometry)
    assert batch_images([image], geometry).shape == (1, 3, 22, 22)
