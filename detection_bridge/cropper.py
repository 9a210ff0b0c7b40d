"""Cut crops: decode each image once, resample every box of it straight from the original pixels.

Resampling is PIL's ``Image.resize(size, BILINEAR, box=region)``: a separable triangle filter whose
support widens with the reduction factor, i.e. antialiased, like ``torchvision``'s ``Resize(antialias=True)``.
Bilinear, as Inception's own preprocessing resizes (TF-slim ``inception_preprocessing.py``), and it costs
about 2/3 of bicubic at 299 px, where the resample, not the JPEG decode, dominates crop time.
``region`` is in the continuous pixel coordinates of :mod:`detection_bridge.boxes` (PIL uses the same:
``box=(0, 0, W, H)`` is the whole image), so sub-pixel boxes are honoured, not rounded.
One resample from the original pixels means a 79 px crop is a true low-resolution view of the object
(DESIGN section 4), not a 299 px crop shrunk again.

Pixels outside the image take the normalisation mean (R-CNN fills them with the mean image, which is
zero after mean subtraction). The result is defined as "resample the image extended to infinity with
the mean colour"; a mean-filled canvas around the region implements it when the region (plus the
filter's reach) leaves the image.

JPEG draft mode: when every crop of an image reduces the image by at least ``2 * d`` (d = 2, 4, 8), the
decoder's DCT scaling is asked for a 1/d image, which is both a cheaper decode and an area-like
prefilter; the remaining factor >= 2 is still done by the antialiased resample. Tests hold this to the
full-decode reference within 2/255 mean absolute difference.

EXIF orientation is not applied: COCO's boxes refer to the pixels as stored.

Tensor crops for the second stage (``torchvision.ops.roi_align`` on any device) live in
``lowres.rcnn.crops``; they share :class:`~detection_bridge.boxes.CropGeometry` with this module.
"""
from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .boxes import CropGeometry
from .errors import ImageError
from .records import CropRecord

RESAMPLE = Image.Resampling.BILINEAR
RESAMPLE_NAME = "bilinear"  # part of the cache key
FILTER_RADIUS = 1.0       # triangle support radius, in output pixels when reducing (source pixels when enlarging)
DRAFT_MIN_RATIO = 2.0     # after draft, each crop must still reduce by at least this factor
MAX_CANVAS_FACTOR = 4     # a canvas larger than this many images is built from a reduced image


def decode_image(path: str, *, draft_scale: int = 1, expected_size: tuple[int, int] | None = None,
                 record: str | None = None) -> tuple[Image.Image, float]:
    """Decode an image as RGB, optionally at 1/``draft_scale`` via JPEG DCT scaling.

    Returns ``(image, scale)`` where ``scale`` is original pixels per decoded pixel (1.0 without draft).
    Missing, truncated or corrupt files raise :class:`ImageError` naming the file, never a PIL error.
    """
    try:
        with Image.open(path) as im:
            if expected_size is not None and im.size != tuple(expected_size):
                raise ImageError(path, record, "image_size_mismatch",
                                 f"file is {im.size[0]}x{im.size[1]}, expected {expected_size[0]}x{expected_size[1]}")
            scale = 1.0
            if draft_scale > 1 and im.format == "JPEG":
                width = im.size[0]
                drafted = im.draft("RGB", (max(im.size[0] // draft_scale, 1), max(im.size[1] // draft_scale, 1)))
                # DCT scaling by 1/d: decoded pixel i covers original [i*d, (i+1)*d) exactly, even when the
                # last one is partial, so the scale is d itself, not width / decoded width.
                scale = float(width / drafted[1][2]) if drafted else 1.0
            im.load()
            rgb = im.convert("RGB") if im.mode != "RGB" else im.copy()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(path, record, "missing_image", "image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(path, record, "corrupt_image", f"cannot decode image: {e}") from None
    return rgb, scale


def choose_draft_scale(regions_xyxy: np.ndarray, out_size: int, min_ratio: float = DRAFT_MIN_RATIO) -> int:
    """Largest JPEG draft factor d in (8, 4, 2) such that every region still reduces by ``min_ratio``."""
    regions = np.asarray(regions_xyxy, dtype=np.float64).reshape(-1, 4)
    if not len(regions):
        return 1
    reduction = np.minimum(regions[:, 2] - regions[:, 0], regions[:, 3] - regions[:, 1]).min() / out_size
    for d in (8, 4, 2):
        if reduction / d >= min_ratio:
            return d
    return 1


def resample_region(image: Image.Image, region_xyxy: Sequence[float], out_size: int,
                    fill: tuple[int, int, int]) -> np.ndarray:
    """``out_size x out_size`` uint8 RGB array of ``region_xyxy`` of ``image`` (mean-filled outside)."""
    x0, y0, x1, y1 = (float(v) for v in region_xyxy)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise ValueError(f"region must be finite with positive size, got {tuple(region_xyxy)}")
    width, height = image.size
    sx, sy = (x1 - x0) / out_size, (y1 - y0) / out_size
    pad_x, pad_y = FILTER_RADIUS * max(sx, 1.0) + 1, FILTER_RADIUS * max(sy, 1.0) + 1
    if x0 - pad_x >= 0 and y0 - pad_y >= 0 and x1 + pad_x <= width and y1 + pad_y <= height:
        return np.asarray(image.resize((out_size, out_size), RESAMPLE, box=(x0, y0, x1, y1)))
    if x1 + pad_x <= 0 or y1 + pad_y <= 0 or x0 - pad_x >= width or y0 - pad_y >= height:
        return np.full((out_size, out_size, 3), fill, dtype=np.uint8)
    canvas_area = (x1 - x0 + 2 * pad_x) * (y1 - y0 + 2 * pad_y)
    k = int(min(sx, sy) // 2)
    if k >= 2 and canvas_area > MAX_CANVAS_FACTOR * width * height:
        # Pathological region far larger than the image: reduce first (box filter), keeping >= 2x for the resample.
        return resample_region(image.reduce(k), (x0 / k, y0 / k, x1 / k, y1 / k), out_size, fill)
    ex0, ey0 = math.floor(x0 - pad_x), math.floor(y0 - pad_y)
    ex1, ey1 = math.ceil(x1 + pad_x), math.ceil(y1 + pad_y)
    canvas = Image.new("RGB", (ex1 - ex0, ey1 - ey0), fill)
    canvas.paste(image, (-ex0, -ey0))
    box = (x0 - ex0, y0 - ey0, x1 - ex0, y1 - ey0)
    return np.asarray(canvas.resize((out_size, out_size), RESAMPLE, box=box))


def crop_image(image: Image.Image, boxes_xyxy: np.ndarray, size: int, geometry: CropGeometry, *,
               enlarge: float = 1.0, scale: float = 1.0) -> np.ndarray:
    """Crops ``(N, size, size, 3)`` uint8 of boxes given in original-image pixels.

    ``enlarge`` widens the context region (the cache's margin); ``scale`` is original pixels per
    pixel of ``image`` (the draft factor), so boxes are always given in original coordinates.
    """
    regions = np.asarray(geometry.context_boxes(np.asarray(boxes_xyxy, np.float64).reshape(-1, 4), enlarge))
    out = np.empty((len(regions), size, size, 3), dtype=np.uint8)
    for i, region in enumerate(regions / scale):
        out[i] = resample_region(image, region, size, geometry.fill_uint8)
    return out


def extract_crops(path: str, boxes_xyxy: np.ndarray, size: int, geometry: CropGeometry, *, enlarge: float = 1.0,
                  draft: bool = True, expected_size: tuple[int, int] | None = None,
                  record: str | None = None) -> np.ndarray:
    """Decode ``path`` once (in draft mode when every crop allows it) and cut all its boxes."""
    boxes_xyxy = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes_xyxy).all():
        raise ValueError(f"{path}: non-finite box among {boxes_xyxy.tolist()}")
    regions = np.asarray(geometry.context_boxes(boxes_xyxy, enlarge))
    draft_scale = choose_draft_scale(regions, size) if draft else 1
    image, scale = decode_image(path, draft_scale=draft_scale, expected_size=expected_size, record=record)
    return crop_image(image, boxes_xyxy, size, geometry, enlarge=enlarge, scale=scale)


def group_by_image(records: Sequence[CropRecord]) -> dict[str, list[int]]:
    """Record indices per image path, in first-seen order: the unit of decode-once extraction."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r.image_path, []).append(i)
    return groups


def _image_crops(records: Sequence[CropRecord], path: str, idx: list[int], size: int, geometry: CropGeometry,
                 enlarge: float, draft: bool, encode: Callable[[np.ndarray], Any] | None
                 ) -> tuple[list[int], Any]:
    boxes_xyxy = np.array([records[i].box_xyxy for i in idx], dtype=np.float64)
    try:
        crops = extract_crops(path, boxes_xyxy, size, geometry, enlarge=enlarge, draft=draft,
                              record=f"image {records[idx[0]].image_id}")
    except ImageError as e:
        return idx, e
    return idx, crops if encode is None else [encode(c) for c in crops]


def iter_image_crops(records: Sequence[CropRecord], size: int, geometry: CropGeometry, *, enlarge: float = 1.0,
                     draft: bool = True, workers: int = 1, groups: Sequence[tuple[str, list[int]]] | None = None,
                     encode: Callable[[np.ndarray], Any] | None = None) -> Iterator[tuple[list[int], Any]]:
    """Yield ``(record indices, crops)`` image by image, in first-seen order; a bad image yields its
    :class:`ImageError` instead of crops so the caller decides (raise or count) without losing the rest.

    ``workers > 1`` decodes and crops that many images at once in threads (PIL releases the GIL while
    decoding, resampling and encoding), with at most ``2 * workers`` images in flight so memory stays
    bounded. ``groups`` (``(path, record indices)`` pairs, default :func:`group_by_image`) restricts the
    work to some images (one shard of a cache); ``encode`` maps each crop in the worker thread (the
    cache's JPEG encoding), giving a list per image instead of an array.
    """
    groups = list(group_by_image(records).items()) if groups is None else list(groups)
    if workers <= 1:
        for path, idx in groups:
            yield _image_crops(records, path, idx, size, geometry, enlarge, draft, encode)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for path, idx in groups:
            pending.append(pool.submit(_image_crops, records, path, idx, size, geometry, enlarge, draft, encode))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def naive_crop(record: CropRecord, size: int, geometry: CropGeometry, *, enlarge: float = 1.0) -> np.ndarray:
    """One crop, decoding the full JPEG for it alone: the baseline the decode-once path is measured against."""
    image, _ = decode_image(record.image_path, record=f"image {record.image_id}")
    return crop_image(image, np.array(record.box_xyxy), size, geometry, enlarge=enlarge)[0]
