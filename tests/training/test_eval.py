"""``lowres eval``: the JSON schema, agreement with training's validation, background on detector boxes."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lowres.cli import main
from lowres.training.run import train


SCHEMA = {"checkpoint", "data", "split", "boxes", "weights", "epoch", "stem", "width", "num_classes", "count",
          "top1", "top5", "top1_ci", "ci_level", "balanced_accuracy", "size_buckets", "per_class",
          "confusion_matrix", "background", "loss", "seconds", "images_per_s", "data_summary"}


@pytest.fixture(scope="module")
def run_dirs(tiny_config, tmp_path_factory):
    """Two tiny runs on the synthetic set: ground-truth crops, and detector crops with a background class."""
    root = tmp_path_factory.mktemp("eval-runs")
    common = ("train.epochs=1", "train.max_steps_per_epoch=2", "eval.bootstrap=50")
    train(tiny_config(*common), root / "gt", progress=False)
    train(tiny_config(*common, "data.boxes=detections", "data.background=true", "data.max_val=null"),
          root / "det", progress=False)
    return root


def _eval(args: list[str]) -> dict:
    result = CliRunner().invoke(main, ["eval", *args])
    assert result.exit_code == 0, result.output
    assert "top-1" in result.output
    out = args[args.index("--out") + 1]
    with open(out) as f:
        return json.load(f)


def test_eval_schema_on_gt_boxes(run_dirs, tmp_path):
    m = _eval(["--checkpoint", str(run_dirs / "gt" / "last.pt"), "--out", str(tmp_path / "m.json")])
    assert SCHEMA <= set(m)
    n, k = m["count"], m["num_classes"]
    assert m["boxes"] == "gt" and m["weights"] == "ema" and m["background"] is None and k == 8
    assert len(m["per_class"]) == k and len(m["confusion_matrix"]) == k
    assert sum(map(sum, m["confusion_matrix"])) == n
    assert sum(b["count"] for b in m["size_buckets"].values()) == n
    assert set(m["size_buckets"]) == {"small", "medium", "large"}
    lo, hi = m["top1_ci"]
    assert 0 <= lo <= m["top1"] <= hi <= 1 and m["top1"] <= m["top5"] <= 1
    correct = sum(m["confusion_matrix"][i][i] for i in range(k))
    assert m["top1"] == pytest.approx(correct / n)


def test_eval_matches_validation_in_training(run_dirs, tmp_path):
    """The same function computes both: the full-val eval of last.pt equals the run's last validation."""
    m = _eval(["--checkpoint", str(run_dirs / "det" / "last.pt"), "--boxes", "detections",
               "--out", str(tmp_path / "m.json")])
    val = json.loads((run_dirs / "det" / "val_metrics.json").read_text())
    assert (m["count"], m["top1"], m["top5"], m["confusion_matrix"]) == (val["count"], val["top1"], val["top5"],
                                                                         val["confusion_matrix"])


def test_background_precision_recall_on_detector_boxes(run_dirs, tmp_path):
    m = _eval(["--checkpoint", str(run_dirs / "det" / "last.pt"), "--boxes", "detections",
               "--out", str(tmp_path / "m.json")])
    bg = m["background"]
    assert bg is not None and bg["label"] == m["num_classes"] - 1 and bg["count"] > 0
    conf = m["confusion_matrix"]
    b = bg["label"]
    assert bg["count"] == sum(conf[b])
    assert bg["recall"] == pytest.approx(conf[b][b] / sum(conf[b]))
    predicted = sum(row[b] for row in conf)
    assert bg["predicted"] == predicted
    assert bg["precision"] == (pytest.approx(conf[b][b] / predicted) if predicted else None)
    m_raw = _eval(["--checkpoint", str(run_dirs / "det" / "last.pt"), "--boxes", "detections", "--no-ema",
                   "--out", str(tmp_path / "raw.json")])
    assert m_raw["weights"] == "model"
