"""Crop extraction throughput on coco-mini: naive vs decode-once vs cache reads, at 79, 151 and 299.

    python benchmarks/crop_throughput.py [--data ../shared/data/coco-mini] [--split train]
                                         [--limit-images 150] [--naive-boxes 400] [--sizes 79 151 299]

In one process, on the ground-truth boxes of the first ``--limit-images`` images of the split:

* JPEG decode alone: open + full decode + RGB of every image (images/s), the floor under any path;
* naive: open and decode the JPEG for every box, crop, resize (``cropper.naive_crop``) on the first
  ``--naive-boxes`` boxes: what a dataset that decodes per item does;
* decode-once: group boxes by image, decode each image once (JPEG draft mode where every crop allows
  it), cut all its boxes (``cropper.iter_image_crops``): the cache builder's inner loop;
* cache build: the same plus margin crops written to the ``.npy`` memory map (``cache.build_cache``);
* cache read: eval crops (``CropCache.eval_crop``) in a random order, from a warm page cache.

All timings are wall-clock, best of ``--repeats`` passes (noisy neighbours on a shared machine only
ever slow a pass down). Crops are uint8 ``size x size`` RGB in every path; ratios are against naive.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmark the checkout this script belongs to
from detection_bridge.boxes import CropGeometry  # noqa: E402
from detection_bridge.cache import CacheSpec, build_cache  # noqa: E402
from detection_bridge.coco import SplitOptions, load_split  # noqa: E402
from detection_bridge.cropper import iter_image_crops, naive_crop  # noqa: E402

DEFAULT_DATA = REPO / ".." / "shared" / "data" / "coco-mini"


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def decode_all(paths: list[str]) -> None:
    for path in paths:
        with Image.open(path) as im:
            im.convert("RGB")


def run(args: argparse.Namespace) -> str:
    geo = CropGeometry()
    records = load_split(args.data, args.split, SplitOptions(check_images=False)).records
    paths = sorted({r.image_path for r in records})[: args.limit_images]
    keep = set(paths)
    records = [r for r in records if r.image_path in keep]
    naive_records = records[: args.naive_boxes]
    decode_all(paths)  # warm the page cache: every path then reads the same in-memory files
    t_decode = best_time(lambda: decode_all(paths), args.repeats)
    lines = [f"{len(records)} boxes on {len(paths)} images of coco-mini {args.split} "
             f"({len(records) / len(paths):.1f} boxes/image); naive timed on {len(naive_records)} boxes; "
             f"best of {args.repeats}.", "",
             f"JPEG decode alone: {len(paths) / t_decode:.0f} images/s ({1000 * t_decode / len(paths):.2f} ms/image)",
             "", "| size | naive crops/s | decode-once crops/s | vs naive | cache build crops/s | "
             "cache read crops/s | vs naive |", "|---|---|---|---|---|---|---|"]
    tmp = Path(tempfile.mkdtemp(prefix="crop_throughput_"))
    try:
        for size in args.sizes:
            lines.append(one_size(size, records, naive_records, geo, tmp, args))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join(lines)


def one_size(size: int, records: list, naive_records: list, geo: CropGeometry, tmp: Path,
             args: argparse.Namespace) -> str:
    """One table row: every path at ``size``."""
    t_naive = best_time(lambda: [naive_crop(r, size, geo) for r in naive_records], args.repeats)
    t_once = best_time(lambda: list(iter_image_crops(records, size, geo)), args.repeats)
    start = time.perf_counter()
    cache = build_cache(records, tmp, CacheSpec(size, geometry=geo, margin=args.margin))
    t_build = time.perf_counter() - start
    order = np.random.default_rng(0).permutation(len(cache))
    for i in order:  # warm: the build just wrote it, this makes sure every page is mapped in
        cache.eval_crop(i)
    t_read = best_time(lambda: [cache.eval_crop(i) for i in order], args.repeats)
    naive = len(naive_records) / t_naive
    once, build, read = len(records) / t_once, len(records) / t_build, len(cache) / t_read
    shutil.rmtree(cache.path, ignore_errors=True)
    return (f"| {size} | {naive:.0f} | {once:.0f} | {once / naive:.1f}x | {build:.0f} | {read:.0f} | "
            f"{read / naive:.0f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="coco-mini-layout folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--sizes", type=int, nargs="+", default=[79, 151, 299])
    parser.add_argument("--limit-images", type=int, default=150, help="images of the split to use")
    parser.add_argument("--naive-boxes", type=int, default=400, help="boxes timed on the naive path")
    parser.add_argument("--margin", type=float, default=0.2, help="cache margin (stored crops are larger)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not (args.data / "annotations").is_dir():
        raise SystemExit(f"no coco-mini-layout folder at {args.data.resolve()}; pass --data")
    print(run(args))


if __name__ == "__main__":
    main()
