"""Checkpoints: atomic writes, exact resume, ``weights_only`` loading.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so ``torch.load(path,
weights_only=True)`` reads it without unpickling arbitrary code: the config and category map are stored as
plain dicts, RNG states as lists/tensors. It is written to a temporary file in the same folder and renamed
over the old one (``os.replace`` is atomic on POSIX), so a SIGKILL at any moment leaves either the old or
the new checkpoint, never half of one.

Integrity: every checkpoint stores ``checksum``, a SHA-256 over its whole content (every tensor's dtype, shape
and bytes, every number and string, in key order), verified on every load. A flipped byte in the file either
breaks the archive or changes a value; both are reported as a corrupted checkpoint instead of training or
evaluating on damaged weights. (Checkpoints of version 1, written before checksums existed, load unverified.)
"""
from __future__ import annotations

import hashlib
import io
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import atomic_write_bytes

__all__ = ["CheckpointError", "save_checkpoint", "save_periodic", "load_checkpoint", "capture_rng_state",
           "restore_rng_state",
           "check_compatible", "state_checksum", "require_category_map", "CHECKPOINT_VERSION"]

CHECKPOINT_VERSION = 2  # 2: with a checksum
COMPATIBILITY_KEYS = ("model.stem", "model.width", "model.min_depth", "model.aux_logits")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or incompatible with the requested run."""


def state_checksum(state: Any) -> str:
    """SHA-256 over ``state``'s structure and values (tensors by dtype, shape and bytes), in key order."""
    digest = hashlib.sha256()

    def visit(node: Any) -> None:
        if isinstance(node, torch.Tensor):
            t = node.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(node, dict):
            digest.update(f"D{len(node)}".encode())
            for key in node:
                digest.update(f"K{key!r}".encode())
                visit(node[key])
        elif isinstance(node, (list, tuple)):
            digest.update(f"L{len(node)}".encode())
            for item in node:
                visit(item)
        else:
            digest.update(f"V{type(node).__name__}:{node!r}".encode())

    visit(state)
    return digest.hexdigest()


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` with its checksum to ``path`` atomically (serialised in memory, then temporary file,
    fsync, ``os.replace``): a full disk is an ``OSError`` naming ``path``, never a half-written file."""
    full = {"version": CHECKPOINT_VERSION, **{k: v for k, v in state.items() if k != "checksum"}}
    full["checksum"] = state_checksum(full)
    buffer = io.BytesIO()
    torch.save(full, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def _read(path: Path, map_location: str | torch.device) -> Any:
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a checkpoint (an interrupted copy?)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a lowres checkpoint: not a PyTorch archive ({size} bytes; a text "
                              "file, another format, or a corrupted checkpoint)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # damaged archive, or foreign content weights_only refuses
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is corrupted or not a lowres checkpoint: {detail[:300]}") from None


def save_periodic(state: dict[str, Any], out_dir: str | Path, epoch: int, *, keep: int) -> Path | None:
    """Write ``out_dir/checkpoints/epoch_{epoch:04d}.pt`` and delete all but the newest ``keep`` of them
    (detectron2's ``PeriodicCheckpointer(max_to_keep)``): a history to go back to without filling the disk.
    ``keep=0`` writes none (and removes none: old files from another setting stay)."""
    if keep <= 0:
        return None
    folder = Path(out_dir) / "checkpoints"
    path = save_checkpoint(state, folder / f"epoch_{epoch:04d}.pt")
    periodic = sorted(folder.glob("epoch_*.pt"))
    for old in periodic[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and verify its checksum; a clear error when it is
    missing, empty, foreign, damaged or lacks what every lowres checkpoint has."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    state = _read(path, map_location)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a lowres training checkpoint (no model/config entries)")
    if "checksum" in state or state.get("version") != 1:  # only version 1 predates checksums
        stored = state.get("checksum")
        if stored != state_checksum({k: v for k, v in state.items() if k != "checksum"}):
            raise CheckpointError(f"{path} is corrupted: its content does not match its checksum (damaged on disk "
                                  "or edited); use another checkpoint (best.pt, an earlier copy)")
    return state


def require_category_map(state: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The checkpoint's category map; without one its outputs mean nothing (an error naming the file)."""
    if not isinstance(state.get("category_map"), dict) or not state["category_map"]:
        raise CheckpointError(f"{path} has no category map: it cannot say what its outputs mean")
    return state["category_map"]


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
