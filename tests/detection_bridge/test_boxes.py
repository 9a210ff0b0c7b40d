"""Exact box arithmetic on hand-computed cases, and properties of crop geometry on random boxes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from detection_bridge.boxes import (RCNN_CONTEXT, CropGeometry, box_area, clip_xyxy,
                                    scale_about_centre, size_bucket, square_about_centre, stored_size,
                                    xywh_to_xyxy, xyxy_to_xywh)
from detection_bridge.cropper import crop_image


def test_xywh_xyxy_exact():
    assert xywh_to_xyxy([10, 20, 30, 40]).tolist() == [10, 20, 40, 60]
    assert xyxy_to_xywh([10, 20, 40, 60]).tolist() == [10, 20, 30, 40]
    bbox_xywh = np.array([[0.5, 1.25, 2.0, 3.5], [100, 200, 0, 0]])
    assert xywh_to_xyxy(bbox_xywh).tolist() == [[0.5, 1.25, 2.5, 4.75], [100, 200, 100, 200]]
    assert np.array_equal(xyxy_to_xywh(xywh_to_xyxy(bbox_xywh)), bbox_xywh)


def test_torch_boxes_keep_their_type():
    boxes_xyxy = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    out = CropGeometry(context=1.5).context_boxes(boxes_xyxy)
    assert isinstance(out, torch.Tensor)
    assert out.tolist() == [[-10.0, 10.0, 50.0, 70.0]]


def test_area_and_clip():
    assert box_area([0, 0, 4, 5]) == 20
    assert box_area([5, 5, 4, 4]) == 0  # inverted: zero, never negative
    assert clip_xyxy([-5, -5, 700, 500], 640, 480).tolist() == [0, 0, 640, 480]
    assert clip_xyxy([10.5, 20, 30, 40], 640, 480).tolist() == [10.5, 20, 30, 40]
    assert clip_xyxy([700, 10, 800, 20], 640, 480).tolist() == [640, 10, 640, 20]  # collapses to the edge


def test_rcnn_context_is_16px_at_227():
    # A 195 px box enlarged by 227/195 is 227 px: 16 px on each side (rcnn_im_crop.m).
    out = scale_about_centre(np.array([0.0, 0.0, 195.0, 195.0]), RCNN_CONTEXT)
    assert np.allclose(out, [-16, -16, 211, 211], atol=1e-9)


def test_square_and_warp_geometry():
    box_xyxy = np.array([10.0, 20.0, 30.0, 60.0])  # 20 x 40, centre (20, 40)
    assert square_about_centre(box_xyxy).tolist() == [0, 20, 40, 60]
    assert CropGeometry(context=1.5).context_boxes(box_xyxy).tolist() == [-10, 10, 50, 70]
    assert CropGeometry(context=1.5, mode="warp").context_boxes(box_xyxy).tolist() == [5, 10, 35, 70]
    # enlarge (the cache margin) multiplies the context about the same centre
    assert CropGeometry(context=1.5).context_boxes(box_xyxy, enlarge=2.0).tolist() == [-40, -20, 80, 100]


def test_degenerate_boxes_get_min_side():
    geo = CropGeometry(context=1.0)
    assert geo.context_boxes(np.array([5.0, 5.0, 5.0, 5.0])).tolist() == [4.5, 4.5, 5.5, 5.5]
    assert CropGeometry(context=1.0, mode="warp").context_boxes(np.array([5.0, 5, 5, 9])).tolist() == [4.5, 5, 5.5, 9]


def test_size_bucket_boundaries_are_cocos():
    assert size_bucket(32 ** 2 - 1e-6) == "small"
    assert size_bucket(32 ** 2) == "medium"
    assert size_bucket(96 ** 2 - 1e-6) == "medium"
    assert size_bucket(96 ** 2) == "large"


def test_stored_size_and_fill():
    assert [stored_size(s, 0.2) for s in (79, 151, 299)] == [95, 181, 359]
    assert stored_size(79, 0.0) == 79
    assert all((stored_size(s, m) - s) % 2 == 0 for s in (79, 151, 299) for m in (0.1, 0.15, 0.2, 0.33))
    assert CropGeometry().fill_uint8 == (128, 128, 128)
    assert CropGeometry(mean=(0.485, 0.456, 0.406)).fill_uint8 == (124, 116, 104)


def test_geometry_validation_and_round_trip():
    with pytest.raises(ValueError):
        CropGeometry(mode="stretch")
    with pytest.raises(ValueError):
        CropGeometry(context=float("nan"))
    geo = CropGeometry(context=1.3, mode="warp", mean=(0.1, 0.2, 0.3), std=(1, 2, 3))
    assert CropGeometry.from_dict(geo.to_dict()) == geo


IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8))
coord = st.floats(-200, 260, allow_nan=False)
side = st.one_of(st.just(0.0), st.floats(0, 1e-3), st.floats(0, 400))


@settings(max_examples=60, deadline=None)
@given(x=coord, y=coord, w=side, h=side, size=st.sampled_from([1, 7, 79]), mode=st.sampled_from(["square", "warp"]),
       context=st.floats(0.5, 2.0), enlarge=st.sampled_from([1.0, 1.2]))
def test_crops_are_finite_and_sized(x, y, w, h, size, mode, context, enlarge):
    geo = CropGeometry(context=context, mode=mode)
    region = geo.context_boxes(np.array([x, y, x + w, y + h]), enlarge)
    assert np.isfinite(region).all() and region[2] > region[0] and region[3] > region[1]
    crop = crop_image(IMAGE, np.array([x, y, x + w, y + h]), size, geo, enlarge=enlarge)
    assert crop.shape == (1, size, size, 3) and crop.dtype == np.uint8
    normalised = (crop / 255.0 - 0.5) / 0.5
    assert np.isfinite(normalised).all() and np.abs(normalised).max() <= 1.0


@settings(max_examples=40, deadline=None)
@given(x=coord, y=coord, w=side, h=side)
def test_square_regions_are_square_and_centred(x, y, w, h):
    region = CropGeometry().context_boxes(np.array([x, y, x + w, y + h]))
    assert np.isclose(region[2] - region[0], region[3] - region[1])
    assert np.isclose((region[0] + region[2]) / 2, x + w / 2) and np.isclose((region[1] + region[3]) / 2, y + h / 2)
    assert region[2] - region[0] >= max(w, h) * RCNN_CONTEXT - 1e-6
