"""torch Dataset over crop records, read from the crop cache (fast path) or cut on the fly.

``dataset[i] -> (image, label, i)``: a uint8 tensor ``(3, size, size)`` (the consumer converts and normalises
it with the geometry's mean/std on its device), the contiguous label, and the index (``dataset.records[i]`` is the record, so evaluation can
report per size bucket or source). It is a plain map-style dataset: ``DistributedSampler`` shards it
with no special support. With a ``color`` jitter (training), items are ``(image, label, i, colour)``:
``colour`` is the sample's ``(8,)`` float32 factors (:mod:`detection_bridge.color`), drawn from numpy's global
generator, which the trainer seeds per sample, for the consumer to apply on its device.

Uncached, each item decodes its image (a one-image memo helps when consecutive records share an image,
e.g. evaluation in record order); that is the naive path, for small sets and checks. Training should
use a :class:`~detection_bridge.cache.CropCache`: epochs after the first then decode no JPEG.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from .boxes import CropGeometry, stored_size
from .cache import DEFAULT_MARGIN, CropCache
from .color import ColorJitter
from .cropper import crop_image, decode_image
from .records import CropRecord
from .transforms import eval_transform, train_transform


class CropDataset(Dataset):
    """Crops of ``records`` at ``size``; pass ``cache`` to read them from disk instead of decoding."""

    def __init__(self, records: Sequence[CropRecord] | None, size: int, *, geometry: CropGeometry = CropGeometry(),
                 train: bool = False, cache: CropCache | None = None, margin: float = DEFAULT_MARGIN,
                 transform: Callable | None = None, color: ColorJitter | None = None) -> None:
        if cache is not None:
            if records is not None and list(records) != cache.records:
                raise ValueError("records differ from the cache's records (images that failed to decode are "
                                 "left out of a cache): pass records=None or cache.records")
            if size != cache.size:
                raise ValueError(f"size {size} differs from the cache's size {cache.size}")
            records, geometry, margin = cache.records, cache.geometry, cache.margin
        if records is None:
            raise ValueError("give records, a cache, or both")
        self.records = list(records)
        self.size, self.geometry, self.cache, self.train = int(size), geometry, cache, train
        self.stored_size = cache.stored_size if cache is not None else stored_size(size, margin)
        self.transform = transform or (train_transform(self.size, self.stored_size) if train
                                       else eval_transform(self.size, self.stored_size))
        self.color = color
        self._memo: tuple[str, object, float] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def stored_crop(self, i: int) -> np.ndarray:
        """The uint8 ``(M, M, 3)`` margin crop of record ``i`` (before any transform)."""
        if self.cache is not None:
            return self.cache[i]
        r = self.records[i]
        if self._memo is None or self._memo[0] != r.image_path:
            image, scale = decode_image(r.image_path, record=f"image {r.image_id}")
            self._memo = (r.image_path, image, scale)
        _, image, scale = self._memo
        return crop_image(image, np.array(r.box_xyxy), self.stored_size, self.geometry,
                          enlarge=self.stored_size / self.size, scale=scale)[0]

    def __getitem__(self, i: int) -> tuple:
        image = self.transform(image=self.stored_crop(i))["image"]
        if self.color is None:
            return image, self.records[i].label, i
        return image, self.records[i].label, i, self.color.draw(np.random)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_memo": None}

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)
