"""Loader-side cost per sample: the old float32 worker pipeline against the uint8 one, per CPU core.

    python benchmarks/input_pipeline.py [--sizes 79 151 299] [--rounds 3] [--batches 4] [--batch 32]

What a DataLoader worker does per training sample, in one process and one thread (samples/s per core), on
synthetic stored margin crops held in memory (as the memory-mapped raw cache serves them; ``--crops N``
distinct crops, smooth random colours), each sample seeded from (seed, epoch, index) as
``lowres.training.data.SeededDataset`` does, then collated into batches:

* ``old float32``: the pipeline the workers ran before (reproduced here as the baseline): albumentations'
  RandomResizedCrop (box jitter inside the margin), HorizontalFlip, ColorJitter(0.2, 0.2, 0.2, hue 0.02,
  p 0.8) on uint8, Normalize(0.5, 0.5) and ToTensorV2: float32 ``(3, S, S)``, 12 bytes per pixel.
* ``uint8``: the product's pipeline now (``detection_bridge.transforms.train_transform``: the same crop and
  flip, ending in a uint8 tensor) plus the sample's colour factors (``detection_bridge.color.ColorJitter.draw``):
  3 bytes per pixel + 32 bytes.

Rounds alternate the two pipelines; the table gives the median samples/s over rounds, the spread (slowest,
fastest) and the ratio of the medians (stated only where the spreads do not overlap). The last column times
what moved to the device (``lowres.device_transforms.model_inputs`` on one batch: float conversion,
colour jitter, normalisation), measured here on this CPU: on a GPU that work is a few elementwise kernels.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import time_per_call  # noqa: E402

from detection_bridge.boxes import stored_size  # noqa: E402
from detection_bridge.color import ColorJitter  # noqa: E402
from detection_bridge.transforms import train_transform  # noqa: E402
from lowres.config import AugmentConfig  # noqa: E402
from lowres.training.data import _seed_pipeline  # noqa: E402
from lowres.device_transforms import model_inputs  # noqa: E402


def old_float_transform(size: int, stored: int, a: AugmentConfig) -> A.Compose:
    """The workers' pipeline before the change, verbatim: geometry, colour and normalisation in float32 on the CPU."""
    lo, hi = ((s * size / stored) ** 2 for s in (a.box_scale_min, a.box_scale_max))
    return A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=(min(lo, 1.0), min(hi, 1.0)), ratio=(a.aspect_min, a.aspect_max),
                            interpolation=cv2.INTER_LINEAR, p=1.0),
        A.HorizontalFlip(p=a.hflip),
        A.ColorJitter(brightness=a.color, contrast=a.color, saturation=a.color, hue=a.hue, p=a.p_color),
        A.Normalize(mean=(0.5,) * 3, std=(0.5,) * 3, max_pixel_value=255.0),
        ToTensorV2(),
    ])


class _Crops(Dataset):
    """Stored crops through ``transform``, seeded per sample like SeededDataset; ``color`` draws factors."""

    def __init__(self, crops: list[np.ndarray], transform: A.Compose, color: ColorJitter | None) -> None:
        self.crops, self.transform, self.color = crops, transform, color

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, index: int) -> tuple:
        seed = int(np.random.SeedSequence([0, 0, int(index)]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        _seed_pipeline(self.transform, seed)
        image = self.transform(image=self.crops[index % len(self.crops)])["image"]
        if self.color is None:
            return image, 0, index
        return image, 0, index, self.color.draw(np.random)


def _crops(stored: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(stored)
    return [np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((stored, stored),
                                                                                                Image.BILINEAR))
            for _ in range(n)]


def _samples_per_s(dataset: Dataset, batch: int, batches: int) -> tuple[float, int]:
    loader = iter(DataLoader(dataset, batch_size=batch, num_workers=0))
    next(loader)  # warm-up
    start, nbytes = time.perf_counter(), 0
    for _ in range(batches):
        b = next(loader)
        nbytes = sum(t.numel() * t.element_size() for t in b if isinstance(t, torch.Tensor) and t.dim() > 1)
    return batch * batches / (time.perf_counter() - start), nbytes // batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[79, 151, 299])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4, help="timed batches per pipeline and round")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--crops", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    a = AugmentConfig()
    print(f"torch {torch.__version__}, albumentations {A.__version__}, 1 thread, batch {args.batch}, "
          f"{args.batches} batches x {args.rounds} rounds, augment defaults (colour {a.color}, hue {a.hue}, p {a.p_color})")
    print("| size | pipeline | bytes/sample | samples/s per core (median) | spread | vs old | device step, this CPU (ms/batch) |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        stored = stored_size(size, 0.2)
        crops = _crops(stored, args.crops)
        pipelines = {
            "old float32": _Crops(crops, old_float_transform(size, stored, a), None),
            "uint8": _Crops(crops, train_transform(size, stored, box_scale=(a.box_scale_min, a.box_scale_max),
                                                   aspect=(a.aspect_min, a.aspect_max), hflip=a.hflip),
                            ColorJitter(a.color, a.hue, a.p_color)),
        }
        rates: dict[str, list[float]] = {k: [] for k in pipelines}
        nbytes: dict[str, int] = {}
        for _ in range(args.rounds):
            for name, ds in pipelines.items():
                rate, nbytes[name] = _samples_per_s(ds, args.batch, args.batches)
                rates[name].append(rate)
        batch = next(iter(DataLoader(pipelines["uint8"], batch_size=args.batch)))
        device_ms = 1e3 * time_per_call(lambda: model_inputs(batch, torch.device("cpu")), warmup=1, iters=5)
        old = rates["old float32"]
        for name, values in rates.items():
            med, lo, hi = statistics.median(values), min(values), max(values)
            ratio = ""
            if name != "old float32":
                separate = lo > max(old) or hi < min(old)
                ratio = f"{med / statistics.median(old):.2f}x" + ("" if separate else " (spreads overlap)")
            dev = f"{device_ms:.1f}" if name == "uint8" else ""
            print(f"| {size} | {name} | {nbytes[name]:,} | {med:.0f} | {lo:.0f}-{hi:.0f} | {ratio} | {dev} |")


if __name__ == "__main__":
    main()
