"""Evaluation: one path for validation during training, ``lowres eval`` and the bench.

:func:`evaluate_loaded` is the one entry point from a loaded checkpoint (:func:`lowres.builder.load_model`) and a
config to numbers: it resolves the data folder, loads the split under the checkpoint's category map, predicts
and scores. ``lowres eval`` (:func:`evaluate_checkpoint`) calls it with the checkpoint's own config and the
command's data options; the bench with each run's config, so it scores the crops training validated on.
Numbers come from :func:`lowres.metrics.classification_metrics` over the model's top-5 predictions, with each
crop's COCO size bucket looked up from its record, so "top-1 on small objects" means the same thing
everywhere in the project.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from detection_bridge.layout import check_data_dir

from .._atomic import atomic_write_json
from ..builder import LoadedModel, load_model
from ..config import Config
from ..metrics import classification_metrics
from ..models import compile_model
from ..runtime import resolve_device
from .data import SplitData, eval_loader, load_split_data, resolve_data_dir
from .distributed import DistEnv, all_gather_object
from .engine import predict

__all__ = ["evaluate_loaded", "Evaluation", "evaluate_model", "evaluate_with_predictions", "evaluate_checkpoint",
           "eval_config", "checkpoint_data_path"]

logger = logging.getLogger(__name__)



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
    out = predict(model, loader, device=device, precision=cfg.train.precision, channels_last=cfg.model.channels_last,
                  upsample_to=cfg.crop.upsample_to)
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


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_loaded` found: ``metrics`` (``classification_metrics`` plus ``seconds``, ``images_per_s``),
    ``output`` (``predict``'s per-crop ``topk``, ``targets``, ``indices`` into ``split.records``), and where."""

    loaded: LoadedModel
    config: Config
    data_dir: Path
    split_name: str
    split: SplitData
    metrics: dict[str, Any]
    output: dict[str, Any]

    def report(self) -> dict[str, Any]:
        """``lowres eval``'s JSON: what was evaluated on what, then every metric."""
        cfg, loaded = self.config, self.loaded
        return {"checkpoint": str(loaded.path), "data": str(self.data_dir), "split": self.split_name,
                "boxes": cfg.data.boxes, "weights": loaded.weights, "epoch": loaded.epoch, "stem": cfg.model.stem,
                "width": cfg.model.width, "num_classes": loaded.category_map.num_classes,
                "data_summary": self.split.summary, **self.metrics}

    def per_crop(self) -> dict[str, list]:
        """Each crop's key, size bucket, target, top-1 and top-5 hit, in dataset order: what pairs variants crop
        by crop (the bench's seed aggregation and paired differences)."""
        records = [self.split.records[i] for i in self.output["indices"]]
        topk, targets = self.output["topk"], self.output["targets"]
        return {"keys": [f"{r.source}:{r.source_id}" for r in records],
                "size_bucket": [r.size_bucket for r in records], "target": targets.tolist(),
                "top1": topk[:, 0].tolist(),
                "top5_hit": (topk[:, :5] == targets[:, None]).any(axis=1).astype(int).tolist()}


def evaluate_loaded(loaded: LoadedModel, cfg: Config, split: str) -> Evaluation:
    """Evaluate a loaded checkpoint on ``split`` of ``cfg``'s data (on ``cfg.train.device``), the split read
    under the checkpoint's category map (another class set is an error naming both)."""
    env = DistEnv(device=resolve_device(cfg.train.device))
    data_dir = resolve_data_dir(cfg, env=env)
    split_data = load_split_data(data_dir, split, cfg, train=False, env=env,
                                 category_map=loaded.category_map)
    metrics, output = evaluate_with_predictions(loaded.model.to(env.device), split_data, cfg, env.device)
    return Evaluation(loaded, cfg, data_dir, split, split_data, metrics, output)


def eval_config(loaded: LoadedModel, *, data: str | None, boxes: str | None, detections_file: str | None,
                batch_size: int | None, device: str) -> Config:
    """The checkpoint's own config with ``lowres eval``'s data choices: every validation crop (no
    ``data.max_val``), the background class as trained, and crops streamed from the JPEGs (one pass decodes
    each image once instead of filling a cache read once)."""
    raw = loaded.config.to_dict()
    data_over: dict[str, Any] = {"max_val": None, "background": loaded.category_map.background, "cache": False}
    for key, value in (("path", data), ("boxes", boxes), ("detections_file", detections_file)):
        if value is not None:
            data_over[key] = str(value)
    return Config.from_dict({**raw, "train": {**raw["train"], "device": device},
                             "data": {**raw["data"], **data_over},
                             "eval": {**raw["eval"], **({"batch_size": batch_size} if batch_size else {})}},
                            source="checkpoint config with eval options")


def checkpoint_data_path(raw: str | None, provenance: list[dict[str, Any]], checkpoint: str | Path) -> str | None:
    """The training data folder of a checkpoint (its ``data.path`` ``raw`` and ``provenance`` records), for
    commands given no ``--data``; says that it uses it.

    A relative ``data.path`` meant the folder relative to where training ran: it is tried from here, then as
    the absolute path that the run's provenance recorded, then relative to the training's working directory.
    None for a run on the synthetic set (its folder is regenerated on demand).
    """
    if raw is None:
        return None
    candidates = [Path(raw).expanduser()]
    if not candidates[0].is_absolute() and provenance:
        last = provenance[-1]
        candidates += [Path(p) for p in (last.get("data", {}).get("path"),) if p]
        candidates += [Path(last["cwd"]) / raw] if last.get("cwd") else []
    found = next((c for c in candidates if c.is_dir()), candidates[0])
    source = f"data.path {raw!r} taken from the checkpoint {checkpoint} (no --data given)"
    check_data_dir(found, source=source)
    logger.info(f"note: no --data: using the checkpoint's training data {found.resolve()} "
                f"(data.path {raw!r} in {checkpoint}); pass --data to choose another folder")
    return str(found.resolve())


def evaluate_checkpoint(checkpoint: str | Path, *, data: str | None = None, split: str = "val",
                        boxes: str | None = "gt", detections_file: str | None = None, use_ema: bool = True,
                        batch_size: int | None = None, device: str = "auto", out: str | Path | None = None,
                        compile: bool = False) -> dict[str, Any]:
    """``lowres eval``: evaluate a training checkpoint (its EMA weights by default) on a split, return
    :meth:`Evaluation.report` and optionally write it as JSON.
    ``compile``: run the model through ``torch.compile`` (:func:`lowres.models.compile_model`).

    Detector boxes (``boxes='detections'``) are labelled by IoU with ground truth; a model trained with a
    background class is also scored on the detector's misses (background precision/recall), one trained
    without it only on detections that match an object.
    """
    loaded = load_model(checkpoint, use_ema=use_ema, device=resolve_device(device))
    if data is None:
        data = checkpoint_data_path(loaded.config.data.path, loaded.provenance, checkpoint)
    cfg = eval_config(loaded, data=data, boxes=boxes, detections_file=detections_file, batch_size=batch_size,
                      device=device)
    compile_model(loaded.model, compile)  # in place
    result = evaluate_loaded(loaded, cfg, split).report()
    if out is not None:
        atomic_write_json(out, result, indent=2)
    return result
