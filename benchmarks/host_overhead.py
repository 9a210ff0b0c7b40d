"""Host cost of one optimiser step + EMA update: the per-tensor loop against multi-tensor (foreach) ops.

    python benchmarks/host_overhead.py [--width 1.0] [--rounds 5] [--iters 10] [--threads 2]

The paper's network at width 1.0 (79 stem, 1000 classes, aux head: 27M parameters in ~300 tensors) with
random gradients; one step = ``RMSpropTF.step()`` (paper section 8: epsilon inside the sqrt, weight decay
on weights) + ``ModelEma.update()``. Both paths are the library's own (``foreach=False`` is the reference
loop the tests hold the multi-tensor path equal to). Rounds alternate the two paths in one process; the
table gives the median over rounds of each round's median step, the spread (min-max over rounds), and
the operator calls per step counted by torch.profiler: those Python dispatches (top-level ``aten::`` calls)
and, in brackets, every ``aten::`` call including nested ones (on the CPU a ``_foreach_*`` op runs the
per-tensor kernels inside itself; on CUDA it launches a few fused multi-tensor kernels instead).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import synchronize, time_per_call  # noqa: E402

from lowres import build_model  # noqa: E402
from lowres.training.recipe import ModelEma, RMSpropTF, param_groups  # noqa: E402


def setup(width: float, foreach: bool, device: str) -> tuple[torch.nn.Module, ModelEma, Callable[[], None]]:
    """The network with fixed random gradients, its optimiser and EMA; returns ``(model, ema, step)``, where
    ``step`` is one optimiser step + EMA update, not waited for (see :func:`waited`). The same seed gives every
    call the same weights and gradients, so two paths can be compared value for value."""
    torch.manual_seed(0)
    model = build_model(79, 1000, width=width).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opt = RMSpropTF(param_groups(model, 4e-5), lr=0.045, foreach=foreach)
    ema = ModelEma(model, 0.9999, foreach=foreach)

    def step() -> None:
        opt.step()
        ema.update(model)

    waited(step, device)()  # creates the optimiser state
    return model, ema, step


def waited(step: Callable[[], None], device: str) -> Callable[[], None]:
    """``step`` and then a wait for the device: the whole step's time, host and device."""
    def call() -> None:
        step()
        synchronize(torch.device(device))
    return call


def host_seconds(step: Callable[[], None], device: str, iters: int) -> float:
    """Median host time of ``step`` (the Python dispatch, not waiting for the kernels), each call started on an
    idle device so a full launch queue never makes the host wait."""
    times = []
    for _ in range(iters):
        synchronize(torch.device(device))
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    synchronize(torch.device(device))
    return statistics.median(times)


def operator_calls(step: Callable[[], None]) -> tuple[int, int]:
    """(operator calls dispatched from Python, all aten calls including those nested inside others)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    return sum(1 for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")), len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = {"per-tensor loop": setup(args.width, False, args.device), "foreach": setup(args.width, True, args.device)}
    n_params = sum(p.numel() for p in paths["foreach"][0].parameters())
    n_tensors = len(list(paths["foreach"][0].parameters()))
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, (_, _, step) in paths.items():
            times[name].append(time_per_call(waited(step, args.device), warmup=1, iters=args.iters))
    calls = {name: operator_calls(step) for name, (_, _, step) in paths.items()}
    print(f"width {args.width}: {n_params:,} parameters in {n_tensors} tensors, device {args.device}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds x {args.iters} steps")
    print("| path | ms per step (median) | spread over rounds | operator calls from Python (all aten calls) | vs loop |")
    print("|---|---|---|---|---|")
    base = statistics.median(times["per-tensor loop"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {1e3 * med:.2f} | {1e3 * min(ts):.2f}-{1e3 * max(ts):.2f} | {calls[name]} | "
              f"{base / med:.2f}x |")
    worst = max(times["foreach"]) / min(times["per-tensor loop"])
    print(f"slowest foreach round vs fastest loop round: {1 / worst:.2f}x faster")


if __name__ == "__main__":
    main()
