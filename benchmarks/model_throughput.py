"""Forward throughput of the three stems against torchvision's Inception-v3 at 299, in one process.

    python benchmarks/model_throughput.py [--batch 16] [--iters 5] [--width 1.0]

Modes: fp32, fp32 + channels_last, bf16 autocast + channels_last. For each model and mode it prints
images/s, the ratio to torchvision at 299 in the same mode, and the fraction of the machine's measured
dense-kernel peak for that dtype (FLOPs per image x images/s / peak; ``_common.peak_flops``: the best of
eager and compiled GEMM and an NHWC 3x3 convolution, not one ``torch.mm``): how close the model runs to
what the hardware does.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_flops, time_per_call  # noqa: E402

from lowres import STEMS, build_model  # noqa: E402
from lowres.models import load_inception_v3_weights  # noqa: E402
from lowres.models.profile import forward_flops  # noqa: E402

MODES = {
    "fp32": (torch.float32, False),
    "fp32+channels_last": (torch.float32, True),
    "bf16+channels_last": (torch.bfloat16, True),
}


def models(width: float) -> dict[str, tuple[torch.nn.Module, int]]:
    """torchvision's model and the three stems, all holding torchvision's weights at width 1.0.

    Identical weights give identical activations, so no model is timed on values (huge or denormal)
    that another never sees.
    """
    reference = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    out: dict[str, tuple[torch.nn.Module, int]] = {"torchvision-299": (reference, 299)}
    for stem in sorted(STEMS, reverse=True):
        model = build_model(stem, width=width, aux_logits=False)
        if width == 1.0:
            load_inception_v3_weights(model, reference.state_dict())
        out[f"lowres-{stem}"] = (model, stem)
    return out


def images_per_second(model: torch.nn.Module, size: int, batch: int, mode: str, iters: int) -> float:
    dtype, channels_last = MODES[mode]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.eval().to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size).to(memory_format=fmt)
    autocast = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    def step() -> None:
        with torch.inference_mode(), autocast:
            model(x)

    return batch / time_per_call(step, warmup=3, iters=iters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--width", type=float, default=1.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    peaks = {dt: peak_flops(dt)["peak"] for dt in (torch.float32, torch.bfloat16)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, width {args.width}; "
          f"dense peak fp32 {peaks[torch.float32] / 1e9:.0f} GFLOP/s, bf16 {peaks[torch.bfloat16] / 1e9:.0f} GFLOP/s")
    print("| model | mode | GFLOPs/img | images/s | vs torchvision-299 | of dense peak |")
    print("|---|---|---|---|---|---|")
    nets = models(args.width)
    flops = {name: forward_flops(m, size) for name, (m, size) in nets.items()}
    for mode in MODES:
        base = None
        for name, (model, size) in nets.items():
            ips = images_per_second(model, size, args.batch, mode, args.iters)
            base = base or ips
            peak = peaks[MODES[mode][0]]
            print(f"| {name} | {mode} | {flops[name] / 1e9:.2f} | {ips:.1f} | {ips / base:.2f} | "
                  f"{flops[name] * ips / peak:.0%} |", flush=True)


if __name__ == "__main__":
    main()
