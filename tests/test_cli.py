"""The command line: each command's help, and `lowres info` against the model itself."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lowres.cli import main


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "info" in result.output


def test_info_json_matches_design() -> None:
    result = CliRunner().invoke(main, ["info", "--width", "0.25", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["stem"]: r for r in json.loads(result.stdout)}  # the "measuring" note goes to stderr
    assert set(rows) == {79, 151, 299}
    assert [rows[s]["grid_mixed_5b"] for s in (299, 151, 79)] == [35, 35, 36]
    assert all(rows[s]["grid_mixed_7c"] == 8 for s in rows)
    assert rows[299]["flops_vs_299"] == 1.0 and rows[79]["gflops"] < rows[151]["gflops"]


def test_info_table_and_bad_width() -> None:
    result = CliRunner().invoke(main, ["info", "--width", "0.25"])
    assert result.exit_code == 0 and "| 79 | 79x79 | 36 | 17 | 8 |" in result.output
    bad = CliRunner().invoke(main, ["info", "--width", "-1"])
    assert bad.exit_code == 2 and "'--width'" in bad.output  # refused while parsing options
    assert "Traceback" not in bad.output


@pytest.mark.parametrize("command", sorted(main.commands))
def test_subcommand_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0 and result.output.startswith(f"Usage: main {command}"), result.output


def test_crops_on_synthetic_default_writes_cache_and_summary(tmp_path) -> None:
    result = CliRunner().invoke(main, ["crops", "--split", "val", "--size", "79", "--cache-dir", str(tmp_path / "c"),
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "embedded synthetic set" in result.output
    summary = json.loads((tmp_path / "summary_val_79px.json").read_text())
    assert summary["num_records"] > 0 and summary["cache"]["num_crops"] == summary["num_records"]
    assert sum(summary["per_size_bucket"].values()) == summary["num_records"]
    assert "\r" not in result.output  # no progress bar drawn into a pipe
    assert "lowres train` looks for crop caches in CACHE_DIR/crops" in result.output  # --out is not where it looks


def test_crops_selection_options_reach_the_bridge(tmp_path) -> None:
    data = tmp_path / "cache"
    CliRunner().invoke(main, ["crops", "--split", "val", "--size", "16", "--cache-dir", str(data)])  # generates the set
    dets = data / "synthetic-seed0" / "detections" / "synthetic_val.json"
    args = ["crops", "--data", str(data / "synthetic-seed0"), "--split", "val", "--size", "16", "--detections",
            str(dets)]
    every = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    some = CliRunner().invoke(main, [*args, "--top-k", "1", "--score-threshold", "0.3", "--jitter", "2",
                                     "--out", str(tmp_path / "b")])
    assert every.exit_code == 0 and some.exit_code == 0, some.output
    a, b = (json.loads((tmp_path / d / "summary_val_16px.json").read_text()) for d in ("a", "b"))
    assert a["params"]["top_k"] is None and (b["params"]["top_k"], b["params"]["jitter"]) == (1, 2)
    assert b["filtered"]["detection_beyond_top_k"] > 0 and b["filtered"]["detection_below_score"] > 0
    assert b["per_source"]["jitter"] > 0 and "detection_beyond_top_k" not in a["filtered"]


def test_crops_flags_are_config_keys_checked_as_train_checks_them(tmp_path) -> None:
    """The crops flags set data.*/crop.* keys: the same range checks as train's (a negative --min-size was
    accepted before), any other key through --set, and the cache built is the one train opens."""
    from detection_bridge.cache import open_cache
    from detection_bridge.coco import load_split

    from lowres.config import Config
    from lowres.training.data import cache_spec, split_options

    root = tmp_path / "c"
    bad = CliRunner().invoke(main, ["crops", "--split", "val", "--cache-dir", str(root), "--min-size", "-3"])
    assert bad.exit_code == 2 and "'data.min_size' must be >= 0" in bad.output
    result = CliRunner().invoke(main, ["crops", "--split", "val", "--cache-dir", str(root),
                                       "--set", "data.iou_positive=0.6", "--set", "crop.margin=0.25"])
    assert result.exit_code == 0, result.output
    summary = json.loads(next((root / "crops").glob("summary_val_79px.json")).read_text())
    assert summary["params"]["iou_positive"] == 0.6 and summary["cache"]["margin"] == 0.25
    cfg = Config.from_dict({"data": {"cache_dir": str(root), "iou_positive": 0.6}, "crop": {"margin": 0.25}})
    crop_set = load_split(root / "synthetic-seed0", "val", split_options(cfg, train=False))
    assert open_cache(root / "crops", crop_set.records, cache_spec(cfg, crop_set)) is not None  # train's cache


def test_crops_bad_annotations_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "instances.json"
    bad.write_text("{not json")
    images = tmp_path / "images"
    images.mkdir()
    result = CliRunner().invoke(main, ["crops", "--annotations", str(bad), "--images", str(images),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "instances.json" in result.output
    assert "Traceback" not in result.output


def test_train_takes_the_flags_timm_users_reach_for_first() -> None:
    import yaml

    result = CliRunner().invoke(main, ["train", "--config", "smoke", "--print-config", "--epochs", "3", "-b", "4",
                                       "--lr", "0.01", "--seed", "5", "--device", "cpu", "-j", "2",
                                       "--set", "train.epochs=9"])  # a flag wins over --set
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.output)
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"], cfg["optim"]["lr"]) == (3, 4, 0.01)
    assert (cfg["train"]["seed"], cfg["train"]["device"], cfg["data"]["num_workers"]) == (5, "cpu", 2)


def test_eval_and_rescore_spell_the_detections_option_alike() -> None:
    import re

    for command in ("eval", "rescore"):
        assert re.search(r"--detections(?![-\w])", CliRunner().invoke(main, [command, "--help"]).output), command
    assert "--detections-file" in CliRunner().invoke(main, ["eval", "--help"]).output  # the older spelling


def test_eval_without_out_writes_beside_the_checkpoint(trained_checkpoint, tmp_path) -> None:
    import shutil

    checkpoint = Path(shutil.copy(trained_checkpoint, tmp_path / "last.pt"))
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(checkpoint), "--boxes", "gt"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval_val.json").read_text())["count"] > 0
    assert f"-> {tmp_path / 'eval_val.json'}" in result.output
