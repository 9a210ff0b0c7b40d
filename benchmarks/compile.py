"""torch.compile against eager: inference and a training step of the paper's network, in one process.

    python benchmarks/compile.py [--stem 79] [--width 1.0] [--batch 16] [--rounds 3] [--iters 3] [--peak-seconds 60]

The model as ``lowres train`` / ``lowres eval`` run it with ``--compile`` (``lowres.models.compile_model``: the
module compiled in place) and without, bf16 autocast + channels_last, width 1.0, 79 stem, batch 16:

* inference: eval-mode forward under ``torch.inference_mode``;
* training step: forward with the aux head, label-smoothed loss + 0.4 aux (``inception_loss``), backward,
  global gradient clipping at 2.0, TF-RMSProp step (``lowres.training.recipe``), as ``train_one_epoch`` does (``_common.train_step_call``).

The compile time is the first call's wall time (tracing + inductor code generation). Inductor keeps compiled
code in an on-disk cache, so a second run's first call mostly loads it; for a cold compile, give the run a
fresh cache: ``TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python benchmarks/compile.py``. Rounds alternate eager and compiled; each round is the median
of ``--iters`` calls; the table gives the median over rounds, the spread (slowest, fastest round) and the
ratio of medians, stated only where the spreads do not overlap. Then (unless ``--peak-seconds 0``) the
dense-kernel peak of the machine in fp32 and bf16 (``_common.peak_flops``: the fastest call over that many
seconds per dtype of eager and compiled GEMM and two NHWC 3x3 convolutions) and each row's fraction of it.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import inference_call, peak_flops, time_per_call, train_step_call  # noqa: E402

from lowres import build_model  # noqa: E402
from lowres.models import compile_model  # noqa: E402
from lowres.models.profile import forward_flops  # noqa: E402


def _first_call_seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _compare(name: str, make, model: torch.nn.Module, args: argparse.Namespace, flops: float) -> list[dict]:
    """Eager and compiled copies of ``model`` timed by ``make(model)`` in alternating rounds."""
    eager_model = copy.deepcopy(model)
    compiled_model = compile_model(copy.deepcopy(model))
    calls = {"eager": make(eager_model), "compiled": make(compiled_model)}
    first = {k: _first_call_seconds(fn) for k, fn in calls.items()}
    rounds: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(args.rounds):
        for k, fn in calls.items():
            rounds[k].append(args.batch / time_per_call(fn, warmup=1, iters=args.iters))
    rows = []
    for k, values in rounds.items():
        rows.append({"what": name, "mode": k, "median": statistics.median(values), "lo": min(values),
                     "hi": max(values), "first_call_s": first[k], "flops": flops})
    e, c = rows
    c["ratio"] = c["median"] / e["median"]
    c["separate"] = c["lo"] > e["hi"] or c["hi"] < e["lo"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stem", type=int, default=79)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--peak-seconds", type=float, default=60.0, help="0: no peak measurement")
    args = parser.parse_args()
    torch.manual_seed(0)
    fmt = torch.channels_last
    model = build_model(args.stem, 1000, width=args.width).to(memory_format=fmt)
    x = torch.randn(args.batch, 3, args.stem, args.stem).to(memory_format=fmt)
    y = torch.randint(0, 1000, (args.batch,))
    fwd = forward_flops(model.eval(), args.stem)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, stem {args.stem}, width {args.width}, "
          f"batch {args.batch}, bf16 autocast + channels_last, {args.rounds} rounds x {args.iters} calls")
    rows = _compare("inference", lambda m: inference_call(m.eval(), x, "bf16"), model, args, fwd)
    rows += _compare("training step", lambda m: train_step_call(m.train(), x, y, "bf16"), model, args, 3 * fwd)
    peak = None
    if args.peak_seconds > 0:
        routes = {dt: peak_flops(dt, seconds=args.peak_seconds) for dt in (torch.float32, torch.bfloat16)}
        for dt, r in routes.items():
            print(f"{str(dt).replace('torch.', '')} dense peak: " + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in r.items())
                  + " GFLOP/s")
        peak = routes[torch.bfloat16]["peak"]
    print("| what | mode | images/s (median) | spread | vs eager | first call (s) | of bf16 peak |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" + ("" if r["separate"] else " (spreads overlap)") if "ratio" in r else ""
        share = f"{r['flops'] * r['median'] / peak:.0%}" if peak else ""
        print(f"| {r['what']} | {r['mode']} | {r['median']:.1f} | {r['lo']:.1f}-{r['hi']:.1f} | {ratio} | "
              f"{r['first_call_s']:.1f} | {share} |")
    print("(training FLOPs are counted as 3x the forward's: forward + backward; the aux head is not counted)")


if __name__ == "__main__":
    main()
