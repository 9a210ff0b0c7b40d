"""benchmarks/gpu_check.py on this CPU (``--dry-run``): its report is real measurements, written as it goes, and
a section out of time is recorded as such instead of ending the run. The GPU figures themselves need a GPU.

The whole dry run (every section, about 1-2 minutes on two idle cores) is run by hand (README); here the sections
that measure (environment, input pipeline, optimiser paths) run once, and a budget too small for the rest shows
the time box.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _run(args: list[str], tmp: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # the CPU, even where a GPU is
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--work", str(tmp / "work")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _positive_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def dry_report(tmp_path_factory: pytest.TempPathFactory, imagenet_folder: Path) -> dict:
    tmp = tmp_path_factory.mktemp("gpu_check")
    # A budget no machine reaches: on a loaded one the sections take longer, and this test is about what they report.
    proc = _run(["--dry-run", "--out", str(tmp / "out"), "--imagenette", str(imagenet_folder), "--budget-s", "3000",
                 "--section-limit-s", "1200", "--sections", "environment,input_pipeline,foreach"], tmp, timeout=3300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp / "out" / "gpu_check.json").read_text())
    report["_md"] = (tmp / "out" / "gpu_check.md").read_text()
    return report


def test_the_dry_run_reports_every_selected_section_with_real_numbers(dry_report: dict) -> None:
    assert dry_report["dry_run"] is True and dry_report["device"] == "cpu"
    assert {n: s["status"] for n, s in dry_report["sections"].items()} == \
        {"environment": "done", "input_pipeline": "done", "foreach": "done"}
    assert all(_positive_finite(s["seconds"]) for s in dry_report["sections"].values())
    rows = dry_report["sections"]["input_pipeline"]["result"]["rows"]
    assert {r["source"] for r in rows} == {"crop shard cache", "decoded-image store"}  # both layouts measured
    assert {r["workers"] for r in rows} == {0, 1}
    for r in rows:
        assert _positive_finite(r["crops_per_s"]) and _positive_finite(r["timed_crops"]), r
    fe = dry_report["answers"]["foreach"]
    assert fe["equal_within_tolerance"] is True and fe["max_abs_diff"] == 0.0  # bit for bit on the CPU
    assert [r["path"] for r in fe["rows"]] == ["per-tensor loop", "foreach"]
    for r in fe["rows"]:
        assert _positive_finite(r["ms_per_step"]) and _positive_finite(r["host_ms_per_step"])
    assert fe["rows"][1]["python_operator_calls"] < fe["rows"][0]["python_operator_calls"] / 10
    assert "## Input pipeline" in dry_report["_md"] and "foreach vs loop" in dry_report["_md"]


def test_a_section_out_of_time_is_recorded_and_the_report_still_written(tmp_path: Path) -> None:
    # eager (torchvision at 299 and three stems, each trained and run) cannot finish in 4 s and is stopped; the
    # 5 s budget is then spent, so the next section is recorded as skipped, not started.
    proc = _run(["--dry-run", "--out", str(tmp_path / "out"), "--budget-s", "5", "--section-limit-s", "4",
                 "--sections", "eager,foreach"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    status = {n: s["status"] for n, s in report["sections"].items()}
    assert status == {"eager": "stopped_for_time", "foreach": "skipped_for_time"}, status
    assert report["sections"]["eager"]["seconds"] < 10  # stopped at its limit, its child processes with it
    assert "| eager | stopped_for_time |" in (tmp_path / "out" / "gpu_check.md").read_text()


def test_without_cuda_it_says_so_in_one_line(tmp_path: Path) -> None:
    proc = _run(["--out", str(tmp_path / "out")], tmp_path, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "no CUDA GPU here" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
