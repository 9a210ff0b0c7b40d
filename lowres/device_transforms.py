"""The model's input from a loader batch, made on the device: uint8 -> float, colour jitter, normalisation, resize.

Loader workers return uint8 ``(N, 3, H, W)`` crops (geometric augmentation already done: it must see the
stored margin crop) plus labels, indices and, in training, each sample's colour-jitter factors. Everything
per-pixel and float happens here, in the training or evaluation step, on the device that runs the model: a
299 px sample crosses to the device as 268 kB instead of 1.07 MB, and CPU workers no longer spend most of their
time on float arithmetic. It lives beside :mod:`lowres.runtime`, outside :mod:`lowres.training`, so that
inference code uses it without importing training. This is the one place that turns pixels into model inputs for training, validation,
``lowres eval`` and the bench (all go through :mod:`lowres.training.engine`); the second stage normalises its
images with the same :func:`normalize` before cutting them with ``roi_align``.

Why the jitter factors travel from the worker (``batch[3]``) rather than being drawn here from a generator
seeded by (seed, epoch, step): a sample's factors are then a function of (seed, epoch, dataset index) alone,
like its crop and flip, drawn from the same per-sample seed (:class:`~lowres.training.data.SeededDataset`).
The augmentation of a sample therefore does not depend on which batch, rank or step it lands in (batch
size, world size, ``drop_last`` and mid-epoch resume change nothing), so exact resume needs no extra state,
and the cost is 32 bytes per sample.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from detection_bridge.boxes import CropGeometry
from detection_bridge.color import apply_color_jitter

from .runtime import memory_format

__all__ = ["normalize", "resize", "model_inputs"]

_GEOMETRY = CropGeometry()  # mean = std = 0.5 per channel: the Inception convention, the bridge's default


def normalize(x: Tensor, mean: Sequence[float] = _GEOMETRY.mean, std: Sequence[float] = _GEOMETRY.std, *,
              inplace: bool = False) -> Tensor:
    """``(x - mean) / std`` per channel for ``(..., 3, H, W)`` RGB in [0, 1] (0.5 and 0.5: inputs in [-1, 1]);
    ``inplace``: in ``x`` itself (the same numbers, without two batch-sized allocations)."""
    if inplace and len(set(mean)) == 1 and len(set(std)) == 1:  # one number per channel: a scalar op is
        return x.sub_(float(mean[0])).div_(float(std[0]))      # much faster than a channel broadcast in NHWC
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return x.sub_(m).div_(s) if inplace else (x - m) / s


def resize(x: Tensor, size: int | None) -> Tensor:
    """``x`` resized (bilinear, half-pixel centres) to ``size`` x ``size``; unchanged when it has that size or
    ``size`` is None. The bench's upsample-79 variant: 79 px crops shown to the 299 network at its input size."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def model_inputs(batch: Sequence, device: torch.device, *, channels_last: bool = False,
                 size: int | None = None, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """``(images, targets)`` on ``device`` from a loader batch ``(uint8 images, labels[, indices[, colour]])``.

    Images become float in [0, 1], get their colour jitter when the batch carries factors, are normalised, and
    are resized to ``size`` (:func:`resize`), then laid out NHWC with ``channels_last`` and, with ``dtype``
    (:func:`lowres.runtime.input_dtype`: what autocast would cast them to), stored in it by the same copy.
    """
    images, labels = batch[0], batch[1]
    if images.dtype != torch.uint8:
        raise TypeError(f"loader images must be uint8 (N, 3, H, W) pixels, got {images.dtype}: normalisation and "
                        "colour jitter run on the device (lowres.device_transforms)")
    x = images.to(device, non_blocking=True).float().div_(255.0)  # the one float batch: the jitter works in it
    if len(batch) > 3:  # in place, in NCHW (per-sample factors broadcast over contiguous planes: vectorised)
        x = apply_color_jitter(x, torch.as_tensor(batch[3]), inplace=True)  # factors stay on the host: it plans there
    fmt = memory_format(channels_last)
    x = resize(normalize(x, inplace=True).contiguous(memory_format=fmt), size)  # resized in the target layout
    x = x.to(dtype=dtype or x.dtype, memory_format=fmt)  # one copy for the layout and the dtype (none if unchanged)
    return x, torch.as_tensor(labels).to(device, non_blocking=True)
