"""A training checkpoint as an inference model: weights, label space and crop geometry.

A thin adapter over :func:`lowres.training.load_model_from_checkpoint`, the one place where a checkpoint
becomes a model (shared with ``lowres eval``), returning what the second stage and export need.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from detection_bridge.boxes import CropGeometry
from detection_bridge.records import CategoryMap

__all__ = ["load_for_inference"]


def load_for_inference(path: str | Path, *, use_ema: bool = True) -> tuple[nn.Module, CategoryMap, CropGeometry]:
    """``(model in eval mode on the CPU, category map, geometry)`` of a ``lowres train`` checkpoint, read with
    ``weights_only=True``; its EMA weights when present and ``use_ema``."""
    from ..training import load_model_from_checkpoint

    model, _, category_map, geometry = load_model_from_checkpoint(path, use_ema=use_ema, map_location="cpu")
    return model, category_map, geometry
