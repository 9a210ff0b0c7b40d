"""configs/second_stage.yaml is a valid training config for the issue-6 recipe (gt + detector crops, background)."""
from __future__ import annotations

from lowres.config import load_config


def test_second_stage_preset_is_valid_and_says_what_issue_6_asks() -> None:
    cfg = load_config("second_stage")
    assert cfg.data.boxes == "both" and cfg.data.background
    assert cfg.model.stem == 79
    assert cfg.data.detections_file == "detections/yolofastest_{split}.json"  # coco-mini has three detectors


def test_imagenet_second_stage_preset_fine_tunes_the_tf_graph_at_full_width() -> None:
    cfg = load_config("second_stage_imagenet")
    assert (cfg.model.stem, cfg.model.width, cfg.model.weights) == (79, 1.0, "tf-inception-v3")
    assert cfg.data.boxes == "both" and cfg.data.background and cfg.data.background_copies > 0
    assert cfg.optim.trunk_lr_factor < 1
