"""The sections of ``gpu_check.py`` that run the project as a user does: ``lowres train`` killed and resumed,
``lowres eval`` and ``lowres rescore``, bf16 against fp32, ``torchrun`` and the ``cuda`` tests.

Every run is the command line in a child process (``python -m lowres.cli``, as ``lowres`` and torchrun start it):
no GPU-only copy of the training loop. The resume comparison is the CPU test's (tests/training/test_resume.py):
the killed-and-resumed run's model, EMA, optimiser and scheduler against an uninterrupted run's, and its
history without the timing fields.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from _gpu_plan import REPO, Plan

Emit = Callable[[dict], None]
TIMING = {"images_per_s", "seconds", "val_seconds"}


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def _cli(args: list[str], log: Path, *, torchrun: bool = False, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``python -m lowres.cli ARGS`` (under ``torchrun --standalone --nproc_per_node 1`` with ``torchrun``), its
    output appended to ``log``; returns the exit code, wall seconds and the last lines of its error output."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m"] if torchrun else ["-m"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *launcher, "lowres.cli", *args], cwd=REPO, env=env or _env(),
                          capture_output=True, text=True)
    with log.open("a") as f:
        f.write(f"$ lowres {' '.join(args)}\n{proc.stdout}{proc.stderr}\n")
    out = {"rc": proc.returncode, "seconds": time.perf_counter() - start}
    if proc.returncode != 0:
        out["error"] = proc.stderr.strip().splitlines()[-4:]
    out["_output"] = proc.stdout + proc.stderr
    return out


def _public(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if not k.startswith("_")}


def run_data(plan: Plan, work: Path) -> Path:
    """The COCO-layout folder the command-line runs use: the plan's, else the generated synthetic set."""
    if plan.run_on_coco and plan.coco:
        return plan.coco
    from detection_bridge import synthetic

    return synthetic.generate(work / "synthetic")


def _train_args(plan: Plan, work: Path, out: Path, *sets: str) -> list[str]:
    data = ["--data", str(run_data(plan, work))]
    sets_all = [f"data.cache_dir={work / 'cache'}", f"train.device={plan.device}", *plan.run_sets, *sets]
    return ["train", "--config", "smoke", *data, "--out", str(out), "--no-progress",
            *[a for s in sets_all for a in ("--set", s)]]


def _killed_run(args: list[str], out: Path, log: Path) -> dict[str, Any]:
    """Start the run and SIGKILL it as soon as its first checkpoint (a mid-epoch one) is in place."""
    start = time.perf_counter()
    with log.open("a") as f:
        f.write(f"$ lowres {' '.join(args)}  (SIGKILLed at its first checkpoint)\n")
        proc = subprocess.Popen([sys.executable, "-m", "lowres.cli", *args], cwd=REPO, env=_env(), stdout=f,
                                stderr=subprocess.STDOUT)
        while proc.poll() is None and not (out / "last.pt").is_file():
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        rc = proc.wait()
    return {"rc": rc, "seconds": time.perf_counter() - start, "killed": rc == -signal.SIGKILL}


def _compare(a: dict[str, Any], b: dict[str, Any], where: str, diffs: dict[str, float]) -> None:
    """Largest absolute difference of every tensor of ``a`` and ``b`` (nested dicts), by name; non-tensors must
    be equal (a difference there is recorded as infinity)."""
    for key in a.keys() | b.keys():
        x, y = a.get(key), b.get(key)
        name = f"{where}.{key}"
        if isinstance(x, dict) and isinstance(y, dict):
            _compare(x, y, name, diffs)
        elif isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape:
            diffs[name] = (x.double() - y.double()).abs().max().item() if x.numel() else 0.0
        elif not isinstance(x, torch.Tensor) and x == y:
            continue
        else:
            diffs[name] = float("inf")


def _resume_check(plan: Plan, work: Path, log: Path, deterministic: bool) -> dict[str, Any]:
    """An uninterrupted run and one SIGKILLed at its first mid-epoch checkpoint then resumed, compared."""
    from lowres.checkpoint import load_checkpoint

    tag = "deterministic" if deterministic else "default"
    sets = (f"train.deterministic={str(deterministic).lower()}",)
    straight, killed = work / "runs" / f"straight-{tag}", work / "runs" / f"killed-{tag}"
    out: dict[str, Any] = {"train.deterministic": deterministic,
                           "straight": _public(_cli(_train_args(plan, work, straight, *sets), log))}
    if out["straight"]["rc"] != 0:
        return out
    out["killed"] = _killed_run(_train_args(plan, work, killed, *sets), killed, log)
    mid = load_checkpoint(killed / "last.pt")
    out["killed_at_step"] = int(mid["global_step"])
    out["resumed"] = _public(_cli(["train", "--resume", "--out", str(killed), "--no-progress"], log))
    if out["resumed"]["rc"] != 0:
        return out
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(killed / "last.pt")
    diffs: dict[str, float] = {}
    for part in ("model", "ema", "optimizer", "scheduler"):
        _compare(a[part], b[part], part, diffs)
    strip = [[{k: v for k, v in line.items() if k not in TIMING} for line in s["history"]] for s in (a, b)]
    same_steps = a["global_step"] == b["global_step"]
    out.update(steps=[int(a["global_step"]), int(b["global_step"])], history_equal=strip[0] == strip[1],
               tensors_compared=len(diffs), tensors_differing=sum(d > 0 for d in diffs.values()),
               max_abs_diff=max(diffs.values(), default=0.0),
               bitwise_equal=all(d == 0 for d in diffs.values()) and strip[0] == strip[1] and same_steps)
    out["_checkpoint"] = str(killed / "last.pt")
    return out


def _precision_agreement(plan: Plan, data: Path, checkpoint: str) -> dict[str, Any]:
    """The checkpoint on every val crop (``lowres eval``'s config: ``evaluate_loaded``) in fp32 and in bf16."""
    from lowres.builder import load_model
    from lowres.config import Config
    from lowres.runtime import resolve_device
    from lowres.training.evaluate import eval_config, evaluate_loaded

    loaded = load_model(checkpoint, use_ema=True, device=resolve_device(plan.device))
    cfg = eval_config(loaded, data=str(data), boxes="gt", detections_file=None,
                      batch_size=None, device=plan.device).to_dict()
    top1: dict[str, list[int]] = {}
    out: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        ev = evaluate_loaded(loaded, Config.from_dict({**cfg, "train": {**cfg["train"], "precision": precision}}), "val")
        top1[precision] = ev.per_crop()["top1"]
        out[f"top1_{precision}"] = ev.metrics["top1"]
    same = sum(a == b for a, b in zip(top1["fp32"], top1["bf16"]))
    out.update(crops=len(top1["fp32"]), same_top1_prediction=same / max(len(top1["fp32"]), 1),
               top1_difference=abs(out["top1_fp32"] - out["top1_bf16"]))
    return out


def _detections_file(data: Path) -> Path | None:
    found = sorted((data / "detections").glob("*_val.json"))
    preferred = [p for p in found if p.name.startswith("yolofastest")]
    return (preferred or found or [None])[0]


def short_run(plan: Plan, work: Path, emit: Emit) -> None:
    """``lowres train`` killed and resumed (deterministic as the CPU test; if that cannot run here, the default
    settings compared within tolerance), then ``lowres eval`` and ``lowres rescore`` of the resumed run on the
    plan's device, and bf16 against fp32 on the val crops."""
    log, data = work / "short_run.log", run_data(plan, work)
    result: dict[str, Any] = {"device": plan.device, "data": str(data),
                              "log": str(log), "resume": [_resume_check(plan, work, log, deterministic=True)]}
    emit(_strip(result))
    if "_checkpoint" not in result["resume"][0]:
        result["resume"].append(_resume_check(plan, work, log, deterministic=False))
        emit(_strip(result))
    checkpoint = next((r["_checkpoint"] for r in result["resume"] if "_checkpoint" in r), None)
    if checkpoint is None:
        result["eval"] = result["rescore"] = {"skipped": "no run finished"}
        emit(_strip(result))
        return
    metrics = work / "eval.json"
    result["eval"] = _public(_cli(["eval", "--checkpoint", checkpoint, "--device", plan.device, "--out", str(metrics)], log))
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        result["eval"].update(top1=m["top1"], count=m["count"], images_per_s=m["images_per_s"])
    emit(_strip(result))
    detections = _detections_file(data)
    if detections is None:
        result["rescore"] = {"skipped": "no detections/*_val.json in the data folder"}
    else:
        summary = work / "rescore_summary.json"
        result["rescore"] = _public(_cli(
            ["rescore", "--checkpoint", checkpoint, "--detections", str(detections), "--data", str(data),
             "--split", "val", "--device", plan.device, "--fusion", "product", "--out", str(work / "rescored.json"),
             "--metrics-out", str(summary), "--no-progress"], log))
        if summary.is_file():
            s = json.loads(summary.read_text())
            result["rescore"].update({k: s.get(k) for k in ("detections", "images", "kept", "metrics")})
    emit(_strip(result))
    result["bf16_vs_fp32"] = _precision_agreement(plan, data, checkpoint)
    emit(_strip(result))


def _strip(result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "resume": [_public(r) for r in result["resume"]]}


def torchrun(plan: Plan, work: Path, emit: Emit) -> None:
    """``torchrun --nproc_per_node 1 -m lowres.cli train`` through one epoch, then a second epoch resumed: the
    process group, DDP and the gathers on one device (nccl on CUDA, gloo on a CPU)."""
    from lowres.checkpoint import load_checkpoint

    log, out = work / "torchrun.log", work / "runs" / "torchrun"
    env = _env(NCCL_DEBUG="INFO", OMP_NUM_THREADS="1")
    result: dict[str, Any] = {"device": plan.device, "data": str(run_data(plan, work)), "log": str(log)}
    first = _cli(_train_args(plan, work, out, "train.epochs=1"), log, torchrun=True, env=env)
    result["epoch_1"] = _public(first)
    emit(result)
    if first["rc"] != 0:
        return
    second = _cli(["train", "--resume", "--out", str(out), "--no-progress", "--set", "train.epochs=2"], log,
                  torchrun=True, env=env)
    result["epoch_2_resumed"] = _public(second)
    text = first["_output"] + second["_output"]
    backends = re.findall(r"distributed: \d+ process\(es\), (\w+) backend", text)
    state = load_checkpoint(out / "last.pt") if second["rc"] == 0 else None
    result.update(backends=backends, nccl_log_lines=sum("NCCL INFO" in line for line in text.splitlines()),
                  resumed_from_epoch_1="resumed from" in second["_output"],
                  epochs_done=int(state["epoch"]) if state else None,
                  metrics_lines=len((out / "metrics.jsonl").read_text().splitlines()) if state else None)
    emit(result)


def cuda_tests(plan: Plan, work: Path, emit: Emit) -> None:
    """The tests marked ``cuda`` (pytest -m cuda): they run on a GPU and are skipped, saying why, without one."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-rs",
                           "tests/training/test_cuda.py"], cwd=REPO, env=_env(), capture_output=True, text=True)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", proc.stdout)}
    emit({"rc": proc.returncode, "seconds": time.perf_counter() - start, "counts": counts,
          "summary": proc.stdout.strip().splitlines()[-12:]})


SECTIONS: dict[str, Callable[[Plan, Path, Emit], None]] = {"short_run": short_run, "torchrun": torchrun,
                                                          "cuda_tests": cuda_tests}
