"""How a model is run and fed, shared by training, evaluation, the bench, the second stage and export.

Kept apart from :mod:`lowres.training` so that inference code (``lowres.rcnn``, ``lowres.export``) needs
nothing from training: the device a name means, bf16 autocast, the memory format, and the crop sizes a
config implies. The sizes are one rule, written once here:

    crop side  = ``crop.size``, else the stem's input size (the paper's 79 / 151 / 299, section 9)
    model input = ``crop.upsample_to``, else the crop side

They differ only for the benchmark's upsample-79 variant (79 px crops resized to 299 for the 299 network)
and naive-79 (the 299 network fed 79 px crops).
"""
from __future__ import annotations

import contextlib

import torch

from detection_bridge.boxes import CropGeometry

from .config import Config
from .errors import InputError

__all__ = ["resolve_device", "autocast", "memory_format", "model_input_size", "crop_size", "input_size",
           "geometry_from_config"]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU when CUDA is available, else CPU; anything else as torch reads it.

    A device that does not exist here (``cuda`` without a GPU, ``cuda:3`` on a 2-GPU machine, a typo) is a
    ``ValueError`` now, before any data is read, instead of a RuntimeError deep inside the first ``.to()``.
    """
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"device {name!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r}: no CUDA GPU is available here; use --device cpu (or auto)")
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise InputError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA when ``precision == 'bf16'``, a no-op otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def input_dtype(precision: str) -> torch.dtype | None:
    """The dtype :func:`autocast` gives the model's input at its first convolution (bf16 under ``'bf16'``), so
    inputs made in it are the same numbers (one round-to-nearest of the same float32 values) in half the bytes;
    None: keep float32."""
    return torch.bfloat16 if precision == "bf16" else None


def memory_format(channels_last: bool) -> torch.memory_format:
    """NHWC when asked: oneDNN's bf16 convolutions and cuDNN's tensor cores want it (``model.channels_last``)."""
    return torch.channels_last if channels_last else torch.contiguous_format


def model_input_size(stem: int, crop: int | None = None, upsample_to: int | None = None) -> int:
    """The side the model sees: ``upsample_to``, else the crop side, else the stem's own input size."""
    return int(upsample_to or crop or stem)


def crop_size(cfg: Config) -> int:
    """Side of the crops cut from the original pixels: ``crop.size``, else the stem's input size."""
    return model_input_size(cfg.model.stem, cfg.crop.size)


def input_size(cfg: Config) -> int:
    """Side of the images the model sees: ``crop.upsample_to`` when set, else the crop side."""
    return model_input_size(cfg.model.stem, cfg.crop.size, cfg.crop.upsample_to)


def geometry_from_config(cfg: Config) -> CropGeometry:
    """The bridge's CropGeometry for the config's crop section (mean/std: the bridge's 0.5, Inception's)."""
    return CropGeometry(context=cfg.crop.context, mode=cfg.crop.mode)
