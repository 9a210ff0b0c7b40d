"""What a person watches while a run trains: train.log, stderr lines, scalars.csv and TensorBoard.

timm's train.py prints a line per logging interval and writes ``summary.csv``; detectron2 writes a log file,
a line every 20 iterations and TensorBoard events. Here, by rank 0 only:

- every note of the run (data, resume, estimates) is logged (``logging``): the CLI shows it on stderr, and the
  run layer appends it, time-stamped, to ``RUN_DIR/train.log`` (:func:`lowres._console.log_to_file`);
- one line per epoch: train loss/accuracy, validation top-1/top-5, learning rate, images/s, time, ETA;
- without a TTY (a log file, a pipe, nohup) progress bars would be ``\\r`` noise, so the caller shows none and
  a plain step line is printed every ``train.log_every`` steps instead;
- after the first steps of an invocation, an estimate of the time per epoch and for the whole run;
- scalars per ``log_every`` steps and per epoch in ``RUN_DIR/scalars.csv`` (long format: wall_time, epoch, step,
  tag, value: the same shape as TensorBoard scalars) and, when ``tensorboard`` is installed, in ``RUN_DIR/tb``.
  The bench's learning curves read ``scalars.csv`` (:func:`read_scalars`).

A resumed run first drops the scalars past its checkpoint's step (they were written by the part of the run
that the resume repeats), so the CSV never holds a step twice; TensorBoard gets the same ``purge_step``.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any, TextIO

from .._atomic import atomic_path
from .._console import ONCE, stderr_is_tty

__all__ = ["RunMonitor", "read_scalars", "epoch_series", "format_duration", "SCALARS_FILE", "LOG_FILE"]

SCALARS_FILE = "scalars.csv"
LOG_FILE = "train.log"
_FIELDS = ("wall_time", "epoch", "step", "tag", "value")
ESTIMATE_STEPS = 10  # the time per epoch is estimated from steps 2..10 of an invocation (step 1 builds kernels)
logger = logging.getLogger(__name__)

def format_duration(seconds: float) -> str:
    """``42 s``, ``6.5 min``, ``3 h 05 min``: the precision a person plans with."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60:02d} min"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def read_scalars(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``RUN_DIR/scalars.csv`` (numbers parsed); [] when the run wrote none."""
    path = Path(run_dir) / SCALARS_FILE
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [{"wall_time": float(r["wall_time"]), "epoch": float(r["epoch"]), "step": int(r["step"]),
                 "tag": r["tag"], "value": float(r["value"])} for r in csv.DictReader(f)]


def epoch_series(rows: list[dict[str, Any]], tag: str) -> list[tuple[float, float]]:
    """``[(epoch, value), ...]`` of one tag (``epoch/val_top1``, ``step/loss`` with fractional epochs)."""
    return [(r["epoch"], r["value"]) for r in rows if r["tag"] == tag]


class _TensorBoard:
    """``torch.utils.tensorboard.SummaryWriter`` when the optional ``tensorboard`` package is installed."""

    def __init__(self, log_dir: Path, purge_step: int | None) -> None:
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises ImportError when the tensorboard package is absent
            logger.info(f"note: TensorBoard is off (the tensorboard package is not installed; pip install "
                        f"'lowres[tensorboard]'); scalars go to RUN_DIR/{SCALARS_FILE} only", extra=ONCE)
            return
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def add(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class RunMonitor:
    """Log lines, estimates and scalars of one run (see the module docstring). ``enabled=False`` (ranks other
    than 0) makes every method a no-op, so the training code calls it unconditionally."""

    def __init__(self, out_dir: str | Path, *, epochs: int, log_every: int, tensorboard: bool = True,
                 tty: bool | None = None, enabled: bool = True) -> None:
        self.out_dir, self.epochs, self.log_every, self.enabled = Path(out_dir), epochs, log_every, enabled
        self.tty = stderr_is_tty() if tty is None else tty
        self._csv_file: TextIO | None = None
        self._tb: _TensorBoard | None = None
        self._want_tb = tensorboard
        self._first_step_time: float | None = None
        self._steps_seen = 0
        self._estimated = False
        self.steps_per_epoch, self.epochs_left = 0, epochs
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    # -- notes --------------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """Log ``message`` on rank 0 (the console and train.log: see the module docstring)."""
        if self.enabled:
            logger.info(message)

    def start(self, *, steps_per_epoch: int, resume_step: int, epochs_done: int = 0) -> None:
        """Open the scalar outputs (dropping scalars past ``resume_step`` when resuming) and log the start."""
        self.steps_per_epoch, self.epochs_left = steps_per_epoch, self.epochs - epochs_done
        if not self.enabled:
            return
        self.log(f"run {self.out_dir}: {self.epochs} epochs of {steps_per_epoch} steps"
                 + (f", resuming after step {resume_step}" if resume_step else ""))
        _truncate_scalars(self.out_dir / SCALARS_FILE, resume_step)
        path = self.out_dir / SCALARS_FILE
        new = not path.is_file()
        self._csv_file = path.open("a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._csv_file)
        if new:
            self._csv.writerow(_FIELDS)
        if self._want_tb:
            self._tb = _TensorBoard(self.out_dir / "tb", resume_step if resume_step else None)

    def _scalar(self, epoch: float, step: int, tag: str, value: float | None) -> None:
        if value is None or self._csv_file is None:
            return
        self._csv.writerow((f"{time.time():.3f}", f"{epoch:.4f}", step, tag, repr(float(value))))
        if self._tb is not None:
            self._tb.add(tag, float(value), step)

    # -- steps and epochs ---------------------------------------------------------------------------------
    def step(self, epoch: int, step: int, step_in_epoch: int, loss: float | None, lr: float,
             images_per_s: float) -> None:
        """After each optimiser step: scalars and a plain line every ``log_every`` steps, the estimate once."""
        if not self.enabled:
            return
        now = time.perf_counter()
        self._steps_seen += 1
        if self._steps_seen == 1:
            self._first_step_time = now
        elif not self._estimated and self._steps_seen == min(ESTIMATE_STEPS, self.steps_per_epoch) >= 3:
            self._estimate(now)
        if step % self.log_every == 0 or self._steps_seen == 1:
            frac = epoch + step_in_epoch / max(self.steps_per_epoch, 1)
            for tag, value in (("step/loss", loss), ("step/lr", lr), ("step/images_per_s", images_per_s)):
                self._scalar(frac, step, tag, value)
            if not self.tty and step % self.log_every == 0:
                self.log(f"epoch {epoch + 1}/{self.epochs} step {step_in_epoch}/{self.steps_per_epoch} "
                         f"(global {step}): "
                         f"loss {loss:.4f}, lr {lr:.3e}, {images_per_s:.1f} images/s")

    def _estimate(self, now: float) -> None:
        """Time per epoch from this invocation's steps 2..N (the first step builds kernels and caches)."""
        self._estimated = True
        assert self._first_step_time is not None
        per_step = (now - self._first_step_time) / (self._steps_seen - 1)
        epoch_s = per_step * self.steps_per_epoch
        self.log(f"estimate: {format_duration(epoch_s)} per epoch of training ({self.steps_per_epoch} steps at "
                 f"{per_step:.3g} s/step, measured from step 1 to step {self._steps_seen} of this invocation), about "
                 f"{format_duration(epoch_s * self.epochs_left)} for the {self.epochs_left} epoch(s) left; validation "
                 "comes on top")

    def epoch(self, line: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """The per-epoch line (stderr + train.log) and the epoch's scalars; ``history`` gives the ETA."""
        if not self.enabled:
            return
        e, step = int(line["epoch"]), int(line["step"])
        for key in ("train_loss", "train_acc", "val_top1", "val_top5", "val_loss", "val_balanced_accuracy", "lr",
                    "images_per_s", "seconds"):
            self._scalar(float(e), step, f"epoch/{key}", line.get(key))
        mean_s = sum(h.get("seconds", 0.0) for h in history) / max(len(history), 1)
        eta = "done" if e >= self.epochs else f"ETA {format_duration(mean_s * (self.epochs - e))}"
        val = (f"val top-1 {_pct(line['val_top1'])} top-5 {_pct(line['val_top5'])}" if "val_top1" in line
               else "no validation this epoch")
        self.log(f"epoch {e}/{self.epochs}: train loss {line['train_loss']:.4f} acc {_pct(line['train_acc'])} | "
                 f"{val} | lr {line['lr']:.3e} | {line['images_per_s']:.1f} images/s | "
                 f"{format_duration(line['seconds'])} | {eta}")
        self.flush()

    def flush(self) -> None:
        if self._csv_file is not None:
            self._csv_file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._csv_file is not None:
            self._csv_file.close()
        if self._tb is not None:
            self._tb.close()
        self._csv_file = self._tb = None


def _truncate_scalars(path: Path, keep_through_step: int) -> None:
    """Rewrite ``path`` (atomically) without rows past ``keep_through_step``: a resume repeats those steps."""
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != _FIELDS:
        return
    keep = [rows[0]] + [r for r in rows[1:] if len(r) == len(_FIELDS) and r[2].isdigit()
                        and int(r[2]) <= keep_through_step]
    if len(keep) == len(rows):
        return
    buffer = io.StringIO()
    csv.writer(buffer).writerows(keep)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
