"""attach(): a torchvision Faster R-CNN whose eval forward returns rescored detections in its own format."""
from __future__ import annotations

import pytest
import torch

from detection_bridge.records import CategoryMap
from lowres.rcnn import FUSIONS, RescoredDetector, SecondStage, StageOptions, attach

LABEL_MAP = {1: 1, 2: 3, 3: 90}  # the test detector's labels 1..3 -> COCO person, car, toothbrush


@pytest.fixture(scope="module")
def detector() -> torch.nn.Module:
    """Random weights, deterministic: a low score threshold makes it emit boxes on any image."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    return fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=4,
                                                 box_score_thresh=0.0, box_detections_per_img=6).eval()


@pytest.fixture(scope="module")
def images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, 120, 160, generator=g), torch.rand(3, 96, 80, generator=g)]


def test_attached_detector_equals_detector_then_rescore(detector: torch.nn.Module, images: list[torch.Tensor],
                                                        tiny_model: torch.nn.Module, cmap_bg: CategoryMap) -> None:
    stage = SecondStage(tiny_model, cmap_bg, options=StageOptions(precision="fp32"))
    with torch.no_grad():
        raw = detector(images)
    assert all(len(d["boxes"]) > 0 for d in raw)
    for fusion in FUSIONS:
        model = attach(detector, stage, fusion, background_threshold=None, label_map=LABEL_MAP).eval()
        with torch.no_grad():
            out = model(images)
        expected = stage.rescore(images, raw, fusion, background_threshold=None, label_map=LABEL_MAP)
        assert isinstance(model, RescoredDetector) and len(out) == len(images)
        for o, e, r in zip(out, expected, raw):
            assert set(o) == {"boxes", "labels", "scores"} and len(o["boxes"]) == len(r["boxes"])
            torch.testing.assert_close(o["boxes"], e["boxes"])
            torch.testing.assert_close(o["scores"], e["scores"])
            assert o["labels"].dtype == torch.int64 and set(o["labels"].tolist()) <= {1, 2, 3}


def test_training_mode_delegates_to_the_detector(detector: torch.nn.Module, images: list[torch.Tensor],
                                                 tiny_model: torch.nn.Module, cmap_bg: CategoryMap) -> None:
    model = attach(detector, SecondStage(tiny_model, cmap_bg), label_map=LABEL_MAP)
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])} for _ in images]
    model.train()
    try:
        losses = model(images, targets)
        assert "loss_classifier" in losses and not model.second_stage.model.training
    finally:
        detector.eval()


def test_attach_checks_its_arguments(detector: torch.nn.Module, tiny_model: torch.nn.Module,
                                     cmap_bg: CategoryMap) -> None:
    stage = SecondStage(tiny_model, cmap_bg)
    with pytest.raises(ValueError, match="unknown fusion"):
        attach(detector, stage, "sum")
    with pytest.raises(TypeError, match="SecondStage"):
        attach(detector, tiny_model)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="maps no detector label"):
        attach(detector, stage, label_map={1: 12})  # 12 is not a COCO category
    model = attach(detector, stage, label_map={5: 1}).eval()  # the detector's labels 1..3 are unmapped
    with pytest.raises(ValueError, match="not classes of the second stage"):
        with torch.no_grad():
            model([torch.rand(3, 64, 64)])
