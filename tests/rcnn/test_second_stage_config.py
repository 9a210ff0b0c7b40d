"""configs/second_stage.yaml is a valid training config for the issue-6 recipe (gt + detector crops, background)."""
from __future__ import annotations

from lowres.config import load_config


def test_second_stage_preset_is_valid_and_says_what_issue_6_asks() -> None:
    cfg = load_config("second_stage")
    assert cfg.data.boxes == "both" and cfg.data.background
    assert cfg.model.stem == 79
    assert cfg.data.detections_file is None  # DIR/detections/*_{split}.json: coco-mini's yolofastest files
