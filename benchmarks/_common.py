"""Helpers shared by the benchmark scripts: timing after warm-up and the machine's measured matmul peak."""
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


def matmul_peak_flops(dtype: torch.dtype, n: int = 4096, device: str = "cpu") -> float:
    """Measured FLOP/s of a square matrix product in ``dtype``: the physical bound a model can approach."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = time_per_call(lambda: torch.mm(a, b), warmup=1, iters=5, best=True)
    return 2 * n**3 / seconds
