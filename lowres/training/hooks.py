"""The trainer's hooks (:class:`lowres.training.trainer.Hook`): checkpoints and their repair, what a person
watches, Ctrl-C.

- :class:`CheckpointHook` (rank 0 writes): ``last.pt`` every ``train.checkpoint_every`` steps and at each
  epoch's end, then ``best.pt``, ``checkpoints/epoch_NNNN.pt`` (the newest ``train.keep_checkpoints`` and the
  best epoch's), ``metrics.jsonl`` and ``val_metrics.json``, in that order: last.pt first, so a kill between
  two of them leaves last.pt as the record of what finished, and a resume rewrites the others from it
  (:meth:`CheckpointHook.after_resume`). A Ctrl-C (:func:`stop_on_interrupt`) ends the current step, saves,
  and stops with :class:`~lowres.errors.TrainingInterrupted`.
- :class:`MonitorHook`: :class:`~lowres.training.monitor.RunMonitor`'s lines and scalars, and a tqdm bar per
  epoch on a terminal.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

from .._atomic import atomic_path, atomic_write_bytes, atomic_write_json, json_line
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..errors import TrainingInterrupted
from .engine import StepInfo
from .monitor import RunMonitor
from .state import periodic_path, save_periodic
from .trainer import Hook, Trainer

__all__ = ["CheckpointHook", "MonitorHook", "stop_on_interrupt"]

logger = logging.getLogger(__name__)


def _checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint file holds; None when it is missing or unreadable."""
    try:
        return int(load_checkpoint(path)["epoch"]) if path.is_file() else None
    except CheckpointError:
        return None


class CheckpointHook(Hook):
    """The run folder's checkpoints and the files written after them (see the module docstring)."""

    def __init__(self, out_dir: Path, monitor: RunMonitor) -> None:
        self.out_dir, self.monitor = out_dir, monitor

    def _save(self, trainer: Trainer, rng: list[dict[str, Any]], *, best: bool = False,
              epoch_end: bool = False) -> None:
        if not trainer.env.is_main:
            return
        self.monitor.flush()  # the scalars up to this step are on disk before the checkpoint that vouches for them
        state = trainer.state_dict(rng)
        save_checkpoint(state, self.out_dir / "last.pt")
        if best:
            save_checkpoint(state, self.out_dir / "best.pt")
        if epoch_end:
            save_periodic(state, self.out_dir, trainer.epoch, keep=trainer.cfg.train.keep_checkpoints,
                          best_epoch=trainer.best_epoch)

    def _write_files(self, trainer: Trainer) -> None:
        """metrics.jsonl (rewritten whole from the history: a resumed run never duplicates a line) and
        val_metrics.json."""
        with atomic_path(self.out_dir / "metrics.jsonl") as tmp:
            tmp.write_text("".join(json_line(line) + "\n" for line in trainer.history), encoding="utf-8")
        if trainer.last_val is not None:
            atomic_write_json(self.out_dir / "val_metrics.json", trainer.last_val, indent=2)

    def after_step(self, trainer: Trainer, info: StepInfo) -> None:
        if info.step_in_epoch >= trainer.steps_per_epoch:
            return  # the epoch's last step: end_epoch saves
        every = trainer.cfg.train.checkpoint_every
        if trainer.stop_requested or (every and info.step % every == 0):
            self._save(trainer, trainer.gather_rng())
        if trainer.stop_requested:
            raise interrupted(trainer, self.out_dir)

    def after_epoch(self, trainer: Trainer, line: dict[str, Any], best: bool, rng: list[dict[str, Any]]) -> None:
        self._save(trainer, rng, best=best, epoch_end=True)
        if trainer.env.is_main:
            self._write_files(trainer)
        if trainer.stop_requested and not trainer.finished:
            raise interrupted(trainer, self.out_dir)

    def after_resume(self, trainer: Trainer, state: dict[str, Any]) -> None:
        """Rewrite the files written after last.pt from last.pt itself. best.pt comes from last.pt when the
        best epoch is last.pt's, else from that epoch's periodic copy (kept for this by ``save_periodic``)."""
        if not trainer.env.is_main:
            return
        self._write_files(trainer)
        best = self.out_dir / "best.pt"
        if "best_epoch" not in state or trainer.best_epoch == 0 or _checkpoint_epoch(best) == trainer.best_epoch:
            return  # no best yet (or a checkpoint from before best_epoch existed), or best.pt is intact
        source = self.out_dir / "last.pt"
        if trainer.best_epoch != trainer.epoch or state["totals"]:
            source = periodic_path(self.out_dir, trainer.best_epoch)
            if _checkpoint_epoch(source) != trainer.best_epoch:
                logger.warning(f"warning: {best} is missing or damaged and cannot be rebuilt: epoch "
                               f"{trainer.best_epoch} was the best, and neither last.pt nor {source} holds it "
                               "(train.keep_checkpoints=0?)")
                return
            atomic_write_bytes(best, source.read_bytes())  # verified by _checkpoint_epoch: a copy, byte for byte
        else:
            save_checkpoint(state, best)
        logger.info(f"repaired {best} from {source} (epoch {trainer.best_epoch} was the best)")


def interrupted(trainer: Trainer, out_dir: Path) -> TrainingInterrupted:
    checkpoint = out_dir / "last.pt"
    return TrainingInterrupted(f"interrupted after optimiser step {trainer.global_step}: {checkpoint} holds it; "
                               f"continue with: lowres train --resume --out {out_dir}",
                               step=trainer.global_step, checkpoint=str(checkpoint))


@contextlib.contextmanager
def stop_on_interrupt(trainer: Trainer) -> Iterator[None]:
    """The first Ctrl-C (SIGINT) asks the trainer to stop after the current optimiser step, with a checkpoint
    (timm, Lightning); a second one stops at once. Only in a single process's main thread: under torchrun
    the ranks would see the signal at different steps and disagree on the collectives that follow."""
    if trainer.env.distributed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def ask(signum: int, frame: Any) -> None:
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        logger.warning("interrupt: stopping after this step with a checkpoint (Ctrl-C again to stop at once, "
                       "losing the steps since the last checkpoint)")

    signal.signal(signal.SIGINT, ask)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class MonitorHook(Hook):
    """Step and epoch lines, scalars and the estimate (:class:`RunMonitor`), and a tqdm bar per epoch when
    ``progress`` (a terminal, rank 0)."""

    def __init__(self, monitor: RunMonitor, progress: bool) -> None:
        self.monitor, self.progress = monitor, progress
        self.bar: Any = None

    def before_epoch(self, trainer: Trainer) -> None:
        if self.progress and trainer.env.is_main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=trainer.steps_per_epoch, initial=trainer.totals.steps if trainer.totals else 0,
                            desc=f"epoch {trainer.epoch + 1}/{trainer.cfg.train.epochs}", dynamic_ncols=True,
                            leave=True)

    def after_step(self, trainer: Trainer, info: StepInfo) -> None:
        self.monitor.step(trainer.epoch, info.step, info.step_in_epoch, info.loss, info.lr, info.images_per_s)
        if self.bar is not None:
            self.bar.update(1)
            if info.loss is not None:  # read from the device every train.log_every steps
                self.bar.set_postfix(loss=f"{info.loss:.3f}", lr=f"{info.lr:.2e}", img_s=f"{info.images_per_s:.1f}")

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def after_epoch(self, trainer: Trainer, line: dict[str, Any], best: bool, rng: list[dict[str, Any]]) -> None:
        self._close_bar()
        self.monitor.epoch(line, trainer.history)

    def after_train(self, trainer: Trainer) -> None:
        self._close_bar()
