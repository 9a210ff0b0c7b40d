"""Checkpoint files: schema, atomic writes, RNG round trips, weights_only loading, compatibility errors, sampler
state, and the one road from a checkpoint written by `lowres train` to a ready model."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lowres.builder import load_model
from lowres.checkpoint import SCHEMA, CheckpointError, load_checkpoint, save_checkpoint, state_checksum
from lowres.training.state import capture_rng_state, check_compatible, restore_rng_state
from lowres.training.distributed import DistEnv, ResumableSampler


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_round_trip_through_a_weights_only_file(tmp_path):
    save_checkpoint({"model": {}, "config": {}, "rng": [capture_rng_state()]}, tmp_path / "c.pt")
    expected = _draws()
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"][0])
    assert _draws() == expected


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "config": {"a": 1}}, path)
    with pytest.raises(Exception):
        save_checkpoint({"model": {}, "config": {}, "history": [lambda: None]}, path)  # not picklable
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_foreign_or_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a lowres training checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_compatibility_names_each_difference():
    old = {"config": {"model": {"stem": 79, "width": 0.5, "min_depth": 16, "aux_logits": True}},
           "category_map": {"category_ids": [1, 2], "names": ["a", "b"], "background": False}}
    new_cfg = {"model": {"stem": 151, "width": 0.5, "min_depth": 16, "aux_logits": True}}
    with pytest.raises(CheckpointError) as err:
        check_compatible(old, new_cfg, {"category_ids": [1, 3], "names": ["a", "c"], "background": False})
    assert "model.stem: checkpoint 79, this run 151" in str(err.value)
    assert "only in checkpoint: ['b'], only in this run: ['c']" in str(err.value)
    check_compatible(old, old["config"], old["category_map"])  # identical: no error


def test_resumable_sampler_skips_consumed_samples_and_shards():
    data = list(range(10))
    full = list(ResumableSampler(data, env=DistEnv(), seed=3))
    sampler = ResumableSampler(data, env=DistEnv(), seed=3)
    sampler.set_position(0, 4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    ranks = [list(ResumableSampler(data, env=DistEnv(rank=r, world_size=2), seed=3)) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == data and sampler.state_dict()["start"] == 4
    sampler.set_position(1, 0)
    assert list(sampler) != full  # another epoch, another order


def test_a_trained_checkpoint_holds_every_schema_field_with_its_type(trained_checkpoint):
    state = torch.load(trained_checkpoint, weights_only=True)
    assert set(state) == {f.name for f in SCHEMA}  # nothing written outside the schema, nothing left out
    for field in SCHEMA:
        assert isinstance(state[field.name], field.types), field.name
    assert state["checksum"] == state_checksum({k: v for k, v in state.items() if k != "checksum"})
    load_checkpoint(trained_checkpoint, purpose="resume")


def _resave_without_checks(state: dict, path) -> None:
    """Write a state as a damaged or foreign writer would (save_checkpoint refuses it), checksum kept valid."""
    state = {k: v for k, v in state.items() if k != "checksum"}
    torch.save({**state, "checksum": state_checksum(state)}, path)


@pytest.mark.parametrize("purpose, field, value, message", [
    ("resume", "optimizer", None, "field 'optimizer' .* is missing: it is needed to resume training"),
    ("model", "category_map", None, "field 'category_map' .* is missing: it is needed to build its model"),
    ("read", "epoch", "3", "field 'epoch' is a str, expected int"),
    ("model", "ema", {"num_updates": 1}, "field 'ema' has no 'module' weights"),
    ("model", "category_map", {}, "has no category map"),
    ("read", "version", 99, "version 99 was written by a newer lowres"),
])
def test_schema_errors_name_the_field_and_the_file(trained_checkpoint, tmp_path, purpose, field, value, message):
    state = torch.load(trained_checkpoint, weights_only=True)
    if value is None:
        del state[field]
    else:
        state[field] = value
    path = tmp_path / "edited.pt"
    _resave_without_checks(state, path)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path, purpose=purpose)
    assert str(path) in str(err.value)


def test_a_writer_cannot_leave_the_schema(tmp_path):
    with pytest.raises(CheckpointError, match=r"fields \['extra'\] are not in the schema"):
        save_checkpoint({"model": {}, "config": {}, "extra": 1}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="field 'global_step' is a float, expected int"):
        save_checkpoint({"model": {}, "config": {}, "global_step": 2.0}, tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()


def test_load_model_is_the_trained_model_ready_to_use(trained_checkpoint):
    state = torch.load(trained_checkpoint, weights_only=True)
    loaded = load_model(trained_checkpoint)
    assert loaded.weights == "ema" and not loaded.model.training and loaded.epoch == 1 and loaded.global_step == 2
    assert (loaded.crop_size, loaded.input_size, loaded.model.stem) == (79, 79, 79)
    assert loaded.category_map.num_classes == loaded.model.num_classes == state["num_classes"]
    assert loaded.geometry.context == pytest.approx(state["config"]["crop"]["context"])
    assert torch.equal(loaded.model.fc.weight, state["ema"]["module"]["fc.weight"])
    raw = load_model(trained_checkpoint, use_ema=False, dtype=torch.bfloat16, channels_last=True)
    assert raw.weights == "model" and raw.model.fc.weight.dtype == torch.bfloat16
    assert torch.equal(raw.model.fc.weight, state["model"]["fc.weight"].to(torch.bfloat16))
    assert not torch.equal(state["model"]["fc.weight"], state["ema"]["module"]["fc.weight"])
    assert raw.model.Conv2d_1a_3x3.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_load_model_names_the_file_whose_weights_do_not_fit(trained_checkpoint, tmp_path):
    state = torch.load(trained_checkpoint, weights_only=True)
    state["config"]["model"]["width"] = 0.25  # another network than the weights
    path = tmp_path / "other-width.pt"
    _resave_without_checks(state, path)
    with pytest.raises(CheckpointError, match="other-width.pt: its weights do not fit the model"):
        load_model(path)


def test_older_checkpoints_still_load(trained_checkpoint, tmp_path):
    """Version 1 (no checksum) and the fields added since (best_epoch, last_val, provenance) absent: the
    model loads, and so does a resume, which needs none of them."""
    state = torch.load(trained_checkpoint, weights_only=True)
    old = {k: v for k, v in state.items() if k not in ("checksum", "best_epoch", "last_val", "provenance")}
    torch.save({**old, "version": 1}, tmp_path / "v1.pt")
    assert load_checkpoint(tmp_path / "v1.pt", purpose="resume")["version"] == 1
    loaded = load_model(tmp_path / "v1.pt")
    assert loaded.provenance == [] and torch.equal(loaded.model.fc.weight, state["ema"]["module"]["fc.weight"])


def test_start_weights_from_a_lowres_checkpoint_go_through_its_reader(trained_checkpoint, tmp_path):
    """model.weights naming a lowres checkpoint: lowres.checkpoint reads it (checksum verified), so an edited
    tensor is refused instead of silently becoming the start of a run; its EMA weights are what is loaded."""
    from lowres.builder import build_model_from_config
    from lowres.config import Config

    state = load_checkpoint(trained_checkpoint)
    model_cfg = {**state["config"]["model"], "weights": str(trained_checkpoint)}
    cfg = Config.from_dict({**state["config"], "model": model_cfg})
    model = build_model_from_config(cfg, state["num_classes"])
    name = "Mixed_7c.branch_pool.conv.weight"
    assert torch.equal(model.state_dict()[name], state["ema"]["module"][name])
    raw = torch.load(trained_checkpoint, weights_only=True)
    raw["ema"]["module"][name] = raw["ema"]["module"][name] + 1.0  # edited, checksum left as it was
    torch.save(raw, tmp_path / "edited.pt")
    cfg.model.weights = str(tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        build_model_from_config(cfg, state["num_classes"])
