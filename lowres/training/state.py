"""What resuming a training run needs beyond the checkpoint file (:mod:`lowres.checkpoint`, the only module
that reads and writes one): RNG states in ``weights_only``-loadable form, the periodic
``checkpoints/epoch_NNNN.pt`` history, and the check that a checkpoint belongs to the run that continues it.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import CheckpointError, save_checkpoint
from ..config import Config
from ..config_checks import ARCHITECTURE, keys_of_kind

__all__ = ["save_periodic", "periodic_path", "capture_rng_state", "restore_rng_state", "check_compatible"]

COMPATIBILITY_KEYS = keys_of_kind(Config, ARCHITECTURE)  # declared with the fields (lowres/config.py)


def periodic_path(out_dir: str | Path, epoch: int) -> Path:
    """``out_dir/checkpoints/epoch_NNNN.pt``: the copy of the checkpoint written at the end of ``epoch``."""
    return Path(out_dir) / "checkpoints" / f"epoch_{epoch:04d}.pt"


def save_periodic(state: dict[str, Any], out_dir: str | Path, epoch: int, *, keep: int,
                  best_epoch: int | None = None) -> Path | None:
    """Write ``out_dir/checkpoints/epoch_{epoch:04d}.pt`` and delete all but the newest ``keep`` of them
    (detectron2's ``PeriodicCheckpointer(max_to_keep)``): a history to go back to without filling the disk.
    ``best_epoch``'s copy is kept too: it is what a resume rebuilds a lost ``best.pt`` from once ``last.pt``
    has moved past the best epoch. ``keep=0`` writes none (and removes none: old files from another setting stay)."""
    if keep <= 0:
        return None
    path = save_checkpoint(state, periodic_path(out_dir, epoch))
    protected = periodic_path(out_dir, best_epoch) if best_epoch else None
    periodic = sorted(path.parent.glob("epoch_*.pt"))
    for old in periodic[:-keep]:
        if old != protected:
            old.unlink(missing_ok=True)
    return path


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states in weights_only-loadable form."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    np_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def check_compatible(ckpt: dict[str, Any], config: dict[str, Any], category_map: dict[str, Any] | None,
                     *, path: str | Path = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming every difference that makes resuming meaningless:
    another stem, width, min_depth, aux head, or class set (names and order of labels)."""
    problems = []
    for key in COMPATIBILITY_KEYS:
        old, new = _get(ckpt["config"], key), _get(config, key)
        if old != new:
            problems.append(f"{key}: checkpoint {old!r}, this run {new!r}")
    old_map, new_map = ckpt.get("category_map"), category_map
    if old_map is not None and new_map is not None and old_map != new_map:
        old_names, new_names = list(old_map.get("names", [])), list(new_map.get("names", []))
        missing, extra = sorted(set(old_names) - set(new_names))[:5], sorted(set(new_names) - set(old_names))[:5]
        detail = (f"only in checkpoint: {missing}, only in this run: {extra}" if missing or extra
                  else f"background class {old_map.get('background')} -> {new_map.get('background')}, or ids/order")
        problems.append(f"class set: checkpoint has {len(old_names)} categories, this run {len(new_names)} ({detail})")
    if problems:
        raise CheckpointError(f"cannot resume from {path}: " + "; ".join(problems))
