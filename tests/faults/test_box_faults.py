"""Huge and degenerate boxes, hostile detections and images for the second stage.

A box of 10^6 px made roi_align's adaptive sampling ask for a table of 10^12 entries (a segfault); one of
10^4 px took 3 GB. The capped sampling keeps every box's cost bounded: checked in a child process by its
peak memory against the same process before the huge boxes.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lowres.cli import main
from lowres.rcnn.crops import MAX_COORD, max_sampling_ratio, roi_crops

_PEAK = """
import resource, sys, torch
from lowres.rcnn.crops import roi_crops
image = torch.randint(0, 256, (3, 480, 640), dtype=torch.uint8)
roi_crops([image], [torch.tensor([[10.0, 10.0, 60.0, 90.0]])], 79)  # warm-up: allocator, kernels
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for side in (1e4, 1e6, 1e7):
    crops = roi_crops([image], [torch.tensor([[0.0, 0.0, side, side], [-side, -side, side, side]])], 79)
    assert torch.isfinite(crops).all()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_huge_boxes_take_bounded_memory(repo_root):
    proc = subprocess.run([sys.executable, "-c", _PEAK], cwd=repo_root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]  # before: -11 (SIGSEGV) at 10^6 px
    assert int(proc.stdout.split()[-1]) < 200  # MB over the warm-up peak (before: about 3000 at 10^4 px)


def test_capped_sampling_leaves_ordinary_boxes_unchanged():
    image = torch.rand(3, 120, 160)
    boxes = [torch.tensor([[10.0, 12.0, 70.0, 100.0], [0.0, 0.0, 160.0, 120.0], [30.0, 30.0, 30.0, 30.0]])]
    assert max_sampling_ratio(79) * 79 > 200  # these regions are all below the cap: adaptive sampling as before
    from detection_bridge.boxes import CropGeometry
    from lowres.rcnn.crops import batch_images, context_regions
    from torchvision.ops import roi_align

    geometry = CropGeometry()
    regions = context_regions(boxes, geometry, torch.device("cpu"))
    reference = roi_align(batch_images([image], geometry), regions, output_size=(79, 79), spatial_scale=1.0,
                          sampling_ratio=-1, aligned=True)
    torch.testing.assert_close(roi_crops([image], boxes, 79), reference, rtol=0, atol=0)


def test_a_box_above_the_cap_is_the_image_shrunk_into_its_place():
    # A uniform image inside a box 4000 px wide: the crop is mean (0) outside the image's footprint and the
    # image's normalised value inside it; capped sampling must keep that picture (no NaN, no stray values).
    image = torch.full((3, 100, 100), 1.0)
    crop = roi_crops([image], [torch.tensor([[-1950.0, -1950.0, 2050.0, 2050.0]])], 79)[0]
    value = (1.0 - 0.5) / 0.5  # (x - mean) / std with the bridge's 0.5 / 0.5
    assert torch.isfinite(crop).all() and crop.min() >= 0 and crop.max() <= value + 1e-5
    assert crop[:, 0, 0].abs().max() == 0 and crop[:, 39, 39].min() > 0  # corner: mean; centre: the image


def test_degenerate_and_absurd_boxes():
    image = torch.rand(3, 50, 50)
    zero_area = roi_crops([image], [torch.tensor([[20.0, 20.0, 20.0, 20.0]])], 79)
    assert torch.isfinite(zero_area).all()  # the geometry's min_side gives it a small region
    for bad, message in ((float("nan"), "not finite"), (MAX_COORD * 4, "lies beyond")):
        with pytest.raises(ValueError, match=message):
            roi_crops([image], [torch.tensor([[0.0, 0.0, bad, 10.0]])], 79)
    with pytest.raises(ValueError, match="x1 < x0"):
        roi_crops([image], [torch.tensor([[10.0, 0.0, 5.0, 10.0]])], 79)


@pytest.fixture
def synthetic_val(trained_run: Path, fault_cache: Path, tmp_path: Path) -> dict[str, Path]:
    """The trained run's synthetic data, its val detections, and a copy to damage."""
    root = fault_cache / "synthetic-seed0"
    copy = Path(shutil.copytree(root, tmp_path / "data"))
    return {"root": copy, "detections": copy / "detections" / "synthetic_val.json", "ckpt": trained_run / "last.pt"}


def _rescore(split: dict[str, Path], detections: Path, out: Path):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(main, ["rescore", "--checkpoint", str(split["ckpt"]), "--detections", str(detections),
                                       "--data", str(split["root"]), "--split", "val", "--out", str(out),
                                       "--no-progress", "--precision", "fp32"])
    assert "Traceback" not in result.output, result.output
    return result


def test_hostile_detection_files_are_refused_naming_the_record(synthetic_val, tmp_path):
    dets = json.loads(synthetic_val["detections"].read_text())
    cases = {"malformed.json": b'[{"image_id": 1, "bbox": [1, 2',
             "score.json": json.dumps([{**dets[0], "score": 1.5}]).encode(),
             "nan.json": json.dumps([{**dets[0], "bbox": [1, 2, float("nan"), 4]}]).encode(),
             "negative.json": json.dumps([{**dets[0], "bbox": [1, 2, -3, 4]}]).encode()}
    expected = {"malformed.json": "malformed COCO results", "score.json": "score must be a number in [0, 1]",
                "nan.json": "bbox must be 4 finite numbers", "negative.json": "negative width or height"}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        result = _rescore(synthetic_val, path, tmp_path / "out.json")
        assert result.exit_code == 1 and expected[name] in result.output and name in result.output, result.output
    assert not (tmp_path / "out.json").exists()


def test_rescore_survives_huge_boxes_and_names_a_corrupt_image(synthetic_val, tmp_path):
    dets = json.loads(synthetic_val["detections"].read_text())
    huge = [{**dets[0], "bbox": [0, 0, 1e6, 1e6]}, {**dets[0], "bbox": [5, 5, 0, 0]}, *dets[:5]]
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(huge))
    result = _rescore(synthetic_val, path, tmp_path / "out.json")
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "out.json").read_text())) <= len(huge)
    images = sorted((synthetic_val["root"] / "images" / "val").iterdir())
    coco = json.loads((synthetic_val["root"] / "annotations" / "instances_val.json").read_text())
    broken = next(im for im in coco["images"] if im["id"] == dets[0]["image_id"])["file_name"]
    target = next(p for p in images if p.name == Path(broken).name)
    target.write_bytes(target.read_bytes()[:200])  # a truncated image
    result = _rescore(synthetic_val, path, tmp_path / "out2.json")
    assert result.exit_code == 1 and target.name in result.output, result.output
    assert not (tmp_path / "out2.json").exists()
