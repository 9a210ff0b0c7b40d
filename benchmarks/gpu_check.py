"""The GPU path, measured in one run: every answer issue 20 asks of the first session lent a GPU, in 8 minutes.

    python benchmarks/gpu_check.py --out DIR [--budget-s 480] [--coco DIR] [--imagenette DIR] [--sections a,b]
    python benchmarks/gpu_check.py --dry-run --out DIR      # every section on this CPU at tiny sizes
    python benchmarks/gpu_check.py --prepare .gpu           # here, before the GPU call: data subset + wheels

Sections, in this order, each in a child process stopped at its time limit (what it finished is kept):
``environment``; ``cuda_tests`` (pytest -m cuda); ``eager`` (forward and training-step images/s of the three
stems at width 1.0 and torchvision's Inception-v3 at 299, bf16 + channels_last, batches 128 and 256, peak
memory); ``input_pipeline`` (the training loader's sustained crops/s at 79 px from the crop shard cache and the
decoded-image store, N workers); ``short_run`` (``lowres train`` SIGKILLed and resumed against an uninterrupted
run, ``lowres eval``, ``lowres rescore``, bf16 against fp32 top-1 on the val crops); ``torchrun``
(``--nproc_per_node 1``: nccl, one epoch then a second resumed); ``foreach`` (multi-tensor optimiser + EMA
against the per-tensor loop: equal within tolerance, time per step); ``compiled`` (the eager rows through
``torch.compile``, compile time stated; last, with what is left of the budget). After each section
``gpu_check.json`` and ``gpu_check.md`` are rewritten atomically in ``--out``: a kill leaves the sections done.
Without CUDA (and without ``--dry-run``) it says so in one line and exits 1.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository: runs without `pip install -e`
from _gpu_plan import REPO, SECTION_CAPS_GPU, Plan, make_plan  # noqa: E402

from detection_bridge.fileio import atomic_write_json, atomic_write_text  # noqa: E402

ORDER = tuple(SECTION_CAPS_GPU)


def _default_data(name: str) -> Path | None:
    """``../shared/data/NAME`` beside the repository, else the packed subset ``.gpu/data/NAME`` (``--prepare``)."""
    for candidate in (REPO.parent / "shared" / "data" / name, REPO / ".gpu" / "data" / name):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _run_section(name: str, args: argparse.Namespace, work: Path, limit: float) -> dict[str, Any]:
    """One section in a child process (its own CUDA context and peak memory), killed with its process group at
    ``limit`` seconds; its result is whatever it had written by then."""
    result_file = work / "sections" / f"{name}.json"
    cmd = [sys.executable, __file__, "--section", name, "--work", str(work), *(["--dry-run"] if args.dry_run else []),
           *(["--coco", str(args.coco)] if args.coco else []),
           *(["--imagenette", str(args.imagenette)] if args.imagenette else [])]
    start = time.perf_counter()
    with (work / f"{name}.stderr").open("w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
            status = "done" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the section and every process it started
            proc.wait()
            rc, status = None, "stopped_for_time"
    out: dict[str, Any] = {"status": status, "seconds": time.perf_counter() - start, "limit_s": limit}
    if result_file.is_file():
        out["result"] = json.loads(result_file.read_text())
    if status == "failed":
        out["error"] = (work / f"{name}.stderr").read_text().strip().splitlines()[-6:]
    return out


def _child(name: str, args: argparse.Namespace) -> None:
    """``--section NAME``: run one section, writing its result after every row."""
    import _gpu_runs
    import _gpu_sections

    plan = make_plan(args.dry_run, args.coco, args.imagenette)
    work = Path(args.work)
    target = work / "sections" / f"{name}.json"
    fn = {**_gpu_sections.SECTIONS, **_gpu_runs.SECTIONS}[name]
    fn(plan, work, lambda result: atomic_write_json(target, result, indent=1))


def check(args: argparse.Namespace) -> dict[str, Any]:
    """Every selected section within the budget; the report rewritten after each."""
    import torch

    from _gpu_report import answers, markdown

    plan = make_plan(args.dry_run, args.coco, args.imagenette)
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check-"))
    (work / "sections").mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    start = time.perf_counter()
    selected = [s for s in ORDER if not args.sections or s in args.sections]
    report: dict[str, Any] = {"schema": 1, "dry_run": args.dry_run, "budget_s": args.budget_s,
                              "device": plan.device, "torch": torch.__version__, "work": str(work),
                              "data": {"coco": str(args.coco), "imagenette": str(args.imagenette)},
                              "plan": _plan_summary(plan), "sections": {}}
    for name in selected:
        left = args.budget_s - (time.perf_counter() - start)
        limit = min(plan.caps[name], left, args.section_limit_s or left)
        if left < plan.min_start_s:
            report["sections"][name] = {"status": "skipped_for_time", "seconds": 0.0, "limit_s": max(left, 0.0)}
        else:
            print(f"gpu_check: {name} (at most {limit:.0f} s)", file=sys.stderr, flush=True)
            report["sections"][name] = _run_section(name, args, work, limit)
        report["elapsed_s"] = time.perf_counter() - start
        report["answers"] = answers(report)
        atomic_write_json(out / "gpu_check.json", report, indent=1)
        atomic_write_text(out / "gpu_check.md", markdown(report))
    return report


def _plan_summary(plan: Plan) -> dict[str, Any]:
    keep = ("precision", "batches", "width", "rounds", "warmup", "iters", "compile_backend", "pipeline_batch",
            "pipeline_workers", "run_sets", "foreach_width")
    return {k: getattr(plan, k) for k in keep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--budget-s", type=float, default=480.0, help="hard wall-clock budget for all sections")
    parser.add_argument("--section-limit-s", type=float, default=None,
                        help="at most this long for any one section (each has its own limit within the budget)")
    parser.add_argument("--dry-run", action="store_true", help="every section on the CPU at tiny sizes")
    parser.add_argument("--coco", type=Path, default=None, help="COCO-layout folder (default: ../shared/data/"
                        "coco-mini, else .gpu/data/coco-mini, else the generated synthetic set)")
    parser.add_argument("--imagenette", type=Path, default=None, help="ImageNet-layout folder (default: "
                        "../shared/data/imagenette, else .gpu/data/imagenette, else the decoded-store row is skipped)")
    parser.add_argument("--sections", type=lambda s: s.split(","), default=None, help=f"subset of {','.join(ORDER)}")
    parser.add_argument("--work", default=None, help="scratch folder (runs, caches, logs); default: a new temporary one")
    parser.add_argument("--prepare", type=Path, default=None, metavar="DIR",
                        help="pack a data subset and the wheels the GPU machine lacks into DIR (run here, not there)")
    parser.add_argument("--section", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        from _gpu_prepare import prepare

        sys.exit(prepare(args.prepare))
    args.coco = (args.coco or _default_data("coco-mini"))
    args.imagenette = (args.imagenette or _default_data("imagenette"))
    args.coco, args.imagenette = (p.resolve() if p else None for p in (args.coco, args.imagenette))
    if args.section:
        _child(args.section, args)
        return
    if args.sections and set(args.sections) - set(ORDER):
        parser.error(f"--sections: unknown {sorted(set(args.sections) - set(ORDER))}; known: {', '.join(ORDER)}")
    if args.out is None:
        parser.error("--out is required")
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); run it on a GPU machine, or "
              "--dry-run to try every section on this CPU", file=sys.stderr)
        sys.exit(1)
    report = check(args)
    failed = [n for n, s in report["sections"].items() if s["status"] == "failed"]
    print(f"gpu_check: {len(report['sections'])} section(s) in {report['elapsed_s']:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else "") + f" -> {args.out / 'gpu_check.md'}")


if __name__ == "__main__":
    main()
