"""Cost columns of the report: parameters, forward GFLOPs and inference images/s per variant.

Parameters and FLOPs come from :mod:`lowres.models.profile` at the variant's actual model input (so
naive-79 shows the 299 network's cost at 79 px, upsample-79 the cost at 299). Images/s are measured in
one process for all variants with the same batch, after warm-up, in interleaved rounds, so a busy moment on
a shared machine does not land on one variant alone. The reported rate is the median round with the range of
all rounds beside it: on a loaded machine the fastest round alone varied up to 10x between renders of the same
runs, and only the spread says whether two variants' speeds can be told apart (:func:`speeds_differ`). They
time the model's forward pass only: no data loading, no crop upsampling.
"""
from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import torch
from torch import nn

from ..builder import build_model_from_config
from ..config import Config
from ..models.profile import count_parameters, forward_flops
from ..runtime import autocast, memory_format, resolve_device
from .variants import ThroughputSpec

__all__ = ["profile_variant", "measure_throughput", "speeds_differ"]

logger = logging.getLogger(__name__)


def _fresh_model(cfg: Config, num_classes: int) -> nn.Module:
    """The variant's architecture with fresh weights (speed and FLOPs do not depend on the weights)."""
    return build_model_from_config(cfg, num_classes, pretrained=False).eval()


def profile_variant(cfg: Config, num_classes: int, input_size: int) -> dict[str, Any]:
    """``params`` and forward ``gflops`` (one image, a multiply-add counts 2) at ``input_size``, counted on the
    meta device (shapes only)."""
    with torch.device("meta"):
        model = _fresh_model(cfg, num_classes)
    return {"params": count_parameters(model), "gflops": forward_flops(model, input_size) / 1e9}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _images_per_s(model: nn.Module, x: torch.Tensor, *, warmup: int, iters: int, precision: str) -> float:
    with autocast(x.device, precision):
        for _ in range(warmup):
            model(x)
        _sync(x.device)
        start = time.perf_counter()
        for _ in range(iters):
            model(x)
        _sync(x.device)
    return iters * x.shape[0] / max(time.perf_counter() - start, 1e-9)


def speeds_differ(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two measured speeds can be told apart: their ranges over rounds do not overlap (and there were
    at least two rounds each; one round has no spread to judge by)."""
    ra, rb = a.get("rounds") or [], b.get("rounds") or []
    if len(ra) < 2 or len(rb) < 2:
        return False
    return max(ra) < min(rb) or max(rb) < min(ra)


def measure_throughput(variants: dict[str, tuple[Config, int, int]], spec: ThroughputSpec) -> dict[str, Any]:
    """Inference images/s per variant: ``variants`` maps name -> (config, num_classes, input side).

    Device, precision, channels_last and threads are the configs' (the same for every variant). Each finished
    round is logged (the measurement takes a while on a CPU, and silence looks like a hang).
    Returns ``{name: {"images_per_s": median round, "spread": [slowest, fastest], "rounds": [...], "batch": B,
    ...}}``.
    """
    prepared = {}
    for name, (cfg, num_classes, size) in variants.items():
        device = resolve_device(cfg.train.device)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        fmt = memory_format(cfg.model.channels_last)
        model = _fresh_model(cfg, num_classes).to(device=device, memory_format=fmt)
        x = torch.randn(spec.batch, 3, size, size, device=device).contiguous(memory_format=fmt)
        prepared[name] = (model, x, cfg.train.precision)
    for model, x, precision in prepared.values():  # first calls build kernels (oneDNN, cuDNN): keep them untimed
        _images_per_s(model, x, warmup=max(spec.warmup, 1), iters=1, precision=precision)
    rounds: dict[str, list[float]] = {name: [] for name in prepared}
    for k in range(spec.rounds):
        for name, (model, x, precision) in prepared.items():
            rounds[name].append(_images_per_s(model, x, warmup=spec.warmup, iters=spec.iters, precision=precision))
        logger.info(f"  speed round {k + 1}/{spec.rounds}: "
                    + ", ".join(f"{n} {v[-1]:.0f}" for n, v in rounds.items()) + " images/s")
    return {name: {"images_per_s": statistics.median(values), "spread": [min(values), max(values)],
                   "rounds": values, "batch": spec.batch,
                   "device": str(prepared[name][1].device), "precision": prepared[name][2]}
            for name, values in rounds.items()}
