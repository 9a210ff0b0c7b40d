"""``gpu_check.py --prepare DIR``: what the GPU machine needs and lacks, packed here before the call.

The device machine receives the repository alone (at most 64 MiB, ``../shared`` stays behind) and has its own
Python (3.12) with torch and torchvision but without albumentations and pycocotools. This writes, under DIR
(``.gpu``: ignored by git, named in the call's ``carry``):

* ``data/coco-mini``: every val image of coco-mini, the first train images up to ``TRAIN_MB``, the instances
  files and the yolofastest detections cut to those images;
* ``data/imagenette``: the first ``IMAGENETTE_TRAIN`` / ``IMAGENETTE_VAL`` images of each class;
* ``whl``: wheels of the missing packages (the versions installed here), for CPython 3.12 on x86-64 Linux.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from _gpu_plan import REPO

from detection_bridge.fileio import atomic_write_json

MISSING_THERE = ("albumentations", "albucore", "pycocotools", "pydantic", "pydantic-core", "annotated-types",
                 "typing-inspection", "stringzilla", "simsimd")
TRAIN_MB, IMAGENETTE_TRAIN, IMAGENETTE_VAL = 14, 40, 10
LIMIT_MB = 60  # of the call's 64 MiB, with the repository's ~3 MB


def _coco_subset(src: Path, dst: Path) -> None:
    for split in ("val", "train"):
        data = json.loads((src / "annotations" / f"instances_{split}.json").read_text())
        images, total = [], 0
        for image in sorted(data["images"], key=lambda i: i["id"]):
            size = (src / "images" / split / image["file_name"]).stat().st_size
            if split == "train" and total + size > TRAIN_MB * 2**20:
                break
            images.append(image)
            total += size
        keep = {i["id"] for i in images}
        (dst / "images" / split).mkdir(parents=True, exist_ok=True)
        for image in images:
            shutil.copy2(src / "images" / split / image["file_name"], dst / "images" / split / image["file_name"])
        annotations = [a for a in data["annotations"] if a["image_id"] in keep]
        atomic_write_json(dst / "annotations" / f"instances_{split}.json",
                          {**data, "images": images, "annotations": annotations})
        detections = json.loads((src / "detections" / f"yolofastest_{split}.json").read_text())
        atomic_write_json(dst / "detections" / f"yolofastest_{split}.json",
                          [d for d in detections if d["image_id"] in keep])


def _imagenette_subset(src: Path, dst: Path) -> None:
    for split, count in (("train", IMAGENETTE_TRAIN), ("val", IMAGENETTE_VAL)):
        for folder in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            (dst / split / folder.name).mkdir(parents=True, exist_ok=True)
            for image in sorted(folder.iterdir())[:count]:
                shutil.copy2(image, dst / split / folder.name / image.name)


def _wheels(dst: Path) -> int:
    dst.mkdir(parents=True, exist_ok=True)
    platforms = [a for n in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                             "manylinux_2_24_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64")
                 for a in ("--platform", n)]
    specs = [f"{name}=={version(name)}" for name in MISSING_THERE]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *platforms, "-d", str(dst), *specs]
    return subprocess.run(cmd).returncode


def prepare(out: Path) -> int:
    """Write the data subsets and the wheels under ``out``; 0 when everything is there and fits the call."""
    shared = REPO.parent / "shared" / "data"
    for name, cut in (("coco-mini", _coco_subset), ("imagenette", _imagenette_subset)):
        if not (shared / name).is_dir():
            print(f"prepare: {shared / name} not found: the GPU run will use generated data instead", file=sys.stderr)
            continue
        shutil.rmtree(out / "data" / name, ignore_errors=True)
        cut(shared / name, out / "data" / name)
    rc = _wheels(out / "whl")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"prepare: {out} holds {size:.1f} MiB (limit {LIMIT_MB}); wheels: {'ok' if rc == 0 else 'pip download failed'}")
    return 0 if rc == 0 and size <= LIMIT_MB else 1
