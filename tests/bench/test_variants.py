"""Variants as data, bench presets, and the crop-size fields the variants need in the data pipeline."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lowres.bench import VARIANTS, load_bench_preset, variant_config
from lowres.bench.runner import config_differences
from lowres.config import ConfigError, load_config


@pytest.mark.parametrize("name, stem, crop_size, upsample, aux", [
    ("299", 299, None, None, True), ("151", 151, None, None, True), ("79", 79, None, None, True),
    ("naive-79", 299, 79, None, False), ("upsample-79", 299, 79, 299, True)])
def test_variant_configs_change_only_stem_crop_and_aux(name, stem, crop_size, upsample, aux):
    spec = load_bench_preset("cpu")
    cfg = variant_config(spec.config, VARIANTS[name], seed=3, data="/data")
    got = (cfg.model.stem, cfg.crop.size, cfg.crop.upsample_to, cfg.model.aux_logits)
    assert got == (stem, crop_size, upsample, aux)
    assert cfg.train.seed == 3 and cfg.data.path == "/data"
    base = variant_config(spec.config, VARIANTS["299"], seed=3, data="/data").to_dict()
    changed = {d.split(":")[0] for d in config_differences(base, cfg.to_dict())}
    assert changed <= {"model.stem", "crop.size", "crop.upsample_to", "model.aux_logits"}


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper", "imagenette", "imagenette_gpu"])
def test_presets_load(preset):
    spec = load_bench_preset(preset)
    assert spec.variants == list(VARIANTS) and spec.seeds == (3 if preset == "imagenette" else 1)
    width = spec.config["model"]["width"]
    gpu = preset in ("paper", "imagenette_gpu")
    assert width == 1.0 if gpu else 0 < width < 1.0  # the paper's network on a GPU; the CPU ones reduced
    if preset == "imagenette_gpu":  # the paper's recipe, 30 epochs
        assert spec.config["optim"]["name"] == "rmsprop_tf" and spec.config["train"]["epochs"] == 30


def test_overrides_and_flags_reach_the_right_section():
    spec = load_bench_preset("smoke", ["train.epochs=5", "bench.throughput.batch=3", "config.optim.lr=0.5"], seeds=2,
                             variants=["79", "299"])
    assert spec.config["train"]["epochs"] == 5 and spec.config["optim"]["lr"] == 0.5
    assert spec.throughput.batch == 3 and spec.seed_values() == [0, 1] and spec.variants == ["79", "299"]


def test_a_preset_s_fewer_seeds_apply_to_the_variants_selected():
    """--variants may leave out a variant the preset gives fewer seeds (imagenette: naive-79, upsample-79)."""
    spec = load_bench_preset("imagenette", variants=["299", "79"])
    assert spec.variant_seeds == {} and spec.seed_values("299") == spec.seed_values("79") == [0, 1, 2]
    spec = load_bench_preset("imagenette", variants=["79", "naive-79"])
    assert spec.variant_seeds == {"naive-79": 1} and spec.seed_values("naive-79") == [0]


@pytest.mark.parametrize("overrides, match", [
    (["bench.colour=1"], "bench.colour"), (["train.epoch=1"], "train.epoch"), (["bench.seeds=0"], "bench.seeds"),
    (["bench.variants=[79, 80]"], "bench.variants"), (["crop.size=3"], "crop.size"),
    (["bench.variant_seeds={naive-80: 1}"], "bench.variant_seeds"), (["bench.variant_seeds={79: 0}"], "variant_seeds")])
def test_mistakes_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_bench_preset("smoke", overrides)


def test_runtime_keys_do_not_count_as_differences():
    a = load_config("smoke").to_dict()
    b = load_config("smoke", ["train.threads=7", "data.cache_dir=/x", "train.epochs=9"]).to_dict()
    assert config_differences(a, b) == ["train.epochs: 2 -> 9"]


def test_crop_size_and_upsampling_in_the_data_pipeline(bench_cache: Path):
    """The 299 stem fed 79 px crops (naive-79) and 79 px crops upsampled to 299 (upsample-79)."""
    from torch.utils.data import default_collate

    from lowres.device_transforms import model_inputs
    from lowres.runtime import crop_size, input_size
    from lowres.training.data import SeededDataset, load_split_data, resolve_data_dir
    from lowres.training.distributed import DistEnv

    def model_input(sample: tuple, cfg) -> torch.Tensor:  # what the training/eval step makes on the device
        return model_inputs(default_collate([sample]), torch.device("cpu"), size=cfg.crop.upsample_to)[0][0]

    env = DistEnv()
    sets = [f"data.cache_dir={bench_cache}", "data.max_train=8"]
    naive = load_config("smoke", [*sets, "crop.size=79"], stem=299)
    upsampled = load_config("smoke", [*sets, "crop.size=79", "crop.upsample_to=299"], stem=299)
    data_dir = resolve_data_dir(naive, env=env)
    for cfg, side in ((naive, 79), (upsampled, 299)):
        assert input_size(cfg) == side and crop_size(cfg) == 79
        for train in (True, False):
            split = load_split_data(data_dir, "train", cfg, train=train, env=env)
            sample = split.dataset[0]
            image, label, index = sample[:3]
            assert image.shape == (3, 79, 79) and split.records[index].label == label  # workers move the crop
            assert model_input(sample, cfg).shape == (3, side, side)  # resized on the device
    low = model_input(load_split_data(data_dir, "train", naive, train=False, env=env).dataset[0], naive)
    up = model_input(load_split_data(data_dir, "train", upsampled, train=False, env=env).dataset[0], upsampled)
    down = torch.nn.functional.interpolate(up[None], size=(79, 79), mode="bilinear", antialias=True)[0]
    assert (down - low).abs().mean() < 0.05  # the same 79 px crop, only enlarged
    seeded = SeededDataset(load_split_data(data_dir, "train", upsampled, train=True, env=env).dataset, 0)
    assert torch.equal(seeded[1][0], seeded[1][0])  # augmentation is seeded through the wrapper


def test_each_variant_can_start_from_its_own_weights():
    from lowres.bench.variants import VARIANTS, load_bench_preset, variant_config

    spec = load_bench_preset("smoke", ["model.weights=other/runs/{variant}/seed0/last.pt"])
    paths = {name: variant_config(spec.config, v, seed=0).model.weights for name, v in VARIANTS.items()}
    assert paths["naive-79"] == "other/runs/naive-79/seed0/last.pt" and paths["151"] == "other/runs/151/seed0/last.pt"
