"""The smoke config trains every stem on coco-mini; the loss goes down on a repeated batch."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from click.testing import CliRunner

from lowres.builder import build_model_from_config
from lowres.checkpoint import CheckpointError, load_checkpoint
from lowres.cli import main
from lowres.training.data import load_split_data
from lowres.device_transforms import model_inputs
from lowres.training.distributed import DistEnv
from lowres.training.recipe import build_optimizer, inception_loss
from lowres.training.run import _check_before_data, check_run_folder, train


EPOCH_KEYS = {"epoch", "step", "train_loss", "train_acc", "lr", "images_per_s", "seconds", "val_top1", "val_top5"}


@pytest.mark.parametrize("stem", [79, 151, 299])
def test_smoke_trains_each_stem_on_coco_mini(stem, coco_mini, tiny_config, tmp_path):
    cfg = tiny_config("train.epochs=1", "data.max_train=16", "data.max_val=16", "eval.bootstrap=20",
                      stem=stem, data=coco_mini)
    summary = train(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "val_metrics.json"} <= {p.name for p in run.iterdir()}
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and EPOCH_KEYS <= set(lines[0]) and lines[0]["step"] == 2
    assert yaml.safe_load((run / "config.yaml").read_text()) == cfg.to_dict()
    state = load_checkpoint(run / "last.pt")  # weights_only=True
    assert state["config"] == cfg.to_dict() and state["category_map"]["names"][0] == "person"
    assert {"model", "ema", "optimizer", "scheduler", "rng", "epoch", "global_step"} <= set(state)
    assert summary["val"]["count"] == 16 and 0.0 <= summary["final"]["val_top1"] <= 1.0


@pytest.mark.parametrize("stem", [79, 151, 299])
def test_loss_goes_down_on_a_repeated_batch(stem, coco_mini, tiny_config):
    cfg = tiny_config("data.max_val=8", "model.dropout=0.0", stem=stem, data=coco_mini)
    split = load_split_data(coco_mini, "val", cfg, train=False, env=DistEnv())
    batch = next(iter(torch.utils.data.DataLoader(split.dataset, batch_size=8)))
    images, labels = model_inputs(batch, torch.device("cpu"))  # uint8 crops -> normalised inputs
    model = build_model_from_config(cfg, split.category_map.num_classes).train()
    opt = build_optimizer(model, cfg.optim)  # the paper's TF-RMSProp at lr 0.045
    losses = []
    for _ in range(8):
        loss, _ = inception_loss(model(images), labels, label_smoothing=0.1, aux_weight=0.4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < losses[0] * 0.8, losses


def test_cli_train_on_synthetic_then_resume_checks(cache_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = ["train", "--stem", "79", "--config", "smoke", "--set", f"data.cache_dir={cache_root}",
            "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2", "--set", "eval.bootstrap=10",
            "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "synthetic set" in result.output  # the printed note when no --data is given
    assert json.loads(result.output[result.output.index("{"):])["epochs"] == 1
    again = CliRunner().invoke(main, args)  # same --out without --resume: refused
    assert again.exit_code != 0 and "--resume" in again.output
    finished = CliRunner().invoke(main, ["train", "--out", str(out), "--resume", "--no-progress"])
    assert finished.exit_code == 0, finished.output  # config.yaml of the run is reused; nothing left to train

    def no_data_work(*args, **kwargs):
        raise AssertionError("data read before the cheap checks")

    monkeypatch.setattr("lowres.training.run.load_split_data", no_data_work)  # refused before any crop caching
    other = CliRunner().invoke(main, [*args[:2], "151", *args[3:], "--resume", "--set", "model.width=0.25"])
    assert other.exit_code != 0
    assert "model.stem: checkpoint 79, this run 151" in other.output and "model.width" in other.output
    not_weights = tmp_path / "README.md"
    not_weights.write_text("# not weights\n")
    bad = CliRunner().invoke(main, [*args[:-3], "--set", f"model.weights={not_weights}",
                                    "--out", str(tmp_path / "weights"), "--no-progress"])
    assert bad.exit_code == 1 and "README.md is not a weights file" in bad.output, bad.output
    assert not (tmp_path / "weights").exists()


def test_incompatible_class_set_is_an_error(tiny_config, tmp_path, coco_mini):
    cfg = tiny_config("train.epochs=1", "train.max_steps_per_epoch=1", "eval.bootstrap=10")
    train(cfg, tmp_path / "run", progress=False)
    coco = tiny_config("train.epochs=1", data=coco_mini)
    with pytest.raises(CheckpointError, match="class set: checkpoint has 8 categories, this run 80"):
        train(coco, tmp_path / "run", resume=True, progress=False)


def test_bf16_channels_last_and_start_weights(tiny_config, tmp_path):
    from lowres import build_model

    donor = build_model(79, 1000, width=0.125, min_depth=8)  # stands in for torchvision/timm ImageNet weights
    torch.save(donor.state_dict(), tmp_path / "donor.pt")
    cfg = tiny_config("train.epochs=1", "train.max_steps_per_epoch=1", "train.precision=bf16",
                      "model.channels_last=true", f"model.weights={tmp_path / 'donor.pt'}", "eval.bootstrap=10")
    model = build_model_from_config(cfg, 8)
    assert torch.equal(model.Mixed_7c.branch1x1.conv.weight, donor.Mixed_7c.branch1x1.conv.weight)
    assert model.fc.out_features == 8  # the 1000-class classifier is skipped, not loaded
    summary = train(cfg, tmp_path / "run", progress=False)
    assert torch.isfinite(torch.tensor(summary["final"]["train_loss"]))


@pytest.mark.parametrize("resume, has_run, outcome", [
    (True, "none", "refuse_empty"), (True, "config", "note"), ("auto", "none", "quiet"), (False, "none", "quiet"),
    ("auto", "config", "quiet"), (False, "last", "refuse")])
def test_resume_modes(tmp_path, resume, has_run, outcome, caplog):
    """``resume=True`` refuses a folder that holds no run (a mistyped name) and says that a run stopped before
    its first checkpoint starts over; ``"auto"`` (the bench) starts quietly: a caller that always resumes
    learns it from the argument, not by filtering the note's wording. (Restoring: tests/training/test_resume.py.)"""
    import logging
    from types import SimpleNamespace

    if has_run == "last":
        (tmp_path / "last.pt").write_bytes(b"")
    if has_run == "config":
        (tmp_path / "config.yaml").write_text("{}")
    if outcome.startswith("refuse"):
        with pytest.raises(CheckpointError, match="already holds a run" if outcome == "refuse" else "holds no run"):
            check_run_folder(tmp_path, resume)
        return
    caplog.set_level(logging.INFO, logger="lowres")
    check_run_folder(tmp_path, resume)
    no_weights = SimpleNamespace(model=SimpleNamespace(weights=None))
    assert _check_before_data(no_weights, tmp_path, resume, None) is None  # no last.pt: a fresh start
    notes = [r.getMessage() for r in caplog.records]
    assert (len(notes) == 1 and "no checkpoint yet" in notes[0]) == (outcome == "note"), notes