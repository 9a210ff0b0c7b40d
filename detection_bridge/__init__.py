"""detection_bridge: COCO ground truth and detector boxes in, classifier crop datasets out.

Never imports ``lowres`` and knows nothing about models. Public names are importable from here;
they load lazily so ``import detection_bridge`` does not import torch until a dataset is asked for.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CropGeometry": "boxes", "RCNN_CONTEXT": "boxes",
    "CropRecord": "records", "CategoryMap": "records", "CropSet": "records",
    "load_split": "coco", "split_paths": "coco", "SplitOptions": "coco",
    "Detection": "results", "ImageEntry": "results", "read_results": "results", "images_in_folder": "results",
    "MatchParams": "matching",
    "extract_crops": "cropper",
    "CropCache": "cache", "CacheSpec": "cache", "BuildOptions": "cache", "build_cache": "cache", "open_cache": "cache",
    "CropDataset": "dataset", "train_transform": "transforms", "eval_transform": "transforms",
    "ColorJitter": "color", "apply_color_jitter": "color",
    "build_crops": "summary", "format_summary": "summary",
    "BridgeError": "errors", "BridgeInputError": "errors", "MalformedFileError": "errors",
    "AnnotationError": "errors", "ImageError": "errors", "EmptyResultError": "errors", "CacheError": "errors",
}
__all__ = sorted(_EXPORTS) + ["synthetic", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "synthetic":
        return importlib.import_module(".synthetic", __name__)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'detection_bridge' has no attribute {name!r}")
