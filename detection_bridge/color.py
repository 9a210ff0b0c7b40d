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
    return torch.mul(r, _GREY[0]).add_(g, alpha=_GREY[1]).add_(b, alpha=_GREY[2]).unsqueeze(1)  # one allocation


# The operations work in place on the tensor they are given (a batch allocation costs more than an in-place
# pass over it on a CPU: fresh pages are faulted in); each gives the same numbers as its out-of-place formula.
def _brightness(x: Tensor, f: Tensor) -> Tensor:
    return x.mul_(f).clamp_(0, 1)


def _contrast(x: Tensor, f: Tensor) -> Tensor:
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    return x.mul_(f).add_(mean * (1 - f)).clamp_(0, 1)


def _saturation(x: Tensor, f: Tensor) -> Tensor:
    grey = _grey(x).mul_(1 - f)  # of x before it is scaled
    return x.mul_(f).add_(grey).clamp_(0, 1)


def _hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue by ``shift`` turns: RGB -> HSV (torchvision's formulas), then HSV -> RGB in closed
    form (each channel ``v - v s clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``, n = 5, 3, 1)."""
    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    d = delta.clamp(min=1e-12)
    h = torch.where(maxc == r, (g - b) / d, torch.where(maxc == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    h = torch.where(delta > 0, h, torch.zeros_like(h)) + 6.0 * shift.view(-1, 1, 1)  # in sixths of a turn
    chroma = delta  # v * s
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(h + n, 6.0)
        out.append(maxc - chroma * torch.minimum(k, 4.0 - k).clamp_(0, 1))
    return torch.stack(out, dim=1)


_OPS = (_brightness, _contrast, _saturation, _hue)


def apply_color_jitter(x: Tensor, params: Tensor, *, inplace: bool = False) -> Tensor:
    """``x``: ``(N, 3, H, W)`` float RGB in [0, 1]; ``params``: ``(N, 8)`` from :meth:`ColorJitter.draw`.

    Slot by slot, each operation runs once on the samples whose order puts it in that slot and whose factor
    changes something. Which samples those are is decided from ``params`` where they are (on the host, as the
    loader delivers them), so a device batch needs no device-to-host read. Brightness, contrast and saturation
    at a factor of 1 are exactly the identity (``x * 1``, ``+ m * 0``), so when at least a quarter of the batch
    changes they run on the whole batch in place, the others at factor 1; otherwise (and for hue, whose HSV
    round trip is not bit-exact) the chosen samples are gathered, transformed and written back. ``inplace``:
    ``x`` itself is changed (the caller's fresh batch); otherwise a copy.
    """
    plan = params.detach().to("cpu", torch.float32)
    order = plan[:, 4:].round().to(torch.int64)
    identity = torch.from_numpy(_IDENTITY[:4])
    changes = plan[:, :4] != identity
    if not inplace:
        x = x.clone()
    for slot in range(4):
        for k, op in enumerate(_OPS):
            chosen = (order[:, slot] == k) & changes[:, k]
            count = int(chosen.sum())
            if count == len(x) or (count and k < 3 and 4 * count >= len(x)):
                f = torch.where(chosen, plan[:, k], identity[k]).to(x.device, non_blocking=True)
                x = op(x, f if k == 3 else f.view(-1, 1, 1, 1))
            elif count:
                idx = chosen.nonzero().flatten()
                f = plan[idx, k].to(x.device, non_blocking=True)
                idx = idx.to(x.device, non_blocking=True)
                x.index_copy_(0, idx, op(x.index_select(0, idx), f if k == 3 else f.view(-1, 1, 1, 1)))
    return x
