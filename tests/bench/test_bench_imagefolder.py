"""`lowres bench` end to end on a generated ImageNet-layout folder: all five variants, per-class report."""
from __future__ import annotations

import json

from click.testing import CliRunner

from lowres.bench import VARIANTS
from lowres.cli import main


def test_bench_on_an_imagenet_layout_folder(imagenet_folder, tiny_bench_args, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, tiny_bench_args(out, "--data", str(imagenet_folder)), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == list(VARIANTS) and report["data"]["num_val"] == 9
    assert report["title"].startswith("Table 2 on whole images")
    for r in rows.values():
        assert list(r["per_class"]) == ["n01440764", "n02102040", "n02979186"]
        assert sum(c["count"] for c in r["per_class"].values()) == 9
        assert all(b["count"] == 0 for b in r["size_buckets"].values())
    keys = report["runs"]["79"][0]["metrics"]["count"]
    assert keys == 9 and {c["a"] + "-" + c["b"] for c in report["contrasts"]} >= {"79-299", "upsample-79-79"}
    md = (out / "report.md").read_text()
    assert "## Top-1 per class" in md and "| n02102040 (3) |" in md and "small % (n)" not in md
    assert (out / "top1_by_class.png").stat().st_size > 0 and not (out / "top1_by_size.png").exists()
