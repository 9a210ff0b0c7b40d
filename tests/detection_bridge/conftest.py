"""Fixtures for detection_bridge tests: a small synthetic dataset and a tiny hand-made COCO dataset that tests
corrupt on purpose (the real coco-mini data is tests/conftest.py's ``coco_mini``)."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detection_bridge import synthetic


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset (12 train / 6 val images), generated once per session."""
    return synthetic.generate(tmp_path_factory.mktemp("synthetic") / "data", seed=3, num_images=(12, 6))


@pytest.fixture(scope="session")
def jpeg_writer():
    """``write(path, width, height, seed)``: a textured JPEG (test modules cannot import conftest)."""
    return write_jpeg


def write_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    """A textured JPEG (smooth colour field plus noise): crops of it are not flat."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    arr = np.asarray(coarse).astype(np.int16) + rng.integers(-30, 30, (height, width, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=92)


@dataclass
class TinyCoco:
    """Three images, two categories, five annotations (one crowd) and four detections, in the coco-mini
    layout under ``root``. Tests edit ``instances``/``detections`` and call :meth:`write`."""

    root: Path
    instances: dict = field(default_factory=dict)
    detections: list = field(default_factory=list)

    @property
    def annotations_path(self) -> Path:
        return self.root / "annotations" / "instances_val.json"

    @property
    def detections_path(self) -> Path:
        return self.root / "detections" / "det_val.json"

    def image_path(self, file_name: str) -> Path:
        return self.root / "images" / "val" / file_name

    def write(self) -> "TinyCoco":
        for path, data in ((self.annotations_path, self.instances), (self.detections_path, self.detections)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data))
        return self


TINY_INSTANCES = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
               {"id": 2, "file_name": "b.jpg", "width": 80, "height": 60},
               {"id": 3, "file_name": "c.jpg", "width": 50, "height": 50}],
    "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
    "annotations": [
        {"id": 11, "image_id": 1, "category_id": 7, "bbox": [5, 6, 20, 10], "area": 150.0, "iscrowd": 0},
        {"id": 12, "image_id": 1, "category_id": 3, "bbox": [30, 10, 30, 30], "area": 800.0, "iscrowd": 0},
        {"id": 13, "image_id": 2, "category_id": 3, "bbox": [0, 0, 40, 50], "area": 1500.0, "iscrowd": 0},
        {"id": 14, "image_id": 2, "category_id": 7, "bbox": [45, 5, 30, 30], "area": 900.0, "iscrowd": 1},
        {"id": 15, "image_id": 3, "category_id": 7, "bbox": [10.5, 10.25, 2.5, 30], "area": 70.0, "iscrowd": 0},
    ],
}
TINY_DETECTIONS = [
    {"image_id": 1, "category_id": 7, "bbox": [6, 6, 19, 10], "score": 0.9},     # positive on 11
    {"image_id": 1, "category_id": 7, "bbox": [40, 40, 10, 5], "score": 0.2},    # background
    {"image_id": 2, "category_id": 7, "bbox": [47, 7, 20, 20], "score": 0.5},    # inside the crowd region
    {"image_id": 2, "category_id": 3, "bbox": [0, 0, 40, 25], "score": 0.7},     # IoU 0.5 with 13: positive
]


@pytest.fixture
def tiny_coco(tmp_path: Path) -> TinyCoco:
    tiny = TinyCoco(tmp_path / "tiny", copy.deepcopy(TINY_INSTANCES), copy.deepcopy(TINY_DETECTIONS))
    for k, im in enumerate(tiny.instances["images"]):
        write_jpeg(tiny.image_path(im["file_name"]), im["width"], im["height"], seed=k)
    return tiny.write()
