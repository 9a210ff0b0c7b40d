"""What ``gpu_check.py`` measures and at which sizes: one plan for the GPU, one tiny plan for ``--dry-run`` on a CPU.

Kept apart so the orchestrator (``gpu_check.py``), the measuring sections (``_gpu_sections.py``) and the runs
through the command line (``_gpu_runs.py``) read the same numbers, and a section's child process rebuilds the
plan from two values (``dry_run`` and the data folders) instead of receiving it on its command line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The order the sections run in, and the most seconds each may take on the GPU (``compiled`` runs last and gets
# what is left of the budget: it is the one that can use any amount of time). The caps before it add up to
# 490 s, but a section ends when its work is done, so the correctness checks all run and compiling gets the rest.
SECTION_CAPS_GPU = {"environment": 30, "cuda_tests": 45, "eager": 100, "input_pipeline": 75, "short_run": 150,
                    "torchrun": 60, "foreach": 30, "compiled": 480}
SECTION_CAPS_DRY = {name: 180 for name in SECTION_CAPS_GPU}


@dataclass(frozen=True)
class Plan:
    """Sizes of every measurement. The GPU plan is the issue's (width 1.0, batches 128 and 256, bf16,
    channels_last); the dry plan only proves on a CPU that every section runs and writes real numbers."""

    dry_run: bool
    coco: Path | None = None          # COCO-layout folder (coco-mini or the packed subset of it)
    run_on_coco: bool = True          # the command-line runs on ``coco``; else on the generated synthetic set
    imagenette: Path | None = None    # ImageNet-layout folder (Imagenette or the packed subset)
    device: str = "cuda"
    precision: str = "bf16"
    batches: tuple[int, ...] = (128, 256)
    width: float = 1.0                # the stems' width (torchvision's network has none: always 1.0)
    min_depth: int = 16
    rounds: int = 3                   # eager timings: interleaved rounds over the models, each a median of iters
    warmup: int = 2
    iters: int = 5
    compile_backend: str = "inductor"
    compiled_rows: tuple[tuple[int, str, str], ...] = ()  # (batch, model, "train" | "forward"), most wanted first
    pipeline_batch: int = 256
    pipeline_workers: tuple[int, ...] = (4, 8, 15)
    pipeline_seconds: float = 8.0
    pipeline_max_train: int | None = None  # None: every training sample of the folder
    run_sets: tuple[str, ...] = ()    # --set overrides of the short CLI runs (smoke preset)
    kill_after_checkpoint: bool = True
    foreach_width: float = 1.0
    foreach_steps: int = 20
    caps: dict[str, int] = field(default_factory=dict)
    min_start_s: float = 10.0         # a section is not started with less left than this: skipped for time

    @property
    def models(self) -> tuple[str, ...]:
        return ("torchvision-299", "lowres-299", "lowres-151", "lowres-79")


def make_plan(dry_run: bool, coco: Path | None, imagenette: Path | None) -> Plan:
    """The GPU plan, or with ``dry_run`` the same sections at sizes a 2-core CPU runs in about a minute."""
    if dry_run:
        # The runs use the generated synthetic set (24 val images): coco-mini's 1,245 val crops take minutes to
        # evaluate twice on two shared cores. The compiled rows trace with dynamo only (no inductor code generation).
        return Plan(dry_run=True, coco=coco, run_on_coco=False, imagenette=imagenette, device="cpu", batches=(2,),
                    width=0.125, min_depth=8, rounds=2, warmup=1, iters=1, compile_backend="eager",
                    compiled_rows=((4, "lowres-79", "forward"), (4, "lowres-79", "train")),
                    pipeline_batch=8, pipeline_workers=(0, 1), pipeline_seconds=1.0, pipeline_max_train=64,
                    run_sets=("train.epochs=2", "train.max_steps_per_epoch=4", "train.checkpoint_every=2",
                              "data.max_train=32", "data.max_val=24", "eval.bootstrap=10", "train.threads=1"),
                    foreach_width=0.125, foreach_steps=3, caps=dict(SECTION_CAPS_DRY), min_start_s=2.0)
    rows = tuple((b, m, w) for b in (256, 128) for m in ("lowres-79", "torchvision-299", "lowres-299", "lowres-151")
                 for w in ("train", "forward"))
    # 3 epochs x 20 steps of 32: the kill (at the first mid-epoch checkpoint, step 5) leaves 55 steps to redo.
    return Plan(dry_run=False, coco=coco, imagenette=imagenette, compiled_rows=rows,
                run_sets=("train.epochs=3", "train.max_steps_per_epoch=20", "train.batch_size=32",
                          "train.checkpoint_every=5", "data.max_train=640", "data.num_workers=4"),
                caps=dict(SECTION_CAPS_GPU))
