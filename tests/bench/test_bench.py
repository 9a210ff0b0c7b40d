"""`lowres bench` end to end on the smoke preset: files, fields, ranges; resume reuses finished variants."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from lowres.bench import VARIANTS, runner
from lowres.cli import main

ROW_FIELDS = ("variant", "stem", "crop", "input", "aux_logits", "top1", "top1_ci", "top5", "balanced_accuracy",
              "size_buckets", "params", "gflops", "images_per_s", "train_seconds", "epochs", "count", "seeds")


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_report_files_exist_and_the_markdown_shows_the_measured_numbers(smoke_report):
    for name in ("report.md", "report.json", "top1_vs_input.png", "top1_by_size.png", "learning_curves.png"):
        assert (smoke_report / name).stat().st_size > 0, name
    md, report = (smoke_report / "report.md").read_text(), _report(smoke_report)
    lines = md.splitlines()
    for r in report["rows"]:  # each variant's result row carries its own measured values, not a template's
        row = next(line for line in lines if line.startswith(f"| `{r['variant']}` | "))
        for text in (f"**{100 * r['top1']:.1f}**", f"{100 * r['top5']:.1f}", f"{r['gflops']:.3f}"):
            assert text in row, (r["variant"], text, row)
    assert report["environment"]["commit"] in md and report["command"] in md


def test_every_variant_has_every_field_in_range(smoke_report):
    report = _report(smoke_report)
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == list(VARIANTS)
    for name, r in rows.items():
        for field in ROW_FIELDS:
            assert r.get(field) is not None, (name, field)
        lo, hi = r["top1_ci"]
        for value in (r["top1"], r["top5"], r["balanced_accuracy"], lo, hi):
            assert 0.0 <= value <= 1.0 and math.isfinite(value), (name, value)
        assert lo <= r["top1"] <= hi and r["top1"] <= r["top5"]
        assert sum(b["count"] for b in r["size_buckets"].values()) == r["count"] == report["data"]["num_val"]
        assert r["params"] > 0 and r["gflops"] > 0 and r["images_per_s"] > 0 and r["train_seconds"] >= 0
        assert r["epochs"] == 2 and len(report["runs"][name][0]["history"]) == 2
        assert report["configs"][name]["model"]["stem"] == VARIANTS[name].stem
    assert rows["naive-79"]["aux_logits"] is False and rows["79"]["aux_logits"] is True
    assert rows["naive-79"]["gflops"] < rows["299"]["gflops"] / 10  # the naive network is much cheaper
    assert rows["upsample-79"]["gflops"] == rows["299"]["gflops"] == rows["151"]["gflops"]
    assert {c["a"] + "-" + c["b"] for c in report["contrasts"]} >= {"79-299", "naive-79-79", "upsample-79-79"}
    assert report["reading"] and report["environment"]["commit"]


def test_second_invocation_retrains_nothing(smoke_report, tiny_bench_args, monkeypatch):
    ckpts = sorted(smoke_report.glob("runs/*/seed*/last.pt"))
    assert len(ckpts) == len(VARIANTS)
    before = {p: p.stat().st_mtime_ns for p in ckpts}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished variant was retrained")

    monkeypatch.setattr(runner, "train", no_training)
    result = CliRunner().invoke(main, tiny_bench_args(smoke_report), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in ckpts} == before
    assert all(all(r["reused"]) for r in _report(smoke_report)["rows"])


def test_changed_config_is_an_error_not_a_silent_reuse(smoke_report, tiny_bench_args):
    result = CliRunner().invoke(main, tiny_bench_args(smoke_report, "--set", "optim.lr=0.01", "--variants", "79"))
    assert result.exit_code != 0 and "optim.lr" in result.output and "another configuration" in result.output


def test_interrupted_variant_resumes_from_its_checkpoint(tmp_path, tiny_bench_args, monkeypatch):
    """Kill naive-79 after its first epoch; the same command then continues from last.pt."""
    from lowres.training.trainer import Trainer

    original = Trainer.end_epoch

    class Killed(BaseException):  # an interruption (as KeyboardInterrupt), which the CLI error handler lets through
        pass

    def end_epoch_then_die(self, totals):
        original(self, totals)
        raise Killed("killed after epoch 1")

    monkeypatch.setattr(Trainer, "end_epoch", end_epoch_then_die)
    args = tiny_bench_args(tmp_path, "--variants", "naive-79")
    with pytest.raises(Killed):
        CliRunner().invoke(main, args, catch_exceptions=False)
    run_dir = tmp_path / "runs" / "naive-79" / "seed0"
    assert (run_dir / "last.pt").is_file() and not (run_dir / "result.json").exists()
    monkeypatch.setattr(Trainer, "end_epoch", original)
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output
    first, second = _report(tmp_path)["wall_times"]  # the killed invocation's time counts too
    assert first["interrupted"] and first["trained"] == 0 and first["seconds"] > 0
    assert second["trained"] == 1 and "interrupted" not in second
    row = _report(tmp_path)["rows"][0]
    assert row["epochs"] == 2 and row["resumed"] == [True] and row["reused"] == [False]


def test_ctrl_c_in_a_bench_says_to_run_the_bench_again(tmp_path, tiny_bench_args, monkeypatch):
    """Ctrl-C during a variant's first epoch: exit 130, last.pt holds the step, and the line names the variant,
    the seed and how to continue a bench (its own command again), not `lowres train --resume`."""
    import signal

    from lowres.training.trainer import Trainer

    original = Trainer.end_epoch

    def ctrl_c_then_end_epoch(self, totals):
        signal.raise_signal(signal.SIGINT)  # what Ctrl-C delivers
        return original(self, totals)

    monkeypatch.setattr(Trainer, "end_epoch", ctrl_c_then_end_epoch)
    result = CliRunner().invoke(main, tiny_bench_args(tmp_path, "--variants", "naive-79"))
    run_dir = tmp_path / "runs" / "naive-79" / "seed0"
    assert result.exit_code == 130, result.output
    assert f"naive-79 seed 0 interrupted after optimiser step 1: {run_dir / 'last.pt'} holds it" in result.output
    assert "running the same lowres bench command again" in result.output
    assert "lowres train --resume" not in result.output
    assert (run_dir / "last.pt").is_file() and not (run_dir / "result.json").exists()


def test_several_seeds_give_a_mean_a_spread_and_intervals_over_seeds(tmp_path, tiny_bench_args):
    args = tiny_bench_args(tmp_path, "--variants", "naive-79,79", "--seeds", "2",
                           "--set", "bench.variant_seeds={79: 1}")
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = _report(tmp_path)
    row, one = report["rows"]
    assert row["seeds"] == [0, 1] and len(row["top1_per_seed"]) == 2 and row["top1_sd"] is not None
    assert row["top1"] == pytest.approx(sum(row["top1_per_seed"]) / 2)
    assert one["seeds"] == [0] and one["top1_sd"] is None  # bench.variant_seeds: fewer seeds for 79
    assert sorted(p.name for p in (tmp_path / "runs" / "naive-79").iterdir()) == ["seed0", "seed1"]
    assert sorted(p.name for p in (tmp_path / "runs" / "79").iterdir()) == ["seed0"]
    (contrast,) = report["contrasts"]
    assert contrast["seeds"] == [2, 1] and contrast["ci"][0] <= contrast["delta"] <= contrast["ci"][1]
    md = (tmp_path / "report.md").read_text()
    lines = md.splitlines()
    seeds_cell = ", ".join(f"{100 * v:.1f}" for v in row["top1_per_seed"])  # each seed's top-1, in the row
    assert any(line.startswith("| `naive-79` | ") and seeds_cell in line and " ± " in line for line in lines)
    assert "| `naive-79` − `79` | 2 vs 1 |" in md and "`79`: 1 seed" in md
