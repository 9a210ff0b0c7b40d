"""What ``lowres crops`` runs: load a split, build its crop cache, write and return a summary.

The summary accounts for every input box: the crops made (per class, size bucket and source), the
boxes filtered by rule (crowd, minimum size, IoU band, score, top-k) and the inputs skipped as bad
(with reasons and examples), plus where the cache is and the parameters that made it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from .fileio import atomic_write_json
from .boxes import CropGeometry
from .cache import DEFAULT_MARGIN, Sync, local_sync, build_cache
from .coco import SplitOptions, load_split
from .errors import SkipLog
from .records import summarize_records


def build_crops(data: str | os.PathLike | None = None, split: str = "train", size: int = 79,
                options: SplitOptions | None = None, *, out: str | os.PathLike,
                detections: str | os.PathLike | None = None, annotations: str | os.PathLike | None = None,
                images: str | os.PathLike | None = None, margin: float = DEFAULT_MARGIN,
                geometry: CropGeometry | None = None, draft: bool = True,
                progress: Callable[[int], None] | None = None, workers: int = 1, storage: str = "auto",
                part: tuple[int, int] = (0, 1), sync: Sync = local_sync) -> dict[str, Any]:
    """Build the crop cache of one split at ``size`` under ``out`` and write ``out/summary_<split>_<size>px.json``.

    ``data`` is a coco-mini-layout folder; ``annotations``/``images`` override its paths. ``options`` say which
    records (:class:`~detection_bridge.coco.SplitOptions`; its ``on_error`` also applies to decoding); by
    default the detections' boxes when a detections file is given, else ground truth. ``progress`` is called
    with the number of records done after each image (for a progress bar); ``workers`` decode that many
    images at once (threads); ``storage``, ``part`` and ``sync`` as :func:`~detection_bridge.cache.build_cache`
    (only part 0 writes the summary). Returns the summary dict,
    which also holds ``summary_path`` and ``cache.path``.
    """
    start = time.perf_counter()
    geometry = geometry or CropGeometry()
    options = options or SplitOptions(boxes="detections" if detections is not None else "gt")
    crop_set = load_split(data, split, options, detections_file=detections, annotations=annotations, images=images)
    cache = build_cache(crop_set.records, size, out, geometry, margin=margin, category_map=crop_set.category_map,
                        on_error=options.on_error, draft=draft, progress=progress, workers=workers, storage=storage,
                        part=part, sync=sync, **crop_set.cache_inputs())
    skipped = SkipLog()
    skipped.merge(crop_set.skipped)
    skipped.merge(cache.skipped)
    summary = {**crop_set.summary(), **summarize_records(cache.records, crop_set.category_map),
               "num_records_before_decoding": len(crop_set.records), "skipped": skipped.to_dict(),
               "geometry": geometry.to_dict(), "size": int(size),
               "cache": {"path": str(cache.path), "key": cache.key, "stored_size": cache.stored_size,
                         "margin": cache.margin, "num_crops": len(cache), "storage": cache.storage,
                         "bytes": cache.nbytes},
               "seconds": round(time.perf_counter() - start, 3)}
    path = Path(out) / f"summary_{split}_{int(size)}px.json"
    summary["summary_path"] = str(path)
    if part[0] == 0:
        atomic_write_json(path, summary, indent=1, sort_keys=True)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A short Markdown rendering of a summary for the terminal."""
    lines = [f"{summary['num_records']} crops of {summary.get('size', '?')} px from {summary['num_images']} images"
             f" ({summary.get('split', '?')}, boxes={summary.get('boxes', '?')})", "",
             "| size bucket | crops |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["per_size_bucket"].items()]
    lines += ["", "| source | crops |", "|---|---|"] + [f"| {k} | {v} |" for k, v in summary["per_source"].items()]
    nonzero = {k: v for k, v in summary["per_class"].items() if v}
    lines += ["", f"classes with crops: {len(nonzero)} of {len(summary['per_class'])}"]
    if summary.get("filtered"):
        lines += ["filtered: " + ", ".join(f"{k}={v}" for k, v in summary["filtered"].items())]
    skipped = summary["skipped"]
    lines += [f"skipped: {skipped['total']}" + ("" if not skipped["total"] else " (" + ", ".join(
        f"{k}={v}" for k, v in skipped["by_reason"].items()) + ")")]
    if "cache" in summary:
        lines += [f"cache: {summary['cache']['path']}", f"summary: {summary.get('summary_path')}"]
    return "\n".join(lines)
