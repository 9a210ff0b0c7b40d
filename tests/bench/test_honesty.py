"""The report says only what it measured: speed as median with spread and no ratio where spreads overlap,
below-floor and tie wording, the full recipe with its caps, wall time kept across re-renders, short paths."""
from __future__ import annotations

import json


from lowres.bench.measure import speeds_differ
from lowres.bench.reading import _baseline_sentence, _cost_sentence, _small_sentence, leaders
from lowres.bench.report import _caps, _wall_time, display_path


def _row(name, top1, small=None, speed=(100.0, 100.0, 100.0), gflops=1.0):
    rounds = list(speed)
    return {"variant": name, "top1": top1, "gflops": gflops, "images_per_s": sorted(rounds)[len(rounds) // 2],
            "images_per_s_rounds": rounds, "images_per_s_spread": [min(rounds), max(rounds)],
            "size_buckets": {"small": {"count": 10, "top1": top1 if small is None else small}}}


def _report(*rows, majority=0.3):
    per_class = [{"name": "person", "count": int(100 * majority)}, {"name": "car", "count": 100 - int(100 * majority)}]
    per_class.sort(key=lambda c: -c["count"])
    return {"rows": list(rows), "runs": {"x": [{"metrics": {"per_class": per_class}}]}}


def test_leaders_name_no_winner_in_a_tie_at_zero():
    assert leaders({"a": 0.3, "b": 0.2}) == ["a"]
    assert leaders({"a": 0.3, "b": 0.3}) == ["a", "b"]
    assert leaders({"a": 0.0, "b": 0.0}) == []


def test_below_floor_at_floor_ties_and_zero_are_worded_as_such():
    below = _baseline_sentence(_report(_row("79", 0.2), _row("299", 0.1), majority=0.6))
    assert "40.0 points below that floor" in below and "worse than always answering 'person'" in below
    assert "above" not in below
    tie = _baseline_sentence(_report(_row("79", 0.7), _row("299", 0.7), majority=0.6))
    assert "the best variants (79 and 299, tied at 70.0%) are 10.0 points above" in tie
    zero = _baseline_sentence(_report(_row("79", 0.0), _row("299", 0.0), majority=0.6))
    assert "no variant got a single validation crop right" in zero and "best" not in zero


def test_small_objects_sentence_names_no_winner_in_a_tie_or_at_zero():
    rows = {r["variant"]: r for r in (_row("79", 0.5, small=0.4), _row("299", 0.5, small=0.4))}
    assert "a tie at the top between 79 and 299" in _small_sentence(rows)
    rows = {r["variant"]: r for r in (_row("79", 0.5, small=0.0), _row("299", 0.5, small=0.0))}
    text = _small_sentence(rows)
    assert "no variant got any small crop right" in text and "highest" not in text


def test_speed_ratio_only_where_the_spreads_do_not_overlap():
    assert speeds_differ({"rounds": [10, 12, 11]}, {"rounds": [20, 22, 21]})
    assert not speeds_differ({"rounds": [10, 30, 11]}, {"rounds": [20, 22, 21]})
    assert not speeds_differ({"rounds": [10]}, {"rounds": [20]})  # one round: no spread to judge by
    rows = {"299": _row("299", 0.5, speed=(26, 271, 42)), "79": _row("79", 0.5, speed=(50, 60, 55), gflops=0.9),
            "naive-79": _row("naive-79", 0.5, speed=(900, 1000, 950), gflops=0.04)}
    text = _cost_sentence(rows)
    assert "79 0.90x the FLOPs, images/s not distinguishable from 299's" in text
    assert "naive-79 0.04x the FLOPs, 22.62x the images/s" in text
    assert "median of 3 rounds, range 26-271" in text


def test_recipe_caps_and_wall_times():
    cfg = {"train": {"max_steps_per_epoch": 2}, "data": {"max_train": 32, "max_val": None}}
    assert _caps(cfg) == "; capped: at most 2 steps per epoch, the first 32 training crops (data.max_train)"
    assert _caps({"train": {"max_steps_per_epoch": None}, "data": {}}) == "; no step or data caps"
    one = {"bench_seconds": 1890.0, "wall_times": [{"seconds": 1890.0, "trained": 5}]}
    assert _wall_time(one) == "whole bench 31.5 min"
    two = {"bench_seconds": 1902.0, "wall_times": [{"seconds": 1890.0, "trained": 5, "interrupted": True},
                                                   {"seconds": 12.0, "trained": 0}]}
    assert _wall_time(two) == ("wall time 31.7 min over 2 invocations on this folder: 31.5 min (5 run(s) trained, "
                               "interrupted), then 12 s (every run reused)")


def test_display_path_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "a" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a")
    assert display_path(str(tmp_path / "a" / "data")) == "data"
    assert display_path("/") == "/"


def test_rerender_keeps_the_training_wall_time(smoke_report, tiny_bench_args):
    from click.testing import CliRunner

    from lowres.cli import main

    first = json.loads((smoke_report / "report.json").read_text())
    result = CliRunner().invoke(main, tiny_bench_args(smoke_report), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    again = json.loads((smoke_report / "report.json").read_text())
    assert again["wall_times"][:len(first["wall_times"])] == first["wall_times"]
    assert again["wall_times"][-1]["trained"] == 0
    curves = again["runs"]["79"][0]["curves"]  # read from the run's scalars.csv, step points included
    assert len(curves["step_loss"]) == again["rows"][0]["steps"] and len(curves["val_top1"]) == 2
    md = (smoke_report / "report.md").read_text()
    assert "every run reused" in md and "steps per epoch" in md
    assert "images/s [range]" in md and "median of" in md


def test_wall_times_chain_this_config_s_invocations(tmp_path):
    """Each invocation adds its time to REPORT_DIR/wall_times.json, interrupted ones too; a folder from before the
    record starts from its report.json; a study of another config contributes nothing and, when the new config's
    invocation is refused or interrupted, keeps its record."""
    from lowres.bench.runner import _wall_times
    from lowres.config import load_config

    shared = load_config("smoke").to_dict()
    other = load_config("smoke", ["train.epochs=9"]).to_dict()
    old = {"preset": {"config": shared}, "bench_seconds": 600.0, "wall_times": [{"seconds": 600.0, "trained": 5}]}
    (tmp_path / "report.json").write_text(json.dumps(old))
    assert _wall_times(tmp_path, 5.0, {}, other, interrupted=True) == [
        {"seconds": 5.0, "trained": 0, "interrupted": True}]
    assert not (tmp_path / "wall_times.json").exists()  # refused: report.json's study keeps its time
    assert _wall_times(tmp_path, 7.0, {}, shared, interrupted=True) == [
        {"seconds": 600.0, "trained": 5}, {"seconds": 7.0, "trained": 0, "interrupted": True}]
    assert _wall_times(tmp_path, 5.0, {}, shared) == [
        {"seconds": 600.0, "trained": 5}, {"seconds": 7.0, "trained": 0, "interrupted": True},
        {"seconds": 5.0, "trained": 0}]
    record = json.loads((tmp_path / "wall_times.json").read_text())
    assert record["config"] == shared and len(record["invocations"]) == 3
    assert _wall_times(tmp_path, 4.0, {}, other) == [{"seconds": 4.0, "trained": 0}]  # its runs are not this study's
