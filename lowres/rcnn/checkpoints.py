"""A training checkpoint as an inference model: weights, label space and crop geometry.

A thin adapter over :func:`lowres.training.load_model_from_checkpoint`, the one place where a checkpoint
becomes a model (shared with ``lowres eval``), returning what the second stage and export need.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from torch import nn

from detection_bridge.boxes import CropGeometry
from detection_bridge.records import CategoryMap

__all__ = ["InferenceModel", "load_for_inference"]


class InferenceModel(NamedTuple):
    """What inference needs from a checkpoint. ``crop_size`` is the side cut from the original pixels,
    ``input_size`` the side the model sees (they differ for the benchmark's upsample-79 variant)."""

    model: nn.Module
    category_map: CategoryMap
    geometry: CropGeometry
    crop_size: int
    input_size: int


def load_for_inference(path: str | Path, *, use_ema: bool = True) -> InferenceModel:
    """The model (eval mode, CPU), category map, geometry and crop/input sizes of a ``lowres train``
    checkpoint, read with ``weights_only=True``; its EMA weights when present and ``use_ema``."""
    from ..config import Config
    from ..training import load_model_from_checkpoint
    from ..training.data import crop_size, input_size

    model, config, category_map, geometry = load_model_from_checkpoint(path, use_ema=use_ema, map_location="cpu")
    cfg = Config.from_dict(config, source=str(path))
    return InferenceModel(model, category_map, geometry, crop_size(cfg), input_size(cfg))
