"""``train(cfg, out_dir)``: one training run in a run folder, by rank 0's hand, resumable.

The policy over :class:`~lowres.training.trainer.Trainer` (the state and the loop) and its hooks
(:mod:`lowres.training.hooks`: checkpoints, monitoring, Ctrl-C): it claims and locks the folder, seeds the
processes, reads the data, restores a checkpoint and says what it found, records provenance, and returns the
summary. Validation during training and ``lowres eval`` go through the same
:func:`lowres.training.evaluate.evaluate_model`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Literal, Union

import numpy as np
import torch

from .._atomic import atomic_write_json, remove_stale_temporaries
from .._console import log_to_file
from .._lock import folder_lock
from ..builder import check_start_weights
from ..checkpoint import load_checkpoint
from ..config import Config, save_config
from ..errors import CheckpointError, FolderLockedError
from ..provenance import collect
from .data import load_split_data, resolve_data_dir
from .distributed import DistEnv, broadcast_object, cleanup_distributed, setup_distributed
from .hooks import CheckpointHook, MonitorHook, stop_on_interrupt
from .monitor import LOG_FILE, RunMonitor
from .state import check_compatible
from .trainer import Trainer

__all__ = ["train", "check_run_folder"]

Resume = Union[bool, Literal["auto"]]
logger = logging.getLogger(__name__)


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


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["train.epochs 3 -> 1", ...]``: the config keys a resume changes (keys an older run lacked are not news)."""
    flat = [{f"{s}.{k}": v for s, values in c.items() for k, v in values.items()} for c in (old, new)]
    return [f"{key} {flat[0][key]!r} -> {value!r}" for key, value in flat[1].items()
            if key in flat[0] and flat[0][key] != value]


def _check_before_data(cfg: Config, out: Path, resume: Resume, env: DistEnv) -> dict[str, Any] | None:
    """What can be refused in seconds is refused before minutes of crop caching or decoding: the start
    weights (read and fitted on the meta device) and the checkpoint to resume (another stem, width or head).
    Returns that checkpoint (read once), or None when the run starts fresh."""
    check_start_weights(cfg)
    last = out / "last.pt"
    if not (resume and last.is_file()):
        if resume is True:  # asked for by the user (--resume): a run that died before its first checkpoint
            logger.info(f"--resume: {out} holds no checkpoint yet (the run stopped before its first one); "
                        "starting it from scratch")
        return None
    state = load_checkpoint(last, map_location=env.device, purpose="resume")
    check_compatible(state, cfg.to_dict(), None, path=last)  # the class set is checked once the data is read
    return state


def _resume(trainer: Trainer, out: Path, state: dict[str, Any] | None) -> None:
    """Continue from ``state`` (``out/last.pt``), saying what was found and what changed."""
    if state is None:
        return
    last = out / "last.pt"
    if trainer.env.is_main:
        logger.info(f"resumed from {last}: {state['epoch']} epoch(s) and {state['global_step']} step(s) done")
        changed = _changed_keys(state["config"], trainer.cfg.to_dict())
        if changed:
            logger.info("changed since that checkpoint (this run's values are used from here on): "
                        + ", ".join(changed))
    trainer.load_state_dict(state, last)
    if trainer.finished and trainer.env.is_main:
        logger.info(f"{out} is finished: {trainer.epoch} of {trainer.cfg.train.epochs} epoch(s) done, nothing "
                    "left to train (to train longer: --resume --epochs N); its summary follows")


def _record_provenance(trainer: Trainer, out: Path, data_dir: Path, command: str | None) -> None:
    """Append this invocation's provenance to the run's (checkpoints carry the list) and write provenance.json."""
    if not trainer.env.is_main:
        return
    d = trainer.cfg.data
    trainer.provenance.append(collect(data_dir, (d.train_split, d.val_split), detections_file=d.detections_file,
                                      synthetic=d.path is None, command=command))
    atomic_write_json(out / "provenance.json", trainer.provenance, indent=1)


def _summary(trainer: Trainer, out: Path, wall: float) -> dict[str, Any]:
    val = trainer.last_val
    if val is None and (out / "val_metrics.json").is_file():
        val = json.loads((out / "val_metrics.json").read_text())
    return {"out_dir": str(out), "rank": trainer.env.rank, "epochs": trainer.epoch,
            "global_step": trainer.global_step, "best_top1": trainer.best_top1 if trainer.best_top1 >= 0 else None,
            "final": trainer.history[-1] if trainer.history else {}, "val": val, "wall_seconds": wall,
            "checkpoint": str(out / "last.pt"), "num_train": len(trainer.train_data.records),
            "num_val": len(trainer.val_data.records)}


def train(cfg: Config, out_dir: str | os.PathLike, *, resume: Resume = False, progress: bool = True,
          return_model: bool = False, command: str | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``out_dir`` and return a summary: final epoch line, last full validation metrics,
    best top-1, wall seconds. Under torchrun every rank calls this; rank 0 writes. Notes go to ``logging``
    (the CLI shows them) and, on rank 0, to ``out_dir/train.log``.

    ``resume``: False refuses a folder that already holds a run; True continues its last.pt (and refuses a
    folder that holds no run at all: a mistyped name); ``"auto"`` continues it when there is one and otherwise
    starts quietly, for callers that always resume (the bench). ``return_model`` adds the trained module
    (tests, benchmarks); ``command`` is recorded in provenance.json. Ctrl-C stops after the current step with
    a checkpoint (:class:`~lowres.errors.TrainingInterrupted`). A run that fails before training begins leaves
    no folder behind that this call created."""
    env = setup_distributed(cfg.train.device)
    out = Path(out_dir)
    try:
        _configure_runtime(cfg, env)
        with _claim(out, env, resume):  # first: a refused run reads no data, writes nothing
            monitor = RunMonitor(out, epochs=cfg.train.epochs, log_every=cfg.train.log_every,
                                 tensorboard=cfg.train.tensorboard, enabled=env.is_main)
            logs = log_to_file(out / LOG_FILE) if env.is_main else contextlib.nullcontext()
            try:
                with logs:
                    return _train(cfg, out, env, monitor, resume=resume, progress=progress and monitor.tty,
                                  command=command, return_model=return_model)
            finally:
                monitor.close()
    finally:
        cleanup_distributed(env)


@contextlib.contextmanager
def _claim(out: Path, env: DistEnv, resume: Resume) -> Iterator[None]:
    """Rank 0 creates and locks the run folder for the whole run (two runs into one folder would overwrite
    each other's checkpoints), refuses a finished folder without ``--resume`` (or an empty one with it) before
    any data is read, and removes the temporary files of killed runs there. A refusal reaches every rank:
    under torchrun the others would otherwise wait for rank 0 in their first collective until its timeout.
    When the run fails before training begins (data, model, resume checks), a folder this call created is
    removed again; from then on the folder stays, its train.log saying what happened."""
    refusal: tuple[str, str] | None = None
    created = False
    try:
        with contextlib.ExitStack() as held:
            if env.is_main:
                try:
                    check_run_folder(out, resume)  # before mkdir: a refused run creates nothing
                    created = not out.exists()
                    out.mkdir(parents=True, exist_ok=True)
                    held.enter_context(folder_lock(out, "lowres train"))
                    check_run_folder(out, resume)  # again, under the lock
                except (OSError, FolderLockedError, CheckpointError) as exc:
                    refusal = (type(exc).__name__, str(exc))
                    if not env.distributed:
                        raise
            refusal = broadcast_object(refusal)
            if refusal is not None:
                raise CheckpointError(refusal[1] if env.is_main else f"rank 0 refused the run: {refusal[1]}")
            if env.is_main:
                for path in remove_stale_temporaries(out):
                    logger.info(f"removed {path}, a temporary file left by a killed run")
            yield
    except BaseException:
        if created and not (out / "config.yaml").exists():  # failed before training began (config.yaml is
            shutil.rmtree(out, ignore_errors=True)          # written then): leave no half-made run folder
        raise


def check_run_folder(out: Path, resume: Resume) -> None:
    """Refuse a folder that holds a run when not resuming, and one that holds none when resuming (``True``)."""
    last = out / "last.pt"
    if not resume and last.is_file():
        raise CheckpointError(f"{out} already holds a run ({last}); pass --resume to continue it "
                              "or choose another --out")
    if resume is True and not last.is_file() and not (out / "config.yaml").is_file():
        what = "does not exist" if not out.exists() else "holds no run (no last.pt, no config.yaml)"
        raise CheckpointError(f"--resume: {out} {what}: check the folder's name, or drop --resume to start a "
                              "new run there")


def _train(cfg: Config, out: Path, env: DistEnv, monitor: RunMonitor, *, resume: Resume, progress: bool,
           command: str | None, return_model: bool) -> dict[str, Any]:
    """The body of :func:`train` inside the run folder's lock: data, trainer, resume, the epochs, the summary."""
    state = _check_before_data(cfg, out, resume, env)
    data_dir = resolve_data_dir(cfg, env=env)
    train_data = load_split_data(data_dir, cfg.data.train_split, cfg, train=True, env=env)
    val_data = load_split_data(data_dir, cfg.data.val_split, cfg, train=False, env=env,
                               category_map=train_data.category_map)
    trainer = Trainer(cfg, env, train_data, val_data,
                      hooks=[MonitorHook(monitor, progress), CheckpointHook(out, monitor)])
    _resume(trainer, out, state)
    _record_provenance(trainer, out, data_dir, command)
    monitor.start(steps_per_epoch=trainer.steps_per_epoch, resume_step=trainer.global_step,
                  epochs_done=trainer.epoch)
    if env.is_main:
        save_config(cfg, out / "config.yaml")
    start = time.perf_counter()
    with stop_on_interrupt(trainer):
        trainer.train()
    summary = _summary(trainer, out, time.perf_counter() - start)
    if return_model:
        summary["model"] = trainer.module
        summary["ema_model"] = trainer.ema.module if trainer.ema else None
    return summary
