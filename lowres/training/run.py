"""``train(cfg, out_dir)``: data, model, optimiser, checkpoints, logging.

The policy layer over :mod:`lowres.training.engine`: it decides what is written where (``config.yaml``,
``metrics.jsonl``, ``last.pt``/``best.pt``, ``val_metrics.json`` in the run folder, by rank 0 only), what is
printed (notes and a tqdm bar per epoch) and how a run resumes. Validation during training and
``lowres eval`` go through the same :func:`lowres.training.evaluate.evaluate_model`.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Union

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._atomic import atomic_path, atomic_write_bytes, atomic_write_json, json_line, remove_stale_temporaries
from .._lock import FolderLockedError, folder_lock
from ..builder import build_model_from_config, load_weights
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..config import Config, save_config
from ..models import compile_model
from ..provenance import collect
from .checkpoint import capture_rng_state, check_compatible, periodic_path, restore_rng_state, save_periodic
from .data import load_split_data, resolve_data_dir, train_loader
from .distributed import (DistEnv, ResumableSampler, all_gather_object, all_reduce_sum, barrier, broadcast_object,
                          broadcast_state, cleanup_distributed, setup_distributed, wrap_model)
from .engine import EpochTotals, StepInfo, StepRecipe, TrainingDiverged, train_one_epoch
from .evaluate import evaluate_model
from .monitor import RunMonitor
from .recipe import ModelEma, build_optimizer, build_scheduler

__all__ = ["train"]

Log = Callable[[str], None]
Resume = Union[bool, Literal["auto"]]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _configure_runtime(cfg: Config, env: DistEnv) -> None:
    """Threads, seeds (offset by rank so dropout differs per process) and determinism switches."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed = cfg.train.seed + env.rank
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl, rewritten whole from the checkpoint's history so a resumed run never duplicates lines."""
    with atomic_path(out_dir / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json_line(line) + "\n" for line in history), encoding="utf-8")


def _plain(data: Any) -> Any:
    """JSON-safe plain data (numpy scalars become Python numbers, NaN null): loadable with weights_only."""
    return None if data is None else json.loads(json_line(data))


def _checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint file holds; None when it is missing or unreadable."""
    try:
        return int(load_checkpoint(path)["epoch"]) if path.is_file() else None
    except CheckpointError:
        return None


def _check_finite_weights(module: nn.Module, step: int) -> None:
    """Refuse to checkpoint NaN/Inf weights, so last.pt always stays the last good state."""
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TrainingDiverged(f"training diverged: weight {name} is not finite after optimiser step {step}; "
                                   "not saved, the last checkpoint written before it is kept. Lower optim.lr")


class _Run:
    """The mutable state of one training run and the operations on it (kept small: see ``train``)."""

    def __init__(self, cfg: Config, out_dir: Path, env: DistEnv, monitor: RunMonitor, progress: bool) -> None:
        self.cfg, self.out_dir, self.env, self.monitor, self.progress = cfg, out_dir, env, monitor, progress
        self.log = log = monitor.log
        self.data_dir = data_dir = resolve_data_dir(cfg, env=env, log=log)
        self.train_data = load_split_data(data_dir, cfg.data.train_split, cfg, train=True, env=env, log=log)
        self.val_data = load_split_data(data_dir, cfg.data.val_split, cfg, train=False, env=env, log=log,
                                        category_map=self.train_data.category_map)
        self.model = build_model_from_config(cfg, self.train_data.category_map.num_classes, log=log).to(env.device)
        self.sampler = ResumableSampler(self.train_data.dataset, env=env, shuffle=True, seed=cfg.train.seed)
        self.loader = train_loader(self.train_data, self.sampler, cfg)
        full_steps = self.sampler.num_samples // cfg.train.batch_size
        if full_steps == 0:
            raise ValueError(f"{len(self.train_data.records)} training crops over {env.world_size} process(es) "
                             f"give no full batch of {cfg.train.batch_size}")
        self.steps_per_epoch = min(full_steps, cfg.train.max_steps_per_epoch or full_steps)
        self.ddp = wrap_model(self.model, env, sync_bn=cfg.model.sync_bn)
        if env.distributed:
            backend = torch.distributed.get_backend()
            log(f"distributed: {env.world_size} process(es), {backend} backend, DDP on {env.device}")
        self.module = self.ddp.module if self.ddp is not self.model else self.model
        self.optimizer = build_optimizer(self.module, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, steps_per_epoch=self.steps_per_epoch,
                                         epochs=cfg.train.epochs)
        self.ema = ModelEma(self.module, cfg.train.ema_decay) if cfg.train.ema else None
        compile_model(self.module, cfg.train.compile)  # in place, after the EMA's copy: the steps run compiled
        self.epoch, self.global_step, self.best_top1, self.best_epoch = 0, 0, -1.0, 0
        self.totals: EpochTotals | None = None
        self.history: list[dict[str, Any]] = []
        self.last_val: dict[str, Any] | None = None
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.provenance: list[dict[str, Any]] = []

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "epoch": self.epoch, "global_step": self.global_step,
                "totals": self.totals.to_dict() if self.totals else None, "rng": rng,
                "sampler": {"seed": self.sampler.seed, "world_size": self.env.world_size,
                            "start": (self.totals.steps if self.totals else 0) * self.cfg.train.batch_size},
                "best_top1": self.best_top1, "best_epoch": self.best_epoch, "history": self.history,
                "last_val": _plain(self.last_val), "config": self.cfg.to_dict(),
                "category_map": self.train_data.category_map.to_dict(), "stem": self.cfg.model.stem,
                "num_classes": self.train_data.category_map.num_classes, "provenance": self.provenance}

    def save(self, *, best: bool = False, epoch_end: bool = False) -> None:
        """All ranks gather RNG states (a collective); rank 0 writes last.pt (and best.pt, and at an epoch's
        end checkpoints/epoch_NNNN.pt, keeping the last ``train.keep_checkpoints``)."""
        _check_finite_weights(self.module, self.global_step)
        rng = all_gather_object(capture_rng_state())
        if not self.env.is_main:
            return
        self.monitor.flush()  # the scalars up to this step are on disk before the checkpoint that vouches for them
        state = self.state(rng)
        save_checkpoint(state, self.out_dir / "last.pt")
        if best:
            save_checkpoint(state, self.out_dir / "best.pt")
        if epoch_end:
            save_periodic(state, self.out_dir, self.epoch, keep=self.cfg.train.keep_checkpoints,
                          best_epoch=self.best_epoch)

    def restore(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.env.device, purpose="resume")
        check_compatible(state, self.cfg.to_dict(), self.train_data.category_map.to_dict(), path=path)
        if state["sampler"]["world_size"] != self.env.world_size:
            raise CheckpointError(f"cannot resume from {path}: written by {state['sampler']['world_size']} "
                                       f"process(es), this run has {self.env.world_size}")
        load_weights(self.module, state["model"], path)
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        try:
            self.scheduler.load_state_dict(state["scheduler"])
        except ValueError as exc:
            raise CheckpointError(f"cannot resume from {path}: {exc}") from None
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.totals = EpochTotals.from_dict(state["totals"]) if state["totals"] else None
        self.best_top1, self.history = float(state["best_top1"]), list(state["history"])
        self.provenance = list(state.get("provenance") or [])
        self.best_epoch, self.last_val = int(state.get("best_epoch", 0)), state.get("last_val")
        rng = state["rng"]
        restore_rng_state(rng[self.env.rank] if self.env.rank < len(rng) else rng[0])
        self.log(f"resumed from {path}: {self.epoch} epoch(s) and {self.global_step} step(s) done")
        if self.env.is_main:
            self.repair(state)

    def repair(self, state: dict[str, Any]) -> None:
        """Rewrite the files written after last.pt from last.pt itself: a kill between them leaves them
        missing or an epoch behind, and last.pt (written first) is the run's record of what finished.
        best.pt comes from last.pt when the best epoch is last.pt's, else from that epoch's periodic copy
        (kept for this by :func:`save_periodic`)."""
        _write_history(self.out_dir, self.history)
        if self.last_val is not None:
            atomic_write_json(self.out_dir / "val_metrics.json", self.last_val, indent=2)
        best = self.out_dir / "best.pt"
        if "best_epoch" not in state or self.best_epoch == 0 or _checkpoint_epoch(best) == self.best_epoch:
            return  # no best yet (or a checkpoint from before best_epoch existed), or best.pt is intact
        source = self.out_dir / "last.pt"
        if self.best_epoch != self.epoch or state["totals"]:
            source = periodic_path(self.out_dir, self.best_epoch)
            if _checkpoint_epoch(source) != self.best_epoch:
                self.log(f"warning: {best} is missing or damaged and cannot be rebuilt: epoch {self.best_epoch} "
                         f"was the best, and neither last.pt nor {source} holds it (train.keep_checkpoints=0?)")
                return
            atomic_write_bytes(best, source.read_bytes())  # verified by _checkpoint_epoch: a copy, byte for byte
        else:
            save_checkpoint(state, best)
        self.log(f"repaired {best} from {source} (epoch {self.best_epoch} was the best)")

    # -- one epoch -----------------------------------------------------------------------------------------
    def _on_step(self, bar: Any) -> Callable[[EpochTotals, StepInfo], None]:
        every = self.cfg.train.checkpoint_every

        def on_step(totals: EpochTotals, info: StepInfo) -> None:
            self.totals, self.global_step, self.last_lr = totals, info.step, info.lr
            self.monitor.step(self.epoch, info.step, info.step_in_epoch, info.loss, info.lr, info.images_per_s)
            if bar is not None:
                bar.update(1)
                if info.loss is not None:  # read from the device every train.log_every steps
                    bar.set_postfix(loss=f"{info.loss:.3f}", lr=f"{info.lr:.2e}", img_s=f"{info.images_per_s:.1f}")
            if every and info.step % every == 0 and info.step_in_epoch < self.steps_per_epoch:
                self.save()

        return on_step

    def train_epoch(self) -> EpochTotals:
        totals = self.totals or EpochTotals()
        self.sampler.set_position(self.epoch, totals.steps * self.cfg.train.batch_size)
        self.loader.dataset.set_epoch(self.epoch)  # SeededDataset: augmentation seeds of this epoch
        bar = tqdm(total=self.steps_per_epoch, initial=totals.steps, desc=f"epoch {self.epoch + 1}/{self.cfg.train.epochs}",
                   dynamic_ncols=True, leave=True) if self.progress and self.env.is_main else None
        try:
            return train_one_epoch(
                self.ddp, self.loader, self.optimizer, self.scheduler, StepRecipe.from_config(self.cfg),
                device=self.env.device, steps=self.steps_per_epoch, totals=totals,
                global_step=self.global_step - totals.steps, ema=self.ema,
                on_step=self._on_step(bar))
        finally:
            if bar is not None:
                bar.close()

    def end_epoch(self, totals: EpochTotals) -> None:
        """Reduce train numbers over ranks, validate on rank 0, write metrics and checkpoints."""
        loss_sum, correct, count = all_reduce_sum([totals.loss_sum, totals.correct, totals.count], self.env.device)
        broadcast_state(self.module)
        if self.ema is not None:
            broadcast_state(self.ema.module)
        line = {"epoch": self.epoch + 1, "step": self.global_step, "train_loss": loss_sum / max(count, 1),
                "train_acc": correct / max(count, 1), "lr": self.last_lr, "images_per_s": count / max(totals.seconds, 1e-9),
                "seconds": totals.seconds}
        last = self.epoch + 1 == self.cfg.train.epochs
        if (self.epoch + 1) % self.cfg.eval.every == 0 or last:  # every rank evaluates its shard
            use_ema = self.ema is not None and self.cfg.eval.use_ema
            self.last_val = evaluate_model(self.ema.module if use_ema else self.module, self.val_data, self.cfg,
                                           self.env.device, self.env)
            line.update(val_top1=self.last_val["top1"], val_top5=self.last_val["top5"],
                        val_loss=self.last_val["loss"], val_balanced_accuracy=self.last_val["balanced_accuracy"],
                        val_seconds=self.last_val["seconds"])
        line["seconds"] = totals.seconds + line.get("val_seconds", 0.0)
        self.history.append(line)
        self.monitor.epoch(line, self.history)
        self.epoch, self.totals = self.epoch + 1, None
        top1 = line.get("val_top1")
        best = top1 is not None and top1 > self.best_top1
        self.best_top1 = top1 if best else self.best_top1
        self.best_epoch = self.epoch if best else self.best_epoch
        self.save(best=best, epoch_end=True)
        if self.env.is_main:
            _write_history(self.out_dir, self.history)
            if self.last_val is not None:
                atomic_write_json(self.out_dir / "val_metrics.json", self.last_val, indent=2)
        barrier()


def _start(run: _Run, resume: Resume) -> None:
    last = run.out_dir / "last.pt"
    if resume and last.is_file():
        run.restore(last)
    elif resume is True:  # asked for by the user (--resume), who may expect a checkpoint here
        run.log(f"--resume: no checkpoint in {run.out_dir} yet; starting from scratch")


def _record_provenance(run: _Run, command: str | None) -> None:
    """Append this invocation's provenance to the run's (checkpoints carry the list) and write provenance.json."""
    if not run.env.is_main:
        return
    d = run.cfg.data
    run.provenance.append(collect(run.data_dir, (d.train_split, d.val_split), detections_file=d.detections_file,
                                  synthetic=d.path is None, command=command))
    atomic_write_json(run.out_dir / "provenance.json", run.provenance, indent=1)


def _summary(run: _Run, wall: float) -> dict[str, Any]:
    final = run.history[-1] if run.history else {}
    val = run.last_val
    if val is None and (run.out_dir / "val_metrics.json").is_file():
        val = json.loads((run.out_dir / "val_metrics.json").read_text())
    return {"out_dir": str(run.out_dir), "rank": run.env.rank, "epochs": run.epoch, "global_step": run.global_step,
            "best_top1": run.best_top1 if run.best_top1 >= 0 else None, "final": final,
            "val": val, "wall_seconds": wall, "checkpoint": str(run.out_dir / "last.pt"),
            "num_train": len(run.train_data.records), "num_val": len(run.val_data.records)}


def train(cfg: Config, out_dir: str | os.PathLike, *, resume: Resume = False, progress: bool = True,
          log: Log | None = None, return_model: bool = False, command: str | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``out_dir`` and return a summary: final epoch line, last full validation metrics,
    best top-1, wall seconds. Under torchrun every rank calls this; rank 0 writes.

    ``resume``: False refuses a folder that already holds a run; True continues its last.pt (and says so when
    there is none yet); ``"auto"`` continues it when there is one and otherwise starts quietly, for callers
    that always resume (the bench). ``return_model`` adds the trained module (tests, benchmarks); ``command``
    is recorded in provenance.json."""
    env = setup_distributed(cfg.train.device)
    out = Path(out_dir)
    try:
        _configure_runtime(cfg, env)
        with _claim(out, env, log or _stderr, resume):  # first: a refused run reads no data, writes nothing
            monitor = RunMonitor(out, log=log or _stderr, epochs=cfg.train.epochs, log_every=cfg.train.log_every,
                                 tensorboard=cfg.train.tensorboard, enabled=env.is_main)
            try:
                return _train(cfg, out, env, monitor, resume=resume, progress=progress and monitor.tty,
                              command=command, return_model=return_model)
            finally:
                monitor.close()
    finally:
        cleanup_distributed(env)


@contextlib.contextmanager
def _claim(out: Path, env: DistEnv, log: Log, resume: Resume) -> Iterator[None]:
    """Rank 0 creates and locks the run folder for the whole run (two runs into one folder would overwrite
    each other's checkpoints), refuses a finished folder without ``--resume`` before any data is read, and
    removes the temporary files of killed runs there. A refusal reaches every rank: under torchrun the
    others would otherwise wait for rank 0 in their first collective until its timeout."""
    refusal: tuple[str, str] | None = None
    with contextlib.ExitStack() as held:
        if env.is_main:
            try:
                out.mkdir(parents=True, exist_ok=True)
                held.enter_context(folder_lock(out, "lowres train"))
                _check_fresh(out, resume)
            except (OSError, FolderLockedError, CheckpointError) as exc:
                refusal = (type(exc).__name__, str(exc))
                if not env.distributed:
                    raise
        refusal = broadcast_object(refusal)
        if refusal is not None:
            raise CheckpointError(refusal[1] if env.is_main else f"rank 0 refused the run: {refusal[1]}")
        if env.is_main:
            for path in remove_stale_temporaries(out):
                log(f"removed {path}, a temporary file left by a killed run")
        yield


def _check_fresh(out: Path, resume: Resume) -> None:
    last = out / "last.pt"
    if not resume and last.is_file():
        raise CheckpointError(f"{out} already holds a run ({last}); pass --resume to continue it "
                              "or choose another --out")


def _train(cfg: Config, out: Path, env: DistEnv, monitor: RunMonitor, *, resume: Resume, progress: bool,
           command: str | None, return_model: bool) -> dict[str, Any]:
    """The body of :func:`train` inside the run folder's lock."""
    run = _Run(cfg, out, env, monitor, progress)
    _start(run, resume)
    _record_provenance(run, command)
    monitor.start(steps_per_epoch=run.steps_per_epoch, resume_step=run.global_step, epochs_done=run.epoch)
    if env.is_main:
        save_config(cfg, out / "config.yaml")
    start = time.perf_counter()
    while run.epoch < cfg.train.epochs:
        totals = run.train_epoch()
        run.end_epoch(totals)
    summary = _summary(run, time.perf_counter() - start)
    if return_model:
        summary["model"] = run.module
        summary["ema_model"] = run.ema.module if run.ema else None
    return summary
