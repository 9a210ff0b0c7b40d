"""The second stage and export on a checkpoint written by `lowres train` (not a hand-made one): the model,
its geometry and its label space reach inference as training left them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lowres.builder import load_model
from lowres.export import export_checkpoint, load_metadata
from lowres.rcnn import SecondStage, StageOptions, roi_crops

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def _images_and_boxes() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 64, 90, generator=g), torch.rand(3, 50, 40, generator=g)]
    boxes = [torch.tensor([[5.0, 6.0, 40.0, 50.0], [30.0, 10.0, 88.0, 60.0]]), torch.tensor([[2.0, 3.0, 20.0, 30.0]])]
    return images, boxes


def test_second_stage_runs_the_trained_model_on_the_training_geometry(trained_checkpoint: Path) -> None:
    loaded = load_model(trained_checkpoint)
    stage = SecondStage.from_checkpoint(trained_checkpoint, options=StageOptions(precision="fp32", channels_last=False))
    assert stage.category_map == loaded.category_map and stage.category_map.background
    assert stage.geometry == loaded.geometry and (stage.crop_size, stage.input_size) == (79, 79)
    images, boxes = _images_and_boxes()
    probs = torch.cat(stage.classify(images, boxes))
    with torch.no_grad():
        expected = loaded.model(roi_crops(images, boxes, loaded.crop_size, loaded.geometry)).softmax(1)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)
    raw = SecondStage.from_checkpoint(trained_checkpoint, use_ema=False, options=StageOptions(precision="fp32"))
    assert not torch.allclose(torch.cat(raw.classify(images, boxes)), probs)  # the EMA is what was loaded


def test_export_of_a_trained_checkpoint_equals_its_model(trained_checkpoint: Path, tmp_path: Path) -> None:
    loaded = load_model(trained_checkpoint)
    out = export_checkpoint(trained_checkpoint, tmp_path / "stage.pt", "torchscript", softmax=True)
    meta = load_metadata(out)
    assert meta["category_map"] == loaded.category_map.to_dict() and meta["geometry"] == loaded.geometry.to_dict()
    assert (meta["crop_size"], meta["input_size"], meta["num_classes"]) == (79, 79, loaded.category_map.num_classes)
    x = torch.randn(3, 3, 79, 79)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out))(x), loaded.model(x).softmax(1), atol=1e-5, rtol=1e-5)


def test_inference_imports_nothing_from_training() -> None:
    """lowres.rcnn and lowres.export load checkpoints through lowres.builder / lowres.runtime, never through
    lowres.training (a fresh interpreter, so no other test's imports count)."""
    code = ("import sys, lowres.rcnn, lowres.rcnn.files, lowres.rcnn.calibrate, lowres.export; "
            "print(sorted(m for m in sys.modules if m.startswith('lowres.training')))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(root), "PATH": ""})
    assert out.stdout.strip() == "[]", out.stdout
