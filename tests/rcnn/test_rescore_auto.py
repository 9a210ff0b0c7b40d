"""`lowres rescore --fusion auto` and `--max-area` on a few coco-mini images in the coco-mini layout: the fit on
train, its JSON beside the checkpoint, the size gate, and the calibration split's bad inputs (one-line errors
naming the file)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lowres.cli import main
from lowres.rcnn.files import load_results
from lowres.rcnn.fusion import Fusion

N_IMAGES, PER_IMAGE = 3, 8


@pytest.fixture
def layout(coco_mini: Path, tmp_path: Path, checkpoint: Path) -> dict[str, Path]:
    """A coco-mini-layout folder with the first few images of train and val and the detector's top boxes."""
    root = tmp_path / "data"
    for split in ("train", "val"):
        gt = json.loads((coco_mini / "annotations" / f"instances_{split}.json").read_text())
        dets = json.loads((coco_mini / "detections" / f"yolofastest_{split}.json").read_text())
        with_dets = {d["image_id"] for d in dets}
        images = [im for im in gt["images"] if im["id"] in with_dets][:N_IMAGES]
        ids = {im["id"] for im in images}
        small = {**gt, "images": images, "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
        chosen = [d for i in sorted(ids) for d in sorted((d for d in dets if d["image_id"] == i),
                                                        key=lambda d: -d["score"])[:PER_IMAGE]]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "detections").mkdir(exist_ok=True)
        (root / "images" / split).mkdir(parents=True)
        for im in images:
            (root / "images" / split / im["file_name"]).symlink_to(coco_mini / "images" / split / im["file_name"])
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(small))
        (root / "detections" / f"det_{split}.json").write_text(json.dumps(chosen))
    shutil.copy(checkpoint, tmp_path / "last.pt")
    return {"root": root, "ckpt": tmp_path / "last.pt", "val": root / "detections" / "det_val.json",
            "train": root / "detections" / "det_train.json", "out": tmp_path / "out.json"}


def _entries(path: Path) -> list[dict]:
    """A results file as plain entries, read through the validating reader (outputs must pass it too)."""
    return [d.to_result() for d in load_results(path)]


def _run(layout: dict[str, Path], *extra: str) -> object:
    return CliRunner().invoke(main, ["rescore", "--no-progress", "--checkpoint", str(layout["ckpt"]), "--data",
                                     str(layout["root"]), "--split", "val", "--detections", str(layout["val"]),
                                     "--out", str(layout["out"]), *extra])


def test_auto_fits_on_train_and_writes_its_parameters_beside_the_checkpoint(layout: dict[str, Path]) -> None:
    summary_file = layout["out"].with_name("summary.json")
    result = _run(layout, "--fusion", "auto", "--fusion", "product", "--metrics-out", str(summary_file))
    assert result.exit_code == 0, result.output
    params = layout["ckpt"].with_name("last.fusion.det.json")
    assert f"auto, fitted on train ({layout['train']})" in result.output and str(params) in result.output
    fusion = Fusion.load(params)
    assert fusion.name == "auto" and [b.name for b in fusion.bands] == ["small", "medium", "large"]
    assert fusion.report["split"] == "train" and fusion.report["detections"] == str(layout["train"])
    assert fusion.report["fitted"]["AP"] >= fusion.report["before"]["AP"]  # never worse where it was fitted
    summary = json.loads(summary_file.read_text())
    assert set(summary["metrics"]) == {"before", "auto", "product"}
    assert "rescored: auto" in result.output and _entries(layout["out"].with_name("out.auto.json"))


def test_max_area_leaves_larger_boxes_to_the_detector(layout: dict[str, Path]) -> None:
    result = _run(layout, "--fusion", "max", "--max-area", "small", "--background-threshold", "1")
    assert result.exit_code == 0, result.output
    assert "rescored: max-small" in result.output
    source, rescored = _entries(layout["val"]), _entries(layout["out"])
    assert len(rescored) == len(source)
    large = [(s, r) for s, r in zip(source, rescored) if s["bbox"][2] * s["bbox"][3] >= 32 ** 2]
    assert large and all(r["score"] == s["score"] and r["category_id"] == s["category_id"] for s, r in large)
    small = [(s, r) for s, r in zip(source, rescored) if s["bbox"][2] * s["bbox"][3] < 32 ** 2]
    assert small and all(r["score"] < s["score"] for s, r in small)
    bad = _run(layout, "--max-area", "tiny")
    assert bad.exit_code != 0 and "max area" in bad.output and "Traceback" not in bad.output


def _break(layout: dict[str, Path], how: str) -> tuple[Path, str]:
    if how == "no ground truth file":
        path = layout["root"] / "annotations" / "instances_train.json"
        path.unlink()
        return layout["root"], "no split 'train' (no annotations/instances_train.json)"
    if how == "no ground-truth boxes":
        path = layout["root"] / "annotations" / "instances_train.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "annotations": []}))
        return path, "no ground-truth boxes"
    if how == "no detections file":
        layout["train"].unlink()
        return layout["train"], "not found"
    if how == "empty detections":
        layout["train"].write_text("[]")
        return layout["train"], "no detections to calibrate on"
    dets = _entries(layout["train"])
    layout["train"].write_text(json.dumps([{**dets[0], "category_id": 12}] + dets))  # 12: no such COCO class
    return layout["train"], "labels [12]"


@pytest.mark.parametrize("how", ["no ground truth file", "no ground-truth boxes", "no detections file",
                                 "empty detections", "unknown category"])
def test_bad_calibration_split_is_a_one_line_error_naming_the_file(layout: dict[str, Path], how: str) -> None:
    path, reason = _break(layout, how)
    result = _run(layout, "--fusion", "auto")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert str(path) in result.output and reason in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not layout["out"].exists() and not layout["ckpt"].with_name("last.fusion.det.json").exists()


def test_auto_without_a_data_folder_or_a_detector_name(layout: dict[str, Path]) -> None:
    images = layout["root"] / "images" / "val"
    result = CliRunner().invoke(main, ["rescore", "--no-progress", "--checkpoint", str(layout["ckpt"]), "--images",
                                       str(images), "--detections", str(layout["val"]), "--out",
                                       str(layout["out"]), "--fusion", "auto"])
    assert result.exit_code != 0 and "--fusion auto needs --data" in result.output
    renamed = layout["val"].with_name("detections.json")
    layout["val"].rename(renamed)
    layout["val"] = renamed
    result = _run(layout, "--fusion", "auto")
    assert result.exit_code != 0 and "cannot tell the detector's name" in result.output
