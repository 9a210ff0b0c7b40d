"""Run-folder faults: SIGKILL at each file boundary of an epoch, two runs into one folder, a diverging
loss, a truncated config.yaml. The resumed run must end with the files of an uninterrupted one."""
from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lowres._atomic import remove_stale_temporaries
from lowres._lock import LOCK_NAME, FolderLockedError, folder_lock
from lowres.cli import main
from lowres.training import engine
from lowres.checkpoint import load_checkpoint
from lowres.training.run import train

TIMING = {"images_per_s", "seconds", "val_seconds"}


def _strip(line: dict) -> dict:
    return {k: v for k, v in line.items() if k not in TIMING}


def _history(run: Path) -> list[dict]:
    return [_strip(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["epoch"] == sb["epoch"]
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), key  # tolerance: exact (deterministic CPU run)


@pytest.mark.parametrize("boundary", ["before:last.pt", "after:last.pt", "after:best.pt", "after:metrics.jsonl"])
def test_sigkill_at_an_epoch_file_boundary_then_resume_repairs_every_file(
        boundary, fault_config, trained_run, child_train, tmp_path):
    # The epoch's files are written in the order last.pt, best.pt, metrics.jsonl, val_metrics.json. A kill
    # between two of them used to leave the later ones missing forever (resume trusted last.pt alone).
    cfg = fault_config()
    out = tmp_path / "run"
    killed = child_train([json.dumps(cfg.to_dict()), str(out), "--kill-at-file", boundary])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    written = {p.name for p in out.iterdir()}
    if boundary == "before:last.pt":
        assert "last.pt" not in written and any(n.startswith(".last.pt.") for n in written)  # a stale temporary
    else:
        assert "val_metrics.json" not in written  # the kill really came before the epoch's last file
    train(cfg, out, resume=True, progress=False)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")], "temporary files of the killed run remain"
    assert not (out / LOCK_NAME).exists()
    for name in ("last.pt", "best.pt"):
        _same_weights(out / name, trained_run / name)
    assert _history(out) == _history(trained_run)
    assert _strip(json.loads((out / "val_metrics.json").read_text())) == \
        _strip(json.loads((trained_run / "val_metrics.json").read_text()))


def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(fault_config, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with folder_lock(out):
        result = CliRunner().invoke(main, ["train", "--config", "smoke", "--out", str(out), "--no-progress"])
        assert result.exit_code == 1, result.output
        assert f"in use by process {os.getpid()}" in result.output and "Traceback" not in result.output
        with pytest.raises(FolderLockedError):
            with folder_lock(out):
                pass
    assert sorted(p.name for p in out.iterdir()) == []  # the refused run wrote nothing; the lock is gone


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text("999999999\n")  # what a SIGKILLed holder leaves: a file, no flock
    with folder_lock(tmp_path) as path:
        assert path.read_text().strip() == str(os.getpid())


def test_only_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / ".last.pt.999999999.abc123.tmp"
    alive = tmp_path / f".last.pt.{os.getpid()}.def456.tmp"
    other = tmp_path / "notes.tmp"
    for path in (dead, alive, other):
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert alive.exists() and other.exists()


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
        fault_config, run_copy, monkeypatch):
    before = (run_copy / "last.pt").read_bytes()
    real = engine.inception_loss

    def nan_loss(*args, **kwargs):  # type: ignore[no-untyped-def]
        loss, logits = real(*args, **kwargs)
        return loss * float("nan"), logits

    monkeypatch.setattr(engine, "inception_loss", nan_loss)
    with pytest.raises(engine.TrainingDiverged, match="loss is nan at optimiser step 3"):
        train(fault_config("train.epochs=2"), run_copy, resume=True, progress=False)
    assert (run_copy / "last.pt").read_bytes() == before  # epoch 1's checkpoint, untouched


def test_a_diverging_learning_rate_is_a_message_and_writes_no_checkpoint(fault_cache, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--config", "smoke", "--out", str(out), "--no-progress",
                                       "--set", f"data.cache_dir={fault_cache}", "--set", "optim.lr=1e30",
                                       "--set", "optim.clip_grad_norm=null", "--set", "train.threads=1"])
    assert result.exit_code == 1, result.output
    assert "training diverged" in result.output and "Traceback" not in result.output
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_a_truncated_run_config_never_resumes_with_defaults(damage, run_copy):
    config = run_copy / "config.yaml"
    text = config.read_text()
    config.write_text(text[:len(text) // 2].rsplit("\n", 1)[0] + "\n" if damage == "truncate" else "")
    result = CliRunner().invoke(main, ["train", "--resume", "--out", str(run_copy), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert f"{config} is incomplete" in result.output and "Traceback" not in result.output


def test_a_finished_run_folder_is_refused_before_any_data_is_read(fault_config, run_copy):
    """Without --resume, a folder holding last.pt is refused first: no crop cache is built for nothing."""
    from lowres.checkpoint import CheckpointError

    before = sorted(p.name for p in run_copy.iterdir())
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(fault_config("data.path=/nonexistent/never-read"), run_copy, progress=False)
    assert sorted(p.name for p in run_copy.iterdir()) == before


def test_a_finished_run_whose_best_epoch_is_not_its_last_gets_best_pt_back(fault_config, run_copy, monkeypatch,
                                                                         caplog):
    """best.pt lost (and metrics.jsonl truncated) after the run finished, its best epoch an earlier one:
    --resume rebuilds best.pt from that epoch's periodic copy, kept past train.keep_checkpoints for this."""
    from lowres.training import trainer as trainer_module

    real = trainer_module.evaluate_model

    def worse_later(*args, **kwargs):  # type: ignore[no-untyped-def]
        metrics = real(*args, **kwargs)
        return {**metrics, "top1": metrics["top1"] - 1.0}  # epoch 2 is never better than epoch 1

    monkeypatch.setattr(trainer_module, "evaluate_model", worse_later)
    cfg = fault_config("train.epochs=2", "train.keep_checkpoints=1")
    train(cfg, run_copy, resume=True, progress=False)
    monkeypatch.undo()
    state = load_checkpoint(run_copy / "last.pt")
    assert (state["epoch"], state["best_epoch"]) == (2, 1)
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["epoch_0001.pt", "epoch_0002.pt"]
    best_before = (run_copy / "best.pt").read_bytes()
    history = (run_copy / "metrics.jsonl").read_text()
    (run_copy / "best.pt").unlink()
    (run_copy / "metrics.jsonl").write_text(history.splitlines()[0] + "\n")
    caplog.set_level(logging.INFO, logger="lowres")
    train(cfg, run_copy, resume=True, progress=False)
    messages = [r.getMessage() for r in caplog.records]
    assert (run_copy / "best.pt").read_bytes() == best_before
    assert (run_copy / "metrics.jsonl").read_text() == history
    assert any("repaired" in m and "epoch 1 was the best" in m for m in messages), messages


def _cli_args(cfg_overrides: list[str], out: Path) -> list[str]:
    return ["train", "--config", "smoke", "--out", str(out), "--no-progress",
            *[a for s in cfg_overrides for a in ("--set", s)]]


def test_ctrl_c_saves_a_resumable_checkpoint_and_says_how_to_continue(fault_config, fault_cache, trained_run,
                                                                       tmp_path, monkeypatch):
    """SIGINT inside the first optimiser step: the step finishes, last.pt holds it, exit 130 names the command
    that continues; continuing ends with the weights of the uninterrupted run (bit for bit, deterministic)."""
    from lowres.training import recipe

    sets = [f"data.cache_dir={fault_cache}", "train.threads=1", "train.epochs=1", "train.max_steps_per_epoch=2",
            "data.max_val=16", "eval.bootstrap=10", "train.deterministic=true"]
    assert load_config_dict(sets) == fault_config().to_dict()
    original = recipe.RMSpropTF.step

    def step(self, closure=None):  # type: ignore[no-untyped-def]
        signal.raise_signal(signal.SIGINT)  # what Ctrl-C delivers, in the middle of the step
        return original(self, closure)

    monkeypatch.setattr(recipe.RMSpropTF, "step", step)
    out = tmp_path / "run"
    stopped = CliRunner().invoke(main, _cli_args(sets, out))
    assert stopped.exit_code == 130, stopped.output
    assert f"continue with: lowres train --resume --out {out}" in stopped.output
    assert load_checkpoint(out / "last.pt")["global_step"] == 1
    monkeypatch.setattr(recipe.RMSpropTF, "step", original)
    resumed = CliRunner().invoke(main, ["train", "--resume", "--out", str(out), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    _same_weights(out / "last.pt", trained_run / "last.pt")


def load_config_dict(sets: list[str]) -> dict:
    from lowres.config import load_config

    return load_config("smoke", sets).to_dict()


def test_resume_refuses_a_folder_without_a_run_and_creates_nothing(tmp_path):
    missing = tmp_path / "rnu"  # a mistyped name
    result = CliRunner().invoke(main, ["train", "--resume", "--out", str(missing), "--no-progress"])
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output
    assert not missing.exists()


def test_resume_says_what_it_found_and_what_changed(run_copy):
    finished = CliRunner().invoke(main, ["train", "--resume", "--out", str(run_copy), "--no-progress",
                                         "--set", "eval.bootstrap=20"])
    assert finished.exit_code == 0, finished.output
    assert "resumed from" in finished.output and "is finished: 1 of 1 epoch(s) done" in finished.output
    assert "eval.bootstrap 10 -> 20" in finished.output


def test_another_split_s_detections_name_the_key_and_the_split(fault_cache, tmp_path):
    """The val split's detections given for training: the bridge's reason code, the split, and the config key
    that chose the file (with the per-split pattern to use instead)."""
    val_file = "detections/synthetic_val.json"  # relative: found in the (synthetic) data folder
    result = CliRunner().invoke(main, _cli_args([f"data.cache_dir={fault_cache}", "data.boxes=detections",
                                                 f"data.detections_file={val_file}"], tmp_path / "run"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "[unknown_image]" in result.output and "split 'train'" in result.output
    assert f"data.detections_file = '{val_file}'" in result.output and "{split}" in result.output


def test_a_run_failing_before_training_leaves_no_folder(fault_cache, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, _cli_args([f"data.cache_dir={fault_cache}", "data.boxes=detections",
                                                 f"data.detections_file={tmp_path / 'missing.json'}"], out))
    assert result.exit_code == 1 and "missing.json" in result.output and "Traceback" not in result.output
    assert not out.exists()
