"""Pure training and evaluation loops: tensors in, numbers out.

No argv, no files, no printing: the caller passes a callback for progress bars and step checkpoints, so the
same loops serve ``lowres train``, ``lowres eval``, the benchmark and the tests.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..device_transforms import model_inputs
from ..errors import TrainingDiverged
from ..runtime import autocast, input_dtype
from .recipe import EpochLR, ModelEma, clip_gradients, freeze_bn_stats, inception_loss

__all__ = ["EpochTotals", "StepInfo", "StepRecipe", "TrainingDiverged", "train_step", "train_one_epoch", "predict"]


@dataclass
class EpochTotals:
    """Running sums of one epoch; part of a mid-epoch checkpoint so resumed epochs report whole-epoch numbers.

    Each step's loss, correct count and gradient norm stay on the device (:meth:`add_step`) until :meth:`sync`
    reads them all in one transfer (every ``log_every`` steps, and before any number is used or any checkpoint
    is written): reading them every step would make the host wait for the device every step. ``sync`` adds
    the per-step values one by one, in step order, so the sums are bit-for-bit those of a per-step read
    wherever the syncs fall (exact resume), and it stops training at the first non-finite loss or gradient
    norm, naming its step: the weights that step spoilt are never written, so the last checkpoint is good.
    """

    steps: int = 0
    count: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seconds: float = 0.0
    last_loss: float | None = None  # the newest synced batch loss (progress lines)
    _pending: list = field(default_factory=list, repr=False, compare=False)
    _pending_meta: list = field(default_factory=list, repr=False, compare=False)

    def add_step(self, loss: torch.Tensor, correct: torch.Tensor, n: int, *, step: int = 0, lr: float = 0.0,
                 grad_norm: torch.Tensor | None = None) -> None:
        """Count one step of ``n`` samples; ``loss`` (batch mean), ``correct`` and ``grad_norm`` stay where
        they are. ``step`` and ``lr`` only name the step if its numbers turn out non-finite."""
        self.steps += 1
        self.count += n
        loss = loss.detach().double()
        norm = torch.zeros_like(loss) if grad_norm is None else grad_norm.detach().double().to(loss.device)
        self._pending.append(torch.stack([loss * n, correct.double(), loss, norm]))
        self._pending_meta.append((step, lr))

    def sync(self) -> None:
        """Fold the pending per-step values into the Python sums (one device-to-host copy); raise
        :class:`TrainingDiverged` at the first step whose loss or gradient norm is not finite."""
        if not self._pending:
            return
        values = torch.stack(self._pending).cpu().tolist()
        meta, self._pending, self._pending_meta = self._pending_meta, [], []
        for (loss_sum, correct, loss, norm), (step, lr) in zip(values, meta):
            for what, value in (("loss", loss), ("gradient norm", norm)):
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"training diverged: the {what} is {value} at optimiser step {step} (lr {lr:.3g}); the last "
                        "checkpoint written before it is kept. Lower optim.lr, keep optim.clip_grad_norm on, or "
                        "check the data")
            self.loss_sum += loss_sum
            self.correct += int(correct)
            self.last_loss = loss

    def to_dict(self) -> dict[str, Any]:
        self.sync()
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EpochTotals":
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})

    @property
    def loss(self) -> float:
        self.sync()
        return self.loss_sum / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        self.sync()
        return self.correct / max(self.count, 1)


@dataclass
class StepInfo:
    """What a progress bar or a step checkpoint needs after one optimiser step."""

    step: int  # global optimiser steps done
    step_in_epoch: int  # steps done in this epoch
    loss: float | None  # the batch loss on steps where the totals were synced (every log_every), else None
    lr: float  # lr used by this step
    images_per_s: float  # this process's throughput over the epoch so far


@dataclass(frozen=True)
class StepRecipe:
    """How each training step computes its update (paper section 8: label smoothing 0.1, the auxiliary loss at
    0.4, gradient clipping at 2.0) and how it runs (precision, memory format, the upsample-79 resize, how often
    numbers are read from the device): one object from the config instead of nine loose arguments. No defaults
    here: the config's keys hold them (:meth:`from_config`)."""

    label_smoothing: float
    aux_weight: float
    clip_grad_norm: float | None
    clip_mode: str
    precision: str
    channels_last: bool
    upsample_to: int | None
    log_every: int
    bn_stats: str

    @classmethod
    def from_config(cls, cfg: Config) -> "StepRecipe":
        t = cfg.train
        return cls(label_smoothing=t.label_smoothing, aux_weight=t.aux_weight, clip_grad_norm=cfg.optim.clip_grad_norm,
                   clip_mode=cfg.optim.clip_mode, precision=t.precision, channels_last=cfg.model.channels_last,
                   upsample_to=cfg.crop.upsample_to, log_every=t.log_every, bn_stats=t.bn_stats)


def train_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, optimizer: torch.optim.Optimizer,
               scheduler: EpochLR, recipe: StepRecipe, *, device: torch.device, ema: ModelEma | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One optimiser step on model inputs already on the device: forward under autocast, label-smoothed loss
    + 0.4 aux, backward, clip, step, lr schedule step, EMA update. Returns (loss, logits, gradient norm), left
    on the device. The model-only baseline of ``benchmarks/train_pipeline.py`` times exactly this."""
    with autocast(device, recipe.precision):
        outputs = model(images)
    loss, logits = inception_loss(outputs, targets, label_smoothing=recipe.label_smoothing,
                                  aux_weight=recipe.aux_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = clip_gradients(model.parameters(), recipe.clip_grad_norm, recipe.clip_mode)
    optimizer.step()
    scheduler.step()
    if ema is not None:
        ema.update(model)
    return loss, logits, grad_norm


def train_one_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, scheduler: EpochLR,
                    recipe: StepRecipe, *, device: torch.device, steps: int, totals: EpochTotals | None = None,
                    global_step: int = 0, ema: ModelEma | None = None,
                    on_step: Callable[[EpochTotals, StepInfo], None] | None = None) -> EpochTotals:
    """Train until this epoch has done ``steps`` optimiser steps (counting those in ``totals`` from before a
    resume). Each batch: uint8 pixels to model inputs on the device (:func:`model_inputs`: colour jitter,
    normalisation, the recipe's ``upsample_to``), forward under autocast, label-smoothed loss + 0.4 aux, backward, clip, step,
    lr schedule step, EMA update. Loss, accuracy and gradient norm are read from the device on global steps
    that are multiples of ``recipe.log_every``, on this call's first step and at the epoch's end (where a
    non-finite one stops training); ``on_step`` runs every step. Returns the totals (synced)."""
    totals = totals or EpochTotals()
    model.train()
    if recipe.bn_stats == "frozen":
        freeze_bn_stats(model)
    start, seconds_before, first = time.perf_counter(), totals.seconds, totals.steps + 1
    for batch in batches:
        if totals.steps >= steps:
            break
        images, targets = model_inputs(batch, device, channels_last=recipe.channels_last, size=recipe.upsample_to,
                                       dtype=input_dtype(recipe.precision))
        lr = optimizer.param_groups[0]["lr"]
        loss, logits, grad_norm = train_step(model, images, targets, optimizer, scheduler, recipe, device=device,
                                             ema=ema)
        step = global_step + totals.steps + 1
        totals.add_step(loss, (logits.detach().argmax(dim=1) == targets).sum(), targets.shape[0], step=step, lr=lr,
                        grad_norm=grad_norm)
        synced = step % recipe.log_every == 0 or totals.steps in (first, steps)  # the monitor's steps: first, every N
        if synced:
            totals.sync()  # raises TrainingDiverged at a non-finite step, before anything is written
        totals.seconds = seconds_before + time.perf_counter() - start
        if on_step is not None:
            on_step(totals, StepInfo(step=step, step_in_epoch=totals.steps, loss=totals.last_loss if synced else None,
                                     lr=lr, images_per_s=totals.count / max(totals.seconds, 1e-9)))
    totals.sync()
    return totals


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable, *, device: torch.device, k: int = 5, precision: str = "fp32",
            channels_last: bool = False, upsample_to: int | None = None) -> dict[str, Any]:
    """Eval-mode forward over ``batches`` of ``(uint8 images, labels, indices)`` (made model inputs on the device
    by :func:`model_inputs`, as in training).

    Returns ``topk`` [N, k] (best first), ``targets`` [N], ``indices`` [N] (dataset positions, to look up each
    crop's record: size bucket, image) and the mean plain cross-entropy ``loss``.
    """
    model.eval()
    topk, targets, indices = [], [], []
    loss_sum, count = 0.0, 0
    for batch in batches:
        images, labels = model_inputs(batch, device, channels_last=channels_last, size=upsample_to,
                                      dtype=input_dtype(precision))
        with autocast(device, precision):
            logits = model(images)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        count += labels.shape[0]
        topk.append(logits.topk(min(k, logits.shape[1]), dim=1).indices.cpu())
        targets.append(labels.cpu())
        indices.append(torch.as_tensor(batch[2]) if len(batch) > 2 else torch.arange(count - labels.shape[0], count))
    if not targets:
        return {"topk": np.zeros((0, k), np.int64), "targets": np.zeros(0, np.int64),
                "indices": np.zeros(0, np.int64), "loss": None}
    return {"topk": torch.cat(topk).numpy().astype(np.int64), "targets": torch.cat(targets).numpy().astype(np.int64),
            "indices": torch.cat(indices).numpy().astype(np.int64), "loss": loss_sum / max(count, 1)}
