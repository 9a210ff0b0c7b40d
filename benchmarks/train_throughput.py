"""Training throughput and peak memory of the three stems against torchvision's Inception-v3 at 299.

    python benchmarks/train_throughput.py [--batch 16] [--steps 3] [--repeats 1] [--widths 1.0 0.25]
                                          [--precisions fp32 bf16] [--stems 299 151 79] [--json rows.json]

One training step = forward (train mode, auxiliary head on), label-smoothed loss + 0.4 x aux, backward,
clipping at 2.0, a TF-RMSProp update: the paper's recipe (lowres.training.recipe), for every model alike.
Each configuration runs in a fresh process so peak memory is its own: on CUDA the allocator's peak, on
the CPU the process's peak resident set (which includes ~0.3 GB of Python and torch). Images/s is the
batch over the median step time after warm-up. Ratios are against torchvision at 299 with the same batch,
precision and device (torchvision has no width multiplier, so it always runs at width 1.0). On a shared
machine use ``--repeats 3``: configurations run in interleaved rounds and the median round is reported.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from detection_bridge.fileio import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import time_per_call, train_step_call  # noqa: E402


def _build(name: str, width: float) -> tuple[torch.nn.Module, int]:
    if name == "torchvision-299":
        import torchvision

        return torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False), 299
    from lowres import build_model

    stem = int(name.split("-")[1])
    return build_model(stem, 1000, width=width, aux_logits=True), stem


def measure(name: str, width: float, precision: str, batch: int, steps: int, warmup: int, device: str,
            channels_last: bool) -> dict:
    """Images/s and peak memory of training steps of one model (run in a child process)."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model, size = _build(name, width)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(dev, memory_format=fmt).train()
    x = torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=dev)
    step = train_step_call(model, x, y, precision)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = time_per_call(step, warmup=warmup, iters=steps)
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"model": name, "width": width if name != "torchvision-299" else 1.0, "precision": precision,
            "images_per_s": batch / seconds, "step_seconds": seconds, "peak_mb": peak_mb}


def _child(args: argparse.Namespace, name: str, width: float, precision: str) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([name, width, precision]), "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    if args.channels_last:
        cmd.append("--channels-last")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"model": name, "width": width, "precision": precision, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(results: list[dict]) -> dict:
    """The round with the median images/s (peak memory: the largest of any round)."""
    ok = sorted((r for r in results if "error" not in r), key=lambda r: r["images_per_s"])
    if not ok:
        return results[0]
    return {**ok[len(ok) // 2], "peak_mb": max(r["peak_mb"] for r in ok), "rounds": len(ok)}


def _table(rows: list[dict]) -> str:
    base = {r["precision"]: r for r in rows if r["model"] == "torchvision-299" and "error" not in r}
    lines = ["| model | width | precision | images/s | vs torchvision-299 | peak MB | memory vs torchvision-299 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['width']:g} | {r['precision']} | error: {r['error']} | | | |")
            continue
        b = base.get(r["precision"])
        speed = f"{r['images_per_s'] / b['images_per_s']:.2f}x" if b else "n/a"
        mem = f"{r['peak_mb'] / b['peak_mb']:.2f}x" if b else "n/a"
        lines.append(f"| {r['model']} | {r['width']:g} | {r['precision']} | {r['images_per_s']:.2f} | {speed} | "
                     f"{r['peak_mb']:.0f} | {mem} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all configurations (median)")
    parser.add_argument("--stems", type=int, nargs="+", default=[299, 151, 79])
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.25])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, width, precision = json.loads(args.child)
        print(json.dumps(measure(name, width, precision, args.batch, args.steps, args.warmup, args.device,
                                 args.channels_last)))
        return
    start = time.perf_counter()
    configs = [(p, "torchvision-299", 1.0) for p in args.precisions]
    configs += [(p, f"lowres-{stem}", w) for p in args.precisions for w in args.widths for stem in args.stems]
    runs: dict[tuple, list[dict]] = {c: [] for c in configs}
    for rep in range(args.repeats):  # rounds over every configuration: a load that drifts hits all alike
        for precision, name, width in configs:
            runs[(precision, name, width)].append(_child(args, name, width, precision))
            print(f"# round {rep + 1}: {name} width {width:g} {precision}", file=sys.stderr, flush=True)
    rows = [_median(results) for results in runs.values()]
    print(f"Training step (forward + backward + TF-RMSProp), batch {args.batch}, device {args.device}, "
          f"threads {torch.get_num_threads()}, channels_last {args.channels_last}, median of {args.steps} steps "
          f"after {args.warmup} warm-up, median over {args.repeats} round(s); {time.perf_counter() - start:.0f} s")
    print(_table(rows))
    if args.json:
        atomic_write_json(args.json, rows, indent=2)


if __name__ == "__main__":
    main()
