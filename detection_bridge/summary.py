"""What ``lowres crops`` runs: load a split, build its crop cache, write and return a summary.

The summary accounts for every input box: the crops made (per class, size bucket and source), the
boxes filtered by rule (crowd, minimum size, IoU band, score, top-k) and the inputs skipped as bad
(with reasons and examples), plus where the cache is and the parameters that made it.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from .fileio import atomic_write_json
from .cache import BuildOptions, CacheSpec, build_cache
from .coco import SplitOptions, load_split
from .errors import SkipLog
from .records import summarize_records


def build_crops(data: str | os.PathLike | None, split: str, spec: CacheSpec, options: SplitOptions | None = None, *,
                out: str | os.PathLike, detections: str | os.PathLike | None = None,
                annotations: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
                build: BuildOptions = BuildOptions()) -> dict[str, Any]:
    """Build the crop cache of one split as ``spec`` says (:class:`~detection_bridge.cache.CacheSpec`: size,
    geometry, margin, storage; what the records came from is filled in here) under ``out`` and write
    ``out/summary_<split>_<size>px.json``.

    ``data`` is a coco-mini-layout folder; ``annotations``/``images`` override its paths. ``options`` say which
    records (:class:`~detection_bridge.coco.SplitOptions`; its ``on_error`` also applies to decoding); by
    default the detections' boxes when a detections file is given, else ground truth. ``build``: threads,
    progress and this process's part, as :func:`~detection_bridge.cache.build_cache` (only part 0 writes the
    summary). Returns the summary dict, which also holds ``summary_path`` and ``cache.path``.
    """
    start = time.perf_counter()
    options = options or SplitOptions(boxes="detections" if detections is not None else "gt")
    crop_set = load_split(data, split, options, detections_file=detections, annotations=annotations, images=images)
    spec = dataclasses.replace(spec, **crop_set.cache_inputs())
    cache = build_cache(crop_set.records, out, spec, dataclasses.replace(build, on_error=options.on_error),
                        category_map=crop_set.category_map)
    skipped = SkipLog()
    skipped.merge(crop_set.skipped)
    skipped.merge(cache.skipped)
    summary = {**crop_set.summary(), **summarize_records(cache.records, crop_set.category_map),
               "num_records_before_decoding": len(crop_set.records), "skipped": skipped.to_dict(),
               "geometry": spec.geometry.to_dict(), "size": int(spec.size),
               "cache": {"path": str(cache.path), "key": cache.key, "stored_size": cache.stored_size,
                         "margin": cache.margin, "num_crops": len(cache), "storage": cache.storage,
                         "bytes": cache.nbytes},
               "seconds": round(time.perf_counter() - start, 3)}
    path = Path(out) / f"summary_{split}_{int(spec.size)}px.json"
    summary["summary_path"] = str(path)
    if build.part[0] == 0:
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
