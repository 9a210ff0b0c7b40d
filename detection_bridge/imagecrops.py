"""Whole-image crops for ImageNet-layout data, resolution-faithful: one antialiased resample per sample.

The paper's protocol (Inception training, section 8 and TF-slim's preprocessing): training takes a random
region of the image (area and aspect jitter), flips it and jitters its colours; evaluation takes the central
87.5% (TF's ``central_crop(0.875)``; torchvision's resize-342/crop-299 is the same fraction). Here the
chosen region is resampled ONCE, with PIL's antialiased bilinear filter, from the original pixels straight to
the variant's input side: a 79 px input is a real low-resolution view of the region, never a 299 px image
shrunk a second time (``Image.resize(..., box=region)`` filters the region at its true scale).

Decoding: each image is decoded once per epoch when streamed from disk (ImageNet scale; DataLoader workers
do it), or once for the whole run into :class:`DecodedImages` (small data on a CPU): a flat memory-mapped
uint8 store of the decoded originals, shared by every crop size, so all bench variants read one copy and no
per-size or per-epoch copy is ever stored.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ._builds import check_free_space
from .color import ColorJitter
from .cropper import decode_image
from .errors import CacheError, MalformedFileError
from .fileio import atomic_write_json, building_folder, publish_folder, read_json
from .imagefolder import ImageRecord

__all__ = ["central_box", "random_resized_box", "resize_region", "ColorJitter", "DecodedImages",
           "open_or_build_decoded", "decoded_bytes_estimate", "ImageFolderDataset"]

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
DECODED_VERSION = 1


def central_box(width: int, height: int, fraction: float = 0.875) -> Box:
    """The centred square of side ``fraction`` x the shorter side (TF's central_crop on square images;
    torchvision's resize-then-centre-crop on any), in continuous pixel coordinates."""
    side = fraction * min(width, height)
    x0, y0 = (width - side) / 2.0, (height - side) / 2.0
    return (x0, y0, x0 + side, y0 + side)


def random_resized_box(width: int, height: int, rng: np.random.Generator | Any, *,
                       area: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                       attempts: int = 10) -> Box:
    """Inception-style random region: area fraction uniform in ``area``, aspect log-uniform in ``ratio``
    (the "distorted bounding box" of TF-slim, as torchvision's RandomResizedCrop samples it); after
    ``attempts`` misses, the whole image's largest centred region of an admissible aspect."""
    total = float(width * height)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = total * rng.uniform(area[0], area[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if 0 < w <= width and 0 < h <= height:
            x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            return (x0, y0, x0 + w, y0 + h)
    aspect = width / height
    if aspect < ratio[0]:
        w, h = float(width), width / ratio[0]
    elif aspect > ratio[1]:
        w, h = height * ratio[1], float(height)
    else:
        w, h = float(width), float(height)
    x0, y0 = (width - w) / 2.0, (height - h) / 2.0
    return (x0, y0, x0 + w, y0 + h)


def _resample(image: Image.Image, box: Box, size: int) -> Image.Image:
    return image.resize((size, size), Image.BILINEAR, box=tuple(float(v) for v in box), reducing_gap=None)


def resize_region(image: Image.Image, box: Box, size: int) -> np.ndarray:
    """``box`` of ``image`` resampled to ``size`` x ``size`` in one antialiased bilinear pass (uint8 HWC)."""
    return np.array(_resample(image, box, size), dtype=np.uint8)  # a writable copy: torch.from_numpy shares it


# -- decoded-image store ----------------------------------------------------------------------------------
def _store_key(records: Sequence[ImageRecord], root: Path) -> str:
    """Hash of each file's path relative to the data root, size and mtime: identical copies of a dataset on
    two machines share a key; an edited or replaced image changes it."""
    items = []
    for r in records:
        st = os.stat(r.image_path)
        items.append([os.path.relpath(r.image_path, root), st.st_size, st.st_mtime_ns])
    payload = json.dumps({"version": DECODED_VERSION, "images": items}).encode()
    return hashlib.sha256(payload).hexdigest()


def decoded_bytes_estimate(records: Sequence[ImageRecord], sample: int = 64) -> int:
    """Bytes the decoded RGB originals would take, from the headers of up to ``sample`` evenly spaced files."""
    if not records:
        return 0
    picks = records[:: max(1, len(records) // sample)][:sample]
    pixels = []
    for r in picks:
        try:
            with Image.open(r.image_path) as im:
                pixels.append(im.size[0] * im.size[1])
        except OSError:
            continue  # reported by name when the image is decoded
    return int(np.mean(pixels) * 3 * len(records)) if pixels else 0


class DecodedImages:
    """Decoded RGB originals of a split in one flat uint8 file (memory-mapped) plus ``(offset, h, w)`` rows."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        index = read_json(self.path / "index.json", "decoded-image index")
        self.rows = np.asarray(index["rows"], dtype=np.int64).reshape(-1, 3)
        self.paths: list[str] = list(index["paths"])
        size = (self.path / "pixels.u8").stat().st_size
        expected = int((self.rows[:, 1] * self.rows[:, 2] * 3).sum())
        if size != expected:
            raise CacheError(f"{self.path / 'pixels.u8'}: {size} bytes, its index says {expected}: delete the folder")
        self._data: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}  # workers reopen the map

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._data is None:
            self._data = np.memmap(self.path / "pixels.u8", dtype=np.uint8, mode="r")
        offset, h, w = (int(v) for v in self.rows[i])
        return np.asarray(self._data[offset:offset + h * w * 3]).reshape(h, w, 3)


def open_or_build_decoded(records: Sequence[ImageRecord], root: str | os.PathLike, cache_root: str | os.PathLike
                          ) -> DecodedImages:
    """The store of ``records``' decoded images under ``cache_root``, built once (in a temporary folder
    renamed into place, so a crash never leaves half of one) and reused by every crop size and run."""
    key = _store_key(records, Path(root))
    final = Path(cache_root) / f"decoded_{len(records)}_{key[:16]}"
    if (final / "index.json").is_file():
        try:
            store = DecodedImages(final)
            with contextlib.suppress(OSError):  # mark it used, for `lowres cache clean --older-than`
                os.utime(final / "index.json")
            return store
        except (CacheError, MalformedFileError) as e:
            logger.warning(f"rebuilding a damaged decoded-image store ({e})")
            shutil.rmtree(final, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    check_free_space(final.parent, decoded_bytes_estimate(records), f"the decoded pixels of {len(records)} images")
    logger.info(f"decoding {len(records)} images once into {final}")
    with building_folder(final) as tmp:
        rows, offset = [], 0
        try:  # plain writes, never a memory-mapped sparse file: a full disk is this error, not a SIGBUS
            with open(tmp / "pixels.u8", "wb") as f:
                for r in records:
                    image, _ = decode_image(r.image_path, record=f"{r.class_key}/{Path(r.image_path).name}")
                    pixels = np.asarray(image, dtype=np.uint8)
                    f.write(pixels.tobytes())
                    rows.append([offset, pixels.shape[0], pixels.shape[1]])
                    offset += pixels.size
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise CacheError(f"{tmp / 'pixels.u8'}: cannot write the decoded images: {e.strerror or e}") from None
        atomic_write_json(tmp / "index.json", {"version": DECODED_VERSION, "key": key, "rows": rows,
                                               "paths": [r.image_path for r in records]},
                          indent=1, sort_keys=True)
        # another process may have finished the same store first: keep theirs
        publish_folder(tmp, final, same=lambda folder: (folder / "index.json").is_file())
    return DecodedImages(final)


# -- dataset ----------------------------------------------------------------------------------------------
class ImageFolderDataset(Dataset):
    """``dataset[i] -> (image, label, i)``: the image a uint8 ``(3, size, size)`` tensor, as
    :class:`~detection_bridge.CropDataset` gives (the consumer normalises it on its device); with ``color``,
    ``(image, label, i, colour)``: the sample's colour-jitter factors (:mod:`detection_bridge.color`, fixed order
    brightness, contrast, saturation, hue), applied by the consumer on its device.

    Training draws its region, flip and colours from numpy's global generator, which the trainer seeds per
    sample from (seed, epoch, index): the same sample whichever worker loads it, interrupted or not.
    """

    def __init__(self, records: Sequence[ImageRecord], size: int, *, train: bool = False,
                 decoded: DecodedImages | None = None, central_fraction: float = 0.875,
                 area: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 hflip: float = 0.5, color: ColorJitter | None = None) -> None:
        self.records = list(records)
        if decoded is not None and len(decoded) != len(self.records):
            raise ValueError(f"{len(decoded)} decoded images for {len(self.records)} records")
        self.size, self.train, self.decoded = int(size), bool(train), decoded
        self.central_fraction, self.area, self.ratio, self.hflip = float(central_fraction), area, ratio, float(hflip)
        self.color = color

    def __len__(self) -> int:
        return len(self.records)

    def image(self, i: int) -> Image.Image:
        """The decoded original of record ``i`` (RGB; grayscale and CMYK files converted)."""
        if self.decoded is not None:
            return Image.fromarray(self.decoded[i])
        r = self.records[i]
        return decode_image(r.image_path, record=f"{r.class_key}/{Path(r.image_path).name}")[0]

    def __getitem__(self, i: int) -> tuple:
        image = self.image(i)
        rng = np.random
        if self.train:
            box = random_resized_box(image.width, image.height, rng, area=self.area, ratio=self.ratio)
        else:
            box = central_box(image.width, image.height, self.central_fraction)
        region = _resample(image, box, self.size)
        if self.train and rng.uniform() < self.hflip:
            region = region.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = torch.from_numpy(np.array(region, dtype=np.uint8)).permute(2, 0, 1).contiguous()
        if not self.train or self.color is None:
            return pixels, self.records[i].label, i
        return pixels, self.records[i].label, i, self.color.draw(rng)

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)
