"""Latency of the second stage on one 640x480 image with 100 boxes, against the naive crop-then-classify path.

    python benchmarks/second_stage_latency.py                       # full settings (width 1.0, 100 boxes)
    python benchmarks/second_stage_latency.py --width 0.125 --boxes 8 --iters 1 --stems 79   # seconds, a smoke run
    python benchmarks/second_stage_latency.py --check-bf16 [--checkpoint best.pt]            # accuracy of bf16

Timed, in one process after warm-up (median of ``--iters`` calls), on the CPU:

* ``second stage S precision``: :meth:`lowres.rcnn.SecondStage.classify` on the image tensor: roi_align crops
  (context geometry, antialiased), the stem-S model in chunks, softmax. fp32, or bf16 autocast (+ NHWC).
* ``naive 299 precision``: what an ad-hoc second stage does: for each box, a PIL crop of the context region
  and a resize to 299 (the bridge's ``crop_image``, one box at a time), then the 299 stem on the stacked crops,
  run as the second stage runs its model (NHWC; fp32 or bf16), so ratios isolate the crop path and the stem.

The image is a real coco-mini val image of 640x480 with the real detector's boxes (yolofastest, top 100 by
score) when coco-mini is beside the repository, else a seeded random image and boxes. Ratios are against the
naive path in fp32 (the baseline) and against the same path at stem 299.

``--check-bf16``: top-1 agreement and the largest probability difference between bf16 and fp32 on coco-mini
val ground-truth crops. With ``--checkpoint`` the trained model is used; without one, random weights whose
BatchNorm statistics are set on the crops (outputs then depend on the image but have no margin between classes,
so agreement is a pessimistic bound; say so when quoting it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import time_per_call  # noqa: E402

from detection_bridge.boxes import CropGeometry, xywh_to_xyxy  # noqa: E402
from detection_bridge.cropper import crop_image, decode_image  # noqa: E402
from detection_bridge.records import CategoryMap  # noqa: E402
from lowres import build_model  # noqa: E402
from lowres.rcnn import SecondStage, StageOptions  # noqa: E402

COCO_MINI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-mini"


def load_case(n_boxes: int, seed: int = 0) -> tuple[object, torch.Tensor, np.ndarray, str]:
    """(PIL image, uint8 tensor, boxes_xyxy (n, 4), description) for one 640x480 image."""
    from PIL import Image

    if (COCO_MINI / "detections" / "yolofastest_val.json").is_file():
        gt = json.loads((COCO_MINI / "annotations" / "instances_val.json").read_text())
        dets = json.loads((COCO_MINI / "detections" / "yolofastest_val.json").read_text())
        counts: dict[int, int] = {}
        for d in dets:
            counts[d["image_id"]] = counts.get(d["image_id"], 0) + 1
        candidates = [im for im in gt["images"] if (im["width"], im["height"]) == (640, 480)]
        image = max(candidates, key=lambda im: (counts.get(im["id"], 0), -im["id"]))
        mine = sorted((d for d in dets if d["image_id"] == image["id"]), key=lambda d: -d["score"])[:n_boxes]
        boxes = np.array(xywh_to_xyxy([d["bbox"] for d in mine])).reshape(-1, 4)
        pil, _ = decode_image(str(COCO_MINI / "images" / "val" / image["file_name"]))
        what = f"coco-mini val image {image['id']} (640x480), {len(boxes)} yolofastest boxes"
    else:
        rng = np.random.default_rng(seed)
        pil = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
        what = "random 640x480 image"
        boxes = np.zeros((0, 4))
    if len(boxes) < n_boxes:  # pad with seeded random boxes, sides log-uniform in 16..400 px
        rng = np.random.default_rng(seed)
        k = n_boxes - len(boxes)
        sides = np.exp(rng.uniform(np.log(16), np.log(400), (k, 2)))
        x0 = rng.uniform(0, 640 - np.minimum(sides[:, 0], 639))
        y0 = rng.uniform(0, 480 - np.minimum(sides[:, 1], 479))
        boxes = np.concatenate([boxes, np.stack([x0, y0, x0 + sides[:, 0], y0 + sides[:, 1]], 1)])
        what += f" + {k} random boxes"
    tensor = torch.from_numpy(np.array(pil)).permute(2, 0, 1).contiguous()
    return pil, tensor, boxes, what


def naive_path(model: torch.nn.Module, pil: object, boxes: np.ndarray, geometry: CropGeometry,
               bf16: bool) -> torch.Tensor:
    """PIL crop + resize to 299 per box, then the 299 stem on the batch. The model runs exactly as the second
    stage runs it (NHWC, fp32 or bf16 autocast), so the ratios measure the crop path and the stem only."""
    crops = np.concatenate([crop_image(pil, box[None], 299, geometry) for box in boxes])
    x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(x).float().softmax(1)


def run_latency(args: argparse.Namespace) -> None:
    pil, image, boxes, what = load_case(args.boxes)
    geometry, cmap = CropGeometry(), CategoryMap(tuple(range(1, 81)), tuple(map(str, range(1, 81))), background=True)
    boxes_t = [torch.from_numpy(boxes).float()]
    print(f"{what}; width {args.width}, {torch.get_num_threads()} threads, chunk {args.chunk}, "
          f"median of {args.iters} after {args.warmup} warm-up")
    rows: dict[str, float] = {}
    naive_model = build_model(299, cmap.num_classes, width=args.width, aux_logits=False).eval()
    naive_model.to(memory_format=torch.channels_last)
    for name, model, bf16 in (("naive 299 fp32", naive_model, False), ("naive 299 bf16", naive_model, True)):
        rows[name] = time_per_call(lambda: naive_path(model, pil, boxes, geometry, bf16), warmup=args.warmup,
                                   iters=args.iters)
    for stem in args.stems:
        for precision in ("fp32", "bf16"):
            model = build_model(stem, cmap.num_classes, width=args.width, aux_logits=False)
            stage = SecondStage(model, cmap, geometry, options=StageOptions(chunk_size=args.chunk, precision=precision))
            rows[f"second stage {stem} {precision}"] = time_per_call(
                lambda: stage.classify([image], boxes_t), warmup=args.warmup, iters=args.iters)
    base = rows["naive 299 fp32"]
    print("| path | seconds | boxes/s | speed-up vs naive 299 fp32 | speed-up vs second stage 299, same precision |")
    print("|---|---|---|---|---|")
    for name, seconds in rows.items():
        precision = name.split()[-1]
        ref = rows.get(f"second stage 299 {precision}")
        same = f"{ref / seconds:.2f}x" if ref and name.startswith("second") else ""
        print(f"| {name} | {seconds:.3f} | {len(boxes) / seconds:.1f} | {base / seconds:.2f}x | {same} |")


def _val_crops(n_images: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gt = json.loads((COCO_MINI / "annotations" / "instances_val.json").read_text())
    by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        if not a["iscrowd"]:
            by_image.setdefault(a["image_id"], []).append(a["bbox"])
    images, boxes = [], []
    for im in gt["images"][:n_images]:
        if im["id"] in by_image:
            pil, _ = decode_image(str(COCO_MINI / "images" / "val" / im["file_name"]))
            images.append(torch.from_numpy(np.array(pil)).permute(2, 0, 1))
            boxes.append(torch.tensor(xywh_to_xyxy(by_image[im["id"]]), dtype=torch.float32).reshape(-1, 4))
    return images, boxes


def _calibrate_bn(stage: SecondStage, images: list[torch.Tensor], boxes: list[torch.Tensor]) -> None:
    """Random weights: set BatchNorm statistics on the crops so eval outputs depend on the image."""
    from lowres.rcnn.crops import roi_crops

    crops = roi_crops(images, boxes, stage.input_size, stage.geometry)
    for m in stage.model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    stage.model.train()
    with torch.no_grad():
        for chunk in crops.split(64):
            stage.model(chunk)
    stage.model.eval()


def run_bf16_check(args: argparse.Namespace) -> None:
    if not (COCO_MINI / "annotations" / "instances_val.json").is_file():
        sys.exit(f"--check-bf16 needs coco-mini at {COCO_MINI}")
    images, boxes = _val_crops(args.images)
    if args.checkpoint:
        stage = SecondStage.from_checkpoint(args.checkpoint,
                                            options=StageOptions(precision="fp32", chunk_size=args.chunk))
        what = f"checkpoint {args.checkpoint}"
    else:
        cmap = CategoryMap(tuple(range(1, 81)), tuple(map(str, range(1, 81))), background=True)
        stage = SecondStage(build_model(args.stems[0], 81, width=args.width, aux_logits=False), cmap,
                            options=StageOptions(chunk_size=args.chunk, precision="fp32"))
        _calibrate_bn(stage, images, boxes)
        what = f"RANDOM weights (BN statistics from the crops), stem {args.stems[0]}, width {args.width}"
    fp32 = torch.cat(stage.classify(images, boxes))
    stage.precision = "bf16"
    bf16 = torch.cat(stage.classify(images, boxes))
    agree = (fp32.argmax(1) == bf16.argmax(1)).float().mean().item()
    diff = (fp32 - bf16).abs()
    margin = fp32.topk(2, dim=1).values
    print(f"bf16 vs fp32 on {len(fp32)} coco-mini val ground-truth crops, {what}:")
    print(f"  top-1 agreement {agree:.4f}; probability difference: max {diff.max():.4f}, "
          f"mean of the per-crop max {diff.max(1).values.mean():.5f}; "
          f"median fp32 top-1 margin {(margin[:, 0] - margin[:, 1]).median():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--boxes", type=int, default=100)
    parser.add_argument("--stems", type=int, nargs="+", default=[79, 151, 299])
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--check-bf16", action="store_true", help="accuracy of bf16 against fp32 instead of timing")
    parser.add_argument("--checkpoint", default=None, help="trained model for --check-bf16")
    parser.add_argument("--images", type=int, default=40, help="coco-mini val images for --check-bf16")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch.set_flush_denormal(True)  # random weights must not be timed on denormal arithmetic
    run_bf16_check(args) if args.check_bf16 else run_latency(args)


if __name__ == "__main__":
    main()
