"""Colour jitter in two halves: per-sample factors drawn where the sample is made, applied to a batch anywhere.

Loader workers should only move uint8 pixels (a 299 px sample is 268 kB as uint8, 1.07 MB as float32) and do
the geometric work that must see the stored crop; the per-pixel float arithmetic of colour jitter belongs on
the device that trains. So a dataset *draws* each sample's factors (:meth:`ColorJitter.draw`, from the
generator it seeds per sample: the factors are a function of the sample's seed alone, whatever the batch,
worker count or interruption) and returns them beside the image as a small float32 vector; the training step
*applies* them to the whole batch in float (:func:`apply_color_jitter`, any device).

The operations are torchvision's / PIL's (and albumentations' ``*_torchvision``, which the crop pipeline used
before): brightness scales the pixels, contrast blends with the mean of the image's grey level, saturation
blends with the grey image, hue shifts the HSV hue by a fraction of a turn; each result is clamped to [0, 1]
as uint8 arithmetic saturates. Factors are uniform in ``[max(0, 1 - s), 1 + s]``, the hue shift in
``[-h, h]``, and the four operations run in a random order per sample (albumentations' and torchvision's
``ColorJitter``) or in the fixed order brightness, contrast, saturation, hue (TF-slim's ``distort_color``
style) when ``random_order=False``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["ColorJitter", "COLOR_PARAMS", "identity_params", "apply_color_jitter"]

COLOR_PARAMS = 8  # brightness, contrast, saturation, hue shift, then the order of the four operations
_IDENTITY = np.array([1.0, 1.0, 1.0, 0.0, 0, 1, 2, 3], dtype=np.float32)
_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma: PIL's "L", OpenCV's RGB2GRAY, torchvision's rgb_to_grayscale


def identity_params() -> np.ndarray:
    """Factors that change nothing (a sample drawn without jitter)."""
    return _IDENTITY.copy()


class ColorJitter:
    """Draws brightness, contrast, saturation (factors in ``[1-s, 1+s]``) and a hue shift in ``[-h, h]``
    turns, with probability ``p``; the identity otherwise. ``rng`` is numpy's global generator or a
    ``Generator`` (anything with ``uniform`` and ``permutation``), seeded per sample by the caller."""

    def __init__(self, strength: float = 0.2, hue: float = 0.0, p: float = 0.8, *, random_order: bool = True) -> None:
        self.strength, self.hue, self.p, self.random_order = float(strength), float(hue), float(p), bool(random_order)

    def draw(self, rng: Any) -> np.ndarray:
        """``(8,)`` float32: brightness, contrast, saturation, hue shift, then the operations' order (0..3)."""
        if self.strength <= 0 and self.hue <= 0 or rng.uniform() >= self.p:
            return identity_params()
        s, out = self.strength, identity_params()
        out[:3] = [rng.uniform(max(0.0, 1 - s), 1 + s) for _ in range(3)]
        if self.hue > 0:
            out[3] = rng.uniform(-self.hue, self.hue)
        if self.random_order:
            out[4:] = rng.permutation(4)
        return out


def _grey(x: Tensor) -> Tensor:
    r, g, b = x.unbind(dim=1)
    return (_GREY[0] * r + _GREY[1] * g + _GREY[2] * b).unsqueeze(1)


def _brightness(x: Tensor, f: Tensor) -> Tensor:
    return (x * f).clamp_(0, 1)


def _contrast(x: Tensor, f: Tensor) -> Tensor:
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    return (x * f + mean * (1 - f)).clamp_(0, 1)


def _saturation(x: Tensor, f: Tensor) -> Tensor:
    return (x * f + _grey(x) * (1 - f)).clamp_(0, 1)


def _hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue by ``shift`` turns (RGB -> HSV -> RGB, batched; torchvision's formulas)."""
    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    sat = torch.where(maxc > 0, delta / maxc.clamp(min=1e-12), torch.zeros_like(maxc))
    d = delta.clamp(min=1e-12)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    h = torch.remainder(h + shift.view(-1, 1, 1), 1.0)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    v = maxc
    p, q, t = v * (1 - sat), v * (1 - sat * f), v * (1 - sat * (1 - f))
    choices = torch.stack([torch.stack(c, dim=1) for c in
                           ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], dim=1)  # N,6,3,H,W
    index = i.unsqueeze(1).unsqueeze(1).expand(-1, 1, 3, -1, -1)
    out = choices.gather(1, index).squeeze(1)
    return torch.where((shift != 0).view(-1, 1, 1, 1), out, x)


def apply_color_jitter(x: Tensor, params: Tensor) -> Tensor:
    """``x``: ``(N, 3, H, W)`` float RGB in [0, 1]; ``params``: ``(N, 8)`` from :meth:`ColorJitter.draw`.

    Each of the four slots applies, per sample, the operation its order names there: every operation is
    computed for the whole batch in each slot and the sample's own is selected (branch-free, so a batch
    mixing orders costs one pass per slot, and compiled code sees no data-dependent control flow). Factors
    of 1 and a shift of 0 leave a sample exactly unchanged.
    """
    params = params.to(device=x.device, dtype=torch.float32)
    factors = params[:, :4].view(-1, 4, 1, 1, 1).unbind(dim=1)
    order = params[:, 4:].round().to(torch.int64)
    ops = (_brightness, _contrast, _saturation, _hue)
    for slot in range(4):
        which = order[:, slot].view(-1, 1, 1, 1)
        out = x
        for k, op in enumerate(ops):
            if k == 3:
                candidate = op(x, factors[3].view(-1))
            else:
                candidate = op(x, factors[k])
            out = torch.where(which == k, candidate, out)
        x = out
    return x
