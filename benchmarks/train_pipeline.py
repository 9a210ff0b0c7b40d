"""Training pipeline vs model-only step rate, per bench variant, in one process (issue 19's measure of the gap).

    python benchmarks/train_pipeline.py [--preset imagenette] [--data ../shared/data/imagenette]
                                        [--variants 79 151 299 upsample-79] [--steps 24] [--warmup 4]
                                        [--rounds 3] [--quick] [--profile] [--torch-profile]
                                        [--json rows.json]

Each variant is built exactly as the bench trains it (``variant_config`` of the preset, the real ``Trainer``:
model, optimiser, scheduler, EMA, sampler, seeded loader with its workers). Two step rates are timed:

- **pipeline**: ``train_one_epoch`` over the trainer's own loader, i.e. what a training run does per step:
  the workers' decoding, region sampling, resampling, flip and colour draws, the batch transfer, the device
  transforms (uint8 -> float, colour jitter, normalisation, upsample-79's resize), forward, backward, clipping,
  the optimiser, the EMA and the totals' bookkeeping;
- **model**: ``train_step`` alone, on one batch made into model inputs once and kept in memory.

Rounds alternate pipeline and model for every variant (a load that drifts hits both alike); the ratio of each
round is pipeline/model and the median ratio is reported with the range of the rounds. Warm-up steps (worker
start, first-call allocations) are not timed. ``--profile`` adds where the difference goes: the main process's
time per step waiting for the loader, in the device transforms and in the step, and the CPU time per batch that
one loader worker spends making samples (timed in-process, single-threaded); ``--torch-profile`` prints
torch.profiler's operator table of a few pipeline steps. Throughput is measured here, never
asserted in tests. The last line reads ``pipeline/model step rate: 79 R, 151 R, 299 R, upsample-79 R``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detection_bridge.fileio import atomic_write_json  # noqa: E402
from lowres.bench.variants import VARIANTS, load_bench_preset, variant_config  # noqa: E402
from lowres.device_transforms import model_inputs  # noqa: E402
from lowres.runtime import input_dtype, resolve_device  # noqa: E402
from lowres.training.data import load_split_data  # noqa: E402
from lowres.training.distributed import DistEnv  # noqa: E402
from lowres.training.engine import train_one_epoch, train_step  # noqa: E402
from lowres.training.trainer import Trainer  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_trainer(spec: Any, name: str, data: str) -> Trainer:
    """The bench's trainer of variant ``name`` (first seed), as ``lowres bench`` builds it."""
    cfg = variant_config(spec.config, VARIANTS[name], seed=spec.seed_values()[0], data=data)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    env = DistEnv(device=resolve_device(cfg.train.device))
    train_data = load_split_data(Path(data), cfg.data.train_split, cfg, train=True, env=env)
    return Trainer(cfg, env, train_data, train_data)  # validation is not timed here


def pipeline_rate(trainer: Trainer, epoch: int, warmup: int, steps: int) -> float:
    """Images/s of ``train_one_epoch`` over the trainer's loader (workers started afresh, as every epoch)."""
    stamps: list[float] = []
    trainer.sampler.set_position(epoch, 0)
    trainer.loader.dataset.set_epoch(epoch)
    device = trainer.env.device

    def on_step(_totals: Any, _info: Any) -> None:
        _sync(device)
        stamps.append(time.perf_counter())

    train_one_epoch(trainer.ddp, trainer.loader, trainer.optimizer, trainer.scheduler, trainer.recipe, device=device,
                    steps=warmup + steps, ema=trainer.ema, on_step=on_step)
    return steps * trainer.cfg.train.batch_size / (stamps[-1] - stamps[warmup - 1])


def model_rate(trainer: Trainer, inputs: tuple[torch.Tensor, torch.Tensor], warmup: int, steps: int) -> float:
    """Images/s of ``train_step`` on one batch of model inputs kept in memory."""
    device, x, y = trainer.env.device, inputs[0], inputs[1]
    trainer.ddp.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        train_step(trainer.ddp, x, y, trainer.optimizer, trainer.scheduler, trainer.recipe, device=device,
                   ema=trainer.ema)
    _sync(device)
    return steps * x.shape[0] / (time.perf_counter() - start)


def breakdown(trainer: Trainer, epoch: int, warmup: int, steps: int) -> dict[str, float]:
    """Milliseconds per step in the main process (waiting for the loader, device transforms, the step) and the
    CPU milliseconds one worker spends making a batch (the same samples, timed in this process)."""
    cfg, device, recipe = trainer.cfg, trainer.env.device, trainer.recipe
    trainer.sampler.set_position(epoch, 0)
    dataset = trainer.loader.dataset
    dataset.set_epoch(epoch)
    wait = inputs = step = 0.0
    it = iter(trainer.loader)
    trainer.ddp.train()
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        x, y = model_inputs(batch, device, channels_last=recipe.channels_last, size=recipe.upsample_to,
                            dtype=input_dtype(recipe.precision))
        _sync(device)
        t2 = time.perf_counter()
        train_step(trainer.ddp, x, y, trainer.optimizer, trainer.scheduler, recipe, device=device, ema=trainer.ema)
        _sync(device)
        t3 = time.perf_counter()
        if i >= warmup:
            wait, inputs, step = wait + t1 - t0, inputs + t2 - t1, step + t3 - t2
    del it
    indices = list(trainer.sampler)[:cfg.train.batch_size * 2]
    t0 = time.process_time()
    for index in indices:
        dataset[index]
    worker = (time.process_time() - t0) / 2
    return {"wait_ms": 1e3 * wait / steps, "device_transforms_ms": 1e3 * inputs / steps,
            "step_ms": 1e3 * step / steps, "worker_cpu_ms_per_batch": 1e3 * worker}


def torch_profile(trainer: Trainer, epoch: int, steps: int) -> str:
    """torch.profiler's table of the main process's operators over ``steps`` pipeline steps (self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.env.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        pipeline_rate(trainer, epoch, 1, steps)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def measure(trainer: Trainer, rounds: int, warmup: int, steps: int, profile: bool) -> dict[str, Any]:
    """Alternating rounds of pipeline and model-only rates; the median ratio and its range."""
    first = next(iter(trainer.loader))
    inputs = model_inputs(first, trainer.env.device, channels_last=trainer.recipe.channels_last,
                          size=trainer.recipe.upsample_to, dtype=input_dtype(trainer.recipe.precision))
    pipe, model = [], []
    for r in range(rounds):
        pipe.append(pipeline_rate(trainer, r, warmup, steps))
        model.append(model_rate(trainer, inputs, warmup, steps))
    ratios = [p / m for p, m in zip(pipe, model)]
    row: dict[str, Any] = {"pipeline_images_per_s": statistics.median(pipe), "model_images_per_s":
                           statistics.median(model), "ratio": statistics.median(ratios),
                           "ratio_range": [min(ratios), max(ratios)], "rounds": rounds, "pipeline": pipe,
                           "model": model}
    if profile:
        row["breakdown"] = breakdown(trainer, rounds, warmup, steps)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="imagenette")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imagenette"))
    parser.add_argument("--variants", nargs="+", default=["79", "151", "299", "upsample-79"])
    parser.add_argument("--steps", type=int, default=24, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps before each measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="--steps 12 --rounds 3: about 10 minutes on 2 cores")
    parser.add_argument("--profile", action="store_true", help="also where the time goes (see the docstring)")
    parser.add_argument("--torch-profile", action="store_true", help="also torch.profiler's operator table "
                        "of a few pipeline steps per variant (after the timed rounds)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="preset override, e.g. "
                        "data.num_workers=2")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 12, 3
    if not Path(args.data).is_dir():
        raise SystemExit(f"no data at {args.data} (pass --data)")
    spec = load_bench_preset(args.preset, args.overrides)
    start, rows = time.perf_counter(), {}
    for name in args.variants:
        trainer = build_trainer(spec, name, args.data)
        rows[name] = measure(trainer, args.rounds, args.warmup, args.steps, args.profile)
        r = rows[name]
        print(f"{name}: pipeline {r['pipeline_images_per_s']:.1f} images/s, model {r['model_images_per_s']:.1f}, "
              f"ratio {r['ratio']:.2f} [{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}]"
              + ("; per step: " + ", ".join(f"{k} {v:.0f}" for k, v in r["breakdown"].items())
                 if "breakdown" in r else ""), flush=True)
        if args.torch_profile:
            print(torch_profile(trainer, args.rounds + 1, min(args.steps, 6)), flush=True)
        del trainer
    cfg = spec.config
    print(f"# preset {args.preset}, batch {cfg['train']['batch_size']}, {cfg['data']['num_workers']} worker(s), "
          f"{torch.get_num_threads()} threads, {args.steps} timed steps after {args.warmup}, {args.rounds} rounds, "
          f"{time.perf_counter() - start:.0f} s")
    if args.json:
        atomic_write_json(args.json, rows, indent=2)
    print("pipeline/model step rate: " + ", ".join(f"{n} {r['ratio']:.2f}" for n, r in rows.items()))


if __name__ == "__main__":
    main()
