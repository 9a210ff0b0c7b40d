"""Data for training and evaluation, from :mod:`detection_bridge`: records -> (cached) crops -> loaders.

Two things here matter for exact resume. The order of samples comes from
:class:`~lowres.training.distributed.ResumableSampler` (a function of seed and epoch), and each sample's
augmentation is seeded from (seed, epoch, index) by :class:`SeededDataset`, so a sample is the same
tensor whichever worker loads it and whether or not the run was interrupted before it.
"""
from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from detection_bridge import synthetic
from detection_bridge.boxes import stored_size
from detection_bridge.cache import BuildOptions, CacheSpec, build_cache, open_cache
from detection_bridge.coco import SplitOptions, load_split
from detection_bridge.color import ColorJitter
from detection_bridge.errors import AnnotationError
from detection_bridge.dataset import CropDataset
from detection_bridge.imagecrops import ImageFolderDataset, decoded_bytes_estimate, open_or_build_decoded
from detection_bridge.imagefolder import detect_layout, load_imagefolder_split
from detection_bridge.layout import check_data_dir
from detection_bridge.transforms import train_transform

from .._console import ONCE
from ..config import Config, DataConfig
from ..errors import InputError
from ..runtime import crop_size, geometry_from_config, input_size
from .distributed import DistEnv, barrier, node_part, node_sync

__all__ = ["SplitData", "resolve_data_dir", "load_split_data", "SeededDataset", "train_loader", "eval_loader",
           "default_cache_root", "geometry_from_config", "crop_size", "input_size", "color_jitter"]

logger = logging.getLogger(__name__)


@dataclass
class SplitData:
    """One split ready for a loader: the dataset, its records (index-aligned) and the category map."""

    dataset: Dataset
    records: list
    category_map: Any
    summary: dict[str, Any] = field(default_factory=dict)


def default_cache_root(cfg: Config) -> Path:
    """``data.cache_dir`` or ~/.cache/lowres: crop caches and the generated synthetic set."""
    return Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else Path.home() / ".cache" / "lowres"


def resolve_data_dir(cfg: Config, *, env: DistEnv) -> Path:
    """``data.path``, or the synthetic set generated once into the cache (rank 0 writes, others wait)."""
    if cfg.data.path is not None:
        return check_data_dir(cfg.data.path)

    out = default_cache_root(cfg) / f"synthetic-seed{cfg.data.synthetic_seed}"
    if env.is_main:
        synthetic.generate(out, seed=cfg.data.synthetic_seed)
    barrier()
    logger.info(f"note: no data path given (--data / data.path): using the generated synthetic set at {out}; "
                "its numbers check the pipeline, they say nothing about COCO", extra=ONCE)
    return out


def _subset(records: list, limit: int | None, seed: int) -> list:
    """A seeded random subset (sorted back into file order) so small smoke sets still mix classes."""
    if limit is None or limit >= len(records):
        return list(records)
    keep = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in keep]


# The data.* keys that are the bridge's record options, by name (lowres.config.DataConfig takes them from there).
RECORD_KEYS = tuple(f.name for f in dataclasses.fields(SplitOptions)
                    if f.name in {g.name for g in dataclasses.fields(DataConfig)})


def split_options(cfg: Config, *, train: bool) -> SplitOptions:
    """The bridge's record options from ``data.*``; copies of boxes (jittered ones, extra background ones) are
    training data only."""
    d = cfg.data
    options = SplitOptions(**{name: getattr(d, name) for name in RECORD_KEYS}, seed=cfg.train.seed)
    return options if train else dataclasses.replace(options, jitter=0, background_copies=0)


def cache_spec(cfg: Config, crop_set: Any = None) -> CacheSpec:
    """The crop cache a run of ``cfg`` reads (size, geometry, margin, storage; with ``crop_set``, what its
    records came from): ``lowres crops`` builds the same one."""
    inputs = crop_set.cache_inputs() if crop_set is not None else {}
    return CacheSpec(crop_size(cfg), geometry_from_config(cfg), margin=cfg.crop.margin,
                     storage=cfg.data.crop_storage, **inputs)


def load_split_data(data_dir: Path, split: str, cfg: Config, *, train: bool, env: DistEnv,
                    category_map: Any = None) -> SplitData:
    """Records of ``split`` as configured (boxes, background, size filter), their crop cache, the dataset.

    ``category_map``, when given (the training set's, or a checkpoint's), must equal the split's own: a
    label means nothing under another map.
    """
    if detect_layout(data_dir) == "imagefolder":
        return _load_imagefolder_split(data_dir, split, cfg, train=train, env=env, category_map=category_map)
    d = cfg.data
    try:
        crop_set = load_split(data_dir, split, split_options(cfg, train=train), detections_file=d.detections_file)
    except AnnotationError as exc:  # the bridge names the file and the record; the key that chose the file is ours
        if exc.reason == "unknown_image" and d.detections_file:
            exc.add_note(f"data.detections_file = {d.detections_file!r} chose that file for split {split!r}: "
                         "name one per split with '{split}' in it (detections/NAME_{split}.json)")
        raise
    if category_map is not None and crop_set.category_map != category_map:
        raise InputError(f"split {split!r} of {data_dir} has another category map than the model's "
                         f"({crop_set.category_map.num_classes} vs {category_map.num_classes} classes)")
    records = _subset(crop_set.records, d.max_train if train else d.max_val, cfg.train.seed)
    geometry = geometry_from_config(cfg)
    cache = _build_cache(crop_set, records, cfg, env) if d.cache else None
    dataset = _dataset(records, cache, geometry, cfg, train=train)
    summary = crop_set.summary()
    summary.pop("category_map", None)
    logger.info(f"{split}: {len(dataset.records)} crops from {data_dir} ({d.boxes} boxes, "
                f"{crop_set.category_map.num_classes} classes)")
    return SplitData(dataset, dataset.records, crop_set.category_map, summary)


def _load_imagefolder_split(data_dir: Path, split: str, cfg: Config, *, train: bool, env: DistEnv,
                            category_map: Any = None) -> SplitData:
    """An ImageNet-layout split: whole images, the paper's protocol at the variant's crop size (random region,
    flip, colours for training; central crop for evaluation), each resampled once from the original pixels.
    Small data is decoded once into a store every crop size shares; large data is decoded per epoch."""
    d, a = cfg.data, cfg.augment
    image_set = load_imagefolder_split(data_dir, split, train_split=d.train_split, category_map=category_map)
    records = _subset(image_set.records, d.max_train if train else d.max_val, cfg.train.seed)
    decoded = None
    if d.cache and decoded_bytes_estimate(records) <= d.decode_cache_gb * 1e9:
        root = default_cache_root(cfg) / "images"
        if env.is_main:
            decoded = open_or_build_decoded(records, data_dir, root)
        barrier()
        decoded = decoded or open_or_build_decoded(records, data_dir, root)
    augment = train and a.enabled
    dataset: Dataset = ImageFolderDataset(
        records, crop_size(cfg), train=augment, decoded=decoded, central_fraction=cfg.crop.central_fraction,
        area=(a.area_min, a.area_max), ratio=(a.aspect_min, a.aspect_max), hflip=a.hflip,
        color=color_jitter(cfg, random_order=False) if augment else None)
    ignored = sum(image_set.ignored.values())
    skipped = (f"; {ignored} non-image file(s) left out: " + ", ".join(f"{n} {ext}" for ext, n in
                                                                       sorted(image_set.ignored.items()))
               if ignored else "")
    logger.info(f"{split}: {len(records)} images from {data_dir} (ImageNet layout, "
                f"{image_set.category_map.num_classes} classes, "
                f"{'decoded once' if decoded is not None else 'decoded per epoch'}){skipped}")
    summary = image_set.summary()
    return SplitData(dataset, records, image_set.category_map, summary)


def _dataset(records: list, cache: Any, geometry: Any, cfg: Config, *, train: bool) -> Dataset:
    """CropDataset with the config's augmentation (train: geometry in the workers, colour factors drawn there and
    applied on the device) or the exact centre crop (eval). ``crop.upsample_to`` acts on the device too."""
    size, a = crop_size(cfg), cfg.augment
    transform = None
    if train and a.enabled:
        stored = cache.stored_size if cache is not None else stored_size(size, cfg.crop.margin)
        transform = train_transform(size, stored, box_scale=(a.box_scale_min, a.box_scale_max),
                                    aspect=(a.aspect_min, a.aspect_max), hflip=a.hflip)
    return CropDataset(None if cache is not None else records, size, geometry=geometry, train=train and a.enabled,
                       cache=cache, margin=cfg.crop.margin, transform=transform,
                       color=color_jitter(cfg) if transform is not None else None)


def color_jitter(cfg: Config, *, random_order: bool = True) -> Any:
    """The config's colour jitter (``augment.color``, ``hue``, ``p_color``). COCO crops keep the random order of
    the four operations that albumentations' ``ColorJitter`` used; ImageNet-layout images keep their fixed
    order (brightness, contrast, saturation, hue), as their PIL pipeline had it."""
    a = cfg.augment
    return ColorJitter(a.color, a.hue, a.p_color, random_order=random_order)




def _build_cache(crop_set: Any, records: list, cfg: Config, env: DistEnv) -> Any:
    """Build (or reuse) the crop cache, decoding each image once. Under torchrun every process of a node
    builds its share of the shards, in step through a gloo group with a long timeout (``node_sync``)."""
    root = default_cache_root(cfg) / "crops"
    spec = cache_spec(cfg, crop_set)
    cache = open_cache(root, records, spec)
    if cache is None or env.distributed:  # every rank takes part in a build (a reuse costs one sync)
        if cache is None:
            logger.info(f"building the {spec.size} px crop cache for {len(records)} crops under {root} (once)")
        build = BuildOptions(workers=cfg.data.build_workers, part=node_part(env), sync=node_sync(env))
        cache = build_cache(records, root, spec, build, category_map=crop_set.category_map)
    return cache


class SeededDataset(Dataset):
    """Seeds augmentation per sample from (seed, epoch, index) before delegating to ``dataset``.

    Augmentation libraries draw from Python's and numpy's global RNGs or their own (albumentations 2 keeps a
    generator per pipeline); seeding them per sample makes the data stream independent of worker count,
    worker scheduling and interruptions. The global states are put back after each sample, so loading in
    the main process (``data.num_workers: 0``) leaves the trainer's own ``random``/``numpy`` streams as they
    were. Set the epoch with :meth:`set_epoch` before iterating.
    """
    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        sample_seed = int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0])
        saved = random.getstate(), np.random.get_state()
        try:
            random.seed(sample_seed)
            np.random.seed(sample_seed)
            _seed_pipeline(getattr(self.dataset, "transform", None), sample_seed)
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])


def _seed_pipeline(transform: Any, seed: int) -> None:
    """Seed an albumentations pipeline, each child transform from its own derived seed (albumentations'
    ``Compose.set_random_seed`` gives every child the same seed, which would correlate, e.g., flip and crop)."""
    if transform is None or not hasattr(transform, "set_random_seed"):
        return
    transform.set_random_seed(seed)
    for j, child in enumerate(getattr(transform, "transforms", [])):
        _seed_pipeline(child, int(np.random.SeedSequence([seed, j + 1]).generate_state(1)[0]))


def train_loader(split: SplitData, sampler: Sampler, cfg: Config) -> DataLoader:
    """Shuffled (by ``sampler``), seeded-augmentation loader of full batches."""
    dataset = SeededDataset(split.dataset, cfg.train.seed)
    # A private generator: DataLoader draws its base seed from it, not from the global torch RNG (which
    # drives dropout and is restored on resume).
    generator = torch.Generator().manual_seed(cfg.train.seed)
    return DataLoader(dataset, batch_size=cfg.train.batch_size, sampler=sampler, drop_last=True,
                      num_workers=cfg.data.num_workers, generator=generator,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False)


def eval_loader(split: SplitData, cfg: Config, shard: tuple[int, int] = (0, 1)) -> DataLoader:
    """Loader in record order (no augmentation; the dataset was built with ``train=False``); ``shard=(r, n)``:
    only crops r, r + n, ... (distributed evaluation; samples keep their dataset index)."""
    dataset = split.dataset
    if shard[1] > 1:
        dataset = Subset(dataset, range(shard[0], len(dataset), shard[1]))  # type: ignore[arg-type]
    return DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False, drop_last=False,
                      num_workers=cfg.data.num_workers, pin_memory=torch.cuda.is_available())
