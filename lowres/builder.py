"""One road from a config, or a checkpoint file, to a ready model (as timm's ``build_model_with_cfg``).

:func:`build_model_from_config` is the only place a config becomes a network (training, the bench's cost
columns); :func:`load_model` the only place a checkpoint becomes one, with everything a user of its outputs
needs beside it: the category map (what each output means), the crop geometry and the crop / input sizes
(how a box must be cut and fed), read from the checkpoint's own config so they are the ones it was trained
with. ``lowres eval``, the bench, the R-CNN second stage and export all call :func:`load_model`.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detection_bridge.boxes import CropGeometry
from detection_bridge.records import CategoryMap

from .checkpoint import CheckpointError, load_checkpoint
from .config import Config
from .models import build_model, load_inception_v3_weights
from .pretrained import resolve as resolve_weights
from .runtime import crop_size, geometry_from_config, input_size, memory_format, resolve_device

__all__ = ["build_model_from_config", "check_start_weights", "load_weights", "LoadedModel", "load_model", "checkpoint_config"]

logger = logging.getLogger(__name__)


def build_model_from_config(cfg: Config, num_classes: int, *, pretrained: bool = True) -> nn.Module:
    """``lowres.build_model`` with the config's stem/width/depth/head in its memory format, from the ImageNet
    weights of ``model.weights`` when ``pretrained`` (False: fresh weights, as the bench's cost columns need)."""
    m = cfg.model
    model = _network(cfg, num_classes)
    if pretrained and m.weights:
        report = load_inception_v3_weights(model, resolve_weights(m.weights), skip_classifier=True)
        logger.info(f"weights: {m.weights}: {report.summary()}")
    return model.to(memory_format=torch.channels_last) if m.channels_last else model


def _network(cfg: Config, num_classes: int) -> nn.Module:
    m = cfg.model
    return build_model(m.stem, num_classes, width=m.width, min_depth=m.min_depth, aux_logits=m.aux_logits,
                       dropout=m.dropout)


def check_start_weights(cfg: Config) -> None:
    """Read ``model.weights`` and fit it to the config's network on the meta device (shapes only: no memory,
    no random draws), so a missing, wrong, corrupt or other-width file is refused before any data work; the
    model itself is built once the data has given the class count."""
    if not cfg.model.weights:
        return
    with torch.device("meta"):
        model = _network(cfg, num_classes=1)
    with warnings.catch_warnings():  # copying into meta tensors is the no-op wanted here
        warnings.filterwarnings("ignore", message=".*non-meta parameter.*")
        load_inception_v3_weights(model, resolve_weights(cfg.model.weights), skip_classifier=True)


def load_weights(model: nn.Module, weights: dict[str, Any], path: str | Path) -> None:
    """``model.load_state_dict`` whose mismatch (missing, unexpected or misshapen tensors) is a
    :class:`CheckpointError` naming the file, not a RuntimeError listing hundreds of keys."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise CheckpointError(f"{path}: its weights do not fit the model its config describes ({detail})") from None


def checkpoint_config(state: dict[str, Any], path: str | Path) -> Config:
    """The checkpoint's own config; its start weights (``model.weights``) are dropped: the checkpoint's
    weights replace them, and the file they came from need not exist here."""
    raw = state["config"]
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    return Config.from_dict({**raw, "model": {**model, "weights": None}}, source=f"{path} config")


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint as a ready model. ``crop_size`` is the side cut from the original pixels, ``input_size``
    the side the model sees (they differ for the bench's upsample-79 and naive-79 variants); ``weights`` says
    which were loaded (``"ema"`` or ``"model"``); ``epoch``/``global_step`` are None in checkpoints written
    for inference only."""

    model: nn.Module
    config: Config
    category_map: CategoryMap
    geometry: CropGeometry
    crop_size: int
    input_size: int
    weights: str
    path: Path
    epoch: int | None = None
    global_step: int | None = None
    provenance: list[dict[str, Any]] = field(default_factory=list)


def load_model(path: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu",
               channels_last: bool | None = None, dtype: torch.dtype | None = None) -> LoadedModel:
    """The model of a ``lowres train`` checkpoint in eval mode, read with ``weights_only=True``, with its
    category map, geometry and sizes.

    ``use_ema``: the exponential moving average of the weights when the checkpoint has one (what training
    validates by default), else the raw weights. ``device``: a torch device or a name (``auto`` = CUDA when
    available). ``channels_last``: the memory format, by default the checkpoint config's
    ``model.channels_last``. ``dtype``: cast the weights (default: as trained, float32); mixed precision is
    :func:`lowres.runtime.autocast`'s business, not this one's.
    """
    path = Path(path)
    state = load_checkpoint(path, map_location="cpu", purpose="model")
    cfg = checkpoint_config(state, path)
    cmap = CategoryMap.from_dict(state["category_map"])
    model = build_model_from_config(cfg, cmap.num_classes, pretrained=False)
    which = "ema" if use_ema and state.get("ema") is not None else "model"
    load_weights(model, state["ema"]["module"] if which == "ema" else state["model"], path)
    nhwc = cfg.model.channels_last if channels_last is None else channels_last
    target = resolve_device(device) if isinstance(device, str) else device
    model = model.to(device=target, dtype=dtype, memory_format=memory_format(nhwc)).eval()
    return LoadedModel(model, cfg, cmap, geometry_from_config(cfg), crop_size(cfg), input_size(cfg), which, path,
                       epoch=state.get("epoch"), global_step=state.get("global_step"),
                       provenance=list(state.get("provenance") or []))
