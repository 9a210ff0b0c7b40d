"""Box formats and the geometry that turns a box into a crop region.

Pixel-coordinate convention (used everywhere in the bridge, and identical to COCO's and to PIL's
``Image.resize(box=...)``): coordinates are continuous; pixel ``(i, j)`` (column i, row j) covers
``[i, i + 1) x [j, j + 1)`` and has its centre at ``(i + 0.5, j + 0.5)``. The whole image is the box
``(0, 0, W, H)``. A COCO box ``[x, y, w, h]`` is ``xyxy = (x, y, x + w, y + h)`` with width ``x1 - x0``:
no ``+ 1`` (that is R-CNN's inclusive integer MATLAB convention and detectron2's legacy mode, not ours).

Variables are named by format (``bbox_xywh``, ``boxes_xyxy``); conversion happens once, at the edge
where COCO JSON is read. Functions accept one box ``(4,)`` or many ``(N, 4)`` (numpy or torch) and keep
the leading shape.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import numpy as np

# R-CNN (Girshick et al. 2014, rcnn_im_crop.m): 16 px of context around the box in a 227 px output,
# i.e. the box is scaled about its centre by 227 / (227 - 2 * 16).
RCNN_CONTEXT = 227 / 195
# COCO's size buckets by area (cocoapi COCOeval.Params.areaRng): small < 32^2 <= medium < 96^2 <= large.
SMALL_AREA = 32.0 ** 2
MEDIUM_AREA = 96.0 ** 2
SizeBucket = Literal["small", "medium", "large"]
SIZE_BUCKETS: tuple[str, ...] = ("small", "medium", "large")


def _stack(parts: Sequence[Any], like: Any) -> Any:
    """Stack along a new last axis with the array library of ``like`` (numpy or torch)."""
    if isinstance(like, np.ndarray):
        return np.stack(parts, axis=-1)
    import torch  # only reached for tensors; keeps numpy-only callers free of the import

    return torch.stack(list(parts), dim=-1)


def _as_array(boxes: Any) -> Any:
    if isinstance(boxes, np.ndarray) or type(boxes).__module__.startswith("torch"):
        return boxes
    return np.asarray(boxes, dtype=np.float64)


def xywh_to_xyxy(bbox_xywh: Any) -> Any:
    """COCO ``[x, y, w, h]`` -> ``[x0, y0, x1, y1]``."""
    b = _as_array(bbox_xywh)
    return _stack([b[..., 0], b[..., 1], b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]], b)


def xyxy_to_xywh(boxes_xyxy: Any) -> Any:
    """``[x0, y0, x1, y1]`` -> COCO ``[x, y, w, h]``."""
    b = _as_array(boxes_xyxy)
    return _stack([b[..., 0], b[..., 1], b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], b)


def box_area(boxes_xyxy: Any) -> Any:
    """Area of xyxy boxes; degenerate (inverted) boxes have area 0, never negative."""
    b = _as_array(boxes_xyxy)
    w = (b[..., 2] - b[..., 0]).clip(min=0)
    h = (b[..., 3] - b[..., 1]).clip(min=0)
    return w * h


def clip_xyxy(boxes_xyxy: Any, width: float, height: float) -> Any:
    """Clip xyxy boxes to the image ``(0, 0, width, height)``; a box wholly outside collapses to an edge."""
    b = _as_array(boxes_xyxy)
    xs = [b[..., i].clip(0, width) for i in (0, 2)]
    ys = [b[..., i].clip(0, height) for i in (1, 3)]
    return _stack([xs[0], ys[0], xs[1], ys[1]], b)


def scale_about_centre(boxes_xyxy: Any, factor_x: float, factor_y: float | None = None) -> Any:
    """Scale boxes about their centres (R-CNN's context padding is this with 227/195)."""
    b = _as_array(boxes_xyxy)
    fy = factor_x if factor_y is None else factor_y
    cx, cy = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2
    hw, hh = (b[..., 2] - b[..., 0]) * (factor_x / 2), (b[..., 3] - b[..., 1]) * (fy / 2)
    return _stack([cx - hw, cy - hh, cx + hw, cy + hh], b)


def square_about_centre(boxes_xyxy: Any, min_side: float = 0.0) -> Any:
    """The square with the box's centre and its longer side (at least ``min_side``): aspect kept."""
    b = _as_array(boxes_xyxy)
    w, h = (b[..., 2] - b[..., 0]).clip(min=0), (b[..., 3] - b[..., 1]).clip(min=0)
    side = np.maximum(w, h) if isinstance(b, np.ndarray) else w.maximum(h)
    half = side.clip(min=min_side) / 2
    cx, cy = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2
    return _stack([cx - half, cy - half, cx + half, cy + half], b)


def enforce_min_side(boxes_xyxy: Any, min_side: float) -> Any:
    """Grow each side shorter than ``min_side`` about the centre, so a crop never divides by zero."""
    b = _as_array(boxes_xyxy)
    cx, cy = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2
    hw = (b[..., 2] - b[..., 0]).clip(min=min_side) / 2
    hh = (b[..., 3] - b[..., 1]).clip(min=min_side) / 2
    return _stack([cx - hw, cy - hh, cx + hw, cy + hh], b)


def size_bucket(area: float) -> SizeBucket:
    """COCO's size bucket of an area in square pixels (the annotation's ``area`` for ground truth)."""
    if area < SMALL_AREA:
        return "small"
    return "medium" if area < MEDIUM_AREA else "large"


def stored_size(size: int, margin: float) -> int:
    """Side of a cached crop: ``size`` plus an even number of pixels, about ``size * margin`` in all.

    The extra is even so the eval crop is an exact integer centre crop of the stored one.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return int(size) + 2 * int(round(size * margin / 2))


@dataclass(frozen=True)
class CropGeometry:
    """The one description of how a box becomes a crop (shared with lowres.rcnn's tensor crops).

    ``context``: scale factor about the box centre (R-CNN's 227/195). ``mode``: ``square`` cuts the square
    on the longer side of the context box so the object keeps its aspect ratio; ``warp`` stretches the
    context box to the square output anisotropically, as R-CNN does. ``mean``/``std``: normalisation of
    [0, 1] pixels; pixels outside the image are filled with ``mean`` so they normalise to ~0.
    ``min_side``: the context box is never thinner than this many source pixels (degenerate boxes).
    """

    context: float = RCNN_CONTEXT
    mode: Literal["square", "warp"] = "square"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    min_side: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("square", "warp"):
            raise ValueError(f"mode must be 'square' or 'warp', got {self.mode!r}")
        if not (math.isfinite(self.context) and self.context > 0):
            raise ValueError(f"context must be a positive finite factor, got {self.context}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std must be 3 values, std > 0")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def fill_uint8(self) -> tuple[int, int, int]:
        """The normalisation mean as uint8 RGB: the colour of out-of-image pixels."""
        return tuple(int(round(min(max(m, 0.0), 1.0) * 255)) for m in self.mean)  # type: ignore[return-value]

    def context_boxes(self, boxes_xyxy: Any, enlarge: float = 1.0) -> Any:
        """Region (xyxy, source pixels) that maps onto the output square.

        ``enlarge`` scales it further about the centre: the crop cache stores a region enlarged by
        ``stored_size / size`` so training jitter has real pixels around the context box.
        """
        boxes = scale_about_centre(enforce_min_side(boxes_xyxy, 0.0), self.context * enlarge)
        if self.mode == "square":
            return square_about_centre(boxes, self.min_side * enlarge)
        return enforce_min_side(boxes, self.min_side * enlarge)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CropGeometry":
        return cls(context=float(data["context"]), mode=data["mode"], mean=tuple(data["mean"]),
                   std=tuple(data["std"]), min_side=float(data.get("min_side", 1.0)))
