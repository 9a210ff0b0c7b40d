"""Checkpoint files: atomic writes, RNG round trips, weights_only loading, compatibility errors, sampler state."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lowres.training.checkpoint import (CheckpointError, capture_rng_state, check_compatible, load_checkpoint,
                                        restore_rng_state, save_checkpoint)
from lowres.training.distributed import DistEnv, ResumableSampler


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_round_trip_through_a_weights_only_file(tmp_path):
    save_checkpoint({"model": {}, "config": {}, "rng": capture_rng_state()}, tmp_path / "c.pt")
    expected = _draws()
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert _draws() == expected


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "config": {"a": 1}}, path)
    with pytest.raises(Exception):
        save_checkpoint({"model": {}, "config": {}, "bad": lambda: None}, path)  # not picklable
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
