"""`lowres eval` far from where training ran: the checkpoint's data path is found and named as such."""
from __future__ import annotations

from pathlib import Path

import torch
from click.testing import CliRunner

from detection_bridge import synthetic
from lowres.cli import main
from lowres.training.run import train
from lowres.checkpoint import save_checkpoint


def test_eval_elsewhere_uses_and_names_the_checkpoint_data_path(tiny_config, tmp_path, monkeypatch):
    work = tmp_path / "work"
    data = synthetic.generate(work / "data")
    monkeypatch.chdir(work)
    cfg = tiny_config("train.epochs=1", "train.max_steps_per_epoch=1", "eval.bootstrap=10", data=Path("data"))
    train(cfg, "run", progress=False)  # data.path is relative: "data"
    monkeypatch.chdir(tmp_path)  # from here "data" does not exist
    result = CliRunner().invoke(main, ["eval", "--checkpoint", "work/run/last.pt", "--out", "e.json"])
    assert result.exit_code == 0, result.output
    assert f"using the checkpoint's training data {Path(data).resolve()}" in result.output
    assert "(data.path 'data' in work/run/last.pt)" in result.output

    state = torch.load(work / "run" / "last.pt", weights_only=True)
    save_checkpoint({**state, "provenance": []}, work / "run" / "old.pt")  # a checkpoint from before provenance
    old = CliRunner().invoke(main, ["eval", "--checkpoint", "work/run/old.pt", "--out", "e.json"])
    assert old.exit_code != 0 and "Traceback" not in old.output
    assert "data.path 'data' taken from the checkpoint work/run/old.pt (no --data given) not found" in old.output
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not data")
    wrong = CliRunner().invoke(main, ["eval", "--checkpoint", "work/run/last.pt", "--data", "notes", "--out", "e.json"])
    assert wrong.exit_code != 0 and "is neither a COCO layout" in wrong.output
    split = CliRunner().invoke(main, ["eval", "--checkpoint", "work/run/last.pt", "--split", "test", "--out", "e.json"])
    assert split.exit_code != 0 and "no split 'test'" in split.output
    assert "COCO layout, splits found: train, val" in split.output


def test_seeded_samples_leave_the_trainers_global_rngs_alone():
    """A sample's augmentation is a function of (seed, epoch, index) alone, and loading it in the main
    process must not move the trainer's own ``random`` / ``numpy`` streams."""
    import random

    import numpy as np

    from lowres.training.data import SeededDataset

    class Draws:
        def __len__(self):  # type: ignore[no-untyped-def]
            return 4

        def __getitem__(self, i):  # type: ignore[no-untyped-def]
            return random.random(), float(np.random.rand())

    data = SeededDataset(Draws(), seed=3)
    random.seed(11)
    np.random.seed(11)
    first = data[2]
    after = random.random(), float(np.random.rand())
    random.seed(11)
    np.random.seed(11)
    assert after == (random.random(), float(np.random.rand()))  # as if no sample had been loaded
    random.seed(99)
    assert data[2] == first and data[1] != first  # the sample's own seed decides, not the global state
    data.set_epoch(1)
    assert data[2] != first


def test_a_detections_file_per_split_by_pattern(tmp_path: Path):
    from detection_bridge.coco import split_detections_file as split_file

    (tmp_path / "detections").mkdir()
    (tmp_path / "detections" / "yoloxnano_val.json").write_text("[]")
    assert split_file("detections/yoloxnano_{split}.json", "val", tmp_path) == \
        tmp_path / "detections" / "yoloxnano_val.json"  # relative: found in the data folder
    assert split_file(None, "val", tmp_path) is None
    assert split_file("/x/{split}.json", "train", tmp_path) == Path("/x/train.json")
