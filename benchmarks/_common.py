"""Helpers shared by the benchmark scripts: timing after warm-up and what the machine's arithmetic can do."""
from __future__ import annotations

import time
from collections.abc import Callable

import torch


def time_per_call(fn: Callable[[], object], *, warmup: int, iters: int, best: bool = False) -> float:
    """Median (or ``best``: fastest) seconds per call after ``warmup`` untimed calls.

    The median resists a noisy neighbour; the fastest call estimates what the hardware can do.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[0] if best else times[len(times) // 2]


def peak_flops(dtype: torch.dtype, *, compiled: bool = True, iters: int = 5) -> dict[str, float]:
    """FLOP/s of dense kernels at their best, in ``dtype`` on the CPU: what the hardware was seen to do.

    The fastest of several routes to the same arithmetic, since no single library call is the bound: eager
    ``torch.mm`` (MKL / oneDNN GEMM) at 2048 and 4096, a 3x3 convolution in NHWC (oneDNN's direct
    convolution: 16 x 256 x 36 x 36 -> 256 channels, an Inception-sized layer made wide), and, with
    ``compiled``, the same GEMM through ``torch.compile`` (inductor's own CPU GEMM where it chooses one).
    Returns every route's FLOP/s and ``"peak"``, their maximum.
    """
    out: dict[str, float] = {}
    for n in (2048, 4096):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        out[f"mm {n}"] = 2 * n**3 / time_per_call(lambda: torch.mm(a, b), warmup=1, iters=iters, best=True)
        if compiled and n == 4096:
            mm = torch.compile(torch.mm)
            out[f"compiled mm {n}"] = 2 * n**3 / time_per_call(lambda: mm(a, b), warmup=2, iters=iters, best=True)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(16, 256, 36, 36, dtype=dtype).to(memory_format=torch.channels_last)
    flops = 2 * 16 * 256 * 256 * 9 * 36 * 36
    with torch.inference_mode():
        out["conv3x3 NHWC"] = flops / time_per_call(lambda: conv(x), warmup=2, iters=iters, best=True)
    out["peak"] = max(out.values())
    return out
