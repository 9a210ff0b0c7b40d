"""`lowres rescore` on coco-mini val restricted to a few images: files out, COCO AP before/after, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lowres.cli import main
from lowres.rcnn.files import METRIC_NAMES, load_results

N_IMAGES, PER_IMAGE = 3, 8


@pytest.fixture
def small_split(coco_mini: Path, tmp_path: Path) -> dict[str, Path]:
    """Ground truth and the real detector's results for the first few val images (top-scored boxes)."""
    gt = json.loads((coco_mini / "annotations" / "instances_val.json").read_text())
    dets = json.loads((coco_mini / "detections" / "yolofastest_val.json").read_text())
    with_dets = {d["image_id"] for d in dets}
    images = [im for im in gt["images"] if im["id"] in with_dets][:N_IMAGES]
    ids = {im["id"] for im in images}
    small = {**gt, "images": images, "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
    chosen = []
    for image_id in sorted(ids):
        mine = sorted((d for d in dets if d["image_id"] == image_id), key=lambda d: -d["score"])
        chosen += mine[:PER_IMAGE]
    (tmp_path / "gt.json").write_text(json.dumps(small))
    (tmp_path / "dets.json").write_text(json.dumps(chosen))
    return {"gt": tmp_path / "gt.json", "dets": tmp_path / "dets.json", "images": coco_mini / "images" / "val",
            "root": coco_mini, "out": tmp_path / "rescored.json"}


def _entries(path: Path) -> list[dict]:
    """A results file as plain entries, read through the validating reader (outputs must pass it too)."""
    return [d.to_result() for d in load_results(path)]


def _run(args: list[str]) -> object:
    return CliRunner().invoke(main, ["rescore", "--no-progress", *args])


def _run_with_ground_truth(checkpoint: Path, small_split: dict[str, Path], *args: str) -> tuple[object, Path]:
    """rescore on the small split with its ground truth; the summary goes to summary.json beside the output."""
    metrics_file = small_split["out"].with_name("summary.json")
    result = _run(["--checkpoint", str(checkpoint), "--detections", str(small_split["dets"]),
                   "--images", str(small_split["images"]), "--annotations", str(small_split["gt"]),
                   "--out", str(small_split["out"]), *args, "--metrics-out", str(metrics_file)])
    return result, metrics_file


def test_rescore_all_fusions_with_ground_truth(checkpoint: Path, small_split: dict[str, Path]) -> None:
    result, metrics_file = _run_with_ground_truth(checkpoint, small_split, "--fusion", "all",
                                                  "--background-threshold", "1")
    assert result.exit_code == 0, result.output
    assert "| scores | " + " | ".join(METRIC_NAMES) + " |" in result.output
    for row in ("detector (before)", "rescored: replace", "rescored: product", "rescored: max"):
        assert row in result.output
    summary = json.loads(metrics_file.read_text())
    assert set(summary["metrics"]) == {"before", "replace", "product", "max"}
    source = _entries(small_split["dets"])
    for rule in ("replace", "product", "max"):
        rescored = _entries(small_split["out"].with_name(f"rescored.{rule}.json"))
        assert len(rescored) == len(source)  # threshold 1: nothing suppressed
        assert [(r["image_id"], r["bbox"]) for r in rescored] == [(d["image_id"], d["bbox"]) for d in source]
        if rule == "product":
            assert [r["category_id"] for r in rescored] == [d["category_id"] for d in source]
            assert all(r["score"] <= d["score"] for r, d in zip(rescored, source))


def test_rescore_with_a_data_folder_and_folder_of_images(checkpoint: Path, small_split: dict[str, Path]) -> None:
    result = _run(["--checkpoint", str(checkpoint), "--detections", str(small_split["dets"]),
                   "--images", str(small_split["images"]), "--out", str(small_split["out"]), "--fusion", "max"])
    assert result.exit_code == 0, result.output  # no ground truth: files found by id, no metrics
    assert "AP50" not in result.output and len(_entries(small_split["out"])) <= N_IMAGES * PER_IMAGE
    result = _run(["--checkpoint", str(checkpoint), "--detections", str(small_split["dets"]),
                   "--data", str(small_split["root"]), "--split", "val", "--out", str(small_split["out"])])
    assert result.exit_code == 0, result.output
    assert "rescored: product" in result.output


def test_unknown_image_ids_error_or_counted_skip(checkpoint: Path, small_split: dict[str, Path]) -> None:
    dets = _entries(small_split["dets"])
    dets.append({**dets[0], "image_id": 987654321})
    small_split["dets"].write_text(json.dumps(dets))
    args = ["--checkpoint", str(checkpoint), "--detections", str(small_split["dets"]), "--images",
            str(small_split["images"]), "--annotations", str(small_split["gt"]), "--out", str(small_split["out"])]
    bad = _run(args)
    assert bad.exit_code != 0 and "987654321" in bad.output and "--skip-unknown" in bad.output
    assert not small_split["out"].exists()
    ok = _run([*args, "--skip-unknown"])
    assert ok.exit_code == 0, ok.output
    assert "'unknown_image_id': 1" in ok.output


@pytest.mark.parametrize("entry, error", [
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, float("nan"), 5], "score": 0.5}, "4 finite numbers"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, -3, 5], "score": 0.5}, "negative width"),
    ({"image_id": 1, "bbox": [0, 0, 3, 5], "score": 0.5}, "needs image_id, category_id"),
])
def test_malformed_detections_are_clear_errors(checkpoint: Path, small_split: dict[str, Path], entry: dict,
                                               error: str) -> None:
    small_split["dets"].write_text(json.dumps([entry]))
    result = _run(["--checkpoint", str(checkpoint), "--detections", str(small_split["dets"]),
                   "--images", str(small_split["images"]), "--out", str(small_split["out"])])
    assert result.exit_code != 0 and error in result.output and "Traceback" not in result.output


def test_category_outside_the_model_and_bad_usage(checkpoint: Path, small_split: dict[str, Path]) -> None:
    dets = _entries(small_split["dets"])[:1]
    small_split["dets"].write_text(json.dumps([{**dets[0], "category_id": 12}]))  # 12: unused COCO id
    base = ["--checkpoint", str(checkpoint), "--detections", str(small_split["dets"]), "--out", str(small_split["out"])]
    result = _run([*base, "--images", str(small_split["images"])])
    assert result.exit_code != 0 and "labels [12]" in result.output
    both = _run([*base, "--images", str(small_split["images"]), "--data", str(small_split["root"])])
    assert both.exit_code != 0 and "either --data" in both.output


def test_label_map_file_maps_detector_labels_to_coco_ids(checkpoint: Path, small_split: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """Detections written in a detector's own label space (k = 100 + COCO id) score as the COCO-id originals."""
    source = _entries(small_split["dets"])
    relabelled = tmp_path / "relabelled.json"
    relabelled.write_text(json.dumps([{**d, "category_id": 100 + d["category_id"]} for d in source]))
    label_map = tmp_path / "labels.json"
    label_map.write_text(json.dumps({str(100 + c): c for c in {d["category_id"] for d in source}}))
    common = ["--images", str(small_split["images"]), "--annotations", str(small_split["gt"]),
              "--background-threshold", "1"]
    plain = _run(["--checkpoint", str(checkpoint), "--detections", str(small_split["dets"]), *common,
                  "--out", str(tmp_path / "plain.json")])
    mapped = _run(["--checkpoint", str(checkpoint), "--detections", str(relabelled), *common,
                   "--label-map", str(label_map), "--out", str(tmp_path / "mapped.json")])
    assert plain.exit_code == 0 and mapped.exit_code == 0, mapped.output
    assert plain.output == mapped.output.replace("mapped.json", "plain.json")  # same AP before and after
    assert _entries(tmp_path / "mapped.json") == _entries(tmp_path / "plain.json")  # COCO ids out
    without = _run(["--checkpoint", str(checkpoint), "--detections", str(relabelled), *common,
                    "--out", str(tmp_path / "x.json")])
    assert without.exit_code != 0 and "label_map" in without.output
    label_map.write_text(json.dumps({"cat": 1}))
    bad = _run(["--checkpoint", str(checkpoint), "--detections", str(relabelled), *common,
                "--label-map", str(label_map), "--out", str(tmp_path / "y.json")])
    assert bad.exit_code != 0 and "labels.json" in bad.output and "'cat'" in bad.output


def test_rescore_crossfit_writes_auto_crossfit_with_every_box(checkpoint: Path, small_split: dict[str, Path]) -> None:
    result, metrics_file = _run_with_ground_truth(checkpoint, small_split, "--fusion", "product", "--crossfit", "3")
    assert result.exit_code == 0, result.output
    assert "cross-fit fold 3/3 (1 images)" in result.output
    summary = json.loads(metrics_file.read_text())
    assert set(summary["metrics"]) == {"before", "product", "auto_crossfit"}
    crossfit = _entries(small_split["out"].with_name("rescored.auto_crossfit.json"))
    assert sorted((r["image_id"], r["bbox"]) for r in crossfit) <= sorted(
        (d["image_id"], d["bbox"]) for d in _entries(small_split["dets"]))  # boxes kept or dropped, never made up
    bad = _run(["--checkpoint", str(checkpoint), "--detections", str(small_split["dets"]),
                "--images", str(small_split["images"]), "--out", str(small_split["out"]), "--crossfit", "3"])
    assert bad.exit_code != 0 and "ground truth" in bad.output
