"""Child process for the resume and DDP tests (not collected: no test_ prefix).

    python tests/training/_child_train.py CONFIG_JSON OUT_DIR [--resume] [--kill-at N] [--kill-at-file WHEN:NAME]
                                          [--dump DIR]

``--kill-at N`` SIGKILLs this process from inside the N-th optimiser step (before its update), a real
SIGKILL at an arbitrary point between two checkpoints. ``--kill-at-file before:last.pt`` SIGKILLs it at
the first atomic write of that file, with the temporary file written but not yet renamed into place;
``after:best.pt`` right after the first rename (the file is in place, the files after it are not):
the file boundaries of an epoch (tests/faults). ``--dump DIR`` saves this rank's final model and EMA
state dicts to DIR/rank{RANK}.pt so the test can compare ranks.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch

from lowres.config import Config
from lowres.training import recipe
from lowres.training.run import train


def _kill_at(n: int) -> None:
    original = recipe.RMSpropTF.step
    count = [0]

    def step(self, closure=None):  # type: ignore[no-untyped-def]
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, closure)

    recipe.RMSpropTF.step = step  # type: ignore[method-assign]


def _kill_at_file(spec: str) -> None:
    when, name = spec.split(":", 1)
    original = os.replace

    def replace(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        hit = Path(dst).name == name
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(src, dst, *args, **kwargs)
        if hit and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    os.replace = replace  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--kill-at-file", default=None)
    parser.add_argument("--dump", type=Path, default=None)
    args = parser.parse_args()
    if args.kill_at:
        _kill_at(args.kill_at)
    if args.kill_at_file:
        _kill_at_file(args.kill_at_file)
    cfg = Config.from_dict(json.loads(args.config))
    summary = train(cfg, args.out, resume=args.resume, progress=False, return_model=True)
    if args.dump is not None:
        args.dump.mkdir(parents=True, exist_ok=True)
        torch.save({"model": summary["model"].state_dict(), "ema": summary["ema_model"].state_dict()},
                   args.dump / f"rank{os.environ.get('RANK', '0')}.pt")


if __name__ == "__main__":
    main()
