"""Crop cache: round trip, no JPEG decoding after the first build, invalidation, atomicity."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import detection_bridge.cache as cache_mod
from detection_bridge.boxes import CropGeometry
from detection_bridge.cache import BuildOptions, CacheSpec, CropCache, build_cache, cache_key, open_cache
from detection_bridge.coco import SplitOptions, load_split
from detection_bridge.cropper import extract_crops
from detection_bridge.dataset import CropDataset
from detection_bridge.errors import CacheError, ImageError


@pytest.fixture(scope="module")
def coco_records(coco_mini: Path) -> list:
    """The boxes of 8 coco-mini val images (a realistic mix of sizes, a few seconds to crop)."""
    records = load_split(coco_mini, "val", SplitOptions(check_images=False)).records
    paths = sorted({r.image_path for r in records})[:8]
    return [r for r in records if r.image_path in paths]


def test_round_trip_on_coco_mini(coco_records, tmp_path):
    geo = CropGeometry()
    cache = build_cache(coco_records, tmp_path, CacheSpec(79, geometry=geo, margin=0.2))
    assert len(cache) == len(coco_records) and cache.records == coco_records and cache.stored_size == 95
    reopened = CropCache(cache.path)
    path = coco_records[0].image_path
    idx = [i for i, r in enumerate(coco_records) if r.image_path == path]
    stored = extract_crops(path, np.array([coco_records[i].box_xyxy for i in idx]), 95, geo, enlarge=95 / 79)
    direct = extract_crops(path, np.array([coco_records[i].box_xyxy for i in idx]), 79, geo)
    for k, i in enumerate(idx):
        assert np.array_equal(reopened[i], stored[k])  # bit-exact round trip
        # the eval crop (centre of the margin crop) is the direct crop at 79, up to resampling at the border
        assert np.abs(reopened.eval_crop(i).astype(float) - direct[k]).mean() < 1.0


def test_threaded_build_gives_the_same_crops(tiny_coco, tmp_path):
    records = load_split(tiny_coco.root, "val", SplitOptions(boxes="both", background=True, jitter=3)).records
    one = build_cache(records, tmp_path / "one", CacheSpec(24))
    two = build_cache(records, tmp_path / "two", CacheSpec(24), BuildOptions(workers=2))
    assert one.records == two.records
    assert all(np.array_equal(one[i], two[i]) for i in range(len(one)))


def test_second_build_and_cached_epochs_decode_no_jpeg(tiny_coco, tmp_path, monkeypatch):
    records = load_split(tiny_coco.root, "val").records
    first = build_cache(records, tmp_path, CacheSpec(31, margin=0.1))

    def no_decoding(*args, **kwargs):
        raise AssertionError("a JPEG was opened")

    monkeypatch.setattr(Image, "open", no_decoding)
    again = build_cache(records, tmp_path, CacheSpec(31, margin=0.1))
    assert again.path == first.path
    dataset = CropDataset(None, 31, cache=again, train=True)
    for epoch in range(2):
        for i in range(len(dataset)):
            image, label, index = dataset[i]
            assert image.shape == (3, 31, 31) and index == i and label == records[i].label


def test_key_changes_with_every_input(tiny_coco, tmp_path):
    records = load_split(tiny_coco.root, "val").records
    geo = CropGeometry()

    def key(recs=records, storage="raw", **spec):  # type: ignore[no-untyped-def]
        return cache_key(recs, CacheSpec(**{"size": 79, "geometry": geo, "margin": 0.2, **spec}), storage)

    base = key()
    assert key(list(records)) == base
    assert key(records[:-1]) != base
    assert key(size=151) != base
    assert key(margin=0.25) != base
    assert key(geometry=CropGeometry(mode="warp")) != base
    assert key(geometry=CropGeometry(context=1.0)) != base
    assert key(draft=False) != base
    assert key(storage="jpeg") != base
    path = tiny_coco.image_path("a.jpg")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert key() == base  # a touched file (or a copy with new mtimes) keys the same
    path.write_bytes(path.read_bytes() + b"\0")
    assert key() != base  # a file of another size does not


def test_identical_data_in_two_places_gives_one_key(tiny_coco, tmp_path):
    copy = tmp_path / "node2"
    shutil.copytree(tiny_coco.root, copy)
    one = load_split(tiny_coco.root, "val", SplitOptions(boxes="both"))
    two = load_split(copy, "val", SplitOptions(boxes="both"))
    assert one.records != two.records  # absolute image paths differ

    def key(crop_set):  # type: ignore[no-untyped-def]
        return cache_key(crop_set.records, CacheSpec(79, CropGeometry(), 0.2, **crop_set.cache_inputs()), "raw")

    assert key(one) == key(two)
    ann = Path(two.cache_inputs()["source_files"][0])
    ann.write_text(ann.read_text().replace('"images"', '"images" '))  # same records, edited annotation file
    assert key(one) != key(two)


def test_changed_image_invalidates_the_cache(tiny_coco, tmp_path, jpeg_writer):
    records = load_split(tiny_coco.root, "val").records
    first = build_cache(records, tmp_path, CacheSpec(24, margin=0.0))
    old_size = tiny_coco.image_path("a.jpg").stat().st_size
    jpeg_writer(tiny_coco.image_path("a.jpg"), 64, 48, seed=99)  # same size, new pixels
    assert tiny_coco.image_path("a.jpg").stat().st_size != old_size
    assert open_cache(tmp_path, records, CacheSpec(24, margin=0.0)) is None  # the old one is never read
    second = build_cache(records, tmp_path, CacheSpec(24, margin=0.0))
    assert second.path != first.path
    assert not np.array_equal(first[0], second[0]) and np.array_equal(first[2], second[2])


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_build_leaves_nothing(tiny_coco, tmp_path, monkeypatch, error):
    records = load_split(tiny_coco.root, "val").records
    real = cache_mod.iter_image_crops

    def failing(*args, **kwargs):
        for n, item in enumerate(real(*args, **kwargs)):
            if n == 1:
                raise error("simulated failure halfway")
            yield item

    monkeypatch.setattr(cache_mod, "iter_image_crops", failing)
    with pytest.raises(error):
        build_cache(records, tmp_path / "cache", CacheSpec(24))
    assert list((tmp_path / "cache").iterdir()) == []
    assert open_cache(tmp_path / "cache", records, CacheSpec(24)) is None
    monkeypatch.undo()
    assert len(build_cache(records, tmp_path / "cache", CacheSpec(24))) == len(records)


def test_bad_image_raises_and_leaves_nothing_or_is_counted(tiny_coco, tmp_path):
    records = load_split(tiny_coco.root, "val").records
    path = tiny_coco.image_path("b.jpg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated after load_split read the (intact) header
    with pytest.raises(ImageError, match="b.jpg") as err:
        build_cache(records, tmp_path / "c", CacheSpec(24))
    assert err.value.reason == "corrupt_image"
    assert list((tmp_path / "c").iterdir()) == []
    cache = build_cache(records, tmp_path / "c", CacheSpec(24), BuildOptions(on_error="skip"))
    assert [r.image_id for r in cache.records] == [1, 1, 3]
    assert cache.skipped.counts == {"corrupt_image": 1}
    assert "1 crop skipped" in cache.skipped.examples["corrupt_image"][0]
    with pytest.raises(ValueError, match="records differ"):
        CropDataset(records, 24, cache=cache)
    assert len(CropDataset(cache.records, 24, cache=cache)) == 3


def test_damaged_cache_is_rebuilt(tiny_coco, tmp_path):
    records = load_split(tiny_coco.root, "val").records
    cache = build_cache(records, tmp_path, CacheSpec(24))
    crops = cache.path / "shard-00000.npy"
    crops.write_bytes(crops.read_bytes()[:-100])
    with pytest.raises(CacheError, match="shard-00000.npy.*truncated"):
        CropCache(cache.path)
    assert open_cache(tmp_path, records, CacheSpec(24)) is None
    rebuilt = build_cache(records, tmp_path, CacheSpec(24))
    assert rebuilt.path == cache.path and len(rebuilt) == len(records)
    shutil.rmtree(rebuilt.path)
    assert open_cache(tmp_path, records, CacheSpec(24)) is None
