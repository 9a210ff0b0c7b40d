"""benchmarks/train_pipeline.py runs end to end on a tiny ImageNet-layout folder and prints what the issue reads:
per variant both step rates, their ratio with its range, the breakdown, and the summary line last. The rates
themselves are measured by hand on real data (README); a test never judges a speed."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_pipeline_and_model_rates_are_reported_per_variant(imagenet_folder: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/train_pipeline.py", "--preset", "smoke", "--data", str(imagenet_folder),
         "--variants", "79", "upsample-79", "--steps", "2", "--warmup", "1", "--rounds", "2", "--profile",
         "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.batch_size=4", "--set", "train.threads=1",
         "--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"pipeline/model step rate: 79 \d+\.\d\d, upsample-79 \d+\.\d\d", last), last
    rows = json.loads(out.read_text())
    for name in ("79", "upsample-79"):
        r = rows[name]
        assert len(r["pipeline"]) == len(r["model"]) == 2  # one measurement of each per round
        ratios = sorted(p / m for p, m in zip(r["pipeline"], r["model"]))
        assert r["ratio_range"] == ratios and ratios[0] <= r["ratio"] <= ratios[-1]
        values = [*r["pipeline"], *r["model"], *r["breakdown"].values()]
        assert all(math.isfinite(v) and v >= 0 for v in values) and min(r["pipeline"] + r["model"]) > 0
        assert f"{name}: pipeline {r['pipeline_images_per_s']:.1f} images/s" in proc.stdout
