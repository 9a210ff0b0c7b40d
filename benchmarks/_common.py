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


def synchronize(device: torch.device) -> None:
    """Wait for the device: a CUDA call returns before its kernels run, so a timer must wait for them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inference_call(model: torch.nn.Module, x: torch.Tensor, precision: str) -> Callable[[], object]:
    """One eval-mode forward of ``x`` under ``inference_mode`` and the project's autocast, waited for."""
    from lowres.runtime import autocast

    def call() -> None:
        with torch.inference_mode(), autocast(x.device, precision):
            model(x)
        synchronize(x.device)
    return call


def train_step_call(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> Callable[[], object]:
    """One training step of the paper's recipe, as ``lowres.training.engine.train_one_epoch`` takes it: forward
    under autocast (aux head on when the model has one), label-smoothed loss + 0.4 x aux, backward, global
    clipping at 2.0, a TF-RMSProp step (lr 0.045, the paper's); waited for."""
    from lowres.runtime import autocast
    from lowres.training.recipe import RMSpropTF, clip_gradients, inception_loss, param_groups

    opt = RMSpropTF(param_groups(model, 4e-5), lr=0.045)

    def call() -> None:
        with autocast(x.device, precision):
            outputs = model(x)
        loss, _ = inception_loss(outputs, y, label_smoothing=0.1, aux_weight=0.4)  # torchvision's: a namedtuple
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(model.parameters(), 2.0, "global")
        opt.step()
        synchronize(x.device)
    return call


def _routes(dtype: torch.dtype, compiled: bool) -> dict[str, tuple[Callable[[], object], float]]:
    """Dense kernels in ``dtype``: name -> (call, FLOPs per call)."""
    routes: dict[str, tuple[Callable[[], object], float]] = {}
    a, b = torch.randn(4096, 4096, dtype=dtype), torch.randn(4096, 4096, dtype=dtype)
    routes["mm 4096"] = (lambda: torch.mm(a, b), 2 * 4096**3)
    if compiled:
        mm = torch.compile(torch.mm)
        routes["compiled mm 4096"] = (lambda: mm(a, b), 2 * 4096**3)
    for n, c, hw in ((16, 256, 36), (16, 384, 17)):  # Inception-sized 3x3 layers, made wide
        conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(dtype=dtype, memory_format=torch.channels_last)
        x = torch.randn(n, c, hw, hw, dtype=dtype).to(memory_format=torch.channels_last)
        routes[f"conv3x3 {c}x{hw}x{hw} NHWC"] = (lambda conv=conv, x=x: conv(x), 2 * n * c * c * 9 * hw * hw)
    return routes


def peak_flops(dtype: torch.dtype, *, compiled: bool = True, iters: int = 5, seconds: float = 0.0) -> dict[str, float]:
    """FLOP/s of dense kernels at their best, in ``dtype`` on the CPU: what the hardware was seen to do.

    The fastest of several routes to the same arithmetic, since no single library call is the bound: eager
    ``torch.mm`` (MKL / oneDNN GEMM), the same GEMM through ``torch.compile`` (with ``compiled``), and two
    3x3 convolutions in NHWC (oneDNN's direct convolutions, which outrun its fp32 GEMM here). Each route's
    fastest call counts, over at least ``iters`` calls and ``seconds`` of wall time: on a shared machine the
    fastest call is the one that ran alone. Returns every route's FLOP/s and ``"peak"``, their maximum.
    """
    routes = _routes(dtype, compiled)
    best = {name: 0.0 for name in routes}
    with torch.inference_mode():
        for fn, _ in routes.values():
            fn()  # warm-up (and compilation)
        start, k = time.perf_counter(), 0
        while k < iters or time.perf_counter() - start < seconds:
            for name, (fn, flops) in routes.items():
                best[name] = max(best[name], flops / time_per_call(fn, warmup=0, iters=1))
            k += 1
    return {**best, "peak": max(best.values())}


def main() -> None:
    """``python benchmarks/_common.py [--seconds S]``: the dense peak alone, fp32 and bf16."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="per dtype: keep the fastest call seen")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fastest call over {args.seconds:g} s per dtype")
    for dtype in (torch.float32, torch.bfloat16):
        r = peak_flops(dtype, seconds=args.seconds)
        print(f"{str(dtype).replace('torch.', '')}: " + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in r.items()) + " GFLOP/s",
              flush=True)


if __name__ == "__main__":
    main()
