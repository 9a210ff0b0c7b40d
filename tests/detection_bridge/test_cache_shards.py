"""Crop cache at scale: JPEG shards, builds split between processes, disk space, stale and damaged folders."""
from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import detection_bridge.cache as cache_mod
import detection_bridge.shards as shards_mod
from detection_bridge.cache import BuildOptions, CacheSpec, CropCache, build_cache, open_cache
from detection_bridge.coco import load_split
from detection_bridge.dataset import CropDataset
from detection_bridge.errors import CacheError


@pytest.fixture
def records(synthetic_dir: Path) -> list:
    return load_split(synthetic_dir, "val").records[:60]


def _crops(cache: CropCache) -> np.ndarray:
    return np.stack([cache[i] for i in range(len(cache))])


def test_jpeg_shards_are_close_to_raw_and_smaller(records, tmp_path):
    raw = build_cache(records, tmp_path, CacheSpec(47, storage="raw"), BuildOptions(shard_images=3))
    jpeg = build_cache(records, tmp_path, CacheSpec(47, storage="jpeg"), BuildOptions(shard_images=3))
    assert jpeg.path != raw.path and jpeg.storage == "jpeg" and len(jpeg.shards) == len(raw.shards) > 1
    assert jpeg.records == raw.records
    diff = np.abs(_crops(jpeg).astype(float) - _crops(raw))
    assert diff.mean() < 4.0  # JPEG q90 on sharp synthetic textures: 3.1 levels of 255 (2.4 on coco-mini at 95 px)
    assert jpeg.nbytes < raw.nbytes / 4
    assert jpeg.eval_crop(0).shape == (47, 47, 3)
    image, label, index = CropDataset(None, 47, cache=CropCache(jpeg.path), train=True)[5]
    assert image.shape == (3, 47, 47) and index == 5


def _threaded_sync(parts: int):
    """Barrier-and-broadcast of ``parts`` threads (what a gloo group does between processes)."""
    barrier, slot = threading.Barrier(parts), [None]

    def sync_for(part: int):
        def sync(value):
            if part == 0:
                slot[0] = value
            barrier.wait(timeout=60)
            out = slot[0]
            barrier.wait(timeout=60)
            return out
        return sync
    return sync_for


@pytest.mark.parametrize("storage", ["raw", "jpeg"])
def test_parts_build_shards_together(records, tmp_path, storage):
    alone = build_cache(records, tmp_path / "alone", CacheSpec(31, storage=storage), BuildOptions(shard_images=2))
    sync_for, done, owners = _threaded_sync(2), {}, {}
    real = cache_mod.write_shard

    def spy(path, *args, **kwargs):
        owners[path.name] = threading.current_thread().name
        return real(path, *args, **kwargs)

    cache_mod.write_shard = spy
    try:
        threads = [threading.Thread(name=f"part{p}", target=lambda p=p: done.__setitem__(p, build_cache(
            records, tmp_path / "shared", CacheSpec(31, storage=storage),
            BuildOptions(shard_images=2, part=(p, 2), sync=sync_for(p))))) for p in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        cache_mod.write_shard = real
    assert sorted(set(owners.values())) == ["part0", "part1"]  # both parts wrote shards
    assert done[0].path == done[1].path and done[0].key == alone.key
    assert np.array_equal(_crops(done[0]), _crops(alone))
    assert [p.name for p in (tmp_path / "shared").iterdir()] == [alone.path.name]


def test_too_little_disk_space_is_a_clear_error_before_writing(records, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(CacheError, match=r"not enough disk space.*needs about .* GB, 0\.00 GB free") as info:
        build_cache(records, tmp_path / "c", CacheSpec(79))
    assert str(tmp_path / "c") in str(info.value)
    assert list((tmp_path / "c").iterdir()) == []


def test_full_disk_while_writing_is_a_clear_error_and_leaves_nothing(records, tmp_path, monkeypatch):
    class FullDisk:
        def __init__(self, f):
            self.f, self.written = f, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.written += len(data)
            if self.written > 20000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(shards_mod, "open", lambda path, mode: FullDisk(open(path, mode)), raising=False)
    with pytest.raises(CacheError, match=r"shard-00000\.npy: cannot write crop shard: No space left"):
        build_cache(records, tmp_path / "c", CacheSpec(47))
    assert list((tmp_path / "c").iterdir()) == []


def test_stale_build_folders_of_killed_runs_are_removed(records, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    stale = tmp_path / f".crops_31px_0123456789abcdef.{host}-{int(dead.stdout)}.build"
    live = tmp_path / f".crops_31px_0123456789abcdef.{host}-{__import__('os').getpid()}.build"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "shard-00000.npy").write_bytes(b"half")
    build_cache(records, tmp_path, CacheSpec(31))
    assert not stale.exists() and live.is_dir()


def test_missing_shard_or_cache_of_other_data(records, tmp_path):
    cache = build_cache(records, tmp_path, CacheSpec(31), BuildOptions(shard_images=2))
    (cache.path / "shard-00001.npy").unlink()
    with pytest.raises(CacheError, match="shard-00001.npy: crop shard missing"):
        CropCache(cache.path)
    assert len(build_cache(records, tmp_path, CacheSpec(31), BuildOptions(shard_images=2))) == len(records)  # rebuilt
    other = build_cache(records[:10], tmp_path / "other", CacheSpec(31))
    shutil.rmtree(cache.path)
    shutil.copytree(other.path, cache.path)  # a cache of other data under this data's name
    assert open_cache(tmp_path, records, CacheSpec(31)) is None
    assert build_cache(records, tmp_path, CacheSpec(31), BuildOptions(shard_images=2)).records == records


@pytest.mark.parametrize("storage", ["raw", "jpeg"])
def test_flipped_bytes_inside_a_shard_are_found_and_the_cache_rebuilt(records, tmp_path, storage):
    """Same size, other bytes: the size check cannot see it, the CRC-32 must (a raw crop would be read as
    wrong pixels without a word)."""
    cache = build_cache(records, tmp_path, CacheSpec(31, storage=storage), BuildOptions(shard_images=2))
    good = _crops(cache)
    shard = cache.shards[1].path
    data = bytearray(shard.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 100):
        data[i] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=f"{shard.name}: crop shard is corrupted"):
        CropCache(cache.path)
    CropCache(cache.path, verify=False)  # size only: what a large cache checks on every open
    assert open_cache(tmp_path, records, CacheSpec(31, storage=storage)) is None  # never handed out
    rebuilt = build_cache(records, tmp_path, CacheSpec(31, storage=storage), BuildOptions(shard_images=2))
    assert np.array_equal(_crops(rebuilt), good)


def test_two_processes_building_one_cache_decode_it_once(records, tmp_path, monkeypatch):
    """Two runs started together on the same data: the second waits for the first one's build (flock on
    the cache's lock file) and reuses it instead of decoding everything again."""
    import time

    real, writers = cache_mod.write_shard, []

    def slow_write(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        writers.append(threading.current_thread().name)
        time.sleep(0.1)  # keeps the first build going while the second one arrives
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cache_mod, "write_shard", slow_write)
    done = {}
    threads = [threading.Thread(name=f"run{k}", target=lambda k=k: done.__setitem__(
        k, build_cache(records, tmp_path, CacheSpec(31), BuildOptions(shard_images=4)))) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert done[0].path == done[1].path and len(set(writers)) == 1, writers  # one builder wrote every shard
    assert [p.name for p in tmp_path.iterdir()] == [done[0].path.name]  # no lock file or build folder left
