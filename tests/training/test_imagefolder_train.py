"""ImageNet-layout data through training, checkpoints and evaluation (a generated folder)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from detection_bridge.errors import BridgeError
from detection_bridge.records import CategoryMap
from lowres.bench.variants import VARIANTS, load_bench_preset, variant_config
from lowres import checkpoint as ckpt
from lowres.device_transforms import model_inputs
from lowres.runtime import input_size
from lowres.training.data import load_split_data
from lowres.training.distributed import DistEnv
from lowres.training.evaluate import evaluate_checkpoint
from lowres.training.run import train


@pytest.mark.parametrize("name", list(VARIANTS))
def test_train_and_eval_samples_have_each_variants_input_size(name, imagenet_folder, cache_root):
    spec = load_bench_preset("smoke", [f"data.cache_dir={cache_root}"])
    cfg = variant_config(spec.config, VARIANTS[name], seed=0, data=str(imagenet_folder))
    size = VARIANTS[name].input_size
    for split, is_train in (("train", True), ("val", False)):
        data = load_split_data(imagenet_folder, split, cfg, train=is_train, env=DistEnv())
        sample = data.dataset[0]
        image, label, index = sample[:3]
        assert label == data.records[index].label and image.dtype == torch.uint8
        x, _ = model_inputs(default_collate([sample]), torch.device("cpu"), size=input_size(cfg))
        assert x.shape == (1, 3, size, size)


def test_label_map_round_trips_through_a_checkpoint(imagenet_folder, tiny_config, tmp_path):
    cfg = tiny_config("train.epochs=1", "data.max_train=16", "data.max_val=null", data=imagenet_folder)
    train(cfg, tmp_path / "run", progress=False)
    state = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")
    cmap = CategoryMap.from_dict(state["category_map"])
    assert cmap.keys == ("n01440764", "n02102040", "n02979186") and cmap.num_classes == 3
    result = evaluate_checkpoint(tmp_path / "run" / "last.pt", data=str(imagenet_folder))
    assert result["count"] == 9 and result["size_buckets"] == {}  # whole images: no COCO size buckets
    assert [c["name"] for c in result["per_class"]] == list(cmap.keys)
    assert sum(c["count"] for c in result["per_class"]) == 9


def test_imagenet_checkpoint_on_coco_data_is_a_clear_error(imagenet_folder, tiny_config, tmp_path, coco_mini):
    cfg = tiny_config("train.epochs=1", "data.max_train=8", "data.max_val=8", data=imagenet_folder)
    train(cfg, tmp_path / "run", progress=False)
    with pytest.raises((BridgeError, ValueError), match="category map"):
        evaluate_checkpoint(tmp_path / "run" / "last.pt", data=str(coco_mini))


def test_a_lowres_checkpoint_initialises_another_task(imagenet_folder, tiny_config, tmp_path, caplog):
    """Imagenette-trained stems as the start of a COCO crop run: trunk from the EMA weights, new classifier."""
    import torch

    cfg = tiny_config("train.epochs=1", "data.max_train=8", "data.max_val=8", data=imagenet_folder)
    train(cfg, tmp_path / "inet", progress=False)
    source = ckpt.load_checkpoint(tmp_path / "inet" / "last.pt")["ema"]["module"]
    from lowres.builder import build_model_from_config

    caplog.set_level(logging.INFO, logger="lowres")
    coco_cfg = tiny_config(f"model.weights={tmp_path / 'inet' / 'last.pt'}")
    model = build_model_from_config(coco_cfg, 9)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("weights:")]
    state = model.state_dict()
    assert torch.equal(state["Mixed_7c.branch_pool.conv.weight"], source["Mixed_7c.branch_pool.conv.weight"])
    assert state["fc.weight"].shape[0] == 9 and "skipped a classifier of another size" in lines[0]


def test_non_image_files_are_left_out_and_counted_in_the_log(imagenet_folder, tiny_config, tmp_path, caplog):
    import shutil

    folder = Path(shutil.copytree(imagenet_folder, tmp_path / "inet"))
    (folder / "train" / "n01440764" / "README.txt").write_text("not an image")
    (folder / "train" / "n02102040" / "labels.csv").write_text("x")
    caplog.set_level(logging.INFO, logger="lowres")
    data = load_split_data(folder, "train", tiny_config(data=folder), train=True, env=DistEnv())
    assert len(data.records) == 24  # the generated folder's 3 x 8 images, nothing else
    assert any("2 non-image file(s) left out: 1 .csv, 1 .txt" in r.getMessage() for r in caplog.records)
