"""SecondStage: classify, rescore, checkpoints, precision, and what it does with bad input."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detection_bridge.records import CategoryMap
from lowres import build_model
from lowres.builder import load_model
from lowres.rcnn import SecondStage, StageOptions, resolve_precision


@pytest.fixture
def stage(tiny_model: torch.nn.Module, cmap_bg: CategoryMap) -> SecondStage:
    return SecondStage(tiny_model, cmap_bg, options=StageOptions(chunk_size=3, precision="fp32"))


def _images_and_boxes() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 60, 80, generator=g), (torch.rand(3, 40, 30, generator=g) * 255).to(torch.uint8),
              torch.rand(3, 20, 20, generator=g)]
    boxes = [torch.tensor([[5.0, 5.0, 40.0, 50.0], [0.0, 0.0, 80.0, 60.0], [70.0, 50.0, 95.0, 70.0]]),
             torch.tensor([[3.0, 4.0, 10.0, 12.0], [8.0, 8.0, 8.0, 8.0]]),  # second one has zero area
             torch.zeros(0, 4)]
    return images, boxes


def test_classify_shapes_probabilities_and_chunking(stage: SecondStage) -> None:
    images, boxes = _images_and_boxes()
    probs = stage.classify(images, boxes)
    assert [tuple(p.shape) for p in probs] == [(3, 81), (2, 81), (0, 81)]
    torch.testing.assert_close(torch.cat(probs).sum(1), torch.ones(5))
    stage.chunk_size = 100
    torch.testing.assert_close(torch.cat(stage.classify(images, boxes)), torch.cat(probs), atol=1e-5, rtol=0)
    alone = stage.classify(images[1:2], boxes[1:2])[0]  # independent of the other images in the batch
    torch.testing.assert_close(alone, probs[1], atol=1e-5, rtol=0)


def test_empty_inputs_give_empty_outputs(stage: SecondStage) -> None:
    assert stage.classify([], []) == []
    out = stage.classify([torch.rand(3, 10, 10)], [torch.zeros(0, 4)])
    assert out[0].shape == (0, 81)
    dets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}]
    res = stage.rescore([torch.rand(3, 10, 10)], dets, "max")
    assert res[0]["boxes"].shape == (0, 4) and res[0]["labels"].shape == (0,) and res[0]["scores"].shape == (0,)


def test_model_stays_in_eval_mode(stage: SecondStage) -> None:
    stage.train()
    assert stage.training and not stage.model.training


def test_class_count_must_match_the_category_map(cmap_bg: CategoryMap) -> None:
    with pytest.raises(ValueError, match="81 classes"):
        SecondStage(build_model(79, 80, width=0.125, min_depth=8), cmap_bg)
    with pytest.raises(ValueError, match="precision"):
        SecondStage(build_model(79, 81, width=0.125, min_depth=8), cmap_bg, options=StageOptions(precision="fp16"))


def test_rescore_keeps_the_format_sorts_and_passes_extra_keys(stage: SecondStage) -> None:
    images, boxes = _images_and_boxes()
    dets = [{"boxes": boxes[0], "labels": torch.tensor([1, 3, 90]), "scores": torch.tensor([0.2, 0.9, 0.5]),
             "masks": torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 4, 4), "image_id": torch.tensor(7)}]
    out = stage.rescore(images[:1], dets, "product", background_threshold=None, return_probs=True)[0]
    assert set(out) == {"boxes", "labels", "scores", "masks", "image_id", "probs"}
    assert (out["scores"][:-1] >= out["scores"][1:]).all()  # sorted by the new score
    order = [int(m[0, 0, 0]) for m in out["masks"]]        # every per-detection entry follows the same order
    torch.testing.assert_close(out["boxes"], boxes[0][order])
    assert out["labels"].tolist() == [[1, 3, 90][i] for i in order] and out["labels"].dtype == torch.int64
    cls = torch.tensor([stage.category_map.label_of(c) for c in out["labels"].tolist()])
    expected = torch.tensor([0.2, 0.9, 0.5])[order] * out["probs"][torch.arange(3), cls]  # product: s * p[d]
    torch.testing.assert_close(out["scores"], expected)
    assert out["image_id"].item() == 7


def test_rescore_errors_name_the_problem(stage: SecondStage) -> None:
    images, boxes = _images_and_boxes()
    unknown = [{"boxes": boxes[0][:1], "labels": torch.tensor([12]), "scores": torch.tensor([0.5])}]  # 12: N/A in COCO
    with pytest.raises(ValueError, match=r"detections\[0\]: labels \[12\]"):
        stage.rescore(images[:1], unknown)
    with pytest.raises(ValueError, match="boxes, labels and scores must agree"):
        stage.rescore(images[:1], [{"boxes": boxes[0], "labels": torch.tensor([1]), "scores": torch.tensor([0.5])}])
    with pytest.raises(ValueError, match="'boxes', 'labels' and 'scores'"):
        stage.rescore(images[:1], [{"boxes": boxes[0]}])
    with pytest.raises(ValueError, match="2 images but 1"):
        stage.rescore(images[:2], unknown)
    with pytest.raises(ValueError, match="unknown fusion"):
        stage.rescore(images[:1], unknown, "vote")


def test_background_suppression_in_rescore(cmap_bg: CategoryMap) -> None:
    model = build_model(79, 81, width=0.125, min_depth=8).eval()
    with torch.no_grad():  # a classifier that is sure every crop is background
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.bias[80] = 20.0
    stage = SecondStage(model, cmap_bg, options=StageOptions(precision="fp32"))
    dets = [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}]
    assert len(stage.rescore([torch.rand(3, 10, 10)], dets, "max")[0]["scores"]) == 0
    assert len(stage.rescore([torch.rand(3, 10, 10)], dets, "max", background_threshold=None)[0]["scores"]) == 1


def test_from_checkpoint_uses_ema_weights_and_the_training_geometry(checkpoint: Path,
                                                                     tiny_model: torch.nn.Module) -> None:
    stage = SecondStage.from_checkpoint(checkpoint, "cpu", options=StageOptions(precision="fp32", chunk_size=8))
    assert stage.input_size == 79 and stage.category_map.background and stage.num_classes == 81
    assert stage.geometry.mode == "square" and abs(stage.geometry.context - 227 / 195) < 1e-12
    for name, value in tiny_model.state_dict().items():
        torch.testing.assert_close(stage.model.state_dict()[name], value)
    raw = load_model(checkpoint, use_ema=False)
    assert raw.weights == "model" and not raw.model.training
    with pytest.raises(Exception, match="no checkpoint"):
        SecondStage.from_checkpoint(checkpoint.parent / "missing.pt")


def test_bf16_agrees_with_fp32(stage: SecondStage) -> None:
    """Agreement here is with random weights (outputs near uniform): a smoke check of the autocast path.
    The accuracy statement for real crops comes from benchmarks/second_stage_latency.py --check-bf16."""
    images, boxes = _images_and_boxes()
    fp32 = torch.cat(stage.classify(images, boxes))
    stage.precision = "bf16"
    bf16 = torch.cat(stage.classify(images, boxes))
    assert bf16.dtype == torch.float32 and (bf16 - fp32).abs().max() < 1e-2
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")


def test_upsample_checkpoint_crops_small_and_feeds_the_model_its_input_size(tmp_path: Path, cmap_bg: CategoryMap) -> None:
    """A checkpoint trained on 79 px crops upsampled to 299 (the benchmark's upsample-79) is used the same way."""
    from lowres.config import Config
    from lowres.checkpoint import save_checkpoint
    from lowres.export import export_checkpoint, load_metadata

    model = build_model(299, cmap_bg.num_classes, width=0.125, min_depth=8).eval()
    cfg = Config.from_dict({"model": {"stem": 299, "width": 0.125, "min_depth": 8},
                            "crop": {"size": 79, "upsample_to": 299}})
    path = tmp_path / "last.pt"
    save_checkpoint({"model": model.state_dict(), "ema": None, "config": cfg.to_dict(),
                     "category_map": cmap_bg.to_dict(), "stem": 299, "num_classes": cmap_bg.num_classes}, path)
    stage = SecondStage.from_checkpoint(path, options=StageOptions(precision="fp32"))
    assert (stage.crop_size, stage.input_size) == (79, 299)
    seen: list[tuple[int, ...]] = []
    stage.model.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    images, boxes = _images_and_boxes()
    probs = stage.classify(images, boxes)
    assert [p.shape[0] for p in probs] == [3, 2, 0] and seen and all(s[-2:] == (299, 299) for s in seen)
    meta = load_metadata(export_checkpoint(path, tmp_path / "m.pt", "torchscript"))
    assert (meta["crop_size"], meta["input_size"], meta["stem"]) == (79, 299, 299)


def test_rescore_size_gate_and_fitted_fusions_share_one_implementation(stage: SecondStage) -> None:
    """``max_area`` leaves larger boxes to the detector; a Fusion object fuses as the named rule it equals."""
    from lowres.rcnn import Fusion, RuleParams
    from lowres.rcnn.fusion import Band

    images, boxes = _images_and_boxes()
    dets = [{"boxes": boxes[0], "labels": torch.tensor([1, 3, 90]), "scores": torch.tensor([0.9, 0.5, 0.3])}]
    areas = ((boxes[0][:, 2] - boxes[0][:, 0]) * (boxes[0][:, 3] - boxes[0][:, 1])).tolist()  # 1400, 4800, 500
    gated = stage.rescore(images[:1], dets, "max", background_threshold=None, max_area=1000)[0]
    full = stage.rescore(images[:1], dets, "max", background_threshold=None, return_probs=True)[0]
    for box, label, score in zip(gated["boxes"], gated["labels"], gated["scores"]):
        i = next(k for k in range(3) if torch.equal(boxes[0][k], box))
        if areas[i] >= 1000:  # above the gate: the detector's own label and score
            assert int(label) == int(dets[0]["labels"][i]) and float(score) == float(dets[0]["scores"][i])
        else:
            j = next(k for k in range(len(full["boxes"])) if torch.equal(full["boxes"][k], box))
            assert int(label) == int(full["labels"][j]) and float(score) == float(full["scores"][j])
    same = Fusion((Band(float("inf"), RuleParams(1.0, relabel=True, background_threshold=None)),))
    via_object = stage.rescore(images[:1], dets, same)[0]
    for key in ("boxes", "labels", "scores"):
        assert torch.equal(via_object[key], full[key])
    with pytest.raises(ValueError, match="fitted on a calibration split"):
        stage.rescore(images[:1], dets, "auto")
