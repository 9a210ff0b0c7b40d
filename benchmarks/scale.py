"""Full-COCO scale without full COCO: start-up cost, crop storage and cache build speed.

    python benchmarks/scale.py [--quick] [--ranks 2] [--workers N] [--sample-images 400] [--work DIR]

1. Writes a full-cardinality synthetic ``instances_train2017.json`` (118,287 image entries, 860,001 boxes:
   train2017's counts) whose images are symlinks to coco-mini's real train JPEGs, cycled, each carrying
   its source image's real ground-truth boxes (cycled to reach 860,001), so box sizes are COCO's.
2. Start-up per rank: ``--ranks`` processes at once each do what a training process does before its
   first step -- ``load_split`` (reading every image header) and the crop cache key (relative paths,
   file sizes, the annotation file's SHA-256) -- and report seconds and peak resident memory.
3. Bytes per crop: a cache of the boxes of ``--sample-images`` images (JPEG shards: what ``auto`` picks at
   this scale) at 79, 151 and 299 px; projected storage = bytes per crop x 860,001.
4. Build crops/s of those caches with 1 and ``--workers`` threads (one process; under torchrun each
   local rank also builds its own shards, multiplying this by the processes per node), and the time to
   read and decode one stored crop (a DataLoader worker's cost per sample before augmentation).

The last line reads ``projected train2017 crop storage (79+151+299 px): N GB``. ``--quick`` samples 60
images. JPEG sizes depend on image content: the projection carries coco-mini's (real COCO train images
and boxes), not a measurement on train2017 itself.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmark the checkout this script belongs to
from detection_bridge.cache import BuildOptions, CacheSpec, build_cache  # noqa: E402
from detection_bridge.coco import SplitOptions, load_split  # noqa: E402

TRAIN2017_IMAGES, TRAIN2017_BOXES = 118_287, 860_001
SIZES = (79, 151, 299)
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "coco-mini"


def write_synthetic_coco(source: Path, root: Path) -> Path:
    """The full-cardinality JSON and its symlinked image folder under ``root`` (reused when present)."""
    ann = root / "annotations" / "instances_train2017.json"
    if ann.is_file():
        return root
    real = json.loads((source / "annotations" / "instances_train.json").read_text())
    boxes: dict[int, list] = {}
    for a in real["annotations"]:
        if not a.get("iscrowd"):
            boxes.setdefault(a["image_id"], []).append(a)
    sources = [im for im in real["images"] if im["id"] in boxes]
    images_dir = root / "images" / "train2017"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    per_image, extra = divmod(TRAIN2017_BOXES, TRAIN2017_IMAGES)
    for k in range(TRAIN2017_IMAGES):
        src = sources[k % len(sources)]
        name = f"{k + 1:012d}.jpg"
        link = images_dir / name
        if not link.is_symlink():
            link.symlink_to((source / "images" / "train" / src["file_name"]).resolve())
        images.append({"id": k + 1, "file_name": name, "width": src["width"], "height": src["height"]})
        own = boxes[src["id"]]
        for j in range(per_image + (k < extra)):
            a = own[j % len(own)]
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": a["category_id"],
                                "bbox": a["bbox"], "area": a["area"], "iscrowd": 0})
    ann.parent.mkdir(parents=True, exist_ok=True)
    tmp = ann.with_suffix(".tmp")
    tmp.write_text(json.dumps({"images": images, "annotations": annotations, "categories": real["categories"]}))
    os.replace(tmp, ann)
    return root


def startup_child(root: Path) -> None:
    """One rank's start-up: records of the split and the crop cache key (printed as JSON)."""
    import resource

    from detection_bridge.cache import CacheSpec, open_cache

    start = time.perf_counter()
    crop_set = load_split(root, "train2017")
    loaded = time.perf_counter()
    open_cache(root / "no-cache", crop_set.records, CacheSpec(299, **crop_set.cache_inputs()))
    done = time.perf_counter()
    print(json.dumps({"records": len(crop_set.records), "load_split_s": loaded - start, "cache_key_s": done - loaded,
                      "seconds": done - start, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))


def startup(root: Path, ranks: int) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, __file__, "--startup-child", str(root)], stdout=subprocess.PIPE,
                              text=True, env={**env, "RANK": str(r)}) for r in range(ranks)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def build_rates(root: Path, sample_images: int, workers: int, work: Path) -> dict[int, dict]:
    records = load_split(root, "train2017", SplitOptions(check_images=False)).records
    keep = {r.image_path for r in records[: 8 * sample_images]}
    keep = set(sorted(keep)[:sample_images])
    sample = [r for r in records if r.image_path in keep]
    out = {}
    for size in SIZES:
        row = {"crops": len(sample)}
        for n in sorted({1, workers}):
            folder = work / f"build-{size}-{n}"
            shutil.rmtree(folder, ignore_errors=True)
            start = time.perf_counter()
            cache = build_cache(sample, folder, CacheSpec(size, storage="jpeg"), BuildOptions(workers=n))
            row[f"crops_per_s_{n}"] = len(sample) / (time.perf_counter() - start)
            row["bytes_per_crop"] = cache.nbytes / len(cache)
            start = time.perf_counter()
            for i in range(len(cache)):
                cache[i]  # what a DataLoader worker does per sample before augmentation: read + decode
            row["read_ms"] = 1e3 * (time.perf_counter() - start) / len(cache)
            row["stored_size"] = cache.stored_size
            shutil.rmtree(folder, ignore_errors=True)
        out[size] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="coco-mini (real JPEGs and boxes)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lowres-scale"), help="synthetic set and caches")
    parser.add_argument("--quick", action="store_true", help="sample 60 images for the crop builds")
    parser.add_argument("--sample-images", type=int, default=400)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--startup-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.startup_child is not None:
        return startup_child(args.startup_child)
    start = time.perf_counter()
    root = write_synthetic_coco(args.data, args.work / "coco-synthetic")
    print(f"synthetic train2017: {TRAIN2017_IMAGES:,} images, {TRAIN2017_BOXES:,} boxes under {root} "
          f"({time.perf_counter() - start:.0f} s to write or reuse)", flush=True)
    ranks = startup(root, args.ranks)
    print(f"\nstart-up per rank ({args.ranks} processes at once): load_split (every image header) + cache key")
    print("| rank | records | load_split s | cache key s | total s | peak RSS GB |\n|---|---|---|---|---|---|")
    for r, row in enumerate(ranks):
        print(f"| {r} | {row['records']:,} | {row['load_split_s']:.1f} | {row['cache_key_s']:.1f} | "
              f"{row['seconds']:.1f} | {row['peak_rss_gb']:.2f} |")
    rates = build_rates(root, 60 if args.quick else args.sample_images, args.workers, args.work)
    total = 0.0
    print(f"\ncrop storage (JPEG shards, quality 90) and build speed, {rates[SIZES[0]]['crops']} crops per size")
    print(f"| size | stored px | bytes/crop | projected train2017 GB | read+decode ms/crop | build crops/s, 1 thread | "
          f"build crops/s, {args.workers} threads |\n|---|---|---|---|---|---|---|")
    for size, row in rates.items():
        gb = row["bytes_per_crop"] * TRAIN2017_BOXES / 1e9
        total += gb
        print(f"| {size} | {row['stored_size']} | {row['bytes_per_crop']:.0f} | {gb:.1f} | {row['read_ms']:.2f} | "
              f"{row['crops_per_s_1']:.0f} | {row[f'crops_per_s_{args.workers}']:.0f} |")
    print(f"projected train2017 crop storage (79+151+299 px): {total:.1f} GB")


if __name__ == "__main__":
    main()
