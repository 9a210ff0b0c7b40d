"""Crop cache on disk: the crops of one target size, so epochs after the first decode no source JPEG.

Layout: ``<cache_root>/crops_<size>px_<key16>/`` holding ``index.json`` (records, geometry, sizes, storage,
the shards with their byte sizes, category map, skipped inputs), ``locate.npy`` (per kept record: shard,
start, length) and the shards (:mod:`detection_bridge.shards`: raw uint8 arrays for small data, JPEG
crops for large data). Each crop covers its context box enlarged by ``M / size`` about the centre
(``M = stored_size(size, margin)``), so training jitter moves into real pixels, and its centre
``size x size`` is exactly the eval crop.

Key: a hash of everything the pixels depend on -- the records with image paths relative to
``data_root``, each image's byte size, a content hash of the annotation / detection files
(``source_files``), geometry, size, margin, draft mode, resampling filter, storage and the format
version. No absolute path and no mtime enters it, so identical data on two nodes (or copied
elsewhere) gives one key; an image replaced by one of the same byte size is not noticed (hashing 19 GB
of train2017 JPEGs at every start is not worth it).

Building (:func:`build_cache`) is sharded by image (``shard_images`` images per shard). ``part=(i, n)``
builds every n-th shard, so n processes (torchrun's local ranks) share the work; ``sync`` is their
barrier-and-broadcast (:data:`Sync`, e.g. a gloo group with a long timeout). The shards go to a build
folder ``.crops_<size>px_<key16>.<host>-<pid>.build`` renamed into place when complete: a reader sees a
complete cache or none. One process builds a given cache at a time (a flock on ``.<cache>.lock``); a
second one started on the same data waits and reuses it. The disk space is checked first (bytes needed vs free, an error naming the
folder) and again before each shard; any failure removes the build folder, and build folders whose
process is dead (a killed run) are removed by the next build under the same root.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ._builds import build_lock, check_free_space, remove_stale_builds
from .fileio import atomic_write_json, publish_folder, read_json
from .boxes import CropGeometry, stored_size
from .cropper import RESAMPLE_NAME, group_by_image, iter_image_crops
from .errors import BridgeError, CacheError, ErrorPolicy, ImageError, OnError, SkipLog
from .records import CategoryMap, CropRecord, records_to_dicts
from .shards import (JPEG_QUALITY, VERIFY_ON_OPEN_BYTES, ShardReader, Storage, choose_storage, encode_jpeg,
                     estimated_bytes, shard_name, write_shard)

CACHE_VERSION = 4  # 4: a CRC-32 per shard
DEFAULT_MARGIN = 0.2
SHARD_IMAGES = 1000  # images per shard: ~7k train2017 crops, 150 MB of 299 px JPEG crops
INDEX_NAME, LOCATE_NAME = "index.json", "locate.npy"
SOURCE_NAME = "source.json"  # a few lines on what the cache was cut from (index.json can be hundreds of MB)
Sync = Callable[[Any], Any]  # barrier of all parts that returns part 0's value to every part


def local_sync(value: Any) -> Any:
    """The :data:`Sync` of a build by one process."""
    return value


@dataclass(frozen=True)
class CacheSpec:
    """What a crop cache holds, all of it in its key: the crop side, how a box becomes a crop (``geometry``,
    ``margin``, PIL ``draft`` decoding), ``storage`` (``raw``, ``jpeg`` or ``auto``:
    :func:`~detection_bridge.shards.choose_storage`), and what the records came from (``data_root``, the image
    folder their paths are keyed relative to; ``source_files``, annotation / detection files keyed by content:
    ``CacheSpec(size, **crop_set.cache_inputs())``)."""

    size: int
    geometry: CropGeometry = CropGeometry()
    margin: float = DEFAULT_MARGIN
    storage: str = "auto"
    draft: bool = True
    data_root: str | os.PathLike | None = None
    source_files: Sequence[str | os.PathLike] = ()

    @property
    def stored(self) -> int:
        return stored_size(self.size, self.margin)


@dataclass(frozen=True)
class BuildOptions:
    """How a cache is built, none of it in its key: ``on_error`` (``skip``: images that fail to decode are
    counted in ``cache.skipped`` and their records left out; ``raise``: the first one raises
    :class:`ImageError` and nothing is left on disk), ``workers`` (images decoded at once, threads: the crops
    are the same), ``progress`` (called with the records done after each image), ``part=(i, n)`` with ``sync``
    (process i of n building the cache together, see the module docstring) and ``shard_images``."""

    on_error: OnError = "raise"
    workers: int = 1
    progress: Callable[[int], None] | None = None
    part: tuple[int, int] = (0, 1)
    sync: Sync = local_sync
    shard_images: int = SHARD_IMAGES


def _relative(path: str, data_root: str | os.PathLike | None) -> str:
    if data_root is None:
        return path
    try:
        return Path(path).relative_to(Path(data_root)).as_posix()
    except ValueError:
        return path


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content (annotation files: 448 MB for train2017)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    except OSError as e:
        raise CacheError(f"{path}: cannot read for the cache key: {e.strerror or e}") from None
    return h.hexdigest()


def _image_sizes(records: Sequence[CropRecord], data_root: str | os.PathLike | None) -> dict[str, int]:
    """Byte size of every image (relative path -> size): a replaced image usually changes it."""
    sizes = {}
    for path in sorted({r.image_path for r in records}):
        try:
            sizes[_relative(path, data_root)] = os.stat(path).st_size
        except OSError:
            sizes[_relative(path, data_root)] = -1  # reported properly when the build tries to decode it
    return sizes


def cache_key(records: Sequence[CropRecord], spec: CacheSpec, storage: Storage) -> str:
    """SHA-256 of every input of the cached pixels (see the module docstring); ``storage`` resolved (raw/jpeg)."""
    rows = records_to_dicts(records)
    for row in rows:
        row["image_path"] = _relative(row["image_path"], spec.data_root)
    payload = {"version": CACHE_VERSION, "resample": RESAMPLE_NAME, "size": int(spec.size),
               "margin": float(spec.margin), "draft": bool(spec.draft), "storage": storage,
               "quality": JPEG_QUALITY if storage == "jpeg" else None, "geometry": spec.geometry.to_dict(),
               "records": rows, "images": _image_sizes(records, spec.data_root),
               "sources": sorted(file_digest(p) for p in spec.source_files)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cache_path(cache_root: str | os.PathLike, size: int, key: str) -> Path:
    return Path(cache_root) / f"crops_{int(size)}px_{key[:16]}"


class CropCache:
    """Read side of a built cache: ``cache[i]`` is the stored (margin) crop of ``cache.records[i]``.

    Every shard's presence and byte size are checked on opening (a missing or truncated shard is a
    :class:`CacheError` naming it), and its CRC-32 too when ``verify`` (default: caches up to
    ``VERIFY_ON_OPEN_BYTES``); the files themselves open lazily, per process (DataLoader workers).
    """

    def __init__(self, path: str | os.PathLike, verify: bool | None = None) -> None:
        self.path = Path(path)
        try:
            index = read_json(self.path / INDEX_NAME, "crop cache index")
            if index.get("version") != CACHE_VERSION:
                raise CacheError(f"{self.path}: cache version {index.get('version')}, expected {CACHE_VERSION}")
            self.key: str = index["key"]
            self.size: int = int(index["size"])
            self.stored_size: int = int(index["stored_size"])
            self.margin: float = float(index["margin"])
            self.storage: Storage = index["storage"]
            self.geometry = CropGeometry.from_dict(index["geometry"])
            self.records = [CropRecord.from_dict(d) for d in index["records"]]
            self.shards = [ShardReader(self.path / s["name"], self.storage, int(s["bytes"]), int(s["rows"]),
                                       self.stored_size, int(s["crc32"])) for s in index["shards"]]
            cmap = index.get("category_map")
            self.category_map = CategoryMap.from_dict(cmap) if cmap else None
            self.skipped = SkipLog.from_dict(index.get("skipped", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise CacheError(f"{self.path}: damaged cache index: {e!r}") from None
        try:
            self.locate = np.load(self.path / LOCATE_NAME)
        except (OSError, ValueError) as e:
            raise CacheError(f"{self.path / LOCATE_NAME}: unreadable crop locator: {e}") from None
        if self.locate.shape != (len(self.records), 3):
            raise CacheError(f"{self.path / LOCATE_NAME}: {self.locate.shape[0]} entries for "
                             f"{len(self.records)} records")
        verify = self.nbytes <= VERIFY_ON_OPEN_BYTES if verify is None else verify
        for shard in self.shards:
            shard.verify() if verify else shard.check()

    @property
    def nbytes(self) -> int:
        """Bytes of all shards: what this cache takes on disk."""
        return sum(s.nbytes for s in self.shards)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> np.ndarray:
        """Stored crop ``(M, M, 3)`` uint8 (a fresh array: safe to hand to augmentations)."""
        shard, start, length = self.locate[i]
        return self.shards[shard].crop(int(start), int(length))

    def eval_crop(self, i: int) -> np.ndarray:
        """The ``size x size`` centre of the stored crop: exactly the context-box crop."""
        off = (self.stored_size - self.size) // 2
        return np.ascontiguousarray(self[i][off:off + self.size, off:off + self.size])


def _open_valid(path: Path, key: str) -> CropCache | None:
    if not (path / INDEX_NAME).is_file():
        return None
    try:
        cache = CropCache(path)
    except (CacheError, BridgeError):
        return None
    if cache.key != key:
        return None
    try:  # mark it used: `lowres cache clean --older-than DAYS` removes caches by last use (atime is unreliable)
        os.utime(path / INDEX_NAME)
    except OSError:
        pass  # a read-only cache is still a good cache
    return cache


def open_cache(cache_root: str | os.PathLike, records: Sequence[CropRecord], spec: CacheSpec) -> CropCache | None:
    """The valid cache of ``records`` as ``spec`` under ``cache_root``, or None (never a stale or damaged one)."""
    key = cache_key(records, spec, choose_storage(spec.storage, len(records), spec.stored))
    return _open_valid(cache_path(cache_root, spec.size, key), key)


def shard_groups(records: Sequence[CropRecord], shard_images: int = SHARD_IMAGES) -> list[list[tuple[str, list[int]]]]:
    """Image groups (decode-once units) cut into shards of ``shard_images`` images, in first-seen order."""
    groups = list(group_by_image(records).items())
    return [groups[i:i + shard_images] for i in range(0, len(groups), max(int(shard_images), 1))]


def _shard_crops(records: Sequence[CropRecord], groups: list[tuple[str, list[int]]], spec: CacheSpec, kind: Storage,
                 options: BuildOptions, policy: ErrorPolicy, ok: np.ndarray):
    """Crops of one shard in shard order (a blank one for each record of an image that failed)."""
    encode, stored, progress = encode_jpeg if kind == "jpeg" else None, spec.stored, options.progress
    blank: Any = b"" if kind == "jpeg" else np.zeros((stored, stored, 3), np.uint8)
    for idx, crops in iter_image_crops(records, stored, spec.geometry, enlarge=stored / spec.size, draft=spec.draft,
                                       workers=options.workers, groups=groups, encode=encode):
        if isinstance(crops, ImageError):
            policy.report(ImageError(crops.file, crops.record, crops.reason,
                                     f"{crops.detail} ({len(idx)} crop{'s' * (len(idx) != 1)} skipped)"), n=1)
            crops = [blank] * len(idx)
        else:
            ok[idx] = True
        if progress is not None:
            progress(len(idx))
        yield from crops


def _build_part(records: Sequence[CropRecord], build: Path, shards: list, spec: CacheSpec, kind: Storage,
                options: BuildOptions) -> None:
    """Write this part's shards (every ``part[1]``-th from ``part[0]``) and a small JSON beside each."""
    part, stored = options.part, spec.stored
    mine = list(range(part[0], len(shards), part[1]))
    check_free_space(build, estimated_bytes(kind, sum(len(i) for j in mine for _, i in shards[j]), stored),
                     f"the crops of {build.name}")
    written = crops_done = 0
    for j in mine:
        order = [i for _, idx in shards[j] for i in idx]
        if crops_done:  # measured bytes per crop so far, for the crops still to write
            left = sum(len(i) for k in mine if k >= j for _, i in shards[k])
            check_free_space(build, int(written / crops_done * left), f"the rest of {build.name}")
        policy, ok = ErrorPolicy(options.on_error), np.zeros(len(records), dtype=bool)
        crops = _shard_crops(records, shards[j], spec, kind, options, policy, ok)
        nbytes, offsets, crc = write_shard(build / shard_name(j, kind), kind, crops, len(order), stored)
        written, crops_done = written + nbytes, crops_done + len(order)
        atomic_write_json(build / f"{shard_name(j, kind)}.json", {
            "records": order, "ok": ok[order].tolist(), "offsets": offsets.tolist(), "bytes": nbytes, "crc32": crc,
            "skipped": policy.log.to_dict()}, indent=1, sort_keys=True)


def _finish(records: Sequence[CropRecord], build: Path, num_shards: int, header: dict[str, Any],
            category_map: CategoryMap | None) -> None:
    """Merge the shards' JSONs into ``index.json`` + ``locate.npy`` (part 0, after every part is done)."""
    kind = header["storage"]
    locate = np.full((len(records), 3), -1, dtype=np.int64)
    skipped, shards = SkipLog(), []
    for j in range(num_shards):
        meta = read_json(build / f"{shard_name(j, kind)}.json", "crop shard summary")
        offsets = np.asarray(meta["offsets"], dtype=np.int64)
        for pos, (i, good) in enumerate(zip(meta["records"], meta["ok"])):
            if good:
                locate[i] = (j, offsets[pos], offsets[pos + 1] - offsets[pos])
        skipped.merge(SkipLog.from_dict(meta["skipped"]))
        shards.append({"name": shard_name(j, kind), "bytes": meta["bytes"], "rows": len(meta["records"]),
                       "crc32": meta["crc32"]})
        (build / f"{shard_name(j, kind)}.json").unlink()
    kept = np.flatnonzero(locate[:, 0] >= 0)
    np.save(build / LOCATE_NAME, locate[kept])
    atomic_write_json(build / SOURCE_NAME, {**header["source"], "size": header["size"], "crops": int(len(kept))})
    atomic_write_json(build / INDEX_NAME, {
        **header, "shards": shards, "records": records_to_dicts([records[i] for i in kept]),
        "category_map": category_map.to_dict() if category_map else None, "skipped": skipped.to_dict()},
        indent=1, sort_keys=True)


def _prepare(root: Path, final: Path, key: str) -> tuple[bool, str]:
    """Part 0's first step: reuse a valid cache, or clear stale builds and make this build's folder."""
    if _open_valid(final, key) is not None:
        return True, ""
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_builds(root)
        shutil.rmtree(final, ignore_errors=True)  # a damaged cache under the right key: rebuild it
        build = root / f".{final.name}.{socket.gethostname()}-{os.getpid()}.build"
        build.mkdir()
    except OSError as e:
        raise CacheError(f"{root}: cannot create the crop cache folder: {e.strerror or e}") from None
    return False, build.name


def build_cache(records: Sequence[CropRecord], cache_root: str | os.PathLike, spec: CacheSpec,
                options: BuildOptions = BuildOptions(), *, category_map: CategoryMap | None = None) -> CropCache:
    """Build (or reuse) the cache of ``records`` as ``spec`` says under ``cache_root``, decoding each image once,
    as ``options`` says (:class:`BuildOptions`: error policy, threads, progress, this process's part of the
    shards: every part must call this with the same records and spec)."""
    records, root, part, sync = list(records), Path(cache_root), options.part, options.sync
    kind = choose_storage(spec.storage, len(records), spec.stored)
    key = cache_key(records, spec, kind)
    final = cache_path(root, spec.size, key)
    with contextlib.ExitStack() as held:
        if part[0] == 0:  # one build of a cache at a time: a second process waits, then reuses it
            held.enter_context(build_lock(root, final))
        found, build_name = sync(_prepare(root, final, key) if part[0] == 0 else None)
        if found:  # part 0 has just verified it (_prepare -> _open_valid): no second pass over its shards
            return CropCache(final, verify=False)
        build, shards = root / build_name, shard_groups(records, options.shard_images)
        header = {"version": CACHE_VERSION, "key": key, "size": int(spec.size), "stored_size": spec.stored,
                  "margin": float(spec.margin), "draft": bool(spec.draft), "storage": kind,
                  "geometry": spec.geometry.to_dict(),
                  # what it was cut from, for `lowres cache list` (not keyed: a copy of the data elsewhere shares it)
                  "source": {"images": str(spec.data_root) if spec.data_root else None,
                             "files": [str(f) for f in spec.source_files]}}
        try:
            _build_part(records, build, shards, spec, kind, options)
            sync(None)
            if part[0] == 0:
                _finish(records, build, len(shards), header, category_map)
                _replace_into(build, final, key)
            sync(None)
        except OSError as e:  # writing the index or renaming: a full or read-only disk
            shutil.rmtree(build, ignore_errors=True)
            raise CacheError(f"{build}: cannot finish the crop cache: {e.strerror or e}") from None
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
    return CropCache(final, verify=False)  # its CRCs were computed from these very bytes as they were written


def _replace_into(build: Path, final: Path, key: str) -> None:
    publish_folder(build, final, same=lambda folder: _open_valid(folder, key) is not None)  # another node's, first
