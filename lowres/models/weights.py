"""Load torchvision or timm Inception-v3 weights, or a ``lowres train`` checkpoint, into any of the three stems.

Stride and pooling change no parameter shape, so an ImageNet state dict fits the 79, 151 and 299 stems
alike. Keys must match exactly, except for what the source cannot have: the "BN-auxiliary" layer
``AuxLogits.fc_bn`` (torchvision and timm have a plain auxiliary fc) and, for sources built without the
auxiliary head (timm's default), the whole ``AuxLogits``. Those keep their initial values and are reported.
"""
from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

# Wrappers that training scripts put around a state dict (timm, torchvision references, lightning).
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema")
_CLASSIFIER_PREFIXES = ("fc.", "AuxLogits.fc.", "AuxLogits.fc_bn.")


@dataclass
class LoadReport:
    """What ``load_inception_v3_weights`` did, key by key."""

    loaded: list[str] = field(default_factory=list)
    kept_initial: list[str] = field(default_factory=list)   # absent from the source by construction
    skipped_classifier: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors"]
        if self.kept_initial:
            parts.append(f"kept initial values for {len(self.kept_initial)} the source cannot have: "
                         + ", ".join(self.kept_initial))
        if self.skipped_classifier:
            parts.append("skipped classifier of another size: " + ", ".join(self.skipped_classifier))
        return "; ".join(parts)


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Tensor]:
    """A flat name -> tensor dict from a mapping or a file (``weights_only=True``: files are untrusted)."""
    name = "<state dict>"
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read weights file {path}: {type(exc).__name__}: {exc} "
                             "(truncated, corrupt, or not a torch save file?)") from None
    if not isinstance(source, Mapping):
        raise ValueError(f"{name}: expected a state dict (a mapping of names to tensors), got {type(source).__name__}")
    ema = source.get("ema")
    if isinstance(ema, Mapping) and isinstance(ema.get("module"), Mapping):
        source = ema["module"]  # a `lowres train` checkpoint: its EMA weights, the ones it was evaluated with
    for key in _WRAPPER_KEYS:
        if key in source and isinstance(source[key], Mapping):
            source = source[key]
            break
    state = {}
    for key, value in source.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"{name}: entry {key!r} is a {type(value).__name__}, not a tensor: not a state dict")
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state


def _check_keys(target: Mapping[str, Tensor], source: Mapping[str, Tensor], name: str) -> list[str]:
    """Keys of ``target`` the source may lack; anything else missing or extra is an error."""
    optional = [k for k in target if k.startswith("AuxLogits.fc_bn.")]
    if not any(k.startswith("AuxLogits.") for k in source):
        optional = [k for k in target if k.startswith("AuxLogits.")]
    missing = [k for k in target if k not in source and k not in optional]
    # A model built without the auxiliary head simply does not use the source's.
    target_has_aux = any(k.startswith("AuxLogits.") for k in target)
    unexpected = [k for k in source if k not in target and (target_has_aux or not k.startswith("AuxLogits."))]
    if missing or unexpected:
        raise ValueError(
            f"{name} is not an Inception-v3 state dict for this model: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    return [k for k in optional if k not in source]


def load_inception_v3_weights(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, Any],
    *,
    skip_classifier: bool = False,
) -> LoadReport:
    """Copy a torchvision or timm Inception-v3 state dict into ``model`` (any stem), in place.

    Shapes must agree (same width); a classifier of another size (``fc``, ``AuxLogits.fc``) is an error
    unless ``skip_classifier`` is set, in which case it keeps its initial values and is reported.
    Returns a ``LoadReport``; the same summary is logged.
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "the given state dict"
    state = read_state_dict(source)
    target = model.state_dict()
    report = LoadReport(kept_initial=_check_keys(target, state, name))
    new_state = {}
    for key, value in target.items():
        if key in report.kept_initial:
            continue
        src = state[key]
        if src.shape != value.shape:
            if skip_classifier and key.startswith(_CLASSIFIER_PREFIXES):
                report.skipped_classifier.append(key)
                continue
            hint = " (pass skip_classifier=True for another number of classes)" if key.startswith(_CLASSIFIER_PREFIXES) else ""
            raise ValueError(f"{name}: shape of {key!r} is {tuple(src.shape)} but the model has {tuple(value.shape)}"
                             f"{hint}; is the source of another width? (ImageNet weights exist for width 1.0 only)")
        new_state[key] = src.to(dtype=value.dtype)
        report.loaded.append(key)
    model.load_state_dict(new_state, strict=False)
    log.info("%s: %s", name, report.summary())
    return report
