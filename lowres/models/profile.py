"""Parameters, forward FLOPs and grid sizes of a model, measured from the model itself.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2), grid sizes from
forward hooks, so the table of ``lowres info`` cannot drift from the code. Both need shapes only, so a model
on the meta device (no memory, no arithmetic) gives the same numbers as a real one in a fraction of a second.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .inception import build_model
from .stems import STEMS

_GRID_MODULES = {"Mixed_5b_in": "maxpool2", "Mixed_6e": "Mixed_6e", "Mixed_7c": "Mixed_7c"}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def forward_flops(model: nn.Module, size: int) -> int:
    """FLOPs of one eval-mode forward pass of a single ``size`` x ``size`` image."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, size, size, device=_device(model))
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def measured_grids(model: nn.Module, size: int) -> dict[str, int]:
    """Side of the feature map entering Mixed_5b, after Mixed_6e and after Mixed_7c, by running the model."""
    seen: dict[str, int] = {}
    hooks = [
        getattr(model, module).register_forward_hook(
            lambda _m, _i, out, key=key: seen.__setitem__(key, int(out.shape[-1])))
        for key, module in _GRID_MODULES.items()
    ]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 3, size, size, device=_device(model)))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return seen


def stem_table(width: float = 1.0, min_depth: int = 16, num_classes: int = 1000) -> list[dict[str, Any]]:
    """One row per stem: input, grids, parameters, forward GFLOPs and the ratio to the 299 stem (measured on
    the meta device)."""
    rows = []
    for stem in sorted(STEMS, reverse=True):
        with torch.device("meta"):
            model = build_model(stem, num_classes, width=width, min_depth=min_depth)
        grids = measured_grids(model, stem)
        rows.append(dict(
            stem=stem, input=f"{stem}x{stem}", width=width,
            grid_mixed_5b=grids["Mixed_5b_in"], grid_mixed_6e=grids["Mixed_6e"], grid_mixed_7c=grids["Mixed_7c"],
            params=count_parameters(model), gflops=forward_flops(model, stem) / 1e9,
        ))
    base = next(r["gflops"] for r in rows if r["stem"] == 299)
    for r in rows:
        r["flops_vs_299"] = r["gflops"] / base
    return rows
