"""Pure training and evaluation loops: tensors in, numbers out.

No argv, no files, no printing: the caller passes a callback for progress bars and step checkpoints, so the
same loops serve ``lowres train``, ``lowres eval``, the benchmark and the tests.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .recipe import EpochLR, ModelEma, autocast, clip_gradients, inception_loss

__all__ = ["EpochTotals", "StepInfo", "TrainingDiverged", "train_one_epoch", "predict"]


@dataclass
class EpochTotals:
    """Running sums of one epoch; part of a mid-epoch checkpoint so resumed epochs report whole-epoch numbers."""

    steps: int = 0
    count: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EpochTotals":
        return cls(**data)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.count, 1)


@dataclass
class StepInfo:
    """What a progress bar or a step checkpoint needs after one optimiser step."""

    step: int  # global optimiser steps done
    step_in_epoch: int  # steps done in this epoch
    loss: float  # this batch's loss
    lr: float  # lr used by this step
    images_per_s: float  # this process's throughput over the epoch so far
    grad_norm: float | None


class TrainingDiverged(RuntimeError):
    """The loss or the gradients became NaN or infinite: continuing would only spread NaN into the weights."""


def _check_finite(what: str, value: float | None, step: int, lr: float) -> None:
    """Stop before a non-finite loss or gradient reaches the weights (the optimiser step has not run)."""
    if value is not None and not math.isfinite(value):
        raise TrainingDiverged(f"training diverged: the {what} is {value} at optimiser step {step} (lr {lr:.3g}); "
                               "the last checkpoint written before it is kept. Lower optim.lr, keep "
                               "optim.clip_grad_norm on, or check the data")


def _to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device,
               channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
    return images, targets.to(device, non_blocking=True)


def train_one_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, scheduler: EpochLR, *,
                    device: torch.device, steps: int, totals: EpochTotals | None = None, global_step: int = 0,
                    ema: ModelEma | None = None, label_smoothing: float = 0.1, aux_weight: float = 0.4,
                    clip_grad_norm: float | None = 2.0, clip_mode: str = "global", precision: str = "fp32",
                    channels_last: bool = False,
                    on_step: Callable[[EpochTotals, StepInfo], None] | None = None) -> EpochTotals:
    """Train until this epoch has done ``steps`` optimiser steps (counting those in ``totals`` from before a
    resume). Each batch: forward under autocast, label-smoothed loss + 0.4 aux, backward, clip, step,
    lr schedule step, EMA update. Returns the epoch's running totals."""
    totals = totals or EpochTotals()
    model.train()
    start = time.perf_counter()
    seconds_before = totals.seconds
    for batch in batches:
        if totals.steps >= steps:
            break
        images, targets = _to_device(batch[0], batch[1], device, channels_last)
        lr = optimizer.param_groups[0]["lr"]
        with autocast(device, precision):
            outputs = model(images)
        loss, logits = inception_loss(outputs, targets, label_smoothing=label_smoothing, aux_weight=aux_weight)
        loss_value = float(loss.detach())
        _check_finite("loss", loss_value, global_step + totals.steps + 1, lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_gradients(model.parameters(), clip_grad_norm, clip_mode)
        _check_finite("gradient norm", grad_norm, global_step + totals.steps + 1, lr)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        n = targets.shape[0]
        totals.steps += 1
        totals.count += n
        totals.loss_sum += loss_value * n
        totals.correct += int((logits.detach().argmax(dim=1) == targets).sum())
        totals.seconds = seconds_before + time.perf_counter() - start
        if on_step is not None:
            info = StepInfo(step=global_step + totals.steps, step_in_epoch=totals.steps, loss=loss_value, lr=lr,
                            images_per_s=totals.count / max(totals.seconds, 1e-9), grad_norm=grad_norm)
            on_step(totals, info)
    return totals


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable, *, device: torch.device, k: int = 5, precision: str = "fp32",
            channels_last: bool = False) -> dict[str, Any]:
    """Eval-mode forward over ``batches`` of ``(images, labels, indices)``.

    Returns ``topk`` [N, k] (best first), ``targets`` [N], ``indices`` [N] (dataset positions, to look up each
    crop's record: size bucket, image) and the mean plain cross-entropy ``loss``.
    """
    model.eval()
    topk, targets, indices = [], [], []
    loss_sum, count = 0.0, 0
    for batch in batches:
        images, labels = _to_device(batch[0], batch[1], device, channels_last)
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
