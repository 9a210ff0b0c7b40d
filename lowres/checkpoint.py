"""The checkpoint file: its schema, atomic writes, ``weights_only`` reads and an integrity checksum.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so ``torch.load(path,
weights_only=True)`` reads it without unpickling arbitrary code: the config and category map are stored as
plain dicts, RNG states as lists/tensors. What it holds is :data:`SCHEMA`, one :class:`Field` per key, each
with the use that needs it: every checkpoint has ``version``, ``model`` and ``config``; turning it into a
model also needs ``category_map``; resuming a training run needs the optimiser, scheduler, counters, RNG and
sampler state too. Both writing and reading check the fields against the schema, and a wrong or missing one
is a :class:`CheckpointError` naming the field and the file, not a KeyError at some later line.

Writes go to a temporary file in the same folder, renamed over the old one (``os.replace`` is atomic on
POSIX), so a SIGKILL at any moment leaves either the old or the new checkpoint, never half of one.

Integrity: every checkpoint stores ``checksum``, a SHA-256 over its whole content (every tensor's dtype, shape
and bytes, every number and string, in key order), verified on every load. A flipped byte in the file either
breaks the archive or changes a value; both are reported as a corrupted checkpoint instead of training or
evaluating on damaged weights. (Checkpoints of version 1, written before checksums existed, load unverified.)
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ._atomic import atomic_write_bytes
from .errors import CheckpointError, NotACheckpointError

__all__ = ["CheckpointError", "CHECKPOINT_VERSION", "Field", "SCHEMA", "PURPOSES", "check_state", "state_checksum",
           "save_checkpoint", "load_checkpoint"]

CHECKPOINT_VERSION = 2  # 1: no checksum; 2: with a checksum


@dataclass(frozen=True)
class Field:
    """One key of a checkpoint: the types its value may have, and the use that requires it (``read``: every
    checkpoint; ``model``: building the model; ``resume``: continuing training; ``optional``: never)."""

    name: str
    types: tuple[type, ...]
    needed_for: str
    doc: str


_NONE = type(None)
SCHEMA: tuple[Field, ...] = (
    Field("version", (int,), "read", "format version (CHECKPOINT_VERSION when written)"),
    Field("model", (dict,), "read", "the trained weights' state dict"),
    Field("ema", (dict, _NONE), "optional", "ModelEma.state_dict() ({'module', 'num_updates', 'decay'}), None without EMA"),
    Field("optimizer", (dict,), "resume", "the optimiser's state dict"),
    Field("scheduler", (dict,), "resume", "EpochLR.state_dict()"),
    Field("epoch", (int,), "resume", "epochs finished"),
    Field("global_step", (int,), "resume", "optimiser steps done"),
    Field("totals", (dict, _NONE), "resume", "the unfinished epoch's EpochTotals, None at an epoch's end"),
    Field("rng", (list,), "resume", "capture_rng_state() of every rank"),
    Field("sampler", (dict,), "resume", "ResumableSampler seed, world size and start position"),
    Field("best_top1", (float, int), "resume", "best validation top-1 so far (-1 before any)"),
    Field("best_epoch", (int,), "optional", "epoch of best_top1 (checkpoints from before it lack it)"),
    Field("history", (list,), "resume", "one metrics.jsonl line per finished epoch"),
    Field("last_val", (dict, _NONE), "optional", "the last full validation metrics (val_metrics.json)"),
    Field("config", (dict,), "read", "the resolved Config.to_dict(): architecture, crops, recipe"),
    Field("category_map", (dict,), "model", "CategoryMap.to_dict(): what each output means"),
    Field("stem", (int,), "optional", "model.stem, for a reader that does not parse the config"),
    Field("num_classes", (int,), "optional", "outputs of the model, likewise"),
    Field("provenance", (list,), "optional", "one lowres.provenance record per invocation"),
    Field("checksum", (str,), "optional", "state_checksum of everything else (version >= 2)"),
)
_FIELDS = {f.name: f for f in SCHEMA}
PURPOSES = {"read": ("read",), "model": ("read", "model"), "resume": ("read", "model", "resume")}
_PURPOSE_TEXT = {"read": "be read", "model": "build its model", "resume": "resume training"}


def check_state(state: Any, path: str | Path, purpose: str = "read", *, writing: bool = False) -> None:
    """Raise :class:`CheckpointError` naming ``path`` and the field when ``state`` does not fit :data:`SCHEMA`
    for ``purpose`` (``read``, ``model`` or ``resume``): a required field missing, a field of the wrong type,
    an empty category map, an EMA without weights; and, when ``writing``, a key the schema does not know."""
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a lowres training checkpoint (no model/config entries)")
    for field in SCHEMA:
        if field.name not in state:
            if field.needed_for in PURPOSES[purpose] and not (field.name == "version" and writing):
                raise CheckpointError(f"{path}: checkpoint field {field.name!r} ({field.doc}) is missing: it is "
                                      f"needed to {_PURPOSE_TEXT[purpose]}")
            continue
        value = state[field.name]
        if not isinstance(value, field.types) or isinstance(value, bool):
            allowed = " or ".join("None" if t is _NONE else t.__name__ for t in field.types)
            raise CheckpointError(f"{path}: checkpoint field {field.name!r} is a {type(value).__name__}, "
                                  f"expected {allowed} ({field.doc})")
    if isinstance(state.get("ema"), dict) and not isinstance(state["ema"].get("module"), dict):
        raise CheckpointError(f"{path}: checkpoint field 'ema' has no 'module' weights")
    if "model" in PURPOSES[purpose] and not state["category_map"]:
        raise CheckpointError(f"{path} has no category map: it cannot say what its outputs mean")
    if isinstance(state.get("version"), int) and state["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state['version']} was written by a newer lowres "
                              f"(this one reads up to {CHECKPOINT_VERSION})")
    unknown = sorted(set(state) - set(_FIELDS))
    if writing and unknown:
        raise CheckpointError(f"{path}: checkpoint fields {unknown} are not in the schema (lowres.checkpoint.SCHEMA)")


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
    """Check ``state`` against the schema and write it with its version and checksum to ``path`` atomically
    (serialised in memory, then temporary file, fsync, ``os.replace``): a full disk is an ``OSError`` naming
    ``path``, never a half-written file."""
    check_state(state, path, writing=True)
    full = {"version": CHECKPOINT_VERSION, **{k: v for k, v in state.items() if k not in ("version", "checksum")}}
    full["checksum"] = state_checksum(full)
    buffer = io.BytesIO()
    torch.save(full, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def _read(path: Path, map_location: str | torch.device) -> Any:
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a checkpoint (an interrupted copy?)")
    if not zipfile.is_zipfile(path):
        raise NotACheckpointError(f"{path} is not a lowres checkpoint: not a PyTorch archive ({size} bytes; a text "
                              "file, another format, or a corrupted checkpoint)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # damaged archive, or foreign content weights_only refuses (a TorchScript archive)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotACheckpointError(f"{path} is corrupted or not a lowres checkpoint: {detail[:300]}") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *, purpose: str = "read"
                    ) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``, verify its checksum and check the fields ``purpose``
    (``read``, ``model`` or ``resume``) needs; a clear error when it is missing, empty, foreign, damaged or
    lacks one of them."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    state = _read(path, map_location)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise NotACheckpointError(f"{path} is not a lowres training checkpoint (no model/config entries)")
    if "checksum" in state or state.get("version") != 1:  # only version 1 predates checksums
        stored = state.get("checksum")
        if stored != state_checksum({k: v for k, v in state.items() if k != "checksum"}):
            raise CheckpointError(f"{path} is corrupted: its content does not match its checksum (damaged on disk "
                                  "or edited); use another checkpoint (best.pt, an earlier copy)")
    check_state(state, path, purpose)
    return state
