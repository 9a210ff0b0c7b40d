"""``torch.compile`` for lowres models, in one place (timm's ``--torchcompile``; ``train.compile``, ``--compile``).

The module is compiled in place (``nn.Module.compile``): its class, attributes and state-dict keys stay as they
were, so checkpoints, the EMA copy, DDP wrapping and export see the same model. The forward pass is written to
compile as one graph (the input check reads only shapes, resolved while tracing; tested with ``fullgraph``), so
the compiled code is reused as long as the input shape and mode (train / eval) stay the same; a new shape
(e.g. a last, smaller evaluation batch) costs one more compilation, after which the batch dimension is dynamic.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["compile_model"]


def compile_model(model: nn.Module, enabled: bool = True, **kwargs) -> nn.Module:
    """``model`` with its forward compiled by ``torch.compile(**kwargs)`` when ``enabled`` (in place); returned
    for chaining. The first call of each shape compiles (the README's compile section says how long it takes)."""
    if enabled:
        if not hasattr(nn.Module, "compile"):  # torch < 2.2
            raise RuntimeError(f"--compile needs torch >= 2.2 (nn.Module.compile); this is torch {torch.__version__}")
        model.compile(**kwargs)
    return model
