"""Albumentations pipelines per target size, on stored (margin) crops from the cache or the cropper.

Train: a random crop of the margin region resized to ``size`` is the box's scale, aspect and
translation jitter (the R-CNN view of "imperfect boxes" plus Inception-style scale/aspect
augmentation, kept mild because the box already frames the object); then horizontal flip. Eval: the
exact centre ``size x size`` of the stored crop, which is the context-box crop, so eval inputs equal a
direct crop at ``size``. Both end with a CHW **uint8** tensor: the geometric work, which must see the
stored crop, happens here (in loader workers); colour jitter (:mod:`detection_bridge.color`, factors drawn
per sample by the dataset) and normalisation are per-pixel float arithmetic that the consumer runs on its
device (``lowres.device_transforms``), so workers move a quarter of the bytes.
"""
from __future__ import annotations

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2


def train_transform(size: int, stored: int, *, box_scale: tuple[float, float] = (0.85, 1.15),
                    aspect: tuple[float, float] = (3 / 4, 4 / 3), hflip: float = 0.5) -> A.Compose:
    """Training pipeline for ``stored x stored`` uint8 crops whose centre ``size x size`` is the box context.

    ``box_scale`` is the side of the sampled region relative to the context box (1.0 = unchanged);
    albumentations wants it as an area fraction of the stored crop, converted here and capped at 1.
    """
    lo, hi = ((s * size / stored) ** 2 for s in box_scale)
    return A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=(min(lo, 1.0), min(hi, 1.0)), ratio=aspect,
                            interpolation=cv2.INTER_LINEAR, p=1.0),
        A.HorizontalFlip(p=hflip),
        ToTensorV2(),
    ])


def eval_transform(size: int, stored: int) -> A.Compose:
    """Eval pipeline: centre crop to the context box (exact: ``stored - size`` is even)."""
    if (stored - size) % 2:
        raise ValueError(f"stored size {stored} and size {size} must differ by an even number of pixels")
    crop = [A.CenterCrop(height=size, width=size)] if stored != size else []
    return A.Compose([*crop, ToTensorV2()])
