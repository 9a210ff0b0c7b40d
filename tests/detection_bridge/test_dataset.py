"""CropDataset and transforms: shapes, uint8 outputs, eval equals the direct crop, colour factors, DistributedSampler."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from detection_bridge.boxes import CropGeometry, stored_size
from detection_bridge.cache import CacheSpec, build_cache
from detection_bridge.coco import SplitOptions, load_split
from detection_bridge.color import COLOR_PARAMS, ColorJitter
from detection_bridge.cropper import extract_crops
from detection_bridge.dataset import CropDataset
from detection_bridge.transforms import eval_transform, train_transform


@pytest.fixture(scope="module")
def synthetic_records(synthetic_dir):
    return load_split(synthetic_dir, "val", SplitOptions(boxes="both", background=True)).records


@pytest.mark.parametrize("size", [79, 151, 299])
def test_pipelines_per_size(size):
    stored = stored_size(size, 0.2)
    crop = np.random.default_rng(size).integers(0, 256, (stored, stored, 3), dtype=np.uint8)
    for pipeline in (train_transform(size, stored), eval_transform(size, stored)):
        x = pipeline(image=crop)["image"]
        assert x.shape == (3, size, size) and x.dtype == torch.uint8  # workers move uint8; the device normalises
    centre = eval_transform(size, stored)(image=crop)["image"]
    off = (stored - size) // 2
    assert torch.equal(centre, torch.from_numpy(crop[off:off + size, off:off + size]).permute(2, 0, 1))


def test_items_and_eval_equals_direct_crop(synthetic_records, tmp_path):
    records = synthetic_records[:40]
    cache = build_cache(records, tmp_path, CacheSpec(47, margin=0.2))
    cached, uncached = CropDataset(None, 47, cache=cache), CropDataset(records, 47, margin=0.2)
    geo = CropGeometry()
    for i in (0, 7, 39):
        x, label, index = cached[i]
        assert x.shape == (3, 47, 47) and label == records[i].label and index == i
        r = records[i]
        direct = extract_crops(r.image_path, np.array([r.box_xyxy]), 47, geo)[0]
        direct_t = torch.from_numpy(direct).permute(2, 0, 1).float()
        assert (x.float() - direct_t).abs().mean() < 2  # uint8 levels
        assert torch.equal(uncached[i][0], x)


def test_train_items_vary_and_carry_colour_factors(synthetic_records):
    dataset = CropDataset(synthetic_records[:5], 31, train=True, color=ColorJitter(0.4, 0.1, p=1.0))
    np.random.seed(0)
    a, *_, colour_a = dataset[0]
    b, *_, colour_b = dataset[0]
    assert a.shape == b.shape == (3, 31, 31) and a.dtype == torch.uint8 and not torch.equal(a, b)
    assert colour_a.shape == (COLOR_PARAMS,) and colour_a.dtype == np.float32 and not np.array_equal(colour_a, colour_b)
    assert 0.6 <= colour_a[:3].min() and colour_a[:3].max() <= 1.4 and abs(colour_a[3]) <= 0.1
    assert sorted(colour_a[4:].tolist()) == [0, 1, 2, 3]
    np.random.seed(0)
    again = dataset[0]
    assert np.array_equal(again[3], colour_a)  # drawn from numpy's generator, which the trainer seeds per sample


def test_distributed_sampler_shards_the_dataset(synthetic_records, tmp_path):
    cache = build_cache(synthetic_records, tmp_path, CacheSpec(31, margin=0.1))
    dataset = CropDataset(None, 31, cache=cache, train=True)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(1)
        for images, labels, index in DataLoader(dataset, batch_size=16, sampler=sampler):
            assert images.shape[1:] == (3, 31, 31) and labels.dtype == torch.int64
            assert torch.equal(labels, torch.as_tensor([dataset.records[i].label for i in index]))
            seen.extend(index.tolist())
    assert sorted(set(seen)) == list(range(len(dataset)))
    dataset[0]  # opens the memory map
    clone = pickle.loads(pickle.dumps(dataset))  # what a spawn-started worker receives: no open map
    assert all(s._data is None for s in clone.cache.shards) and clone[3][0].shape == (3, 31, 31)
    assert np.array_equal(clone.cache[3], dataset.cache[3])


def test_dataset_argument_checks(synthetic_records, tmp_path):
    cache = build_cache(synthetic_records[:4], tmp_path, CacheSpec(24))
    with pytest.raises(ValueError, match="size"):
        CropDataset(None, 25, cache=cache)
    with pytest.raises(ValueError):
        CropDataset(None, 24)
