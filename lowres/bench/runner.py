"""``run_bench``: train and evaluate every variant x seed, measure their cost, write the report.

Layout of REPORT_DIR::

    report.md, report.json, top1_vs_input.png, top1_by_size.png, learning_curves.png
    runs/<variant>/seed<k>/    a plain ``lowres train`` run folder (config.yaml, metrics.jsonl, last.pt,
                               best.pt, val_metrics.json) plus result.json: the bench's evaluation of the
                               final (EMA) weights on the validation split, with per-crop predictions

Resumable: a run folder with a result.json of the same config is reused as is (not retrained, not
re-evaluated); one without (interrupted) continues from its last.pt through the training code's own
resume; a run folder of another config is an error that names the differing keys (choose another --out).
Costs (parameters, GFLOPs, images/s) are measured afresh on every invocation, for all variants in the
same process, so the speed column always compares like with like.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from .._atomic import atomic_write_json
from ..builder import load_model
from ..config import Config
from ..config_checks import RUNTIME, keys_of_kind
from ..errors import BenchError, TrainingInterrupted
from ..provenance import git_state
from ..runtime import resolve_device
from ..training.evaluate import evaluate_loaded
from ..training.run import train
from .measure import measure_throughput, profile_variant
from .plots import run_curves, write_plots
from .report import build_report, write_report
from .variants import VARIANTS, BenchSpec, variant_config

__all__ = ["BenchError", "run_bench", "run_variant", "evaluate_run", "config_differences", "RUNTIME_KEYS"]

logger = logging.getLogger(__name__)

# Keys that change where or how fast a run goes, not what it learns: a finished run is reused across them
# (declared with each field in lowres/config.py).
RUNTIME_KEYS = frozenset(keys_of_kind(Config, RUNTIME))


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``['train.epochs: 8 -> 10', ...]`` over every key but :data:`RUNTIME_KEYS`."""
    a, b = _flatten(old), _flatten(new)
    defaults = _flatten(Config().to_dict())
    # A key added to the config since the run was made, at its default value, changes nothing it learnt.
    return [f"{key}: {a.get(key)!r} -> {b.get(key)!r}" for key in sorted(set(a) | set(b))
            if key not in RUNTIME_KEYS and a.get(key) != b.get(key)
            and not (key not in a and key in defaults and b.get(key) == defaults[key])]


def _check_same_config(run_dir: Path, old: dict[str, Any], cfg: Config, what: str) -> None:
    diff = config_differences(old, cfg.to_dict())
    if diff:
        raise BenchError(f"{run_dir} holds a {what} of another configuration ({'; '.join(diff[:6])}"
                         f"{'; ...' if len(diff) > 6 else ''}): use another --out, or delete that folder to retrain")


def _history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate_run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Evaluate the run's final checkpoint (EMA weights when configured) on the validation split.

    ``lowres eval``'s evaluation (:func:`lowres.training.evaluate.evaluate_loaded`) under the run's own config,
    so it scores the crops training validated on, keeping the per-crop predictions the report needs for seed
    aggregation and paired comparisons between variants.
    """
    loaded = load_model(run_dir / "last.pt", use_ema=cfg.eval.use_ema, device=cfg.train.device)
    result = evaluate_loaded(loaded, cfg, cfg.data.val_split)
    metrics = result.metrics
    logger.info(f"  val: top-1 {metrics['top1']:.4f} on {metrics['count']} crops ({loaded.weights} weights, "
                f"epoch {loaded.epoch})")
    return {"metrics": metrics, "predictions": result.per_crop(), "weights": loaded.weights,
            "epochs": int(loaded.epoch or 0), "steps": int(loaded.global_step or 0),
            "num_classes": loaded.category_map.num_classes, "data_dir": str(result.data_dir)}


def run_variant(cfg: Config, run_dir: Path, *, name: str, seed: int, progress: bool = True,
                command: str | None = None) -> dict[str, Any]:
    """Train (or resume, or reuse) one variant x seed in ``run_dir`` and return its result dict."""
    result_path = run_dir / "result.json"
    if result_path.is_file():
        result = json.loads(result_path.read_text(encoding="utf-8"))
        _check_same_config(run_dir, result["config"], cfg, "finished run")
        logger.info(f"{name} seed {seed}: finished earlier ({result_path}); not retrained")
        return {**result, "reused": True}
    saved = run_dir / "config.yaml"
    if saved.is_file():
        _check_same_config(run_dir, yaml.safe_load(saved.read_text(encoding="utf-8")), cfg, "training run")
    resumed = (run_dir / "last.pt").is_file()
    try:
        summary = train(cfg, run_dir, resume="auto", progress=progress, command=command)
    except TrainingInterrupted as stop:  # continuing means running the bench again, not `lowres train --resume`
        raise TrainingInterrupted(
            f"{name} seed {seed} interrupted after optimiser step {stop.step}: {stop.checkpoint} holds it; "
            "continue by running the same lowres bench command again (finished runs are reused, this one "
            "resumes)", step=stop.step, checkpoint=stop.checkpoint) from None
    result = evaluate_run(cfg, run_dir)
    history = _history(run_dir)
    result.update(variant=name, seed=seed, config=cfg.to_dict(), history=history, resumed=resumed,
                  train_seconds=float(sum(line.get("seconds", 0.0) for line in history)),
                  last_invocation_seconds=float(summary["wall_seconds"]), run_dir=str(run_dir),
                  num_train=int(summary["num_train"]))
    atomic_write_json(result_path, result, indent=1)
    return {**result, "reused": False}


def environment(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the speed and time columns were measured on."""
    device = resolve_device(cfg["train"]["device"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or
                                                                             platform.machine())
    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "device": str(device), "device_name": name, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), **git_state()}


def _costs(spec: BenchSpec, configs: dict[str, Config], results: dict[str, list[dict[str, Any]]]
           ) -> dict[str, dict[str, Any]]:
    logger.info(f"measuring parameters, GFLOPs and inference images/s of {len(configs)} variants "
                f"(batch {spec.throughput.batch}, {spec.throughput.rounds} interleaved rounds)")
    jobs = {name: (cfg, int(results[name][0]["num_classes"]), VARIANTS[name].input_size)
            for name, cfg in configs.items()}
    speed = measure_throughput(jobs, spec.throughput)
    return {name: {**profile_variant(cfg, n, size), **speed[name]} for name, (cfg, n, size) in jobs.items()}


def _wall_times(out: Path, seconds: float, results: dict[str, list[dict[str, Any]]], shared: dict[str, Any], *,
                interrupted: bool = False) -> list[dict[str, Any]]:
    """Record this invocation's wall time in REPORT_DIR/wall_times.json and return every invocation's, this one
    last. Called when an invocation ends, finished or interrupted, so a study that spans several invocations
    counts all of them (a re-render, every run reused, adds its few seconds and keeps the training time). Only
    invocations of this training config (``shared``) count: another config's trained nothing this one reuses.
    A folder from before the record file starts from its report.json's chain."""
    path = out / "wall_times.json"
    previous: list[dict[str, Any]] = []
    other_study = False
    for source, key in ((path, "invocations"), (out / "report.json", "wall_times")):
        try:
            old = json.loads(source.read_text(encoding="utf-8"))
            other_study = bool(config_differences(old["config"] if key == "invocations" else old["preset"]["config"],
                                                  shared))
            if not other_study:
                previous = old.get(key) or [{"seconds": float(old["bench_seconds"]), "trained": None}]
            break
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # absent or unreadable: the next source, else this invocation is the first on record
    trained = sum(not r.get("reused") for runs in results.values() for r in runs)
    times = [*previous, {"seconds": seconds, "trained": trained, **({"interrupted": True} if interrupted else {})}]
    if interrupted and other_study:
        return times  # e.g. refused for its changed config: the folder's study keeps its record
    atomic_write_json(path, {"config": shared, "invocations": times}, indent=1)
    return times


def _train_all(spec: BenchSpec, out: Path, data: str | None, command: str | None, progress: bool,
               results: dict[str, list[dict[str, Any]]], configs: dict[str, Config]) -> None:
    """Every variant x seed of ``spec``, in order, into ``results`` / ``configs`` (filled as runs finish, so an
    interrupted invocation still knows what it trained)."""
    for name in spec.variants:
        variant = VARIANTS[name]
        for seed in spec.seed_values(name):
            cfg = variant_config(spec.config, variant, seed=seed, data=data)
            configs.setdefault(name, cfg)
            logger.info(f"== {name}: {variant.note} (seed {seed})")
            results.setdefault(name, []).append(
                run_variant(cfg, out / "runs" / name / f"seed{seed}", name=name, seed=seed, progress=progress,
                            command=command))


def run_bench(spec: BenchSpec, out_dir: str | os.PathLike, *, data: str | None = None, command: str | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Run the benchmark of ``spec`` into ``out_dir`` and write report.md, report.json and the plots.

    ``data``: a coco-mini-layout folder (train on ``data.train_split``, report on ``data.val_split``);
    None = the generated synthetic set (printed as a note). Returns the report dict (report.json).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if data is None and spec.config["data"]["path"] is None:
        logger.info("note: no --data given: the bench runs on the generated synthetic set; its numbers check the "
                    "pipeline and say nothing about COCO or the paper")
    elif data is not None:
        data = str(Path(data).expanduser().resolve())
    start = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    configs: dict[str, Config] = {}
    try:
        _train_all(spec, out, data, command, progress, results, configs)
    except BaseException:  # Ctrl-C, a full disk, a bad run: the time spent so far still counts for the study
        try:
            _wall_times(out, time.perf_counter() - start, results, spec.config, interrupted=True)
        except OSError as exc:  # the failure being raised says more than this one
            logger.debug(f"wall time not recorded: {exc}")
        raise
    for runs in results.values():
        for r in runs:  # learning curves from what training wrote (scalars.csv), read afresh for reused runs too
            r["curves"] = run_curves(r["run_dir"], r["history"])
    costs = _costs(spec, configs, results)
    report = build_report(spec, results, costs, configs=configs, data=data, command=command,
                          environment=environment(spec.config),
                          wall_times=_wall_times(out, time.perf_counter() - start, results, spec.config))
    report["plots"] = write_plots(report, out)
    if not report["plots"]:
        logger.info("note: matplotlib is not installed, so no plots were drawn (pip install 'lowres[report]')")
    paths = write_report(report, out)
    logger.info(f"report: {paths['md']} ({paths['json'].name}, {', '.join(report['plots'])})")
    return report
