"""Crop cache on disk: uint8 crops of one target size, so epochs after the first decode no JPEG.

Layout: ``<cache_root>/crops_<size>px_<key16>/`` holding ``crops.npy`` (``(rows, M, M, 3)`` uint8, read
as a memory map) and ``index.json`` (the records, the row of each, geometry, sizes, category map,
skipped inputs). ``M = stored_size(size, margin)``: each crop covers its context box enlarged by
``M / size`` about the centre, so training jitter (scale, aspect, translation) moves into real pixels,
and the centre ``size x size`` of it is exactly the eval crop.

Invalidation: the folder name carries a hash of everything the pixels depend on: the records, each
image file's size and mtime, the geometry, size, margin, draft mode, resampling filter and the
format version. Changed
inputs give a new key, hence a new folder; a stale folder is never read (delete old ones at will).

Atomicity: a cache is built in a temporary folder next to its final one and renamed into place with
``os.replace`` only when complete; any failure removes the temporary folder. A reader therefore sees a
complete cache or none.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ._io import atomic_write_json, default_mode, read_json
from .boxes import CropGeometry, stored_size
from .cropper import RESAMPLE_NAME, iter_image_crops
from .errors import BridgeError, CacheError, ErrorPolicy, ImageError, OnError, SkipLog
from .records import CategoryMap, CropRecord, records_to_dicts

CACHE_VERSION = 2
DEFAULT_MARGIN = 0.2
INDEX_NAME, CROPS_NAME = "index.json", "crops.npy"


def _image_stats(records: Sequence[CropRecord]) -> dict[str, list[int]]:
    """Size and mtime of every image: a replaced or edited image changes the key."""
    stats = {}
    for path in sorted({r.image_path for r in records}):
        try:
            st = os.stat(path)
            stats[path] = [st.st_size, st.st_mtime_ns]
        except OSError:
            stats[path] = [-1, -1]  # reported properly when the build tries to decode it
    return stats


def cache_key(records: Sequence[CropRecord], size: int, geometry: CropGeometry, margin: float,
              draft: bool = True) -> str:
    """SHA-256 of every input of the cached pixels (see the module docstring)."""
    payload = {"version": CACHE_VERSION, "resample": RESAMPLE_NAME, "size": int(size), "margin": float(margin),
               "draft": bool(draft),
               "geometry": geometry.to_dict(), "records": records_to_dicts(records),
               "images": _image_stats(records)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cache_path(cache_root: str | os.PathLike, size: int, key: str) -> Path:
    return Path(cache_root) / f"crops_{int(size)}px_{key[:16]}"


class CropCache:
    """Read side of a built cache: ``cache[i]`` is the stored (margin) crop of ``cache.records[i]``.

    The memory map opens lazily and is dropped on pickling, so DataLoader workers each open their own.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            index = read_json(self.path / INDEX_NAME, "crop cache index")
            if index.get("version") != CACHE_VERSION:
                raise CacheError(f"{self.path}: cache version {index.get('version')}, expected {CACHE_VERSION}")
            self.key: str = index["key"]
            self.size: int = int(index["size"])
            self.stored_size: int = int(index["stored_size"])
            self.margin: float = float(index["margin"])
            self.geometry = CropGeometry.from_dict(index["geometry"])
            self.records = [CropRecord.from_dict(d) for d in index["records"]]
            self.rows = np.asarray(index["rows"], dtype=np.int64)
            self.num_rows: int = int(index["num_rows"])
            cmap = index.get("category_map")
            self.category_map = CategoryMap.from_dict(cmap) if cmap else None
            self.skipped = SkipLog.from_dict(index.get("skipped", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise CacheError(f"{self.path}: damaged cache index: {e!r}") from None
        self._array: np.ndarray | None = None
        self._check_array()

    def _check_array(self) -> None:
        expected = (self.num_rows, self.stored_size, self.stored_size, 3)
        arr = self.array
        if arr.shape != expected or arr.dtype != np.uint8 or len(self.rows) != len(self.records):
            raise CacheError(f"{self.path}: crops array {arr.shape} {arr.dtype} does not match its index {expected}")

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            try:
                # a plain ndarray view of the read-only map: memmap's own indexing adds per-item overhead
                self._array = np.asarray(np.load(self.path / CROPS_NAME, mmap_mode="r"))
            except (OSError, ValueError) as e:
                raise CacheError(f"{self.path / CROPS_NAME}: unreadable crop array: {e}") from None
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> np.ndarray:
        """Stored crop ``(M, M, 3)`` uint8 (a copy: safe to hand to augmentations)."""
        return np.array(self.array[self.rows[i]])

    def eval_crop(self, i: int) -> np.ndarray:
        """The ``size x size`` centre of the stored crop: exactly the context-box crop."""
        off = (self.stored_size - self.size) // 2
        return np.array(self.array[self.rows[i], off:off + self.size, off:off + self.size])


def open_cache(cache_root: str | os.PathLike, records: Sequence[CropRecord], size: int,
               geometry: CropGeometry = CropGeometry(), *, margin: float = DEFAULT_MARGIN,
               draft: bool = True) -> CropCache | None:
    """The valid cache for these inputs under ``cache_root``, or None (never a stale one)."""
    path = cache_path(cache_root, size, cache_key(records, size, geometry, margin, draft))
    if not (path / INDEX_NAME).is_file():
        return None
    try:
        cache = CropCache(path)
    except (CacheError, BridgeError):
        return None
    try:  # mark it used: `lowres cache clean --older-than DAYS` removes caches by last use (atime is unreliable)
        os.utime(path / INDEX_NAME)
    except OSError:
        pass  # a read-only cache is still a good cache
    return cache


def _fill_crops(tmp: Path, records: Sequence[CropRecord], size: int, stored: int, geometry: CropGeometry,
                draft: bool, policy: ErrorPolicy, progress: Callable[[int], None] | None, workers: int) -> np.ndarray:
    """Write every crop into ``tmp/crops.npy``; returns a bool mask of records that have a crop."""
    ok = np.zeros(len(records), dtype=bool)
    arr = np.lib.format.open_memmap(tmp / CROPS_NAME, mode="w+", dtype=np.uint8,
                                    shape=(len(records), stored, stored, 3))
    try:
        for idx, crops in iter_image_crops(records, stored, geometry, enlarge=stored / size, draft=draft,
                                           workers=workers):
            if isinstance(crops, ImageError):
                policy.report(ImageError(crops.file, crops.record, crops.reason,
                                         f"{crops.detail} ({len(idx)} crop{'s' * (len(idx) != 1)} skipped)"), n=1)
            else:
                arr[idx] = crops
                ok[idx] = True
            if progress is not None:
                progress(len(idx))
        arr.flush()
    finally:
        del arr
    return ok


def build_cache(records: Sequence[CropRecord], size: int, cache_root: str | os.PathLike,
                geometry: CropGeometry = CropGeometry(), *, margin: float = DEFAULT_MARGIN,
                category_map: CategoryMap | None = None, on_error: OnError = "raise", draft: bool = True,
                progress: Callable[[int], None] | None = None, workers: int = 1) -> CropCache:
    """Build (or reuse) the cache of ``records`` at ``size`` under ``cache_root``; decode each image once.

    With ``on_error="skip"`` images that fail to decode are counted in ``cache.skipped`` and their
    records left out of ``cache.records``; with ``"raise"`` the first one raises :class:`ImageError`
    and nothing is left on disk. ``workers``: images decoded at once (threads); the crops are the same.
    """
    records = list(records)
    key = cache_key(records, size, geometry, margin, draft)
    final = cache_path(cache_root, size, key)
    existing = open_cache(cache_root, records, size, geometry, margin=margin, draft=draft)
    if existing is not None:
        return existing
    shutil.rmtree(final, ignore_errors=True)  # a damaged cache under the right key: rebuild it
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        policy = ErrorPolicy(on_error)
        stored = stored_size(size, margin)
        ok = _fill_crops(tmp, records, size, stored, geometry, draft, policy, progress, workers)
        kept = np.flatnonzero(ok)
        atomic_write_json(tmp / INDEX_NAME, {
            "version": CACHE_VERSION, "key": key, "size": int(size), "stored_size": stored, "margin": float(margin),
            "draft": bool(draft), "geometry": geometry.to_dict(), "num_rows": len(records),
            "records": records_to_dicts([records[i] for i in kept]), "rows": kept.tolist(),
            "category_map": category_map.to_dict() if category_map else None, "skipped": policy.log.to_dict()})
        os.chmod(tmp, default_mode(directory=True))
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if (final / INDEX_NAME).is_file():  # another process finished the same cache first
            return CropCache(final)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CropCache(final)
