"""Presets that inherit (``base:``): override, nested merge, chains, cycles and missing bases, and the shipped
presets each stating only how they differ from what they start from."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from lowres.bench import load_bench_preset
from lowres.cli import main
from lowres.config import BASE_KEY, Config, ConfigError, list_presets, load_config, preset_path, read_yaml


def _write(folder: Path, name: str, data: dict[str, Any]) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_file_overrides_its_base_key_by_key(tmp_path):
    _write(tmp_path, "a.yaml", {"model": {"width": 0.5, "min_depth": 8}, "optim": {"clip_grad_norm": 1.0},
                                "train": {"epochs": 3}})
    child = _write(tmp_path, "b.yaml", {"base": "a.yaml", "model": {"width": 0.25},
                                        "optim": {"clip_grad_norm": None}})
    cfg = load_config(child)
    assert cfg.model.width == 0.25                       # the file wins
    assert cfg.model.min_depth == 8 and cfg.train.epochs == 3  # the rest of the base's sections, merged
    assert cfg.optim.clip_grad_norm is None              # null is a value: it replaces the base's
    assert cfg.optim.lr == Config().optim.lr            # neither says: the default


def test_bases_chain_and_a_preset_name_works_as_a_base(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    _write(tmp_path, "mid.yaml", {"base": "smoke", "train": {"epochs": 5}})
    child = _write(sub, "top.yaml", {"base": "../mid.yaml", "train": {"batch_size": 4}})  # relative to the file
    cfg, smoke = load_config(child), load_config("smoke")
    assert (cfg.train.epochs, cfg.train.batch_size) == (5, 4)
    assert cfg.model == smoke.model and cfg.data == smoke.data
    assert load_config(child, ["train.epochs=7"]).train.epochs == 7  # --set still comes last


@pytest.mark.parametrize("files", [{"a.yaml": "a.yaml"}, {"a.yaml": "b.yaml", "b.yaml": "a.yaml"},
                                   {"a.yaml": "b.yaml", "b.yaml": "c.yaml", "c.yaml": "b.yaml"}],
                         ids=["itself", "two", "three"])
def test_a_cycle_is_an_error_naming_the_file(tmp_path, files):
    for name, base in files.items():
        _write(tmp_path, name, {"base": base, "train": {"epochs": 2}})
    with pytest.raises(ConfigError, match=r"'base' makes a cycle \(a\.yaml -> .*\)") as err:
        load_config(tmp_path / "a.yaml")
    assert str(tmp_path) in str(err.value)


def test_a_missing_or_malformed_base_is_an_error_naming_the_file(tmp_path):
    child = _write(tmp_path, "child.yaml", {"base": "nowhere", "train": {"epochs": 2}})
    with pytest.raises(ConfigError, match=r"child\.yaml: base 'nowhere' is neither a file .* nor a preset"):
        load_config(child)
    _write(tmp_path, "child.yaml", {"base": ["cpu"]})
    with pytest.raises(ConfigError, match=r"child\.yaml: 'base' must be a preset name"):
        load_config(child)
    _write(tmp_path, "parent.yaml", {"trian": {"epochs": 2}})
    _write(tmp_path, "child.yaml", {"base": "parent.yaml"})
    with pytest.raises(ConfigError, match=r"parent\.yaml: unknown key 'trian'"):  # the base's own mistake
        load_config(child)


def test_a_bench_preset_config_takes_a_base(tmp_path):
    path = _write(tmp_path, "b.yaml", {"bench": {"variants": ["79", "299"]},
                                       "config": {"base": "smoke", "train": {"epochs": 1}}})
    spec = load_bench_preset(path)
    assert spec.config == load_config("smoke", ["train.epochs=1"]).to_dict()


def test_print_config_shows_the_resolved_config():
    result = CliRunner().invoke(main, ["train", "--config", "second_stage", "--print-config"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert BASE_KEY not in shown and shown == load_config("second_stage").to_dict()
    assert shown["optim"]["name"] == load_config("cpu").optim.name  # from the base


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def _own_values(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A preset's own training values and the resolved values of what it starts from (its base, or the
    defaults)."""
    raw = read_yaml(preset_path(name))
    raw = raw.get("config", {}) if "bench" in raw else raw
    own = {k: v for k, v in raw.items() if k != BASE_KEY}
    start = load_config(raw[BASE_KEY]) if BASE_KEY in raw else Config()
    return _leaves(own), _leaves(start.to_dict())


@pytest.mark.parametrize("name", list_presets("all"))
def test_every_preset_resolves_and_states_only_its_differences(name):
    if name.startswith("bench_"):
        load_bench_preset(name[len("bench_"):])
    else:
        load_config(name)
    own, start = _own_values(name)
    same = sorted(k for k, v in own.items() if start[k] == v)
    assert not same, f"{name}.yaml restates values it inherits: {same}"


def test_the_paper_preset_keeps_the_papers_recipe():
    # paper.yaml may change how a run is executed (precision, workers, checkpoint cadence), never the recipe
    paper, recipe = load_config("paper"), Config()
    assert paper.model == recipe.model and paper.schedule == recipe.schedule and paper.augment == recipe.augment
    assert paper.optim.eps == 1.0 and Config.from_dict({"optim": {"eps": 1.0}}).optim == paper.optim
    for key in ("epochs", "batch_size", "label_smoothing", "aux_weight", "ema", "ema_decay"):
        assert getattr(paper.train, key) == getattr(recipe.train, key), key
