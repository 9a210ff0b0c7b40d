"""Evaluation: one function for validation during training and for ``lowres eval`` on a checkpoint.

Numbers come from :func:`lowres.metrics.classification_metrics` over the model's top-5 predictions, with each
crop's COCO size bucket looked up from its record, so "top-1 on small objects" means the same thing
everywhere in the project.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .._atomic import atomic_write_json
from ..config import Config
from ..metrics import classification_metrics
from . import checkpoint as ckpt
from .data import SplitData, eval_loader, load_split_data, resolve_data_dir
from .distributed import DistEnv, all_gather_object, resolve_device
from .engine import predict

__all__ = ["evaluate_model", "evaluate_checkpoint", "load_model_from_checkpoint", "model_from_state",
           "checkpoint_data_path"]


def evaluate_model(model: nn.Module, split: SplitData, cfg: Config, device: torch.device,
                   env: DistEnv | None = None) -> dict[str, Any]:
    """Every evaluation number for ``model`` on ``split``: see ``classification_metrics`` for the keys,
    plus ``seconds`` and ``images_per_s`` of the pass. Under torchrun (``env``) every rank must call it."""
    return evaluate_with_predictions(model, split, cfg, device, env)[0]


def _gather_predictions(out: dict[str, Any], env: DistEnv) -> dict[str, Any]:
    """Every rank's predictions in one ``all_gather_object``, back in dataset order (as one process)."""
    parts = [p for p in all_gather_object(out) if len(p["targets"])]
    if not parts:
        return out
    merged = {k: np.concatenate([p[k] for p in parts]) for k in ("topk", "targets", "indices")}
    order = np.argsort(merged["indices"], kind="stable")
    merged = {k: v[order] for k, v in merged.items()}
    merged["loss"] = sum(p["loss"] * len(p["targets"]) for p in parts) / len(merged["targets"])
    return merged


def evaluate_with_predictions(model: nn.Module, split: SplitData, cfg: Config, device: torch.device,
                              env: DistEnv | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``evaluate_model``'s metrics and the per-crop ``predict`` output behind them (``topk``, ``targets``,
    ``indices`` into ``split.records``): the benchmark pairs variants crop by crop.

    Distributed: rank r predicts crops r, r + world, ... (no padding, so no crop counts twice) and the
    predictions are gathered once; every rank then computes the same metrics."""
    shard = (env.rank, env.world_size) if env is not None and env.distributed else (0, 1)
    loader = eval_loader(split, cfg, shard=shard)
    start = time.perf_counter()
    out = predict(model, loader, device=device, precision=cfg.train.precision, channels_last=cfg.model.channels_last)
    if shard[1] > 1:
        out = _gather_predictions(out, env)  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    cmap = split.category_map
    buckets = [split.records[i].size_bucket for i in out["indices"]]
    buckets = buckets if all(b is not None for b in buckets) else None  # whole images have no COCO size bucket
    metrics = classification_metrics(out["topk"], out["targets"], num_classes=cmap.num_classes,
                                     class_names=cmap.names, size_buckets=buckets,
                                     background_label=cmap.background_label, n_boot=cfg.eval.bootstrap,
                                     ci=cfg.eval.ci, seed=cfg.eval.seed, loss=out["loss"])
    metrics["seconds"] = seconds
    metrics["images_per_s"] = metrics["count"] / max(seconds, 1e-9)
    return metrics, out


def _eval_config(state: dict[str, Any], *, data: str | None, boxes: str | None, detections_file: str | None,
                 batch_size: int | None, device: str) -> Config:
    """The checkpoint's own config with the evaluation's data choices (start weights are not re-read)."""
    raw = state["config"]
    # One pass: the crops stream from the JPEGs (decoded once per image) instead of filling a cache read once.
    data_over: dict[str, Any] = {"max_val": None, "background": bool(state["category_map"].get("background", False)),
                                 "cache": False}
    for key, value in (("path", data), ("boxes", boxes), ("detections_file", detections_file)):
        if value is not None:
            data_over[key] = str(value)
    return Config.from_dict({**raw, "model": {**raw["model"], "weights": None},
                             "train": {**raw["train"], "device": device},
                             "data": {**raw["data"], **data_over},
                             "eval": {**raw["eval"], **({"batch_size": batch_size} if batch_size else {})}},
                            source="checkpoint config with eval options")


def checkpoint_data_path(state: dict[str, Any], checkpoint: str | Path, log: Callable[[str], None]) -> str | None:
    """The training data folder of a checkpoint, for commands given no ``--data``; says that it uses it.

    A relative ``data.path`` meant the folder relative to where training ran: it is tried from here, then as
    the absolute path that the run's provenance recorded, then relative to the training's working directory.
    None for a run on the synthetic set (its folder is regenerated on demand).
    """
    from detection_bridge.layout import check_data_dir

    raw = state["config"]["data"].get("path")
    if raw is None:
        return None
    records = state.get("provenance") or []
    candidates = [Path(raw).expanduser()]
    if not candidates[0].is_absolute() and records:
        last = records[-1]
        candidates += [Path(p) for p in (last.get("data", {}).get("path"),) if p]
        candidates += [Path(last["cwd"]) / raw] if last.get("cwd") else []
    found = next((c for c in candidates if c.is_dir()), candidates[0])
    source = f"data.path {raw!r} taken from the checkpoint {checkpoint} (no --data given)"
    check_data_dir(found, source=source)
    log(f"note: no --data: using the checkpoint's training data {found.resolve()} "
        f"(data.path {raw!r} in {checkpoint}); pass --data to choose another folder")
    return str(found.resolve())


def model_from_state(state: dict[str, Any], *, use_ema: bool = True, path: str | Path = "checkpoint"
                     ) -> tuple[nn.Module, str]:
    """Rebuild a checkpoint's model from its own config and load its weights (the EMA ones by default).

    Returns ``(model in eval mode, "ema" | "model")``; the start weights (``model.weights``) are not re-read.
    """
    from detection_bridge.records import CategoryMap

    from .run import build_model_from_config

    raw = state["config"]
    cfg = Config.from_dict({**raw, "model": {**raw["model"], "weights": None}}, source="checkpoint config")
    model = build_model_from_config(cfg, CategoryMap.from_dict(state["category_map"]).num_classes)
    which = "ema" if use_ema and state.get("ema") is not None else "model"
    load_weights(model, state["ema"]["module"] if which == "ema" else state["model"], path)
    return model.eval(), which


def load_weights(model: nn.Module, weights: dict[str, Any], path: str | Path) -> None:
    """``model.load_state_dict`` whose mismatch (missing, unexpected or misshapen tensors) is a
    :class:`CheckpointError` naming the file, not a RuntimeError listing hundreds of keys."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise ckpt.CheckpointError(f"{path}: its weights do not fit the model its config describes ({detail})") from None


def load_model_from_checkpoint(path: str | Path, *, use_ema: bool = True, map_location: str | torch.device = "cpu"
                               ) -> tuple[nn.Module, dict[str, Any], Any, Any]:
    """``(model in eval mode on map_location, config dict, CategoryMap, CropGeometry)`` of a ``lowres train``
    checkpoint (read with ``weights_only=True``): the one place where a checkpoint becomes a model, shared by
    ``lowres eval``, the R-CNN second stage and export."""
    from detection_bridge.records import CategoryMap

    from .data import geometry_from_config

    state = ckpt.load_checkpoint(path, map_location="cpu")
    ckpt.require_category_map(state, path)
    model, _ = model_from_state(state, use_ema=use_ema, path=path)
    cfg = Config.from_dict(state["config"], source=f"{path} config")
    return (model.to(map_location), state["config"], CategoryMap.from_dict(state["category_map"]),
            geometry_from_config(cfg))


def evaluate_checkpoint(checkpoint: str | Path, *, data: str | None = None, split: str = "val",
                        boxes: str | None = "gt", detections_file: str | None = None, use_ema: bool = True,
                        batch_size: int | None = None, device: str = "auto", out: str | Path | None = None,
                        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate a training checkpoint (its EMA weights by default) on a split; optionally write JSON.

    Detector boxes (``boxes='detections'``) are labelled by IoU with ground truth; a model trained with a
    background class is also scored on the detector's misses (background precision/recall), one trained
    without it only on detections that match an object.
    """
    from detection_bridge.records import CategoryMap

    log = log or (lambda message: None)
    state = ckpt.load_checkpoint(checkpoint)
    if data is None:
        data = checkpoint_data_path(state, checkpoint, log)
    ckpt.require_category_map(state, checkpoint)
    cfg = _eval_config(state, data=data, boxes=boxes, detections_file=detections_file, batch_size=batch_size,
                       device=device)
    env = DistEnv(device=resolve_device(cfg.train.device))
    cmap = CategoryMap.from_dict(state["category_map"])
    data_dir = resolve_data_dir(cfg, env=env, log=log)
    split_data = load_split_data(data_dir, split, cfg, train=False, env=env, log=log, category_map=cmap)
    model, weights = model_from_state(state, use_ema=use_ema, path=checkpoint)
    metrics = evaluate_model(model.to(env.device), split_data, cfg, env.device)
    result = {"checkpoint": str(checkpoint), "data": str(data_dir), "split": split, "boxes": cfg.data.boxes,
              "weights": weights, "epoch": state.get("epoch"), "stem": cfg.model.stem, "width": cfg.model.width,
              "num_classes": cmap.num_classes, "data_summary": split_data.summary, **metrics}
    if out is not None:
        atomic_write_json(out, result, indent=2)
    return result
