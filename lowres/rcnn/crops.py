"""Crops for the second stage, cut with ``torchvision.ops.roi_align`` from image tensors on their own device.

The crops are meant to equal the bridge's PIL crops (:func:`detection_bridge.cropper.extract_crops`), which the
model was trained on, so the geometry is the bridge's own :meth:`CropGeometry.context_boxes` and the pixel
convention is the bridge's (continuous coordinates, pixel ``i`` covers ``[i, i + 1)``, the image is
``(0, 0, W, H)``). ``roi_align(aligned=True)`` uses the same convention: it samples bin centres at
``x0 + (u + 0.5) * bin - 0.5`` in pixel-index space, which is exactly a resize of the region.

How each requirement is met:

* Mean fill outside the image: images are normalised first (``(x - mean) / std``), so the fill colour is 0,
  and every image is placed with at least one pixel of zeros on each side in a zero batch tensor.
  ``roi_align`` returns 0 for samples beyond the tensor and bilinearly blends into the zero border
  near the edge, so out-of-image pixels are the mean whatever the batch's other images are (batch-invariant).
* Antialiasing: ``sampling_ratio=-1`` makes roi_align average ``ceil(region side / output side)`` samples
  per bin along each axis, chosen per box: about one bilinear sample per source pixel, i.e. an area
  (box) filter when shrinking, and plain bilinear when enlarging, as PIL's. The PIL path shrinks with an
  antialiased triangle filter (``BILINEAR``) twice as wide, so the two differ a little when shrinking;
  ``tests/rcnn/test_crops.py`` states and checks the tolerance (under 1/255 on average).
* One call per chunk: all boxes of all images go through one ``roi_align`` call per chunk of
  ``chunk_size`` boxes, which bounds the memory of the crop tensor (``chunk x 3 x S x S`` floats).
* Bounded work per box: adaptive sampling takes ``ceil(side / S)`` samples per bin and axis, so a box of
  10^4 px needed a 3 GB table in roi_align's CPU kernel and one of 10^6 px overflowed it (a segfault).
  The samples per bin and axis are capped (:func:`max_sampling_ratio`: at most ``2^21`` samples per crop,
  64 MB of that table); boxes above the cap are cut with the capped explicit ratio, in their own call.
  The cap is far above any real box (79 px crops: 18 samples per bin, exact up to regions of 1422 px;
  299 px: 4, up to 1196 px; a COCO image is at most 640 px), so ordinary crops are unchanged. Box
  coordinates beyond ``MAX_COORD`` (2^24, where float32 stops holding whole pixels) are refused.

Accepted images: ``(3, H, W)`` tensors, ``uint8`` in 0..255 or floating point in [0, 1] (torchvision
detection's convention). Anything else is an error, including float images outside [0, 1] (a sign of
0..255 floats or of already-normalised input).
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import Tensor
from torchvision.ops import roi_align

from detection_bridge.boxes import CropGeometry

from ..device_transforms import normalize
from ..errors import InputError

__all__ = ["check_images", "check_boxes", "batch_images", "context_regions", "iter_roi_crops", "roi_crops",
           "max_sampling_ratio", "FLOAT_RANGE_SLACK", "MAX_COORD"]

FLOAT_RANGE_SLACK = 1e-3  # float images may exceed [0, 1] by this much (rounding in upstream resizes)
_PAD = 1  # zero (= mean) border around every image in the batch tensor
SAMPLES_PER_CROP = 1 << 21  # cap on roi_align samples per crop (its CPU kernel tables 32 bytes for each)
MAX_COORD = float(1 << 24)  # larger box coordinates are refused: float32 no longer holds whole pixels there


def check_images(images: Sequence[Tensor]) -> torch.device:
    """Validate a list of ``(3, H, W)`` images (see the module docstring) and return their common device."""
    if isinstance(images, Tensor) and images.dim() == 4:
        images = list(images)
    if not isinstance(images, (list, tuple)):
        raise TypeError(f"images must be a list of (3, H, W) tensors, got {type(images).__name__}")
    device = None
    for i, image in enumerate(images):
        if not isinstance(image, Tensor):
            raise TypeError(f"images[{i}] is a {type(image).__name__}, expected a tensor")
        if image.dim() != 3 or image.shape[0] != 3:
            raise InputError(f"images[{i}] has shape {tuple(image.shape)}; expected (3, H, W) RGB "
                             "(a grayscale (1, H, W) image can be passed as image.expand(3, -1, -1))")
        if image.shape[1] < 1 or image.shape[2] < 1:
            raise InputError(f"images[{i}] is empty: shape {tuple(image.shape)}")
        if image.dtype != torch.uint8 and not image.dtype.is_floating_point:
            raise TypeError(f"images[{i}] has dtype {image.dtype}; expected uint8 (0..255) or float (0..1)")
        if device is not None and image.device != device:
            raise InputError(f"images are on several devices ({device} and {image.device}); move them to one")
        device = image.device
        if image.dtype.is_floating_point and image.numel():
            lo, hi = torch.aminmax(image)
            if not (lo >= -FLOAT_RANGE_SLACK and hi <= 1 + FLOAT_RANGE_SLACK):  # also catches NaN
                raise InputError(f"images[{i}] is float with values in [{float(lo):.3g}, {float(hi):.3g}]; float "
                                 "images must be in [0, 1] (pass uint8 for 0..255, and never normalised input)")
    return device if device is not None else torch.device("cpu")


def check_boxes(boxes_xyxy: Sequence[Tensor], num_images: int) -> list[Tensor]:
    """Validate one ``(N_i, 4)`` xyxy tensor per image; returns them as float32 (2-D even when empty).

    Non-finite values and inverted boxes (``x1 < x0`` or ``y1 < y0``) are errors: they are always bugs
    upstream (a swapped format, a division by zero). Zero-area boxes are allowed: the geometry's
    ``min_side`` gives them a small region, as in the bridge. Boxes partly or wholly outside the image are
    allowed: the outside is mean-filled (a wholly outside box yields a uniform mean crop).
    """
    if isinstance(boxes_xyxy, Tensor) or not isinstance(boxes_xyxy, (list, tuple)):
        raise TypeError("boxes_xyxy must be a list with one (N, 4) tensor per image")
    if len(boxes_xyxy) != num_images:
        raise InputError(f"got {num_images} images but {len(boxes_xyxy)} box tensors")
    out = []
    for i, boxes in enumerate(boxes_xyxy):
        if not isinstance(boxes, Tensor):
            raise TypeError(f"boxes_xyxy[{i}] is a {type(boxes).__name__}, expected a tensor")
        if boxes.numel() == 0:
            out.append(boxes.new_zeros((0, 4), dtype=torch.float32))
            continue
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise InputError(f"boxes_xyxy[{i}] has shape {tuple(boxes.shape)}; expected (N, 4) xyxy")
        boxes = boxes.float()
        bad = ~torch.isfinite(boxes).all(dim=1)
        if bad.any():
            k = int(bad.nonzero()[0])
            raise InputError(f"boxes_xyxy[{i}][{k}] is not finite: {boxes[k].tolist()}")
        huge = (boxes.abs() > MAX_COORD).any(dim=1)
        if huge.any():
            k = int(huge.nonzero()[0])
            raise InputError(f"boxes_xyxy[{i}][{k}] = {boxes[k].tolist()} lies beyond +-{MAX_COORD:.0f} px: not an "
                             "image box (a unit or format mix-up upstream?)")
        inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if inverted.any():
            k = int(inverted.nonzero()[0])
            raise InputError(f"boxes_xyxy[{i}][{k}] = {boxes[k].tolist()} has x1 < x0 or y1 < y0; boxes must be "
                             "xyxy (convert COCO [x, y, w, h] with detection_bridge.boxes.xywh_to_xyxy)")
        out.append(boxes)
    return out


def batch_images(images: Sequence[Tensor], geometry: CropGeometry) -> Tensor:
    """Normalised images in one zero tensor ``(B, 3, H_max + 2, W_max + 2)``, each at offset (1, 1).

    Normalising before padding makes zero the fill colour (the mean), so the padding and whatever
    roi_align samples beyond the tensor are both the mean: see the module docstring.
    """
    device = images[0].device
    h = max(int(im.shape[1]) for im in images) + 2 * _PAD
    w = max(int(im.shape[2]) for im in images) + 2 * _PAD
    batch = torch.zeros((len(images), 3, h, w), dtype=torch.float32, device=device)
    for i, image in enumerate(images):
        x = image.float().div_(255) if image.dtype == torch.uint8 else image.float()
        batch[i, :, _PAD:_PAD + image.shape[1], _PAD:_PAD + image.shape[2]] = normalize(x, geometry.mean, geometry.std)
    return batch


def context_regions(boxes_xyxy: Sequence[Tensor], geometry: CropGeometry, device: torch.device) -> Tensor:
    """``(K, 5)`` roi_align rows ``[image index, x0, y0, x1, y1]`` of the context regions, in batch-tensor pixels."""
    rows = []
    for i, boxes in enumerate(boxes_xyxy):
        regions = geometry.context_boxes(boxes.to(device=device, dtype=torch.float32)) + _PAD
        rows.append(torch.cat([regions.new_full((len(regions), 1), float(i)), regions], dim=1))
    if not rows:
        return torch.zeros((0, 5), device=device)
    return torch.cat(rows)


def max_sampling_ratio(size: int) -> int:
    """Most roi_align samples per bin and axis for ``size`` x ``size`` crops (see the module docstring)."""
    return max(1, math.isqrt(SAMPLES_PER_CROP // (size * size)))


def _roi_align_bounded(batch: Tensor, regions: Tensor, size: int, sampling_ratio: int) -> Tensor:
    """roi_align of ``regions``; those whose (adaptive or given) sampling exceeds the cap use the cap."""
    cap = max_sampling_ratio(size)

    def cut(rois: Tensor, ratio: int) -> Tensor:
        return roi_align(batch, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=ratio, aligned=True)

    if sampling_ratio > 0:
        return cut(regions, min(sampling_ratio, cap))
    big = (sampling_grid(regions, size) > cap).any(dim=1)
    if not big.any():
        return cut(regions, sampling_ratio)
    out = batch.new_empty((len(regions), batch.shape[1], size, size))
    if not big.all():
        out[~big] = cut(regions[~big], sampling_ratio)
    out[big] = cut(regions[big], cap)
    return out


def iter_roi_crops(batch: Tensor, regions: Tensor, size: int, *, chunk_size: int,
                   sampling_ratio: int = -1) -> Iterator[Tensor]:
    """Normalised crops ``(<= chunk_size, 3, size, size)``, one roi_align call per chunk of regions (two when
    a chunk holds a box above the sampling cap)."""
    if chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, len(regions), chunk_size):
        yield _roi_align_bounded(batch, regions[start:start + chunk_size], size, sampling_ratio)


def roi_crops(images: Sequence[Tensor], boxes_xyxy: Sequence[Tensor], size: int,
              geometry: CropGeometry = CropGeometry(), *, chunk_size: int | None = None,
              sampling_ratio: int = -1) -> Tensor:
    """All crops at once, ``(sum N_i, 3, size, size)`` normalised, on the images' device (tests, export checks).

    :class:`~lowres.rcnn.SecondStage` streams the chunks instead, to bound memory.
    """
    device = check_images(images)
    boxes = check_boxes(boxes_xyxy, len(images))
    total = sum(len(b) for b in boxes)
    if total == 0:
        return torch.zeros((0, 3, size, size), device=device)
    regions = context_regions(boxes, geometry, device)
    chunks = iter_roi_crops(batch_images(images, geometry), regions, size, chunk_size=chunk_size or total,
                            sampling_ratio=sampling_ratio)
    return torch.cat(list(chunks))


def sampling_grid(regions: Tensor, size: int) -> Tensor:
    """Samples per bin and axis that ``sampling_ratio=-1`` uses for each region (for docs and tests)."""
    sides = torch.stack([regions[:, -1] - regions[:, -3], regions[:, -2] - regions[:, -4]], dim=1)
    return torch.ceil(sides / size).clamp(min=1).to(torch.int64) if len(regions) else sides.long()

