"""Crop shards: the files a crop cache is made of, written with plain sequential writes.

Two storages, chosen per cache (see :func:`choose_storage`):

* ``raw``: ``shard-NNNNN.npy``, a ``(rows, M, M, 3)`` uint8 array read as a memory map. Fastest to read
  (no decoding) and bit-exact, but 27 / 98 / 387 kB per crop at 79 / 151 / 299 px: the fast path for small
  data on CPU.
* ``jpeg``: ``shard-NNNNN.jpgs``, the crops JPEG-encoded (quality 90, 4:2:0) and concatenated, with
  their byte offsets in the cache's locator: the WebDataset idea (compressed samples in large sequential
  shards) without tar headers, which nothing here would read. Its size per crop, decoding time and error
  (about JPEG draft mode's own tolerance) are measured on coco-mini in the README.

Writes go through ``file.write``, never a memory-mapped sparse file, so a full disk is an ``OSError``
(ENOSPC) turned into a :class:`CacheError` naming the shard, not a SIGBUS. Each shard is written to a
temporary name and renamed, so a shard file that exists is complete; its byte size is recorded in the
cache index and checked on opening, so a truncated or missing shard is an error naming it.
"""
from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
from PIL import Image

from .errors import CacheError
from .fileio import atomic_path

Storage = Literal["raw", "jpeg"]
STORAGES: tuple[str, ...] = ("auto", "raw", "jpeg")
JPEG_QUALITY = 90
JPEG_SUBSAMPLING = 2  # 4:2:0, libjpeg's default: colour at half resolution, as in the source JPEGs
RAW_AUTO_LIMIT = 2 * 1024**3  # ``auto`` keeps raw crops up to this many bytes per cache
# Upper estimate of JPEG bytes / raw bytes used for the disk-space check before any crop exists
# (measured q90 ratios: 0.118 at 95 px, 0.081 at 181 px, 0.053 at 359 px; small crops compress worst).
JPEG_RATIO_ESTIMATE = 0.12
SUFFIX = {"raw": ".npy", "jpeg": ".jpgs"}
VERIFY_BLOCK = 16 * 1024**2
# Caches up to this size have every shard's CRC-32 checked on every open (its cost: README): all raw caches
# that ``auto`` makes. Larger (JPEG) ones are checked by ``lowres cache verify``; a damaged JPEG crop is
# also an error naming its shard and byte when it is decoded.
VERIFY_ON_OPEN_BYTES = RAW_AUTO_LIMIT


def choose_storage(storage: str, num_crops: int, stored: int) -> Storage:
    """``auto`` -> ``raw`` while the raw array stays under :data:`RAW_AUTO_LIMIT`, else ``jpeg``."""
    if storage not in STORAGES:
        raise ValueError(f"crop storage must be one of {STORAGES}, got {storage!r}")
    if storage != "auto":
        return storage  # type: ignore[return-value]
    return "raw" if num_crops * stored * stored * 3 <= RAW_AUTO_LIMIT else "jpeg"


def estimated_bytes(storage: Storage, num_crops: int, stored: int) -> int:
    """Bytes a cache of ``num_crops`` crops of side ``stored`` will take (raw: exact; jpeg: an upper estimate)."""
    raw = num_crops * stored * stored * 3
    return raw if storage == "raw" else int(raw * JPEG_RATIO_ESTIMATE)


def shard_name(index: int, storage: Storage) -> str:
    return f"shard-{index:05d}{SUFFIX[storage]}"


def encode_jpeg(crop: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING)
    return buf.getvalue()


def decode_jpeg(data: bytes | memoryview, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise CacheError(f"{where}: undecodable crop: {e}") from None


def write_shard(path: Path, storage: Storage, crops: Iterable[np.ndarray | bytes], rows: int,
                stored: int) -> tuple[int, np.ndarray, int]:
    """Write ``rows`` crops (uint8 arrays for raw, encoded bytes for jpeg) to ``path`` atomically.

    Returns ``(file bytes, offsets, crc32)``: offsets (rows + 1) into the file for jpeg, row numbers for
    raw; the CRC-32 of the whole file, computed while writing, lets a reader detect flipped bytes.
    Any ``OSError`` (full disk, read-only folder) is a :class:`CacheError` naming the file; the
    temporary file is removed.
    """
    offsets = np.zeros(rows + 1, dtype=np.int64)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            header = io.BytesIO()
            if storage == "raw":
                np.lib.format.write_array_header_1_0(
                    header, {"descr": "|u1", "fortran_order": False, "shape": (rows, stored, stored, 3)})
            f.write(header.getvalue())
            crc, n = zlib.crc32(header.getvalue()), 0
            for n, crop in enumerate(crops, start=1):
                data = crop if isinstance(crop, bytes) else np.ascontiguousarray(crop, dtype=np.uint8).tobytes()
                offsets[n] = offsets[n - 1] + len(data)
                f.write(data)
                crc = zlib.crc32(data, crc)
            if n != rows:
                raise CacheError(f"{path}: {n} crops written, {rows} expected")
            f.flush()
            size = f.tell()
    except OSError as e:
        raise CacheError(f"{path}: cannot write crop shard: {e.strerror or e}") from None
    return size, (np.arange(rows + 1, dtype=np.int64) if storage == "raw" else offsets), crc


class ShardReader:
    """Reads crops from one shard file, opening it lazily (per process: DataLoader workers open their own)."""

    def __init__(self, path: Path, storage: Storage, nbytes: int, rows: int, stored: int, crc32: int) -> None:
        self.path, self.storage, self.nbytes, self.rows, self.stored = path, storage, nbytes, rows, stored
        self.crc32 = crc32
        self._data: np.ndarray | None = None

    def check(self) -> None:
        """The shard exists with the size its index recorded (a truncated or replaced shard fails here)."""
        try:
            size = self.path.stat().st_size
        except OSError:
            raise CacheError(f"{self.path}: crop shard missing") from None
        if size != self.nbytes:
            raise CacheError(f"{self.path}: crop shard is {size} bytes, its index says {self.nbytes} (truncated "
                             "or replaced)")

    def verify(self) -> None:
        """The shard's bytes hash to the CRC-32 recorded when it was written (flipped bytes fail here: a raw
        crop would otherwise be read as wrong pixels without a word)."""
        self.check()
        crc = 0
        try:
            with open(self.path, "rb") as f:
                while block := f.read(VERIFY_BLOCK):
                    crc = zlib.crc32(block, crc)
        except OSError as e:
            raise CacheError(f"{self.path}: unreadable crop shard: {e.strerror or e}") from None
        if crc != self.crc32:
            raise CacheError(f"{self.path}: crop shard is corrupted (CRC-32 {crc:08x}, written as {self.crc32:08x})")

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            self.check()
            try:
                if self.storage == "raw":
                    arr = np.load(self.path, mmap_mode="r")
                    if arr.shape != (self.rows, self.stored, self.stored, 3) or arr.dtype != np.uint8:
                        raise CacheError(f"{self.path}: crop array {arr.shape} {arr.dtype} does not match its index")
                    self._data = np.asarray(arr)  # plain ndarray view: memmap's own indexing costs per item
                else:
                    self._data = np.memmap(self.path, dtype=np.uint8, mode="r") if self.nbytes else np.zeros(0, np.uint8)
            except (OSError, ValueError) as e:
                raise CacheError(f"{self.path}: unreadable crop shard: {e}") from None
        return self._data

    def crop(self, start: int, length: int) -> np.ndarray:
        """The ``(M, M, 3)`` uint8 crop at ``start`` (row for raw, byte offset for jpeg), as a fresh array."""
        if self.storage == "raw":
            return np.array(self.data[start])
        return decode_jpeg(self.data[start:start + length].tobytes(), f"{self.path} at byte {start}")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}
