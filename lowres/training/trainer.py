"""``Trainer``: the state of one training run and the loop over it, with hooks (detectron2's ``TrainerBase``
shape, nanoGPT's plainness).

The trainer owns what a checkpoint restores: the model and its DDP wrapper, the optimiser, the scheduler, the
EMA, the sampler's position and the counters (epoch, step, the unfinished epoch's totals, best top-1, history,
provenance). :meth:`Trainer.state_dict` *is* the checkpoint (:data:`lowres.checkpoint.SCHEMA`) and
:meth:`Trainer.load_state_dict` restores one. What is done *around* the loop is in hooks
(:mod:`lowres.training.hooks`): checkpoints and their repair, what a person watches, Ctrl-C.

Every rank runs the same trainer. Collectives are called in one place, :meth:`Trainer.end_epoch`, and
:meth:`Trainer.gather_rng` (a checkpoint's RNG states); the order is documented there.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from .._atomic import json_line
from ..builder import build_model_from_config, load_weights
from ..config import Config
from ..errors import CheckpointError, InputError, TrainingDiverged
from ..models import compile_model
from .data import SplitData, train_loader
from .distributed import (DistEnv, ResumableSampler, all_gather_object, all_reduce_sum, barrier, broadcast_state,
                          wrap_model)
from .engine import EpochTotals, StepInfo, StepRecipe, train_one_epoch
from .evaluate import evaluate_model
from .recipe import ModelEma, build_optimizer, build_scheduler
from .state import capture_rng_state, check_compatible, restore_rng_state

__all__ = ["Trainer", "Hook"]

logger = logging.getLogger(__name__)


class Hook:
    """Something done around the loop (detectron2's ``HookBase``); every method is optional. Hooks run on
    every rank, in list order; one that writes files checks ``trainer.env.is_main`` itself."""

    def after_resume(self, trainer: "Trainer", state: dict[str, Any]) -> None:
        """A checkpoint was restored (``state``, as read)."""

    def before_epoch(self, trainer: "Trainer") -> None:
        """An epoch (or the rest of one, after a mid-epoch resume) is about to run."""

    def after_step(self, trainer: "Trainer", info: StepInfo) -> None:
        """One optimiser step is done (``trainer.totals`` and ``trainer.global_step`` include it)."""

    def after_epoch(self, trainer: "Trainer", line: dict[str, Any], best: bool, rng: list[dict[str, Any]]) -> None:
        """An epoch ended: ``line`` is its metrics.jsonl line, ``best`` whether its top-1 is the best so far,
        ``rng`` every rank's RNG state for the checkpoint (gathered by :meth:`Trainer.end_epoch`)."""

    def after_train(self, trainer: "Trainer") -> None:
        """The last epoch ended, or training stopped with an exception (then ``trainer.failed`` is set)."""


def _plain(data: Any) -> Any:
    """JSON-safe plain data (numpy scalars become Python numbers, NaN null): loadable with weights_only."""
    return None if data is None else json.loads(json_line(data))


class Trainer:
    """One run's model, optimiser, scheduler, EMA, sampler and counters, and the epoch loop over them."""

    def __init__(self, cfg: Config, env: DistEnv, train_data: SplitData, val_data: SplitData,
                 hooks: list[Hook] | None = None) -> None:
        self.cfg, self.env, self.train_data, self.val_data = cfg, env, train_data, val_data
        self.hooks: list[Hook] = list(hooks or [])
        self.model = build_model_from_config(cfg, train_data.category_map.num_classes).to(env.device)
        self.sampler = ResumableSampler(train_data.dataset, env=env, shuffle=True, seed=cfg.train.seed)
        self.loader = train_loader(train_data, self.sampler, cfg)
        full_steps = self.sampler.num_samples // cfg.train.batch_size
        if full_steps == 0:
            raise InputError(f"{len(train_data.records)} training crops over {env.world_size} process(es) "
                             f"give no full batch of {cfg.train.batch_size}")
        self.steps_per_epoch = min(full_steps, cfg.train.max_steps_per_epoch or full_steps)
        self.ddp = wrap_model(self.model, env, sync_bn=cfg.model.sync_bn)
        if env.distributed:
            logger.info(f"distributed: {env.world_size} process(es), {torch.distributed.get_backend()} backend, "
                        f"DDP on {env.device}")
        self.module = self.ddp.module if self.ddp is not self.model else self.model
        self.optimizer = build_optimizer(self.module, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, steps_per_epoch=self.steps_per_epoch,
                                         epochs=cfg.train.epochs)
        self.ema = ModelEma(self.module, cfg.train.ema_decay) if cfg.train.ema else None
        compile_model(self.module, cfg.train.compile)  # in place, after the EMA's copy: the steps run compiled
        self.recipe = StepRecipe.from_config(cfg)
        self.epoch, self.global_step, self.best_top1, self.best_epoch = 0, 0, -1.0, 0
        self.totals: EpochTotals | None = None  # the unfinished epoch's (None at an epoch's end)
        self.history: list[dict[str, Any]] = []
        self.last_val: dict[str, Any] | None = None
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.provenance: list[dict[str, Any]] = []
        self.stop_requested = False  # set by the interrupt hook: stop after the current step
        self.failed = False

    @property
    def finished(self) -> bool:
        return self.epoch >= self.cfg.train.epochs and not self.totals

    # -- the checkpoint ----------------------------------------------------------------------------------------
    def state_dict(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """The checkpoint (every field of :data:`lowres.checkpoint.SCHEMA` but version and checksum)."""
        steps = self.totals.steps if self.totals else 0
        return {"model": self.module.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "epoch": self.epoch, "global_step": self.global_step,
                "totals": self.totals.to_dict() if self.totals else None, "rng": rng,
                "sampler": {"seed": self.sampler.seed, "world_size": self.env.world_size,
                            "start": steps * self.cfg.train.batch_size},
                "best_top1": self.best_top1, "best_epoch": self.best_epoch, "history": self.history,
                "last_val": _plain(self.last_val), "config": self.cfg.to_dict(),
                "category_map": self.train_data.category_map.to_dict(), "stem": self.cfg.model.stem,
                "num_classes": self.train_data.category_map.num_classes, "provenance": self.provenance}

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        """Continue from ``state`` (read from ``path`` by :func:`lowres.checkpoint.load_checkpoint`): refused
        when it belongs to another architecture, class set or number of processes."""
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
        except ValueError as exc:  # another number of steps per epoch: the schedule would not be the run's
            raise CheckpointError(f"cannot resume from {path}: {exc}") from None
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.totals = EpochTotals.from_dict(state["totals"]) if state["totals"] else None
        self.best_top1, self.history = float(state["best_top1"]), list(state["history"])
        self.provenance = list(state.get("provenance") or [])
        self.best_epoch, self.last_val = int(state.get("best_epoch", 0)), state.get("last_val")
        rng = state["rng"]
        restore_rng_state(rng[self.env.rank] if self.env.rank < len(rng) else rng[0])
        for hook in self.hooks:
            hook.after_resume(self, state)

    def gather_rng(self) -> list[dict[str, Any]]:
        """Every rank's RNG state, for a checkpoint (a collective: every rank calls it at the same step).
        Refuses first to checkpoint non-finite weights, so last.pt always stays the last good state."""
        for name, tensor in self.module.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise TrainingDiverged(f"training diverged: weight {name} is not finite after optimiser step "
                                       f"{self.global_step}; not saved, the last checkpoint written before it is "
                                       "kept. Lower optim.lr")
        return all_gather_object(capture_rng_state())

    # -- the loop ----------------------------------------------------------------------------------------------
    def train(self) -> None:
        """Run the epochs left; hooks see every step and epoch; ``after_train`` runs even after a failure."""
        try:
            while self.epoch < self.cfg.train.epochs:
                self.end_epoch(self.run_epoch())
        except BaseException:
            self.failed = True
            raise
        finally:
            for hook in self.hooks:
                hook.after_train(self)

    def run_epoch(self) -> EpochTotals:
        """The steps left in this epoch (all of them, or the rest after a mid-epoch resume)."""
        totals = self.totals or EpochTotals()
        self.sampler.set_position(self.epoch, totals.steps * self.cfg.train.batch_size)
        self.loader.dataset.set_epoch(self.epoch)  # SeededDataset: augmentation seeds of this epoch
        for hook in self.hooks:
            hook.before_epoch(self)

        def on_step(step_totals: EpochTotals, info: StepInfo) -> None:
            self.totals, self.global_step, self.last_lr = step_totals, info.step, info.lr
            for hook in self.hooks:
                hook.after_step(self, info)

        return train_one_epoch(self.ddp, self.loader, self.optimizer, self.scheduler, self.recipe,
                               device=self.env.device, steps=self.steps_per_epoch, totals=totals,
                               global_step=self.global_step - totals.steps, ema=self.ema, on_step=on_step)

    def end_epoch(self, totals: EpochTotals) -> None:
        """The epoch's end, the one place where ranks meet. Every rank calls, in this order:

        1. ``all_reduce_sum`` of the epoch's loss, correct and count (the train numbers of every rank);
        2. ``broadcast_state`` of the model, then of the EMA (buffers such as BN statistics are per rank);
        3. when this epoch validates: :func:`~lowres.training.evaluate.evaluate_model`'s ``all_gather_object``
           of each rank's predictions (rank r predicts crops r, r + world, ...);
        4. :meth:`gather_rng` (``all_gather_object``) for the epoch's checkpoint;
        5. the hooks' ``after_epoch`` (rank 0 writes last.pt, best.pt, metrics.jsonl, val_metrics.json);
        6. ``barrier``: no rank starts the next epoch before rank 0 has written this one's files.

        Between two epoch ends the only collectives are DDP's gradient all-reduce in every step and, at a step
        checkpoint (``train.checkpoint_every``), :meth:`gather_rng` again, at the same step on every rank.
        A rank that skipped one of these would leave the others waiting in it until the backend's timeout."""
        loss_sum, correct, count = all_reduce_sum([totals.loss_sum, totals.correct, totals.count], self.env.device)
        broadcast_state(self.module)
        if self.ema is not None:
            broadcast_state(self.ema.module)
        line = {"epoch": self.epoch + 1, "step": self.global_step, "train_loss": loss_sum / max(count, 1),
                "train_acc": correct / max(count, 1), "lr": self.last_lr,
                "images_per_s": count / max(totals.seconds, 1e-9), "seconds": totals.seconds}
        if (self.epoch + 1) % self.cfg.eval.every == 0 or self.epoch + 1 == self.cfg.train.epochs:
            use_ema = self.ema is not None and self.cfg.eval.use_ema
            self.last_val = evaluate_model(self.ema.module if use_ema else self.module, self.val_data, self.cfg,
                                           self.env.device, self.env)
            line.update(val_top1=self.last_val["top1"], val_top5=self.last_val["top5"],
                        val_loss=self.last_val["loss"], val_balanced_accuracy=self.last_val["balanced_accuracy"],
                        val_seconds=self.last_val["seconds"])
        line["seconds"] = totals.seconds + line.get("val_seconds", 0.0)
        self.history.append(line)
        self.epoch, self.totals = self.epoch + 1, None
        top1 = line.get("val_top1")
        best = top1 is not None and top1 > self.best_top1
        if best:
            self.best_top1, self.best_epoch = top1, self.epoch
        rng = self.gather_rng()
        for hook in self.hooks:
            hook.after_epoch(self, line, best, rng)
        barrier()
