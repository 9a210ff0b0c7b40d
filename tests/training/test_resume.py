"""A run SIGKILLed mid-epoch and resumed ends with exactly the weights of an uninterrupted run."""
from __future__ import annotations

import json
import signal

import torch

from lowres.checkpoint import load_checkpoint

TIMING = {"images_per_s", "seconds", "val_seconds"}


def _assert_same_tensors(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for key in a:
        if isinstance(a[key], dict):
            _assert_same_tensors(a[key], b[key], f"{where}.{key}")
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), f"{where}.{key} differs"  # tolerance: exact (bitwise)
        else:
            assert a[key] == b[key], f"{where}.{key}: {a[key]} != {b[key]}"


def test_sigkill_mid_epoch_then_resume_is_exact(tiny_config, run_python, child_train, tmp_path):
    # 2 epochs x 4 steps; checkpoints at epoch ends and every 3 steps (3, 6). The kill comes inside step 7
    # (epoch 2, its 3rd step): the resumed run restarts from step 6 and must redo step 7 identically.
    cfg = tiny_config("train.deterministic=true", "train.checkpoint_every=3", "data.max_val=16",
                      "eval.bootstrap=10", "data.num_workers=0")
    config = json.dumps(cfg.to_dict())
    run_python([child_train, config, str(tmp_path / "straight")])
    killed = run_python([child_train, config, str(tmp_path / "killed"), "--kill-at", "7"], check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    mid = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert (mid["epoch"], mid["global_step"], mid["totals"]["steps"]) == (1, 6, 2)  # mid-epoch checkpoint
    run_python([child_train, config, str(tmp_path / "killed"), "--resume"])
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "killed" / "last.pt")
    for part in ("model", "ema", "optimizer", "scheduler"):
        _assert_same_tensors(a[part], b[part], part)
    assert a["global_step"] == b["global_step"] == 8
    strip = [{k: v for k, v in line.items() if k not in TIMING} for line in a["history"]]
    assert strip == [{k: v for k, v in line.items() if k not in TIMING} for line in b["history"]]
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # no duplicated epoch lines
