"""Config: precedence defaults < YAML < --set < dedicated flags, and errors that name the key."""
import re

import pytest
import yaml

from lowres.config import Config, ConfigError, load_config, save_config


def test_defaults_are_the_paper_recipe():
    cfg = Config()
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.rms_decay, cfg.optim.clip_grad_norm) == ("rmsprop_tf", 0.045, 0.9, 2.0)
    assert (cfg.schedule.decay_rate, cfg.schedule.decay_epochs) == (0.94, 2.0)
    assert (cfg.train.label_smoothing, cfg.train.aux_weight, cfg.train.batch_size) == (0.1, 0.4, 32)


def test_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {stem: 151, width: 0.5}\noptim: {lr: 0.01}\ntrain: {epochs: 3}\n")
    cfg = load_config(path, ["optim.lr=1e-3", "model.stem=299", "train.precision=bf16"], stem=79, data="/d")
    assert cfg.model.width == 0.5  # YAML over defaults
    assert cfg.optim.lr == 0.001  # --set over YAML (and '1e-3' read as a float)
    assert cfg.model.stem == 79  # --stem over --set
    assert cfg.data.path == "/d" and cfg.train.epochs == 3 and cfg.train.precision == "bf16"
    assert cfg.optim.momentum == 0.9  # untouched default


def test_unknown_key_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.lrr'"):
        load_config(None, ["optim.lrr=0.1"])
    path = tmp_path / "bad.yaml"
    path.write_text("trian: {epochs: 1}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'trian'"):
        load_config(path)


@pytest.mark.parametrize("override,key", [("train.epochs=abc", "train.epochs"), ("train.epochs=1.5", "train.epochs"),
                                          ("model.stem=80", "model.stem"), ("train.ema=3", "train.ema"),
                                          ("optim.lr=-1", "optim.lr"), ("optim.name=adam", "optim.name")])
def test_wrong_type_or_value_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_set_needs_key_value():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["optim.lr"])


def test_none_and_optional():
    cfg = load_config(None, ["optim.clip_grad_norm=null", "data.max_train=8"])
    assert cfg.optim.clip_grad_norm is None and cfg.data.max_train == 8


def test_resolved_config_roundtrip(tmp_path):
    cfg = load_config("smoke", ["model.width=0.25"], stem=151)
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(path)
    assert again == cfg
    assert yaml.safe_load(path.read_text())["model"]["stem"] == 151


def test_unknown_preset():
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("no-such-preset")


def test_bridge_options_are_config_keys_and_reach_the_bridge():
    from detection_bridge.coco import SplitOptions
    from lowres.training.data import split_options

    cfg = load_config("second_stage", ["data.score_threshold=0.2", "data.top_k=3", "data.iou_positive=0.6",
                                       "data.iou_background=0.2", "data.jitter=2", "data.jitter_iou=0.8",
                                       "train.seed=5"])
    common = dict(boxes="both", background=True, min_size=1.0, score_threshold=0.2, top_k=3, iou_positive=0.6,
                  iou_background=0.2, jitter_iou=0.8, seed=5)
    assert split_options(cfg, train=True) == SplitOptions(jitter=2, **common)
    assert split_options(cfg, train=False) == SplitOptions(jitter=0, **common)  # jittered copies: training only


@pytest.mark.parametrize("override", ["data.top_k=0", "data.jitter=-1", "data.jitter_iou=0", "data.jitter_iou=1.5",
                                      "data.iou_background=0.6", "data.iou_positive=1.1", "data.score_threshold=.nan"])
def test_bridge_options_are_checked_like_the_other_keys(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        load_config(None, [override])


def test_a_run_config_written_before_the_newer_keys_still_resumes(tmp_path):
    """What a config.yaml of the 2026-11-22 code lacks (the committed studies' runs were written then)."""
    path = save_config(load_config("smoke"), tmp_path / "config.yaml")
    raw = yaml.safe_load(path.read_text())
    for key in ("iou_positive", "iou_background", "score_threshold", "top_k", "jitter", "jitter_iou",
                "crop_storage", "build_workers"):
        del raw["data"][key]
    for key in ("keep_checkpoints", "log_every", "tensorboard", "compile"):
        del raw["train"][key]
    path.write_text(yaml.safe_dump(raw))
    assert load_config(path, complete=True) == load_config("smoke")  # their defaults are what such a run did
    del raw["data"]["min_size"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="incomplete"):
        load_config(path, complete=True)


def test_keys_describe_themselves_and_the_lists_are_derived():
    """Each field declares its kind, check and age; the runtime, compatibility and newer-key sets come from it."""
    import dataclasses

    from lowres.bench.runner import RUNTIME_KEYS
    from lowres.config import Config
    from lowres.config_checks import ARCHITECTURE, RUNTIME, added_keys, field_meta, keys_of_kind
    from lowres.training.state import COMPATIBILITY_KEYS

    for section in dataclasses.fields(Config):
        for name, meta in field_meta(type(getattr(Config(), section.name))).items():
            assert meta["kind"] in ("architecture", "recipe", "runtime"), f"{section.name}.{name}"
    assert COMPATIBILITY_KEYS == keys_of_kind(Config, ARCHITECTURE) == (
        "model.stem", "model.width", "model.min_depth", "model.aux_logits")
    assert RUNTIME_KEYS == set(keys_of_kind(Config, RUNTIME)) and "train.compile" in RUNTIME_KEYS
    assert {"data.crop_storage", "train.compile"} <= added_keys(Config) and "data.min_size" not in added_keys(Config)


@pytest.mark.parametrize("override, rule", [
    ("augment.area_min=0", "in (0, 1]"), ("crop.central_fraction=1.5", "in (0, 1]"),
    ("data.decode_cache_gb=-1", ">= 0"),
    ("train.log_every=0", ">= 1"), ("crop.size=4", "null or >= 8 pixels")])
def test_a_key_is_checked_by_the_rule_declared_with_it(override, rule):
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=re.escape(f"'{key}' must be {rule}, got")):
        load_config(None, [override])
