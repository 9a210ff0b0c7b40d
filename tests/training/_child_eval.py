"""Child process for the distributed evaluation test (not collected: no test_ prefix).

    python tests/training/_child_eval.py CONFIG_JSON OUT_DIR

Every rank builds the same seeded model, evaluates its shard of the validation split and writes the metrics
it ends with, plus how many times predictions were gathered, to OUT_DIR/rank{RANK}.json.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from lowres.config import Config
from lowres.training import evaluate as evaluate_mod
from lowres.training.data import load_split_data, resolve_data_dir
from lowres.training.distributed import cleanup_distributed, setup_distributed
from lowres.builder import build_model_from_config


def evaluate_seeded(cfg: Config, env) -> dict:  # type: ignore[no-untyped-def]
    """The metrics of a seeded untrained model on the config's validation split (shared with the test)."""
    data_dir = resolve_data_dir(cfg, env=env)
    split = load_split_data(data_dir, cfg.data.val_split, cfg, train=False, env=env)
    torch.manual_seed(0)
    model = build_model_from_config(cfg, split.category_map.num_classes).eval()
    return evaluate_mod.evaluate_model(model, split, cfg, env.device, env)


def main() -> None:
    cfg, out = Config.from_dict(json.loads(sys.argv[1]), source="test"), Path(sys.argv[2])
    gathers = [0]
    real = evaluate_mod.all_gather_object

    def counting(obj):  # type: ignore[no-untyped-def]
        gathers[0] += 1
        return real(obj)

    evaluate_mod.all_gather_object = counting
    env = setup_distributed("cpu")
    try:
        metrics = evaluate_seeded(cfg, env)
    finally:
        cleanup_distributed(env)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{env.rank}.json").write_text(json.dumps({"metrics": metrics, "gathers": gathers[0]}, default=str))


if __name__ == "__main__":
    main()
