"""Issue 18's measurement: a second-stage checkpoint on coco-mini val, for each detector, before and after.

    python benchmarks/second_stage_study.py measure --checkpoint runs/second_stage_imagenet/best.pt \
        --data ../shared/data/coco-mini --detector yolofastest --out docs/results/second_stage_imagenet
    python benchmarks/second_stage_study.py report --out docs/results/second_stage_imagenet

``measure`` (one detector per call, so two can run side by side, one per core) writes ``<detector>.json``:
- crops: the classifier on that detector's val boxes, labelled by IoU as in training (top-1, balanced accuracy,
  background precision/recall), from the same probabilities the fusion uses;
- COCO bbox AP, AP50, AP75, APs, APm, APl of the detector alone and rescored by ``product``, the size-gated
  ``product`` (small boxes only), ``auto`` fitted on train (the same detector's train boxes), and ``auto``
  cross-fitted on val itself (K folds over images): every box is classified once and each rule is a fusion of
  the same probabilities, exactly what ``lowres rescore`` computes.
``report`` gathers them into ``report.md``, ``report.json`` and ``ap_by_size.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detection_bridge.coco import SplitOptions, load_split
from lowres._atomic import atomic_write_json, atomic_write_text
from lowres._console import setup_console
from lowres.rcnn import SecondStage, StageOptions
from lowres.rcnn.calibrate import crossfit_fusion, describe, fit_fusion
from lowres.rcnn.files import classify_results, coco_bbox_metrics, load_results, split_ground_truth
from lowres.rcnn.fusion import Fusion
from lowres.metrics import classification_metrics

DETECTORS = ("yolofastest", "yoloxnano", "yolov8n")
RULES = ("detector", "product", "product-small", "auto (train)", "auto (cross-fit)")
SIZES = ("APs", "APm", "APl")


def _classified(stage: SecondStage, data: str, split: str, detector: str) -> tuple[Any, Any, float]:
    coco, index = split_ground_truth(data, split)
    start = time.perf_counter()
    results = load_results(Path(data) / "detections" / f"{detector}_{split}.json")
    classified = classify_results(stage, results, index, where=f"{detector}_{split}")
    return classified, coco, time.perf_counter() - start


def _crop_metrics(classified: Any, data: str, detector: str) -> dict[str, Any]:
    """The classifier's verdict on the val boxes, each labelled by IoU as training labels them (the bridge's
    matching: >= 0.5 the object's class, < 0.3 background, between: not counted), from the probabilities the
    fusion uses (roi_align crops; no second classification pass)."""
    crop_set = load_split(data, "val", SplitOptions(boxes="detections", background=True, check_images=False),
                          detections_file=Path(data) / "detections" / f"{detector}_val.json")
    cmap = classified.space.category_map
    if crop_set.category_map != cmap:
        raise SystemExit(f"{detector}: the checkpoint's classes are not coco-mini's with background")
    label_of = {r.source_id: r.label for r in crop_set.records}
    rows = [i for i, d in enumerate(classified.detections) if d.index in label_of]
    targets = np.array([label_of[classified.detections[i].index] for i in rows])
    topk = classified.probs[torch.tensor(rows)].topk(5, dim=1).indices.numpy()
    m = classification_metrics(topk, targets, num_classes=cmap.num_classes, background_label=cmap.background_label)
    return {"num_crops": len(rows), "ignored": len(classified.detections) - len(rows),
            **{k: m[k] for k in ("top1", "top1_ci", "top5", "balanced_accuracy", "background")}}


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    out = args.out / f"{args.detector}.json"
    stage = SecondStage.from_checkpoint(args.checkpoint, "cpu", options=StageOptions(precision="bf16"))
    val, coco_val, val_s = _classified(stage, args.data, "val", args.detector)
    train, coco_train, train_s = _classified(stage, args.data, "train", args.detector)
    print(f"{args.detector}: classified {len(val.detections)} val boxes in {val_s:.0f} s, "
          f"{len(train.detections)} train boxes in {train_s:.0f} s", file=sys.stderr)
    on_train = fit_fusion(train, coco_train)
    crossfit, crossfit_report = crossfit_fusion(val, coco_val, folds=args.folds)
    fused = {"detector": [d.to_result() for d in val.detections],
             "product": val.fused(Fusion.rule("product"))[0],
             "product-small": val.fused(Fusion.rule("product", max_area="small"))[0],
             "auto (train)": val.fused(on_train)[0], "auto (cross-fit)": crossfit}
    result = {"detector": args.detector, "checkpoint": str(args.checkpoint), "val_boxes": len(val.detections),
              "train_boxes": len(train.detections), "classify_seconds": {"val": val_s, "train": train_s},
              "crops": _crop_metrics(val, args.data, args.detector),
              "coco": {rule: coco_bbox_metrics(coco_val, found) for rule, found in fused.items()},
              "auto_train": {"rules": describe(on_train), "fit": on_train.report["fitted"],
                             "fit_before": on_train.report["before"]},
              "auto_crossfit": crossfit_report, "command": " ".join(sys.argv)}
    atomic_write_json(out, result, indent=2)
    print(json.dumps(result["coco"], indent=1))


def _table(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| detector | scores | AP | AP50 | AP75 | APs | APm | APl |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = r["coco"]["detector"]
        for rule in RULES:
            m = r["coco"][rule]
            cells = [f"{m[k]:.4f}" if rule == "detector" else f"{m[k]:.4f} ({100 * (m[k] - base[k]):+.1f})"
                     for k in ("AP", "AP50", "AP75", *SIZES)]
            lines.append(f"| {r['detector']} | {rule} | " + " | ".join(cells) + " |")
    return lines


def _crops(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| detector's val boxes | crops | top-1 | balanced accuracy | background precision | background recall |",
             "|---|---|---|---|---|---|"]
    for r in results:
        c, bg = r["crops"], r["crops"].get("background") or {}
        lines.append(f"| {r['detector']} | {c.get('num_crops', '')} | {100 * c['top1']:.1f}% | "
                     f"{100 * c['balanced_accuracy']:.1f}% | {100 * bg.get('precision', float('nan')):.1f}% | "
                     f"{100 * bg.get('recall', float('nan')):.1f}% |")
    return lines


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    width = 0.16
    for ax, r in zip(axes[0], results):
        for j, rule in enumerate(RULES):
            values = [r["coco"][rule][k] for k in ("AP", *SIZES)]
            ax.bar([i + (j - 2) * width for i in range(4)], values, width, label=rule)
        ax.set_xticks(range(4), ["AP", "small", "medium", "large"])
        ax.set_title(f"{r['detector']} (val)")
        ax.set_ylabel("COCO AP")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def report(args: argparse.Namespace) -> None:
    results = [json.loads((args.out / f"{d}.json").read_text()) for d in DETECTORS if (args.out / f"{d}.json").exists()]
    if not results:
        sys.exit(f"no <detector>.json in {args.out}: run `measure` first")
    lines = ["# Second stage from ImageNet: coco-mini val, three detectors", "",
             f"Checkpoint: `{results[0]['checkpoint']}`. Made by `python benchmarks/second_stage_study.py` "
             "(measure, then report). Differences in AP points against the detector alone in brackets.", "",
             "## Crops (val boxes of each detector, labelled by IoU as in training)", "", *_crops(results), "",
             "## COCO AP on val, before and after", "", *_table(results), "",
             "## What auto chose", ""]
    for r in results:
        lines += [f"**{r['detector']}**, fitted on train (AP there {r['auto_train']['fit_before']['AP']:.4f} -> "
                  f"{r['auto_train']['fit']['AP']:.4f}):", "", "```", r["auto_train"]["rules"], "```",
                  f"Cross-fitted on val ({r['auto_crossfit']['folds']} folds over images), per fold:", ""]
        lines += [f"- fold {i + 1} ({f['images']} images): " + "; ".join(f"{k} {v}" for k, v in f["rules"].items())
                  for i, f in enumerate(r["auto_crossfit"]["per_fold"])]
        lines.append("")
    atomic_write_text(args.out / "report.md", "\n".join(lines) + "\n")
    atomic_write_json(args.out / "report.json", {"results": results}, indent=2)
    _plot(results, args.out / "ap_by_size.png")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--checkpoint", type=Path, required=True)
    m.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"))
    m.add_argument("--detector", choices=DETECTORS, required=True)
    m.add_argument("--folds", type=int, default=5)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("report")
    r.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    setup_console()  # the library's notes (each cross-fit fold's rules) on stderr, as the CLI shows them
    args.out.mkdir(parents=True, exist_ok=True)
    (measure if args.verb == "measure" else report)(args)


if __name__ == "__main__":
    main()
