"""The file path (``lowres rescore``: a COCO results file, images found by id) and the tensor path
(``SecondStage.rescore``, what ``attach`` runs) give the same detections on the same boxes, for every rule."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detection_bridge.cropper import decode_image
from detection_bridge.records import CategoryMap
from detection_bridge.results import images_in_folder
from lowres.rcnn import Fusion, SecondStage, StageOptions
from lowres.rcnn.files import RescoreOptions, load_results, rescore_results

SIZES = {1: (64, 48), 2: (40, 56), 3: (80, 80)}


@pytest.fixture
def scene(tmp_path: Path, cmap_bg: CategoryMap) -> dict:
    """Three lossless images named by id and a results file of 6 random boxes on each."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    dets = []
    for image_id, (w, h) in SIZES.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{image_id:012d}.png")
        for _ in range(6):
            x, y = rng.uniform(0, w - 8), rng.uniform(0, h - 8)
            bw, bh = rng.uniform(2, w - x), rng.uniform(2, h - y)
            cat = int(rng.choice(cmap_bg.category_ids))
            dets.append({"image_id": image_id, "category_id": cat, "bbox": [x, y, bw, bh],
                         "score": float(rng.uniform(0.05, 1))})
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    return {"images": folder, "dets": path}


def _tensor_path(stage: SecondStage, scene: dict, fusion: Fusion) -> list[tuple]:
    entries = json.loads(scene["dets"].read_text())
    images, detections = [], []
    for image_id in SIZES:
        image, _ = decode_image(str(scene["images"] / f"{image_id:012d}.png"))
        images.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
        mine = [d for d in entries if d["image_id"] == image_id]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in mine)], dtype=torch.float64)
        detections.append({"boxes": boxes, "labels": torch.tensor([d["category_id"] for d in mine]),
                           "scores": torch.tensor([d["score"] for d in mine], dtype=torch.float64)})
    out = stage.rescore(images, detections, fusion)
    return [(image_id, tuple(b), int(c), float(s)) for image_id, o in zip(SIZES, out)
            for b, c, s in zip(o["boxes"].tolist(), o["labels"].tolist(), o["scores"].tolist())]


def _file_path(stage: SecondStage, scene: dict, fusion: Fusion) -> list[tuple]:
    rescored = rescore_results(stage, load_results(scene["dets"]), images_in_folder(scene["images"]),
                               {"f": fusion}, RescoreOptions(batch_images=len(SIZES))).by_fusion["f"]
    rows = [(d["image_id"], (x, y, x + w, y + h), d["category_id"], d["score"])
            for d in rescored for x, y, w, h in [d["bbox"]]]
    # the tensor path orders each image's detections by the new score (stable), the file keeps file order
    return sorted(rows, key=lambda r: (r[0], -r[3]))


@pytest.fixture(scope="module")
def stage(tiny_model: torch.nn.Module, cmap_bg: CategoryMap) -> SecondStage:
    """The untrained tiny model with a louder classifier: its background probability then varies from box
    to box (about 0.005 to 0.012) so that a threshold of 0.008 suppresses some boxes and keeps others."""
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.fc.weight.mul_(3e6)
    return SecondStage(model, cmap_bg, options=StageOptions(chunk_size=7, precision="fp32"))


@pytest.mark.parametrize("fusion, suppresses", [(Fusion.rule("replace", background_threshold=0.008), True),
                                                (Fusion.rule("product", background_threshold=None), False),
                                                (Fusion.rule("max", background_threshold=0.008, max_area=600), True)],
                         ids=["replace", "product", "max-gated"])
def test_file_path_equals_tensor_path(stage: SecondStage, scene: dict, fusion: Fusion, suppresses: bool) -> None:
    from_file, from_tensors = _file_path(stage, scene, fusion), _tensor_path(stage, scene, fusion)
    n = 6 * len(SIZES)
    assert (0 < len(from_file) < n) if suppresses else len(from_file) == n
    assert len(from_file) == len(from_tensors)
    assert [r[:3] for r in from_file] == [r[:3] for r in from_tensors]
    np.testing.assert_allclose([r[3] for r in from_file], [r[3] for r in from_tensors], rtol=1e-12, atol=0)
