"""The embedded default dataset: a generated COCO-format folder in the coco-mini layout.

``generate(out_dir)`` writes ``annotations/instances_{train,val}.json``, ``images/{split}/*.jpg`` (real
JPEG files) and ``detections/synthetic_{split}.json`` (a COCO results file from a simulated detector),
so everything in lowres runs with no download. Classes are textured shapes that differ in outline,
texture and colour, so a small CNN separates them, drawn over a cluttered background at sizes from
a few pixels to a large part of the image (COCO's small/medium/large buckets all occur).

The simulated detector is realistic in the ways the second stage cares about: localisation noise
growing for small objects, misses (mostly small objects), confused classes, duplicate looser boxes and
false positives on clutter, with scores that rank true detections higher on average.

Deterministic by ``seed``: every image draws from its own ``SeedSequence((seed, split, index))``.
The folder is built in a temporary sibling and renamed into place; an existing folder generated with
the same parameters is reused as is.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .fileio import atomic_write_json, building_folder, publish_folder

SUPERSAMPLE = 4  # masks are drawn at 4x and reduced: antialiased edges, like a photographed object
_SPLITS = ("train", "val")


def _regular(n: int, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    outer, inn = _regular(points, -np.pi / 2), _regular(points, -np.pi / 2 + np.pi / points) * inner
    return np.stack([outer, inn], axis=1).reshape(-1, 2)


def _crescent() -> np.ndarray:
    """Unit disc minus the unit disc centred at (-0.5, 0): outer arc out, inner arc back."""
    a_out = np.arccos(-0.25)
    a_in = np.arctan2(np.sqrt(1 - 0.25 ** 2), 0.25)
    t_out = np.linspace(-a_out, a_out, 20)
    t_in = np.linspace(a_in, -a_in, 14)
    inner = np.stack([np.cos(t_in) - 0.5, np.sin(t_in)], axis=1)
    return np.concatenate([np.stack([np.cos(t_out), np.sin(t_out)], axis=1), inner])


# Unit outlines in [-1, 1]^2, one per class; listed with texture and two-colour palette.
_CROSS = np.array([[-.33, -1], [.33, -1], [.33, -.33], [1, -.33], [1, .33], [.33, .33], [.33, 1], [-.33, 1],
                   [-.33, .33], [-1, .33], [-1, -.33], [-.33, -.33]])
CLASSES: list[dict[str, Any]] = [
    {"name": "disc", "outline": _regular(32), "texture": "dots", "colors": ((220, 40, 40), (250, 220, 200))},
    {"name": "square", "outline": _regular(4, np.pi / 4) * 1.4, "texture": "checker",
     "colors": ((30, 60, 200), (230, 230, 240))},
    {"name": "triangle", "outline": _regular(3, -np.pi / 2), "texture": "stripes",
     "colors": ((40, 170, 60), (240, 240, 120))},
    {"name": "star", "outline": _star(), "texture": "solid", "colors": ((250, 200, 20), (200, 120, 0))},
    {"name": "cross", "outline": _CROSS, "texture": "grid", "colors": ((150, 50, 180), (240, 200, 250))},
    {"name": "hexagon", "outline": _regular(6), "texture": "rings", "colors": ((20, 170, 190), (10, 60, 80))},
    {"name": "diamond", "outline": np.array([[0, -1], [.6, 0], [0, 1], [-.6, 0]]), "texture": "gradient",
     "colors": ((240, 110, 170), (90, 20, 50))},
    {"name": "crescent", "outline": _crescent(), "texture": "noise", "colors": ((120, 90, 50), (230, 190, 140))},
]


def _texture(kind: str, h: int, w: int, colors: tuple, rng: np.random.Generator) -> np.ndarray:
    """``(h, w, 3)`` uint8 texture mixing the class's two colours by a pattern (scale-free period)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = max(min(h, w) / rng.uniform(3, 6), 2.0)
    a = rng.uniform(0, np.pi)
    u = (xx * np.cos(a) + yy * np.sin(a)) / period
    v = (-xx * np.sin(a) + yy * np.cos(a)) / period
    r = np.hypot(xx - w / 2, yy - h / 2) / period
    t = {"dots": (np.hypot(u % 1 - .5, v % 1 - .5) < .3).astype(np.float32),
         "checker": ((np.floor(u) + np.floor(v)) % 2).astype(np.float32),
         "stripes": (np.sin(2 * np.pi * u) > 0).astype(np.float32),
         "solid": np.full((h, w), 0.1, np.float32),
         "grid": ((u % 1 < .25) | (v % 1 < .25)).astype(np.float32),
         "rings": (np.sin(2 * np.pi * r) > 0).astype(np.float32),
         "gradient": (xx / max(w - 1, 1)).astype(np.float32),
         "noise": rng.random((h, w)).astype(np.float32)}[kind]
    c0, c1 = (np.clip(np.array(c, np.float32) + rng.normal(0, 12, 3), 0, 255) for c in colors)
    return (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.uint8)


def _background(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """Smooth random colour field plus grey clutter strokes (false-positive bait)."""
    coarse = rng.uniform(60, 200, (4, 5, 3)).astype(np.uint8)
    img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(img).astype(np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 7)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        s = rng.uniform(8, 60)
        grey = tuple(int(g) for g in rng.integers(40, 220, 1).repeat(3))
        if rng.random() < .5:
            draw.ellipse((x, y, x + s, y + s * rng.uniform(.3, 1)), outline=grey, width=int(rng.integers(1, 4)))
        else:
            draw.line((x, y, x + rng.uniform(-s, s), y + rng.uniform(-s, s)), fill=grey, width=int(rng.integers(1, 5)))
    return img


def _place_object(img: Image.Image, cls: dict, side: float, rng: np.random.Generator,
                  taken: list[np.ndarray]) -> dict | None:
    """Draw one object at a free spot; returns its polygon (image pixels) or None if no room."""
    w, h = img.size
    angle = 0.0 if cls["name"] == "disc" else rng.uniform(-np.pi / 6, np.pi / 6)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = cls["outline"] @ rot.T * [1.0, rng.uniform(.75, 1.3)]
    pts = pts / np.abs(pts).max() * side / 2
    for _ in range(20):
        c = rng.uniform([side / 2, side / 2], [max(w - side / 2, side / 2 + 1), max(h - side / 2, side / 2 + 1)])
        poly = np.clip(pts + c, 0, [w, h])
        box = np.r_[poly.min(0), poly.max(0)]
        if all(_overlap(box, t) < .15 for t in taken):
            break
    else:
        return None
    x0, y0 = np.floor(box[:2]).astype(int)
    x1, y1 = np.ceil(box[2:]).astype(int)
    pw, ph = max(x1 - x0, 1), max(y1 - y0, 1)
    mask = Image.new("L", (pw * SUPERSAMPLE, ph * SUPERSAMPLE), 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in (poly - [x0, y0]) * SUPERSAMPLE], fill=255)
    mask = mask.resize((pw, ph), Image.Resampling.BOX)
    img.paste(Image.fromarray(_texture(cls["texture"], ph, pw, cls["colors"], rng)), (int(x0), int(y0)), mask)
    taken.append(box)
    return {"poly": poly, "box": box, "area": float(np.asarray(mask, np.float32).sum() / 255)}


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box: keeps any object from hiding under another."""
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller if smaller > 0 else 0.0


def _simulate_detections(objects: list[dict], image_id: int, size: tuple[int, int], n_classes: int,
                         rng: np.random.Generator) -> list[dict]:
    """A detector's output for one image: noisy hits, misses, confusions, duplicates, false positives."""
    w, h = size
    dets = []
    for obj in objects:
        bw, bh = obj["box"][2] - obj["box"][0], obj["box"][3] - obj["box"][1]
        small = max(bw, bh) < 32
        if rng.random() < (0.35 if small else 0.08):
            continue  # missed, mostly small objects
        sigma = 0.14 if small else 0.07  # localisation noise relative to the box side
        for dup in range(1 + int(rng.random() < 0.25)):
            s = sigma * (2.0 if dup else 1.0)
            cx = (obj["box"][0] + obj["box"][2]) / 2 + rng.normal(0, s) * bw
            cy = (obj["box"][1] + obj["box"][3]) / 2 + rng.normal(0, s) * bh
            nw, nh = bw * math.exp(rng.normal(0, s)), bh * math.exp(rng.normal(0, s))
            cat = obj["category_id"] if rng.random() < 0.88 else int(rng.integers(1, n_classes + 1))
            score = rng.beta(6, 2) * (0.75 if small else 1.0) * (0.6 if dup else 1.0)
            dets.append(_result(image_id, cat, (cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2), score, size))
    for _ in range(rng.poisson(2.0)):
        side = math.exp(rng.uniform(math.log(8), math.log(min(w, h) / 2)))
        x, y = rng.uniform(0, w - side), rng.uniform(0, h - side)
        box = (x, y, x + side * rng.uniform(.7, 1.4), y + side * rng.uniform(.7, 1.4))
        dets.append(_result(image_id, int(rng.integers(1, n_classes + 1)), box, rng.beta(1.5, 6), size))
    return [d for d in dets if d is not None]


def _result(image_id: int, cat: int, box_xyxy: tuple, score: float, size: tuple[int, int]) -> dict | None:
    x0, y0 = max(box_xyxy[0], 0.0), max(box_xyxy[1], 0.0)
    x1, y1 = min(box_xyxy[2], size[0]), min(box_xyxy[3], size[1])
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return {"image_id": image_id, "category_id": int(cat), "score": round(float(score), 5),
            "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)]}


def _make_image(image_id: int, params: dict, rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    """One image and its objects (polygon, box, area, category, crowd flag)."""
    w, h = params["image_size"]
    img = _background(w, h, rng)
    n_classes, taken, objects = params["num_classes"], [], []
    lo, hi = math.log(params["min_object"]), math.log(min(params["max_object"], min(w, h) * 0.9))
    n = int(rng.integers(params["objects_per_image"][0], params["objects_per_image"][1] + 1))
    for side in sorted(np.exp(rng.uniform(lo, hi, n)), reverse=True):  # large first: room for the rest
        cat = int(rng.integers(n_classes))
        obj = _place_object(img, CLASSES[cat], float(side), rng, taken)
        if obj is not None:
            objects.append({**obj, "category_id": cat + 1, "iscrowd": 0})
    if rng.random() < params["crowd_prob"]:
        objects.extend(_crowd(img, rng, n_classes, taken))
    return img, objects


def _crowd(img: Image.Image, rng: np.random.Generator, n_classes: int, taken: list[np.ndarray]) -> list[dict]:
    """A cluster of tiny same-class objects annotated as one ``iscrowd`` region, as COCO does."""
    cat = int(rng.integers(n_classes))
    members = [m for m in (_place_object(img, CLASSES[cat], rng.uniform(5, 9), rng, taken) for _ in range(6)) if m]
    if len(members) < 2:
        return []
    box = np.r_[np.min([m["box"][:2] for m in members], 0), np.max([m["box"][2:] for m in members], 0)]
    poly = np.array([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]])
    return [{"poly": poly, "box": box, "area": float(sum(m["area"] for m in members)),
             "category_id": cat + 1, "iscrowd": 1}]


def _split(root: Path, split: str, split_index: int, n_images: int, params: dict) -> None:
    """Write one split's images, instances file and detections file."""
    (root / "images" / split).mkdir(parents=True)
    images, anns, dets = [], [], []
    for k in range(n_images):
        rng = np.random.default_rng(np.random.SeedSequence((params["seed"], split_index, k)))
        image_id = split_index * 100_000 + k + 1
        img, objects = _make_image(image_id, params, rng)
        name = f"{image_id:012d}.jpg"
        img.save(root / "images" / split / name, quality=90)
        images.append({"id": image_id, "file_name": name, "width": img.size[0], "height": img.size[1]})
        for obj in objects:
            x0, y0, x1, y1 = (round(float(v), 2) for v in obj["box"])
            anns.append({"id": len(anns) + 1 + split_index * 1_000_000, "image_id": image_id,
                         "category_id": obj["category_id"], "iscrowd": obj["iscrowd"],
                         "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)], "area": round(obj["area"], 2),
                         "segmentation": [[round(float(v), 2) for v in obj["poly"].ravel()]]})
        plain = [o for o in objects if not o["iscrowd"]]
        dets.extend(_simulate_detections(plain, image_id, img.size, params["num_classes"], rng))
    categories = [{"id": i + 1, "name": c["name"], "supercategory": "shape"}
                  for i, c in enumerate(CLASSES[: params["num_classes"]])]
    info = {"description": "detection_bridge.synthetic", "params": params}
    atomic_write_json(root / "annotations" / f"instances_{split}.json",
                      {"info": info, "licenses": [], "images": images, "annotations": anns, "categories": categories},
                      indent=1, sort_keys=True)
    atomic_write_json(root / "detections" / f"synthetic_{split}.json", dets, indent=1, sort_keys=True)


def generate(out_dir: str | os.PathLike, *, seed: int = 0, num_images: tuple[int, int] = (48, 24),
             image_size: tuple[int, int] = (320, 240), objects_per_image: tuple[int, int] = (2, 7),
             min_object: float = 6.0, max_object: float = 200.0, num_classes: int = len(CLASSES),
             crowd_prob: float = 0.1, overwrite: bool = False) -> Path:
    """Write a synthetic COCO-format dataset (coco-mini layout) to ``out_dir``; returns ``out_dir``.

    ``num_images``: (train, val) image counts (the defaults give a few hundred boxes). Object sides
    are log-uniform in [``min_object``, ``max_object``] pixels. An existing folder made with the same
    parameters is returned untouched; other content raises unless ``overwrite`` (which always regenerates).
    """
    if not 1 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in 1..{len(CLASSES)}, got {num_classes}")
    params = {"seed": int(seed), "num_images": list(num_images), "image_size": list(image_size),
              "objects_per_image": list(objects_per_image), "min_object": float(min_object),
              "max_object": float(max_object), "num_classes": int(num_classes), "crowd_prob": float(crowd_prob)}
    out = Path(out_dir)
    if out.exists() and not overwrite:
        if _made_with(out, params):
            return out
        if any(out.iterdir()):
            raise FileExistsError(f"{out} exists and was not generated with these parameters; pass overwrite=True")
    with building_folder(out, suffix="") as tmp:
        for i, (split, n) in enumerate(zip(_SPLITS, num_images)):
            _split(tmp, split, i, int(n), params)
        atomic_write_json(tmp / "synthetic.json", params, indent=1, sort_keys=True)
        if overwrite:
            shutil.rmtree(out, ignore_errors=True)
        # another process may have generated the same set first (and be reading it): keep theirs
        return publish_folder(tmp, out, same=lambda folder: _made_with(folder, params))


def _made_with(out: Path, params: dict) -> bool:
    """Whether ``out`` is a complete set generated with ``params`` (its marker is written last)."""
    try:
        return json.loads((out / "synthetic.json").read_text()) == params
    except (OSError, ValueError):
        return False
