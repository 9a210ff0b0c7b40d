"""Fixtures for the second-stage tests: a tiny model, its category map, a checkpoint, a few coco-mini images."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import torch

from detection_bridge.boxes import CropGeometry
from detection_bridge.records import CategoryMap
from lowres import build_model

TINY = dict(width=0.125, min_depth=8)  # ~1/64 of the paper's FLOPs: tests stay fast on a 2-core CPU


@pytest.fixture(scope="session")
def coco_categories() -> list[dict]:
    """COCO's 80 categories (ids 1..90 with gaps), from coco-mini when present, else the ids alone."""
    coco_mini = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco-mini"
    path = coco_mini / "annotations" / "instances_val.json"
    if path.is_file():
        return json.loads(path.read_text())["categories"]
    missing = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    return [{"id": i, "name": f"c{i}"} for i in range(1, 91) if i not in missing]


@pytest.fixture(scope="session")
def cmap_bg(coco_categories: list[dict]) -> CategoryMap:
    return CategoryMap.from_coco(coco_categories, background=True)


@pytest.fixture(scope="session")
def tiny_model(cmap_bg: CategoryMap) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(79, cmap_bg.num_classes, **TINY).eval()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_model: torch.nn.Module, cmap_bg: CategoryMap) -> Path:
    """A checkpoint in `lowres train`'s format (lowres/checkpoint.py), without training."""
    from lowres.config import Config
    from lowres.checkpoint import save_checkpoint

    cfg = Config.from_dict({"model": {"stem": 79, **TINY}, "data": {"boxes": "detections", "background": True}})
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    save_checkpoint({"model": tiny_model.state_dict(), "ema": {"module": tiny_model.state_dict(), "num_updates": 1,
                                                               "decay": 0.9},
                     "config": cfg.to_dict(), "category_map": cmap_bg.to_dict(), "stem": 79,
                     "num_classes": cmap_bg.num_classes}, path)
    return path


@pytest.fixture
def geometry() -> CropGeometry:
    return CropGeometry()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a shared CPU OpenMP's spinning threads slow
    them down many times over; restored after each test so other folders keep torch's default."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
